"""Importance scores files (written by ``painters importance``) and the N-least-important selection."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from painters.errors import PlanError

__all__ = ["Scores", "load_scores", "least_important", "SCORES_FORMAT"]

SCORES_FORMAT = "painters.scores/1"
KINDS = ("attn", "mlp", "block")
MAX_SCORES_FILE_BYTES = 16 << 20  # three floats per layer; far above any real model's file
_ROUNDING = 1e-4  # 1 − cos in float32 can land a hair outside 0..2


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
    scores = _validated(path, data)
    if model_hash and scores.model_hash != model_hash:
        raise PlanError(f"scores file {path} was computed on another model (hash {scores.model_hash[:12]}…, "
                        f"this model {model_hash[:12]}…); run `painters importance` on this model")
    return scores


def _validated(path: Path, data: dict) -> Scores:
    """Every field of a scores file checked: one finite score in [0, 2] per layer and kind, the model hash.

    Why so strict: one NaN reordered the ranking (NaN compares false with everything), and a string, a boolean
    or a negative number was ranked as a number; ``drop_*_kN`` then dropped modules nobody chose.
    """
    lists = {}
    for kind in KINDS:
        values = data.get(kind)
        if not isinstance(values, list):
            raise PlanError(f"scores file {path} lacks per-layer lists attn/mlp/block ({kind} is "
                            f"{type(values).__name__}; each must be a list of numbers); regenerate it with "
                            "`painters importance`")
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise PlanError(f"scores file {path}: {kind}[{i}] is {v!r:.40}, not a number (lacks per-layer lists "
                                "of numbers); regenerate it with `painters importance`")
            if not math.isfinite(v) or not -_ROUNDING <= v <= 2 + _ROUNDING:
                raise PlanError(f"scores file {path}: {kind}[{i}] is {v!r}; importance (1 − cos) is a finite number "
                                "in 0..2; regenerate it with `painters importance`")
        lists[kind] = tuple(float(v) for v in values)
    counts = [len(lists[k]) for k in KINDS]
    if len(set(counts)) != 1 or counts[0] == 0:
        # A ragged file would silently rank layers the model does not have (or miss some); refuse it.
        raise PlanError(f"scores file {path}: attn/mlp/block have {'/'.join(map(str, counts))} entries; each needs "
                        "one per layer (regenerate it with `painters importance`)")
    declared = data.get("num_layers")
    if isinstance(declared, bool) or not isinstance(declared, int) or declared != counts[0]:
        raise PlanError(f"scores file {path}: num_layers is {declared!r} but the lists have {counts[0]} entries; "
                        "regenerate it with `painters importance`")
    model_hash = data.get("model_hash")
    if not isinstance(model_hash, str) or not model_hash.strip():
        raise PlanError(f"scores file {path} has no model_hash (got {model_hash!r:.40}), so it cannot be matched to "
                        "a model; regenerate it with `painters importance`")
    return Scores(lists["attn"], lists["mlp"], lists["block"], model_hash=model_hash)


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
