"""The Painters grid fanned out on Ray: one Ray task per (plan, task), the same run files, summary and plots.

Ray only schedules. Each Ray task calls ``painters.experiments.sweep.run_plan`` (the one function that computes a
run, shared with the serial sweep) on a worker; the driver writes ``runs/<plan>.json`` by rename as soon as all
tasks of a plan are back, so an interrupted sweep resumes where it stopped, and finally ``write_summary``.

Workers read MODEL and the task data from the paths the driver sees (resolved to absolute paths here), so a
multi-node cluster needs them on a shared filesystem, and painters installed on every node. Workers never
download: the hub is switched off in them, and a built-in source (``smollm2-135m``) is resolved to its file on
the driver first.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from painters.errors import BenchError, PaintersError
from painters.experiments.sweep import latency_ratio, pending_runs, run_plan, save_run, sweep_runners, write_summary

__all__ = ["run_sweep_ray", "import_ray", "CPUS_PER_TASK"]

log = logging.getLogger(__name__)

# Without GPUs each run reserves one core: runs are independent, so one single-threaded run per core beats
# fewer runs with intra-op threads (small batches scale poorly across threads, and spinning thread pools of
# several runs on the same cores slow each other down).
CPUS_PER_TASK = 1


def import_ray() -> Any:
    """``ray``, or a BenchError that names the extra to install."""
    try:
        import ray
    except ImportError:
        raise BenchError("--ray needs Ray: pip install 'painters[ray]' (or pip install ray)") from None
    return ray


@functools.lru_cache(maxsize=4)
def _runners(model: str, backend: str | None, threads: int | None):
    # A worker process serves many Ray tasks: load the source (or compile cache lookups) once per process.
    return sweep_runners(model, backend, threads)


def _run_on_worker(label: str, model: str, backend: str | None, threads: int | None, variant: str, n: int,
                   plan: str, task: str, limit: int | None, latency: bool, evaluate_kw: dict) -> dict:
    """Body of one Ray task: a one-task run record from ``run_plan``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    models = _runners(model, backend, threads)
    return run_plan(label, variant, n, plan, task, open_plan=models.open, limit=limit,
                    latency=functools.partial(latency_ratio, models) if latency else None, **evaluate_kw)


def _worker_model(model: str) -> str:
    """MODEL as a worker can open it: an absolute path, or a built-in source resolved to its file."""
    if model == "smollm2-135m":
        from painters.export.sources import smollm2_path

        return str(smollm2_path())
    return str(Path(model).resolve()) if Path(model).exists() else model


def run_sweep_ray(model: str, out: Path, variants: Sequence[str], ns: Sequence[int], tasks: str, *,
                  num_layers: int, backend: str | None = None, address: str | None = None, limit: int | None = None,
                  latency: bool = True, data_dir: str | None = None, cpus_per_task: int | None = None,
                  provenance: dict | None = None, **evaluate_kw) -> Path:
    """Run the grid into ``out`` on Ray: ``address`` None starts a local instance, else ``auto``/``ray://…``.

    A cluster with GPUs gives each (plan, task) one GPU (``num_gpus=1``); otherwise ``cpus_per_task`` cores
    (default ``CPUS_PER_TASK``) and as many runner threads. If Ray is already initialized in this process, that
    instance is used and left running. Latency ratios on CPU workers are measured while other runs share the
    node: prefer ``--no-latency`` there and time plans separately. ``provenance`` (:func:`sweep_provenance`) is
    recorded in every run and checked on resume, as in the serial sweep.
    """
    from painters.bench.tasks import parse_tasks, resolve_data_dir

    ray = import_ray()
    names = [t.name for t in parse_tasks(tasks)]
    todo = pending_runs(out, variants, ns, num_layers, provenance=provenance)
    data = str(resolve_data_dir(data_dir).resolve())
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        if todo:
            _schedule(ray, model, out, todo, names, backend, limit, latency, cpus_per_task,
                      dict(evaluate_kw, data_dir=data), provenance)
        write_summary(out, provenance=provenance)
    finally:
        if started:
            ray.shutdown()
    return out


def _schedule(ray: Any, model: str, out: Path, todo: list[tuple[str, int, str]], names: list[str],
              backend: str | None, limit: int | None, latency: bool, cpus_per_task: int | None,
              evaluate_kw: dict, provenance: dict | None = None) -> None:
    """Submit one Ray task per (plan, task); save each plan's record as soon as all its tasks are back."""
    gpus = ray.cluster_resources().get("GPU", 0)
    cpus = cpus_per_task or CPUS_PER_TASK
    options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": cpus}
    threads = None if gpus else cpus
    remote = ray.remote(_run_on_worker).options(**options, max_retries=0)
    source = _worker_model(model)
    log.info("ray: %d runs × %d tasks, %s each", len(todo), len(names), options)
    refs = {remote.remote(model, source, backend, threads, variant, n, plan, task, limit,
                          latency and i == 0, evaluate_kw): plan  # a plan is timed once, beside its first task
            for variant, n, plan in todo for i, task in enumerate(names)}
    parts: dict[str, list[dict]] = {}
    failed: list[tuple[str, BaseException]] = []
    waiting = list(refs)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        plan = refs[done[0]]
        try:
            parts.setdefault(plan, []).append(ray.get(done[0]))
        except ray.exceptions.RayTaskError as exc:  # keep the other runs going; report after
            failed.append((plan, exc.cause if isinstance(exc.cause, PaintersError) else exc))
            continue
        if len(parts[plan]) == len(names):
            record = _merge(parts.pop(plan), names)
            save_run(out, record if provenance is None else {**record, "provenance": provenance})
            log.info("%s: done", plan)
    if failed:
        plan, exc = failed[0]
        if isinstance(exc, PaintersError):
            raise type(exc)(f"{plan}: {exc} ({len(failed)} failed run(s); finished runs are saved)")
        raise exc


def _merge(records: list[dict], names: list[str]) -> dict:
    """One plan's record from its one-task records, tasks in the requested order (as the serial run writes)."""
    timed = [r["latency_ratio"] for r in records if r["latency_ratio"] is not None]
    results = {k: v for r in records for k, v in r["tasks"].items()}
    return dict(records[0], tasks={name: results[name] for name in names}, latency_ratio=timed[0] if timed else None)
