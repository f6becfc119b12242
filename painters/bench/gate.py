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


def _rows(path: Path) -> dict[tuple, dict]:
    try:
        if Path(path).exists() and not Path(path).is_file():
            raise BenchError(f"{path}: not a regular file; give a latency result written by `bench latency --json`")
        data = json.loads(Path(path).read_text())
        rows = {(r["plan"], r["batch"], r["prompt"]): r for r in data["rows"]}
        if len(rows) != len(data["rows"]):
            raise BenchError(f"{path}: a (plan, batch, prompt) row appears twice; "
                             "the gate cannot tell which one to compare")
        return rows
    except FileNotFoundError:
        raise BenchError(
            f"{path}: no such latency result; write one with `painters bench latency ... --json {path}`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: cannot be read as a latency result ({exc})") from exc
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BenchError(
            f"{path}: not a painters latency result ({exc}); produce it with `painters bench latency --json`"
        ) from exc


def check_regressions(result: Path, baseline: Path, max_regression: float = 0.10) -> tuple[list[Regression], int]:
    """Rows of ``result`` whose ratio is worse than ``baseline``'s by more than ``max_regression``.

    A gate fails closed: a row present on one side only, a missing ratio, or a ratio that is not a positive
    finite number raises :class:`BenchError` instead of being skipped.
    """
    if not isinstance(max_regression, (int, float)) or not math.isfinite(max_regression) or max_regression < 0:
        raise BenchError(f"--max-regression must be a finite number ≥ 0 (0.10 allows 10% growth), got {max_regression}")
    measured, stored = _rows(result), _rows(baseline)
    if not set(measured) & set(stored):
        raise BenchError(f"{result} and {baseline} share no (plan, batch, prompt) rows with ratios; "
                         "measure the same plans with `painters bench latency --plans baseline,...`")
    only = sorted(set(measured) ^ set(stored), key=str)
    if only:
        side = [f"{k} only in {result if k in measured else baseline}" for k in only[:3]]
        raise BenchError(f"rows not in both results: {'; '.join(side)}; measure the same plans, batches and "
                         "prompts as the stored baseline")
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
                regressions.append(Regression(*key, metric, old, new))
    if compared == 0:
        raise BenchError(f"{result} and {baseline} share no (plan, batch, prompt) rows with ratios; "
                         "measure the same plans with `painters bench latency --plans baseline,...`")
    return regressions, compared
