"""Module importance after What Matters in Transformers (He et al., 2024): 1 − cos across a module.

For decoder block i with residual stream x entering it (h = x + Attn_i(LN_i(x)), y = h + MLP_i(LN'_i(h))):

* attention importance ``1 − cos(x, h)``,
* MLP importance ``1 − cos(h, y)``,
* block importance ``1 − cos(x, y)``,

each cosine taken per token over the hidden dimension and averaged over every token of every calibration
sequence (float64 accumulation). The forward pass is the reference executor's: the model's
:class:`~painters.runtime.families.Family` (embedding scale, each layer kind's mask and rotary, residual
multipliers, parallel residual) walks a :class:`~painters.plans.Plan`, so the scores mean the same thing on every
supported family and a module removed here is removed exactly as ``drop_attn_…`` / ``drop_mlp_…`` /
``drop_block_…`` remove it. On a parallel-residual block (GPT-NeoX, x + Attn(LN(x)) + MLP(LN'(x))) the MLP's
importance is taken across its add: ``1 − cos(h, y)`` with h = x + Attn(LN(x)).

The iterative variant (the paper's ablation) drops the least important module, recomputes every score on the
model without it, and repeats; :func:`iterative_drop_order` returns that order.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from painters.analysis.calibration import check_ids, load_calibrated
from painters.errors import PlanError
from painters.export.sources import LoadedModel
from painters.fileio import write_json
from painters.plans import Plan, Scores, Step
from painters.runtime.families import family_for
from painters.runtime.torch_ref import SlotCache

__all__ = ["Drop", "ImportanceResult", "drop_plan", "importance_scores", "iterative_drop_order",
           "measure_importance", "ITERATIVE_KINDS", "TOKENS_PER_BATCH"]

log = logging.getLogger(__name__)

ITERATIVE_KINDS = ("attn", "mlp", "block", "joint")
TOKENS_PER_BATCH = 2048  # default batch: this many tokens per forward pass bounds activation memory
_EPS = 1e-8  # as torch.nn.functional.cosine_similarity


@dataclass(frozen=True)
class Drop:
    """One step of an iterative drop: the module removed and its importance when it was removed."""

    kind: str
    layer: int
    score: float


def drop_plan(num_layers: int, dropped: Iterable[tuple[str, int]] = ()) -> Plan:
    """The plan that removes ``dropped`` (kind, layer) modules; its name parses back to the same plan.

    A layer that loses both attention and MLP is removed as a block (a step may not drop both sublayers).
    """
    off: dict[str, set[int]] = {"attn": set(), "mlp": set(), "block": set()}
    for kind, layer in dropped:
        if kind not in off or not 0 <= int(layer) < num_layers:
            raise PlanError(f"cannot drop ({kind!r}, {layer}): kind must be attn/mlp/block and the layer "
                            f"0–{num_layers - 1}")
        off[kind].add(int(layer))
    both = off["attn"] & off["mlp"]
    off["block"] |= both
    attn, mlp = off["attn"] - off["block"], off["mlp"] - off["block"]
    parts = [f"drop_{k}_{','.join(map(str, sorted(s)))}" for k, s in (("attn", attn), ("mlp", mlp),
                                                                      ("block", off["block"])) if s]
    steps = tuple(Step((i,), attn=i not in attn, mlp=i not in mlp) for i in range(num_layers) if i not in off["block"])
    return Plan("+".join(parts) or "baseline", steps, num_layers).validate()


def _cos_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sum over tokens of cos(a, b) along the hidden dimension, in float64."""
    a, b = a.double(), b.double()
    dot = (a * b).sum(-1)
    norms = (a.square().sum(-1) * b.square().sum(-1)).clamp_min(_EPS * _EPS).sqrt()
    return (dot / norms).sum()


