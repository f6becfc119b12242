"""Latency on the deployed artifact: prefill, decode ms/token, KV-cache bytes; plans interleaved in one run.

Several plans of one model are measured round-robin (A B C A B C …) and each is reported as a ratio to
``baseline`` measured in the same rounds: on a noisy machine the ratio is the figure that survives.
Timing uses ``perf_counter`` around the greedy loop's ``synchronize()`` (CUDA backends wait for the device there).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from painters import __version__
from painters.fileio import file_hash
from painters.plans import Plan
from painters.routing import decode_weight_bytes, ideal_ratio, open_runners
from painters.runtime.base import Runner
from painters.runtime.decode import bucket_for

__all__ = ["schedule_text", "LatencyRow", "measure_once", "benchmark", "measure_latency", "engine_profile",
           "format_table"]

log = logging.getLogger(__name__)


@dataclass
class LatencyRow:
    """One (plan, batch, prompt) cell: medians and p90s over the timed rounds, ratios to baseline."""

    plan: str
    backend: str
    batch: int
    prompt: int
    gen: int
    prefill_ms: float
    prefill_ms_p90: float
    decode_ms: float  # per generated token (one decode step for the whole batch)
    decode_ms_p90: float
    tokens_per_s: float
    kv_cache_bytes: int
    peak_device_bytes: int | None = None  # torch-allocated CUDA memory at its peak (None on the CPU)
    ideal_ratio: float | None = None
    weight_bytes: int | None = None  # weights one decode step reads (bench.weight_reads); None without a graph
    weights_ratio: float | None = None  # weight_bytes / baseline's: decode_ratio when weight reads dominate
    schedule: str | None = None  # the plan the runner's record runs (Plan JSON): what the CI gate matches rows by
    prefill_ratio: float | None = None
    decode_ratio: float | None = None
    samples: dict = field(default_factory=dict, repr=False)


def _cuda_device(runner: Runner):
    device = getattr(runner, "device", None)
    return device if getattr(device, "type", None) == "cuda" else None


def measure_once(runner: Runner, batch: int, prompt: int, gen: int,
                 seed: int = 0) -> tuple[float, float, int, int | None]:
    """(prefill ms, decode ms/token, KV bytes at the end, peak device bytes) for one random prompt batch.

    Peak device memory is what torch allocated on the runner's CUDA device (the runners keep caches, IO and
    decode buffers there); memory a runtime allocates internally (an ORT arena, TensorRT's context) is not in it.

    Decoding runs the runner's own greedy loop (static shapes and CUDA graphs on GPU backends) without
    reading tokens back, so what is timed is the device's work plus launch overhead, as in serving.
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, runner.info.vocab_size, size=(batch, prompt), dtype=np.int64)
    device = _cuda_device(runner)
    if device is not None:
        import torch

        torch.cuda.reset_peak_memory_stats(device)
    loop = runner.greedy_loop(ids, np.ones((batch, prompt), dtype=np.int64), gen)
    loop.synchronize()
    start = time.perf_counter()
    loop.prefill()
    loop.synchronize()
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(gen):
        loop.step()
    loop.synchronize()
    decode = (time.perf_counter() - start) / max(gen, 1)
    peak = None
    if device is not None:
        import torch

        peak = int(torch.cuda.max_memory_allocated(device))
    return prefill * 1e3, decode * 1e3, loop.kv_bytes(), peak


def _baseline(runners: dict[str, Runner]) -> str:
    """The row the ratios divide by: the first runner whose record runs the baseline plan (found by plan, not
    by its row's name), else the first runner."""
    for name, runner in runners.items():
        artifact = getattr(runner, "artifact", None)
        if artifact is not None and artifact.record is not None and artifact.record.is_baseline:
            return name
    return next(iter(runners))


def _p90(values: Sequence[float]) -> float:
    return float(np.percentile(values, 90))


def _schedule(runner: Runner) -> str | None:
    """The schedule the runner's record runs: its Plan's JSON less the name (None: a runner without a record)."""
    record = getattr(getattr(runner, "artifact", None), "record", None)
    if record is None:
        return None
    if record.plan is None:  # an uncompiled export runs every block once: its schedule is baseline's
        return "baseline" if record.plan_name == "baseline" else None
    return schedule_text(record.plan)


def schedule_text(plan: Plan) -> str:
    """A plan's schedule as canonical JSON text without its name (two spellings of one plan give one text)."""
    return json.dumps({k: v for k, v in plan.to_json().items() if k != "plan"}, sort_keys=True,
                      separators=(",", ":"))


