"""The Painters grid: plans by variant and number of modified middle layers, accuracy and latency per run.

Each run writes ``runs/<plan>.json`` as soon as it finishes, so an interrupted sweep resumes where it stopped.
``summary.csv`` and the plots are rebuilt from all runs at the end: task score vs. layers modified per variant
(the paper's figures), and accuracy vs. latency ratio (the trade-off a deployer picks from).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from painters.errors import BenchError
from painters.fileio import atomic_dir_outputs, write_json
from painters.plans import symmetric_plan

if TYPE_CHECKING:
    from painters.routing import ModelRunners

__all__ = ["sweep_plans", "sweep_runners", "latency_ratio", "run_sweep", "pending_runs", "run_plan", "save_run",
           "write_summary", "parse_range", "VARIANTS", "sweep_provenance", "read_runs"]

log = logging.getLogger(__name__)

VARIANTS = ("skip", "repeat", "reverse", "shuffle", "parallel", "parallel_x2", "parallel_x3", "drop_attn")


def parse_range(text: str, option: str = "--n") -> list[int]:
    """``1..8`` → 1..8 inclusive; ``2,4,8`` → those. An empty or backwards range (``3..1``) is refused."""
    try:
        if ".." in text:
            lo, hi = text.split("..")
            values = list(range(int(lo), int(hi) + 1))
        else:
            values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise BenchError(f"{option} {text!r}: write a range like 1..8 or a list like 2,4,8") from None
    if not values:  # 3..1 ran the baseline alone
        raise BenchError(f"{option} {text!r} names no values; write a range low..high like 1..8 or a list like "
                         "2,4,8")
    return values


def sweep_provenance(models: ModelRunners, tasks: str, *, limit: int | None, latency: bool,
                     data_dir: str | Path | None) -> dict:
    """What a sweep's runs depend on; a resumed sweep whose provenance differs is refused (:func:`read_runs`)."""
    from painters.bench.tasks import resolve_data_dir
    from painters.fileio import file_hash

    if models.kind == "source":
        model_hash = models.loaded.hash
    else:
        record = getattr(models.artifact, "record", None)
        model_hash = (record.source_hash if record is not None else "") or file_hash(models.path)
    return {"model_hash": model_hash, "backend": models.backend,
            "tasks": sorted(t.strip() for t in tasks.split(",") if t.strip()), "limit": limit,
            "latency": bool(latency), "data": str(resolve_data_dir(data_dir).resolve())}


def read_runs(out: Path, provenance: dict | None = None) -> list[dict]:
    """Every run record in ``out/runs``, each checked readable and (given ``provenance``) of this sweep.

    Why: a resumed sweep took whatever sat in ``runs/`` — another model's or other tasks' runs (a copied
    file), mixing them into the summary — and an empty or truncated file crashed it with a JSONDecodeError.
    """
    records = []
    for path in sorted((out / "runs").glob("*.json")):
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict) or not {"variant", "n", "plan", "tasks"} <= set(record):
                raise ValueError("not a sweep run record")
        except (OSError, ValueError) as exc:
            raise BenchError(f"{path} cannot be read as a sweep run ({type(exc).__name__}: {str(exc)[:60]}); "
                             "delete it to rerun that plan, or use a new -o folder") from None
        if provenance is not None and record.get("provenance") != provenance:
            theirs = record.get("provenance")
            diff = "records no provenance" if not isinstance(theirs, dict) else "differs in " + ", ".join(
                f"{k} ({theirs.get(k)!r:.30} vs {v!r:.30})" for k, v in provenance.items() if theirs.get(k) != v)
            raise BenchError(f"{path} is not a run of this sweep: it {diff}; resume with the same model and "
                             "options, or use a new -o folder")
        records.append(record)
    return records


def sweep_plans(variants: Sequence[str], ns: Sequence[int], num_layers: int) -> list[tuple[str, int, str]]:
    """(variant, n, plan name) for the grid; n layers modified, symmetric around the middle."""
    unknown = [v for v in variants if v not in VARIANTS and not v.startswith("parallel_x")]
    if unknown:
        raise BenchError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if any(n < 1 or n > num_layers for n in ns):
        raise BenchError(f"--n values must lie in 1..{num_layers} (the model has {num_layers} layers)")
    return [(v, n, symmetric_plan(v, n, num_layers)) for v in variants for n in ns]


def sweep_runners(model: str, backend: str | None, threads: int | None = None) -> ModelRunners:
    """MODEL opened once for a sweep (a source loads once; an exported graph compiles each plan as it comes).

    ``threads`` caps CPU threads per runner (a Ray worker gets as many as its task reserved).
    """
    from painters.routing import ModelRunners

    models = ModelRunners(model, backend, threads=threads)
    if models.fixed is not None or models.kind == "engine":
        raise BenchError(f"{model} is already compiled for a plan; sweep an exported baseline graph or a source model")
    return models