def _batches(ids: torch.Tensor, batch_size: int | None) -> tuple[torch.Tensor, ...]:
    size = batch_size or max(1, TOKENS_PER_BATCH // ids.shape[1])
    return ids.split(size)


@torch.no_grad()
def importance_scores(model: Any, ids: Any, *, dropped: Iterable[tuple[str, int]] = (),
                      batch_size: int | None = None, model_hash: str = "") -> Scores:
    """Attention, MLP and block importance of every layer on calibration ids ``[samples, seq_len]``.

    Args:
        model: A ``*ForCausalLM`` of a supported family (the one ``load_source`` returns).
        ids: Token ids ``[samples, seq_len]``; every token of every sequence is averaged over.
        dropped: (kind, layer) modules removed from the forward pass; their own scores are NaN.
        batch_size: Sequences per forward pass (default: about 2048 tokens per pass).
        model_hash: Stored in the returned scores (``LoadedModel.hash``).
    """
    L = int(model.config.num_hidden_layers)
    plan = drop_plan(L, dropped)
    family = family_for(model.config)
    kinds = family.layer_kinds()
    device = next(model.parameters()).device
    ids = check_ids(model, ids).to(device)
    sums = {k: torch.zeros(L, dtype=torch.float64) for k in ("attn", "mlp", "block")}
    ran = {k: torch.zeros(L, dtype=torch.bool) for k in sums}
    layers = family.layers(model)
    for batch in _batches(ids, batch_size):
        # the stream as plan_forward builds it: the family's embedding, each layer kind's mask and rotary
        x = family.embed(model, batch)
        positions = torch.arange(batch.shape[1], device=device).expand(batch.shape[0], -1)
        masks = family.masks(torch.ones_like(batch), batch.shape[1], x.dtype)
        pe = family.rotary(model, x, positions)
        for stage in plan.stages():
            (block,) = stage.blocks  # drop plans are sequential: one block per stage, each block at most once
            layer, kind = layers[block], kinds[block]
            h = x + family.attention_delta(layer, x, pe[kind], masks[kind], SlotCache(None)) if stage.attn else x
            y = h + family.mlp_delta(layer, x, h) if stage.mlp else h
            for name, a, b, on in (("attn", x, h, stage.attn), ("mlp", h, y, stage.mlp), ("block", x, y, True)):
                if on:
                    sums[name][block] += _cos_sum(a, b).cpu()
                    ran[name][block] = True
            x = y
    tokens = ids.numel()
    values = {k: tuple(1.0 - float(s) / tokens if r else math.nan for s, r in zip(sums[k], ran[k])) for k in sums}
    return Scores(values["attn"], values["mlp"], values["block"], model_hash=model_hash)


def _candidates(scores: Scores, kind: str) -> list[tuple[float, int, int, str]]:
    kinds = ("attn", "mlp") if kind == "joint" else (kind,)
    # the same tie-break as plans.least_important: lower layer first, then attention before MLP
    return [(v, i, order, k) for order, k in enumerate(kinds) for i, v in enumerate(getattr(scores, k))
            if not math.isnan(v)]


def iterative_drop_order(model: Any, ids: Any, kind: str, n: int, *, batch_size: int | None = None,
                         initial: Scores | None = None) -> list[Drop]:
    """Drop the least important ``kind`` module ``n`` times, recomputing all scores after each drop.

    ``kind`` is attn, mlp, block or joint (attention and MLP ranked together). ``initial`` (the scores of the
    full model on the same ids) saves the first pass.
    """
    if kind not in ITERATIVE_KINDS:
        raise PlanError(f"unknown drop kind {kind!r}; choose one of {', '.join(ITERATIVE_KINDS)}")
    L = int(model.config.num_hidden_layers)
    pool = 2 * L if kind == "joint" else L
    limit = pool - 1 if kind in ("block", "joint") else pool  # a plan must keep at least one block
    if not 1 <= n <= limit:
        raise PlanError(f"--drop {n}: an iterative {kind} drop removes 1–{limit} modules on this {L}-layer model")
    order: list[Drop] = []
    scores = initial
    for step in range(n):
        if scores is None or step > 0:
            scores = importance_scores(model, ids, dropped=[(d.kind, d.layer) for d in order], batch_size=batch_size)
        value, layer, _, chosen = min(_candidates(scores, kind))
        order.append(Drop(chosen, layer, value))
        log.info("iterative %s drop %d/%d: %s %d (importance %.5f)", kind, step + 1, n, chosen, layer, value)
    return order


@dataclass
class ImportanceResult:
    """Scores of the full model, the iterative drop order when one was asked for, and their provenance."""

    scores: Scores
    order: list[Drop] = field(default_factory=list)
    iterative: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def plan_name(self) -> str | None:
        """Plan name that removes the iteratively chosen modules (None without ``iterative``)."""
        if not self.iterative:
            return None
        return drop_plan(self.scores.num_layers, [(d.kind, d.layer) for d in self.order]).name

    def to_json(self) -> dict:
        extra = dict(self.meta)
        if self.iterative:
            extra["iterative"] = {"kind": self.iterative, "drop": len(self.order), "plan": self.plan_name,
                                  "order": [{"kind": d.kind, "layer": d.layer, "score": d.score} for d in self.order]}
        return self.scores.to_json(**extra)


def measure_importance(src: str | Path | LoadedModel, calib: str | Path, *, samples: int | None = None,
                       seq_len: int | None = None, field: str | None = None, iterative: str | None = None,
                       drop: int | None = None, batch_size: int | None = None, out: str | Path | None = None,
                       plot: str | Path | None = None) -> ImportanceResult:
    """Score SRC on a calibration file and write the scores file ``out`` (and a bar chart ``plot``).

    The per-layer lists in the file are the full model's scores (what ``drop_attn_kN`` ranks); with
    ``iterative`` the file also holds the iterative drop order and the plan name that applies it. Outputs
    are written atomically after the computation: on any error nothing is written.
    """
    if (iterative is None) != (drop is None):
        raise PlanError("an iterative drop needs both a kind (--iterative attn|mlp|block|joint) and a count (--drop N)")
    from painters.analysis.similarity import check_plot

    check_plot(plot)
    loaded, ids, meta = load_calibrated(src, calib, samples=samples, seq_len=seq_len, field=field,
                                        outputs=(out, plot))
    scores = importance_scores(loaded.model, ids, batch_size=batch_size, model_hash=loaded.hash)
    result = ImportanceResult(scores, iterative=iterative, meta={"metric": "1 - cos (What Matters in Transformers)",
                                                                 **meta})
    if iterative:
        result.order = iterative_drop_order(loaded.model, ids, iterative, int(drop), batch_size=batch_size,
                                            initial=scores)
    if out is not None:
        out = Path(out)
        write_json(out, result.to_json())
    if plot is not None:
        from painters.analysis.similarity import plot_scores

        plot_scores(scores, plot, title=f"{loaded.name}: module importance on {Path(calib).name}")
    return result