def benchmark(runners: dict[str, Runner], *, batches: Sequence[int] = (1,), prompts: Sequence[int] = (128,),
              gen: int = 32, warmup: int = 1, iters: int = 5, ideal: dict[str, float] | None = None,
              weights: dict[str, int | None] | None = None, baseline: str | None = None,
              progress: Callable[[str], None] | None = None) -> list[LatencyRow]:
    """Measure every runner on every (batch, prompt), interleaving runners round by round."""
    names = list(runners)
    baseline = baseline if baseline in runners else _baseline(runners)
    rows: list[LatencyRow] = []
    for batch in batches:
        for prompt in prompts:
            samples: dict[str, list[tuple[float, float, int, int | None]]] = {n: [] for n in names}
            for round_ in range(warmup + iters):
                for name in names:
                    result = measure_once(runners[name], batch, prompt, gen, seed=round_)
                    if round_ >= warmup:
                        samples[name].append(result)
                if progress:
                    progress(f"batch {batch} prompt {prompt}: round {round_ + 1}/{warmup + iters}")
            for name in names:
                pre = [s[0] for s in samples[name]]
                dec = [s[1] for s in samples[name]]
                rows.append(LatencyRow(
                    plan=name, backend=runners[name].name, batch=batch, prompt=prompt, gen=gen,
                    prefill_ms=statistics.median(pre), prefill_ms_p90=_p90(pre),
                    decode_ms=statistics.median(dec), decode_ms_p90=_p90(dec),
                    tokens_per_s=batch * 1e3 / statistics.median(dec), kv_cache_bytes=samples[name][-1][2],
                    peak_device_bytes=max((s[3] for s in samples[name] if s[3] is not None), default=None),
                    ideal_ratio=(ideal or {}).get(name), weight_bytes=(weights or {}).get(name),
                    schedule=_schedule(runners[name]), samples={"prefill_ms": pre, "decode_ms": dec}))
            base = {(r.batch, r.prompt): r for r in rows if r.plan == baseline}
            for row in rows:
                ref = base.get((row.batch, row.prompt))
                if ref is not None and row.batch == batch and row.prompt == prompt:
                    row.prefill_ratio = row.prefill_ms / ref.prefill_ms
                    row.decode_ratio = row.decode_ms / ref.decode_ms
                    if row.weight_bytes and ref.weight_bytes:
                        row.weights_ratio = row.weight_bytes / ref.weight_bytes
    return rows


def measure_latency(model: str, plans: Sequence[str] | None = None, backend: str | None = None, *,
                    anchor: str | Sequence[str] | None = None, scores: str | None = None,
                    fuse_parallel: bool = True, threads: int | None = None, dtype: str | None = None,
                    batches: Sequence[int] = (1,), prompts: Sequence[int] = (128,), gen: int = 32, warmup: int = 1,
                    iters: int = 5,
                    progress: Callable[[str], None] | None = None) -> tuple[list[LatencyRow], str]:
    """``painters bench latency`` as one call: route MODEL and ``plans`` to runners (:mod:`painters.routing`,
    engines built for the run's shapes), measure them interleaved with each row's ideal and weight-read ratios
    from the record its runner carries, and close every runner. ``plans`` None: the model's own plan.

    Returns the rows and the measured model's identity for the gate (its source weights' hash, else the model
    file's own), so a baseline of another model is refused (``painters bench check``)."""
    with open_runners(model, plans, backend, anchor=anchor, scores=scores, fuse_parallel=fuse_parallel,
                      threads=threads, dtype=dtype, profile=engine_profile(batches, prompts, gen)) as runners:
        ideal = {name: ideal_ratio(runner) for name, runner in runners.items()}
        weights = {name: decode_weight_bytes(runner) for name, runner in runners.items()}
        rows = benchmark(runners, batches=batches, prompts=prompts, gen=gen, warmup=warmup, iters=iters,
                         ideal=ideal, weights=weights, progress=progress)
        return rows, _model_hash(model, runners)


def _model_hash(model: str, runners: dict) -> str:
    """The measured model's identity: its source weights' hash, else the model file's own."""
    for runner in runners.values():
        info = getattr(runner, "info", None)
        if info is not None and info.model_hash:
            return info.model_hash
    return file_hash(model) if Path(model).is_file() else str(model)


def engine_profile(batches: Sequence[int], prompts: Sequence[int], gen: int) -> str:
    """Engine shape ranges covering a latency run: the largest batch and prompt, and the static decode loop's
    cache bucket for prompt + gen (decode steps feed the whole bucket)."""
    batch, prompt = max(batches), max(prompts)
    past = bucket_for(prompt + gen)
    return f"batch=1:{batch}:{batch},seq=1:{prompt}:{prompt},past=0:{past}:{past}"


def format_table(rows: Sequence[LatencyRow]) -> str:
    """Markdown table of the rows (ratios are to baseline in the same run); peak device memory on GPUs."""
    device = any(r.peak_device_bytes is not None for r in rows)
    head = ("| plan | backend | batch | prompt | prefill ms (p90) | decode ms/tok (p90) | tok/s | KV MiB "
            + ("| peak dev MiB " if device else "") + "| prefill × | decode × | weights × | ideal × |")
    lines = [head, "|" + "---|" * (13 if device else 12)]
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    for r in rows:
        peak = "" if not device else (
            "| – " if r.peak_device_bytes is None else f"| {r.peak_device_bytes / 2**20:.1f} ")
        lines.append(f"| {r.plan} | {r.backend} | {r.batch} | {r.prompt} | {r.prefill_ms:.2f} ({r.prefill_ms_p90:.2f}) "
                     f"| {r.decode_ms:.3f} ({r.decode_ms_p90:.3f}) | {r.tokens_per_s:.1f} "
                     f"| {r.kv_cache_bytes / 2**20:.2f} {peak}| {fmt(r.prefill_ratio)} | {fmt(r.decode_ratio)} "
                     f"| {fmt(r.weights_ratio)} | {fmt(r.ideal_ratio)} |")
    return "\n".join(lines)


def rows_to_json(rows: Sequence[LatencyRow], **meta) -> dict:
    return {"painters_version": __version__, **meta, "rows": [asdict(r) for r in rows]}