def latency_ratio(models: ModelRunners, plan: str) -> float:
    """Prefill latency of ``plan`` over baseline's, measured interleaved (a short run: prompt 128, 8 steps)."""
    from painters.bench.latency import benchmark

    runners = {"baseline": models.open("baseline"), plan: models.open(plan)}
    try:
        rows = benchmark(runners, prompts=(128,), gen=8, warmup=1, iters=3)
    finally:
        for runner in runners.values():
            runner.close()
    return next(r.prefill_ratio for r in rows if r.plan == plan)


def _main_score(result: dict) -> float:
    return result["metrics"][result["main_metric"]]


def run_sweep(model: str, out: Path, variants: Sequence[str], ns: Sequence[int], tasks: str, *,
              num_layers: int, open_plan: Callable[[str], object], limit: int | None = None,
              latency: Callable[[str], float] | None = None, provenance: dict | None = None,
              **evaluate_kw) -> Path:
    """Run the grid into ``out``; ``open_plan(plan)`` gives a runner for a plan, ``latency(plan)`` its ratio.

    ``provenance`` (:func:`sweep_provenance`) is recorded in every run; resuming refuses runs of another one.
    """
    for variant, n, plan in pending_runs(out, variants, ns, num_layers, provenance=provenance):
        record = run_plan(model, variant, n, plan, tasks, open_plan=open_plan, limit=limit, latency=latency,
                          **evaluate_kw)
        save_run(out, record if provenance is None else {**record, "provenance": provenance})
    write_summary(out, provenance=provenance)
    return out


def pending_runs(out: Path, variants: Sequence[str], ns: Sequence[int], num_layers: int, *,
                 provenance: dict | None = None) -> list[tuple[str, int, str]]:
    """The grid (baseline first) less the runs already saved in ``out/runs``: a finished run is never redone.

    The saved runs are read first (:func:`read_runs`): one that is unreadable or of another sweep is refused.
    """
    grid = [("baseline", 0, "baseline"), *sweep_plans(variants, ns, num_layers)]
    read_runs(out, provenance)
    todo = []
    for variant, n, plan in grid:
        if (out / "runs" / f"{plan}.json").exists():
            log.info("%s: done earlier, skipped", plan)
        else:
            todo.append((variant, n, plan))
    return todo


def run_plan(model: str, variant: str, n: int, plan: str, tasks: str | Sequence[str], *,
             open_plan: Callable[[str], object], limit: int | None = None,
             latency: Callable[[str], float] | None = None, **evaluate_kw) -> dict:
    """One run of the grid (the only place a run is computed, serially or on a Ray worker): its record."""
    from painters.bench.accuracy import evaluate

    runner = open_plan(plan)
    try:
        results = evaluate(runner, tasks, limit=limit, **evaluate_kw)
    finally:
        runner.close()
    return {"model": model, "variant": variant, "n": n, "plan": plan, "limit": limit, "tasks": results,
            "latency_ratio": latency(plan) if latency else None}


def save_run(out: Path, record: dict) -> Path:
    """Write ``out/runs/<plan>.json`` by rename, so a reader (or a resumed sweep) never sees half a run."""
    path = out / "runs" / f"{record['plan']}.json"
    return write_json(path, record)


def write_summary(out: Path, *, provenance: dict | None = None) -> None:
    """``summary.csv`` and the plots from every finished run in ``out/runs`` (checked by :func:`read_runs`)."""
    records = read_runs(out, provenance)
    rows = [{"variant": r["variant"], "n": r["n"], "plan": r["plan"], "task": task, "score": _main_score(res),
             "metric": res["main_metric"], "latency_ratio": r["latency_ratio"]}
            for r in records for task, res in r["tasks"].items()]
    with atomic_dir_outputs(out / "summary.csv") as tmp, open(tmp / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["variant", "n", "plan", "task", "metric", "score", "latency_ratio"])
        writer.writeheader()
        writer.writerows(rows)
    _plot(out, rows)


def _plot(out: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    variants = sorted({r["variant"] for r in rows} - {"baseline"})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        base = [r["score"] for r in rows if r["task"] == task and r["variant"] == "baseline"]
        for variant in variants:
            pts = sorted((r["n"], r["score"]) for r in rows if r["task"] == task and r["variant"] == variant)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=variant)
        if base:
            ax.axhline(base[0], color="black", linestyle="--", label="baseline")
        ax.set(title=task, xlabel="layers modified", ylabel=next(r["metric"] for r in rows if r["task"] == task))
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(out / "score_vs_layers.png", dpi=120)
    plt.close(fig)
    timed = [r for r in rows if r["latency_ratio"] is not None]
    if not timed:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for variant in ["baseline", *variants]:
            pts = [(r["latency_ratio"], r["score"]) for r in timed if r["task"] == task and r["variant"] == variant]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=variant,
                       marker="*" if variant == "baseline" else "o")
        ax.set(title=task, xlabel="latency ratio (prefill, vs baseline)", ylabel="score")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_latency.png", dpi=120)
    plt.close(fig)
