"""Latency on the deployed artifact: prefill, decode ms/token, KV-cache bytes; plans interleaved in one run.

Several plans of one model are measured round-robin (A B C A B C …) and each is reported as a ratio to
``baseline`` measured in the same rounds: on a noisy machine the ratio is the figure that survives.
Timing uses ``perf_counter`` around the greedy loop's ``synchronize()`` (CUDA backends wait for the device there).
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from painters import __version__
from painters.runtime.base import Runner

__all__ = ["LatencyRow", "measure_once", "benchmark", "compiled_variants", "engine_profile", "format_table"]

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


def _p90(values: Sequence[float]) -> float:
    return float(np.percentile(values, 90))


def benchmark(runners: dict[str, Runner], *, batches: Sequence[int] = (1,), prompts: Sequence[int] = (128,),
              gen: int = 32, warmup: int = 1, iters: int = 5, ideal: dict[str, float] | None = None,
              weights: dict[str, int | None] | None = None, baseline: str | None = None,
              progress: Callable[[str], None] | None = None) -> list[LatencyRow]:
    """Measure every runner on every (batch, prompt), interleaving runners round by round."""
    names = list(runners)
    baseline = baseline if baseline in runners else ("baseline" if "baseline" in runners else names[0])
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
                    samples={"prefill_ms": pre, "decode_ms": dec}))
            base = {(r.batch, r.prompt): r for r in rows if r.plan == baseline}
            for row in rows:
                ref = base.get((row.batch, row.prompt))
                if ref is not None and row.batch == batch and row.prompt == prompt:
                    row.prefill_ratio = row.prefill_ms / ref.prefill_ms
                    row.decode_ratio = row.decode_ms / ref.decode_ms
                    if row.weight_bytes and ref.weight_bytes:
                        row.weights_ratio = row.weight_bytes / ref.weight_bytes
    return rows


def compiled_variants(model: Path, plans: Sequence[str], *, scores: str | None = None,
                      fuse_parallel: bool = True, out_dir: Path | None = None) -> dict[str, Path]:
    """Compile ``plans`` of an exported graph once into a cache (reused by later runs).

    The cache key names the graph's bytes, the identity of its external data files (a re-export writes new
    ones, which the cached outputs do not share), the scores file, the compiler's code and the fusion flag.
    Within it each plan's file is named by its *resolved schedule* (and its name, for reading), never by the
    text given: an edited plan file recompiles, and ``q/r.yaml`` and ``q-r.yaml`` (one safe name) do not share.
    """
    from painters.cache import cache_dir
    from painters.compiler.compile import compile_model, default_output, describe
    from painters.compiler.graph_io import SIDE_FILES, allowed_dir, external_files, load_graph
    from painters.fileio import file_hash
    from painters.plans import load_scores, parse_plan

    graph = load_graph(model)
    data = [(name, (st := (model.parent / name).stat()).st_size, st.st_mtime_ns, st.st_ino)
            for name in external_files(graph, model.parent, allowed=allowed_dir(model))]
    # the outputs carry copies of the tokenizer files beside the graph: a hard-linked twin of the graph with
    # another tokenizer (or none) must not reuse them
    side = [(name, file_hash(model.parent / name)) for name in SIDE_FILES if (model.parent / name).is_file()]
    parts = [file_hash(model), json.dumps(data), json.dumps(side), file_hash(scores) if scores else "",
             _compiler_fingerprint(), str(fuse_parallel)]
    num_layers = describe(model).get("blocks") if plans else None  # None: a compiled graph, refused below
    ranked = load_scores(scores, model_hash=graph.metadata_props.get("painters.source_hash", "")) \
        if scores and num_layers else None
    key = hashlib.sha256(":".join(parts).encode()).hexdigest()[:16]
    out_dir = out_dir or cache_dir("compiled", key)
    paths: dict[str, Path] = {}
    genai_folder = (model.parent / "genai_config.json").is_file()  # one GenAI folder (and config) per plan
    for plan in plans:
        name = plan
        if num_layers:
            parsed = parse_plan(plan, num_layers, scores=ranked)
            schedule = {k: v for k, v in parsed.to_json().items() if k != "plan"}
            digest = hashlib.sha256(json.dumps(schedule, sort_keys=True).encode()).hexdigest()[:12]
            name = f"{parsed.name[:80]}.{digest}"
        out = default_output(out_dir / model.name, name + (".fused" if fuse_parallel else ""))
        if genai_folder:
            out = out_dir / out.stem.removeprefix(f"{model.stem}.") / model.name
        if not out.exists():
            compile_model(model, plan, out, scores=scores, fuse_parallel=fuse_parallel)
        paths[plan] = out
    return paths


def engine_profile(batches: Sequence[int], prompts: Sequence[int], gen: int) -> str:
    """Engine shape ranges covering a latency run: the largest batch and prompt, and the static decode loop's
    cache bucket for prompt + gen (decode steps feed the whole bucket)."""
    from painters.runtime.decode import bucket_for

    batch, prompt = max(batches), max(prompts)
    past = bucket_for(prompt + gen)
    return f"batch=1:{batch}:{batch},seq=1:{prompt}:{prompt},past=0:{past}:{past}"


def _compiler_fingerprint() -> str:
    """The painters version and a hash of the compiler and plan sources: a changed rewrite recompiles."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(__version__.encode())
    for path in sorted([*(root / "compiler").rglob("*.py"), *(root / "plans").rglob("*.py")]):
        digest.update(path.read_bytes())
    return digest.hexdigest()


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
