"""The measured trade-offs of a reproduce run (``DIR/runs/*.json``): the best plan beside the papers' headline one.

``python scripts/tradeoffs.py docs/results/smollm2-135m`` prints baseline, the fastest plan whose mean score over
the run's tasks is at least baseline's (decode × is measured against baseline in the same rounds), and the
Painters paper's headline plan (its middle layers in parallel), each with the figures read from its run file.
Prints the best plan's name last, alone on its line, for scripts/demo.sh.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEADLINE = "parallel_13_17"  # Painters' headline variant: the middle layers run in parallel (n = 4 here)


def score(run: dict) -> float:
    """Mean of each task's main metric."""
    tasks = run["tasks"].values()
    return sum(t["metrics"][t["main_metric"]] for t in tasks) / len(tasks)


def main(directory: str) -> None:
    """Print the table and the best plan (see the module docstring)."""
    runs = {p.stem: json.loads(p.read_text()) for p in sorted(Path(directory, "runs").glob("*.json"))}
    base = score(runs["baseline"])
    kept = [name for name, run in runs.items() if name != "baseline" and score(run) >= base]
    best = min(kept, key=lambda name: runs[name]["latency"]["decode_ratio"]) if kept else "baseline"
    print(f"{'plan':<18}{'role':<34}{'mean score':>11}{'decode ×':>10}{'KV ×':>7}")
    roles = {"baseline": "baseline", best: "best measured trade-off", HEADLINE: "the Painters paper's headline"}
    for name, role in roles.items():
        if name not in runs:
            continue
        lat = runs[name]["latency"]
        kv = lat["kv_cache_bytes"] / lat["baseline_kv_cache_bytes"]
        print(f"{name:<18}{role:<34}{score(runs[name]):>11.3f}{lat['decode_ratio']:>10.3f}{kv:>7.3f}")
    print(best)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/results/smollm2-135m")
