"""Hidden-state similarity across layers (Transformer Layers as Painters, Sun et al., 2024, Figure 2).

The residual stream after the embedding and after each decoder block gives L + 1 hidden states per token;
entry (i, j) of the matrix is their cosine similarity, per token over the hidden dimension, averaged over
every calibration token. The drift curve is its first off-diagonal: cos between consecutive layers, i.e.
1 − block importance. The hidden states come from the reference executor (``plan_forward(...,
keep_hidden=True)`` on the baseline plan), so they are exactly what every plan starts from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from painters.analysis.calibration import CalibrationError, check_ids, load_calibrated
from painters.export.sources import LoadedModel
from painters.fileio import atomic_dir_outputs, write_json
from painters.plans import Scores, parse_plan
from painters.runtime.torch_ref import plan_forward

__all__ = ["Similarity", "hidden_similarity", "measure_similarity", "plot_similarity", "plot_scores",
           "SIMILARITY_FORMAT"]

SIMILARITY_FORMAT = "painters.similarity/1"
_TOKENS_PER_BATCH = 2048
_TOKEN_CHUNK = 1024  # tokens normalized at once in float64: (L + 1) × 1024 × hidden doubles


@dataclass(frozen=True)
class Similarity:
    """(L + 1) × (L + 1) mean cosine similarity; index 0 is the embedding output, index i the output of block i−1."""

    matrix: tuple[tuple[float, ...], ...]
    model_hash: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def num_layers(self) -> int:
        return len(self.matrix) - 1

    @property
    def drift(self) -> tuple[float, ...]:
        """cos(hidden before block i, hidden after block i) for each block i."""
        return tuple(self.matrix[i][i + 1] for i in range(self.num_layers))

    def to_json(self) -> dict:
        return {"format": SIMILARITY_FORMAT, "model_hash": self.model_hash, "num_layers": self.num_layers,
                "index": "0 = embedding output, i = output of block i-1", "matrix": [list(r) for r in self.matrix],
                "drift": list(self.drift), **self.meta}


@torch.no_grad()
def hidden_similarity(model: Any, ids: Any, *, batch_size: int | None = None, model_hash: str = "") -> Similarity:
    """Mean cosine similarity between the hidden states after every pair of layers on ids ``[samples, seq_len]``."""
    L = int(model.config.num_hidden_layers)
    plan = parse_plan("baseline", L)
    device = next(model.parameters()).device
    ids = check_ids(model, ids).to(device)
    gram = torch.zeros(L + 1, L + 1, dtype=torch.float64)
    size = batch_size or max(1, _TOKENS_PER_BATCH // ids.shape[1])
    for batch in ids.split(size):
        ones = torch.ones_like(batch)
        positions = torch.arange(batch.shape[1], device=device).expand(batch.shape[0], -1)
        hidden = plan_forward(model, plan, batch, ones, positions, keep_hidden=True).hidden_states
        states = torch.stack(hidden).flatten(1, 2)  # [L + 1, tokens, hidden]
        for chunk in states.split(_TOKEN_CHUNK, dim=1):
            unit = torch.nn.functional.normalize(chunk.double(), dim=-1, eps=1e-8)
            gram += torch.einsum("itd,jtd->ij", unit, unit).cpu()
    matrix = gram / ids.numel()
    return Similarity(tuple(tuple(float(v) for v in row) for row in matrix), model_hash)


def measure_similarity(src: str | Path | LoadedModel, calib: str | Path, *, samples: int | None = None,
                       seq_len: int | None = None, field: str | None = None, batch_size: int | None = None,
                       out: str | Path | None = None, plot: str | Path | None = None) -> Similarity:
    """Similarity matrix of SRC on a calibration file; write it as JSON (``out``) and a heatmap PNG (``plot``).

    Outputs are written atomically after the computation: on any error nothing is written.
    """
    check_plot(plot)
    loaded, ids, meta = load_calibrated(src, calib, samples=samples, seq_len=seq_len, field=field,
                                        outputs=(out, plot))
    sim = hidden_similarity(loaded.model, ids, batch_size=batch_size, model_hash=loaded.hash)
    sim = Similarity(sim.matrix, sim.model_hash, meta)
    if out is not None:
        out = Path(out)
        write_json(out, sim.to_json())
    if plot is not None:
        plot_similarity(sim, plot, title=f"{loaded.name}: hidden-state cosine similarity on {Path(calib).name}")
    return sim


def check_plot(path: str | Path | None) -> None:
    """Refuse a plot path whose suffix matplotlib cannot write, before any work and before any other output.

    Why here: the JSON output was written first and the plot failed after it (half the outputs, exit 1).
    """
    if path is None:
        return
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix[1:].lower()
    kinds = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in kinds:
        raise CalibrationError(f"--plot {path}: matplotlib cannot write .{suffix} files; use one of "
                               f"{', '.join('.' + k for k in sorted(kinds))} (e.g. .png)")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_dir_outputs(path) as tmp:
        fig.savefig(tmp / path.name, dpi=120, format=path.suffix[1:] or "png")
    return path


def plot_similarity(sim: Similarity, path: str | Path, *, title: str | None = None) -> Path:
    """Heatmap of the similarity matrix (the Painters paper's Figure 2) beside the layer-to-layer drift curve."""
    plt = _pyplot()
    L = sim.num_layers
    fig, (heat, curve) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1.2, 1]})
    try:
        image = heat.imshow(sim.matrix, cmap="viridis", vmin=min(0.0, min(map(min, sim.matrix))), vmax=1.0)
        fig.colorbar(image, ax=heat, label="mean cosine similarity")
        heat.set(xlabel="layer (0 = embedding)", ylabel="layer (0 = embedding)",
                 title="hidden states after layer i vs j")
        ticks = list(range(0, L + 1, max(1, (L + 1) // 16)))
        heat.set_xticks(ticks)
        heat.set_yticks(ticks)
        curve.plot(range(L), sim.drift, marker="o")
        curve.set(xlabel="block", ylabel="cos(block input, block output)", title="drift between consecutive layers")
        curve.grid(alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_scores(scores: Scores, path: str | Path, *, title: str | None = None) -> Path:
    """Grouped bar chart of attention, MLP and block importance by layer."""
    plt = _pyplot()
    L = scores.num_layers
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * L + 2), 4))
    try:
        width = 0.27
        for k, kind in enumerate(("attn", "mlp", "block")):
            ax.bar([i + (k - 1) * width for i in range(L)], getattr(scores, kind), width, label=kind)
        ax.set(xlabel="layer", ylabel="importance (1 − cos)", title=title or "module importance")
        ax.set_xticks(range(L))
        ax.tick_params(axis="x", labelsize=7)
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)
