"""The CI latency regression gate: compare a latency result's ratios with a stored baseline result.

Ratios (plan latency / baseline latency, measured in the same run) are compared, not milliseconds: a CI
runner that is uniformly slower or faster today does not trip the gate; a plan that lost its speed-up does.
"""

from __future__ import annotations

import json
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
        data = json.loads(Path(path).read_text())
        return {(r["plan"], r["batch"], r["prompt"]): r for r in data["rows"]}
    except FileNotFoundError:
        raise BenchError(
            f"{path}: no such latency result; write one with `painters bench latency ... --json {path}`"
        ) from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BenchError(
            f"{path}: not a painters latency result ({exc}); produce it with `painters bench latency --json`"
        ) from exc


def check_regressions(result: Path, baseline: Path, max_regression: float = 0.10) -> tuple[list[Regression], int]:
    """Rows of ``result`` whose ratio is worse than ``baseline``'s by more than ``max_regression``.

    Returns the regressions and how many (row, metric) pairs were compared; rows missing on either side
    are not compared (a missing row is reported by the caller as a count, not as a failure).
    """
    measured, stored = _rows(result), _rows(baseline)
    regressions, compared = [], 0
    for key in sorted(set(measured) & set(stored)):
        for metric in METRICS:
            old, new = stored[key].get(metric), measured[key].get(metric)
            if old is None or new is None:
                continue
            compared += 1
            if new > old * (1 + max_regression):
                regressions.append(Regression(*key, metric, old, new))
    if compared == 0:
        raise BenchError(f"{result} and {baseline} share no (plan, batch, prompt) rows with ratios; "
                         "measure the same plans with `painters bench latency --plans baseline,...`")
    return regressions, compared
