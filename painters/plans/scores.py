"""Importance scores files (written by ``painters importance``) and the N-least-important selection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from painters.errors import PlanError

__all__ = ["Scores", "load_scores", "least_important", "SCORES_FORMAT"]

SCORES_FORMAT = "painters.scores/1"
KINDS = ("attn", "mlp", "block")
MAX_SCORES_FILE_BYTES = 16 << 20  # three floats per layer; far above any real model's file


@dataclass(frozen=True)
class Scores:
    """Per-layer importance (1 − cosine similarity); lower means more redundant."""

    attn: tuple[float, ...]
    mlp: tuple[float, ...]
    block: tuple[float, ...]
    model_hash: str = ""
    meta: tuple = ()

    @property
    def num_layers(self) -> int:
        return len(self.attn)

    def to_json(self, **extra) -> dict:
        return {"format": SCORES_FORMAT, "model_hash": self.model_hash, "num_layers": self.num_layers,
                "attn": list(self.attn), "mlp": list(self.mlp), "block": list(self.block), **extra}


def load_scores(path: str | Path, *, model_hash: str | None = None) -> Scores:
    """Read a scores file; refuse one computed on another model when ``model_hash`` is given."""
    path = Path(path)
    if not path.exists():
        raise PlanError(f"scores file {path} not found; "
                        f"write one with `painters importance SRC --json {path}`")
    if not path.is_file():  # a FIFO would block, /dev/zero never ends
        raise PlanError(f"scores file {path} is not a regular file; give the JSON written by `painters importance`")
    if path.stat().st_size > MAX_SCORES_FILE_BYTES:
        raise PlanError(f"scores file {path} is over {MAX_SCORES_FILE_BYTES} bytes; it is not a scores file "
                        "(regenerate it with `painters importance`)")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(MAX_SCORES_FILE_BYTES + 1).decode("utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8 (a binary file) or not JSON
        reason = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {str(exc)[:80]}"
        raise PlanError(f"scores file {path} is not JSON or cannot be read ({reason}); regenerate it with "
                        "`painters importance`") from exc
    if not isinstance(data, dict) or data.get("format") != SCORES_FORMAT:
        raise PlanError(f"{path} is not a painters scores file (expected format {SCORES_FORMAT!r})")
    try:
        if not all(isinstance(data[k], list) for k in KINDS):
            raise TypeError("each must be a list of numbers")
        scores = Scores(*(tuple(float(v) for v in data[k]) for k in KINDS), model_hash=str(data.get("model_hash", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"scores file {path} lacks per-layer lists attn/mlp/block ({exc})") from exc
    if not len(scores.attn) == len(scores.mlp) == len(scores.block):
        # A ragged file would silently rank layers the model does not have (or miss some); refuse it.
        counts = "/".join(str(len(getattr(scores, k))) for k in KINDS)
        raise PlanError(f"scores file {path}: attn/mlp/block have {counts} entries; each needs one per layer "
                        "(regenerate it with `painters importance`)")
    if model_hash and scores.model_hash and scores.model_hash != model_hash:
        raise PlanError(f"scores file {path} was computed on another model (hash {scores.model_hash[:12]}…, "
                        f"this model {model_hash[:12]}…); run `painters importance` on this model")
    return scores


def least_important(scores: Scores, kind: str, n: int) -> list[tuple[str, int]]:
    """The ``n`` least important modules as (kind, layer); ``joint`` ranks attention and MLP together.

    Ties are broken by the lower layer index (then attention before MLP), so a selection is reproducible.
    """
    if kind == "joint":
        pool = [(v, i, 0, "attn") for i, v in enumerate(scores.attn)]
        pool += [(v, i, 1, "mlp") for i, v in enumerate(scores.mlp)]
    else:
        pool = [(v, i, 0, kind) for i, v in enumerate(getattr(scores, kind))]
    if n > len(pool):
        raise PlanError(f"drop_{kind}_k{n}: the scores file has only {len(pool)} {kind} modules")
    return [(k, i) for _, i, _, k in sorted(pool)[:n]]
