"""The CI latency regression gate: compare a latency result's ratios with a stored baseline result.

Ratios (plan latency / baseline latency, measured in the same run) are compared, not milliseconds: a CI
runner that is uniformly slower or faster today does not trip the gate; a plan that lost its speed-up does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from painters.errors import BenchError
from painters.fileio import same_file

__all__ = ["Regression", "check_regressions"]

METRICS = ("prefill_ratio", "decode_ratio")


@dataclass
class Regression:
    plan: str
    batch: int
    prompt: int
    metric: str
    stored: float
    measured: float

    @property
    def change(self) -> float:
        return self.measured / self.stored - 1


def _key(row: dict) -> tuple:
    """What a row measured: its runner record's schedule, the batch, the prompt and the anchor it belongs to.

    The schedule stands in for the plan's name (an older result without one is keyed by the name): ``drop_attn_1,2``
    and ``drop_attn_1-2`` are one plan, and a renamed plan file is not a new one. The anchor is the row name's
    prefix (``hf/``, ``genai/``, ``llama.cpp/``…), empty for MODEL's own rows.
    """
    anchor = row["plan"].split("/", 1)[0] if "/" in row["plan"] else ""
    return (row.get("schedule") or row["plan"], row["batch"], row["prompt"], anchor)


def _load(path: Path) -> tuple[dict, dict[tuple, dict]]:
    """A latency result's header (everything but the rows) and its rows by :func:`_key`."""
    try:
        if Path(path).exists() and not Path(path).is_file():
            raise BenchError(f"{path}: not a regular file; give a latency result written by `bench latency --json`")
        data = json.loads(Path(path).read_text())
        rows = {_key(r): r for r in data["rows"]}
        if len(rows) != len(data["rows"]):
            raise BenchError(f"{path}: a (plan, batch, prompt) row appears twice; "
                             "the gate cannot tell which one to compare")
        return {k: v for k, v in data.items() if k != "rows"}, rows
    except FileNotFoundError:
        raise BenchError(
            f"{path}: no such latency result; write one with `painters bench latency ... --json {path}`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: cannot be read as a latency result ({exc})") from exc
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise BenchError(
            f"{path}: not a painters latency result ({type(exc).__name__}: {str(exc)[:80]}); produce it with "
            "`painters bench latency --json`"
        ) from exc


def _check_same_setup(result: Path, baseline: Path, meta: tuple[dict, dict], rows: tuple[dict, dict]) -> None:
    """Refuse comparing a result with itself, or with a baseline of another model, backend or decode length.

    Why: ratios of another model or backend say nothing about this one, and a file compared with itself
    always passes; the gate passed both (exit 0) and so failed open.
    """
    if same_file(result, baseline) or result.read_bytes() == baseline.read_bytes():
        raise BenchError(f"{result} is the baseline {baseline} itself; compare a new measurement with a stored one")
    for path, head in zip((result, baseline), meta, strict=True):
        value = head.get("model_hash")
        if not isinstance(value, str) or not value:
            raise BenchError(f"{path} records no model_hash, so the gate cannot tell which model it measured; "
                             "re-measure it with `painters bench latency --json`")
    if meta[0]["model_hash"] != meta[1]["model_hash"]:
        raise BenchError(f"{result} measured model {meta[0]['model_hash'][:12]}… ({meta[0].get('model')}) but the "
                         f"baseline {baseline} measured {meta[1]['model_hash'][:12]}… ({meta[1].get('model')}); "
                         "compare results of one model")
    for key in sorted(rows[0], key=str):
        for field in ("backend", "gen"):
            new, old = rows[0][key].get(field), rows[1].get(key, {}).get(field)
            if key in rows[1] and new != old:
                raise BenchError(f"{result} row {key} has {field} {new!r} but the baseline {baseline} has {old!r}; "
                                 f"measure with the baseline's {field}")


def check_regressions(result: Path, baseline: Path, max_regression: float = 0.10) -> tuple[list[Regression], int]:
    """Rows of ``result`` whose ratio is worse than ``baseline``'s by more than ``max_regression``.

    A gate fails closed: a row present on one side only, a missing ratio, or a ratio that is not a positive
    finite number raises :class:`BenchError` instead of being skipped.
    """
    if not isinstance(max_regression, (int, float)) or not math.isfinite(max_regression) or max_regression < 0:
        raise BenchError(f"--max-regression must be a finite number ≥ 0 (0.10 allows 10% growth), got {max_regression}")
    (meta_new, measured), (meta_old, stored) = _load(Path(result)), _load(Path(baseline))
    if not set(measured) & set(stored):
        raise BenchError(f"{result} and {baseline} share no (plan, batch, prompt) rows with ratios; "
                         "measure the same plans with `painters bench latency --plans baseline,...`")
    only = sorted(set(measured) ^ set(stored), key=str)
    if only:
        side = [f"{(measured.get(k) or stored[k])['plan']} (batch {k[1]}, prompt {k[2]}) only in "
                f"{result if k in measured else baseline}" for k in only[:3]]
        raise BenchError(f"rows not in both results: {'; '.join(side)}; measure the same plans, batches and "
                         "prompts as the stored baseline")
    _check_same_setup(Path(result), Path(baseline), (meta_new, meta_old), (measured, stored))
    regressions, compared = [], 0
    for key in sorted(measured, key=str):
        for metric in METRICS:
            old, new = stored[key].get(metric), measured[key].get(metric)
            for value, where in ((old, baseline), (new, result)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or value <= 0:
                    raise BenchError(f"{where}: {metric} of {key} is {value!r}, not a positive finite ratio; "
                                     "the gate cannot compare it (re-measure)")
            compared += 1
            if new > old * (1 + max_regression):
                row = measured[key]
                regressions.append(Regression(row["plan"], row["batch"], row["prompt"], metric, old, new))
    if compared == 0:
        raise BenchError(f"{result} and {baseline} share no (plan, batch, prompt) rows with ratios; "
                         "measure the same plans with `painters bench latency --plans baseline,...`")
    return regressions, compared
