"""`painters reproduce`: both papers' experiments on one model, through compiled graphs, resumably.

One directory holds everything (``DIR/``):

* ``graph/model.onnx`` — the model exported once; every plan is compiled from it (``compiled_variants``);
* ``analysis/importance.json``, ``analysis/similarity.json`` — What Matters' importance scores (they also rank
  the ``drop_KIND_kN`` plans) and the Painters hidden-state similarity, on a local calibration file;
* ``runs/PLAN.json`` — one file per plan, written by rename as soon as the plan is done (``sweep.save_run``):
  the task results of ``painters bench accuracy`` on the compiled graph, the latency of the compiled graph
  measured against baseline in the same rounds (``bench.latency.benchmark``), and the command and commit;
* ``report.md``, ``figures.json`` and the PNGs — rebuilt from those files alone (``painters.experiments.report``).

A finished run is never redone; a rerun with other tasks or another limit is refused rather than mixed in.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from painters import __version__
from painters.errors import BenchError
from painters.export.sources import LoadedModel

__all__ = ["Grid", "QUICK", "FULL", "grid_for", "planned_runs", "run_reproduce", "provenance"]

log = logging.getLogger(__name__)

PAINTERS_VARIANTS = ("skip", "repeat", "reverse", "shuffle", "parallel", "parallel_x2", "parallel_x3")
DROP_KINDS = ("attn", "mlp", "block", "joint")


@dataclass(frozen=True)
class Grid:
    """What one reproduction runs. ``ns``/``ks`` empty → derived from the model's depth (``grid_for``)."""

    tasks: str = "arc_easy,hellaswag,winogrande,lambada"
    limit: int | None = 200
    ns: tuple[int, ...] = ()  # middle layers modified (Painters)
    ks: tuple[int, ...] = ()  # modules dropped (What Matters)
    seeds: tuple[int, ...] = (0, 1, 2)  # random-order seeds
    variants: tuple[str, ...] = PAINTERS_VARIANTS
    kinds: tuple[str, ...] = DROP_KINDS
    calib: str = "gsm8k/train.jsonl"  # under the data directory, unless absolute
    samples: int = 64
    seq_len: int = 512
    prompt: int = 128  # latency: prompt tokens, generated tokens, timed rounds
    gen: int = 32
    iters: int = 5


FULL = Grid()
# Sized for `painters reproduce smollm2-135m --quick` on a 2-core CPU in well under 30 minutes: 25 plans
QUICK = Grid(tasks="arc_easy,lambada", limit=20, ns=(4, 8), ks=(4, 8), seeds=(0, 1), samples=16, seq_len=256,
             prompt=64, gen=16, iters=3)


def grid_for(grid: Grid, num_layers: int) -> Grid:
    """Fill the default axes: every even n up to L−4 middle layers, every even k up to L/2 modules."""
    bad = [v for v in grid.variants if v not in PAINTERS_VARIANTS] + [k for k in grid.kinds if k not in DROP_KINDS]
    if bad:
        raise BenchError(f"unknown variants/kinds {bad}: variants {', '.join(PAINTERS_VARIANTS)}; "
                         f"kinds {', '.join(DROP_KINDS)}")
    ns = grid.ns or tuple(range(2, max(3, num_layers - 3), 2))
    ks = grid.ks or tuple(range(2, max(3, num_layers // 2 + 1), 2))
    if any(n < 1 or n > num_layers for n in ns) or any(k < 1 or k > num_layers for k in ks):
        raise BenchError(f"--n/--k values must lie in 1..{num_layers} (the model has {num_layers} layers)")
    return replace(grid, ns=tuple(ns), ks=tuple(ks))


@dataclass(frozen=True)
class PlannedRun:
    experiment: str  # baseline | painters | what_matters
    variant: str  # skip … parallel_x3, drop_attn … drop_joint
    n: int  # middle layers modified, or modules dropped
    plan: str
    seed: int | None = None


def planned_runs(grid: Grid, num_layers: int) -> list[PlannedRun]:
    """Baseline, the Painters variants × ns (random order once per seed), What Matters' drops × ks."""
    from painters.plans import symmetric_plan

    runs = [PlannedRun("baseline", "baseline", 0, "baseline")]
    for variant in grid.variants:
        for n in grid.ns:
            if variant == "shuffle":
                base = symmetric_plan("shuffle", n, num_layers).removesuffix("_s0")
                runs += [PlannedRun("painters", "shuffle", n, f"{base}_s{s}", s) for s in grid.seeds]
            else:
                runs.append(PlannedRun("painters", variant, n, symmetric_plan(variant, n, num_layers)))
    for kind in grid.kinds:
        for k in grid.ks:
            if kind != "joint" and k > num_layers:
                continue
            runs.append(PlannedRun("what_matters", f"drop_{kind}", k, f"drop_{kind}_k{k}"))
    seen: dict[str, PlannedRun] = {}
    for run in runs:  # e.g. repeat of 1 layer is that layer once: keep the first name only
        seen.setdefault(run.plan, run)
    return list(seen.values())


def provenance(command: str) -> dict:
    """The command and the git commit (with a dirty flag) of the painters source that ran it."""
    root = Path(__file__).resolve().parents[2]
    commit, dirty = None, None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=30, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # an installed wheel: the version is what identifies the code
    return {"command": command, "commit": commit, "dirty": dirty, "painters_version": __version__}


_RUN_KEYS = ("tasks", "limit")  # a run's results depend on these (and on the model's weights)


def _read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or a one-line BenchError naming the file (empty, truncated, not an object)."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a {type(data).__name__}, not an object")
        return data
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path} cannot be read as {what} ({type(exc).__name__}: {str(exc)[:60]}); delete it to "
                         "redo that part, or give another -o DIR") from None


def _check_resumable(out: Path, grid: Grid, model: str) -> dict | None:
    """The run folder's meta.json when it may be resumed with these settings; refuse one of another run.

    An unreadable meta.json (empty, truncated) is named instead of crashing the resume.
    """
    meta_path = out / "meta.json"
    if not meta_path.exists():
        return None  # what the folder holds is checked by content (_check_same_weights, _check_runs)
    meta = _read_json(meta_path, "a reproduction's meta.json")
    keep = ("tasks", "limit", "calib", "samples", "seq_len", "prompt", "gen", "iters")
    recorded = meta.get("grid") if isinstance(meta.get("grid"), dict) else {}
    old = {k: recorded.get(k) for k in keep}
    new = {k: asdict(grid)[k] for k in keep}
    if meta.get("model") != model or old != new:
        diff = ", ".join(f"{k}: {old[k]!r} → {new[k]!r}" for k in keep if old[k] != new[k])
        raise BenchError(f"{out} holds a reproduction of {meta.get('model')!r} with other settings "
                         f"({diff or 'model ' + repr(model)}); give another -o DIR or the same options to resume")
    return meta


def _check_same_weights(out: Path, meta: dict | None, model_hash: str) -> None:
    """Refuse resuming after the source's weights changed at the same path: graph/ and analysis/ are stale.

    The folder's record (meta.json), its exported graph and its analyses each name the weights they came
    from; any that names other weights is refused (they used to be reused while meta.json took the new hash).
    """
    from painters.compiler.graph_io import load_graph

    stale = []
    if meta is not None and meta.get("model_hash") != model_hash:
        stale.append((out / "meta.json", meta.get("model_hash")))
    graph = out / "graph" / "model.onnx"
    if graph.is_file():
        try:
            recorded = load_graph(graph).metadata_props.get("painters.source_hash")
        except Exception as exc:  # onnx raises its own types for a damaged file
            raise BenchError(f"{graph} cannot be read as an ONNX graph ({type(exc).__name__}); delete "
                             f"{out / 'graph'} to export it again") from None
        if recorded != model_hash:
            stale.append((graph, recorded))
    for name in ("importance.json", "similarity.json"):
        path = out / "analysis" / name
        if path.exists() and _read_json(path, "an analysis file").get("model_hash") != model_hash:
            stale.append((path, _read_json(path, "an analysis file").get("model_hash")))
    if stale:
        path, recorded = stale[0]
        raise BenchError(f"{path} was made from weights {str(recorded)[:12]}…; the source now hashes "
                         f"{model_hash[:12]}…, so {out}'s graph/, analysis/ and runs/ are stale; give another -o DIR")


def _check_runs(out: Path, model_hash: str, grid: Grid) -> None:
    """Every saved run readable and of this reproduction (model hash, tasks, limit): no foreign run mixed in."""
    want = {"model_hash": model_hash, **{k: getattr(grid, k) for k in _RUN_KEYS}}
    for path in sorted((out / "runs").glob("*.json")):
        record = _read_json(path, "a reproduction run")
        have = record.get("reproduce")
        if have != want:
            diff = "records no reproduction settings" if not isinstance(have, dict) else "differs in " + ", ".join(
                k for k in want if have.get(k) != want[k])
            raise BenchError(f"{path} is not a run of this reproduction: it {diff}; delete it to redo that plan, "
                             "or give another -o DIR")


def _write_json(path: Path, data: dict) -> None:
    from painters.fileio import write_json

    write_json(path, data)


def run_reproduce(model: str | LoadedModel, out: Path, grid: Grid = FULL, *, data_dir: str | None = None,
                  command: str = "", threads: int | None = None,
                  progress: Callable[[str], None] = log.info) -> Path:
    """Run (or resume) every experiment into ``out`` and write the report; return ``out / 'report.md'``.

    ``model`` is a source name or path, or an already loaded model (it needs a tokenizer).
    """
    from painters.artifact import missing_artifact, read_artifact
    from painters.bench.tasks import parse_tasks, resolve_data_dir
    from painters.experiments.report import write_report
    from painters.experiments.sweep import save_run
    from painters.export.sources import load_source

    out = Path(out)
    loaded = model if isinstance(model, LoadedModel) else None
    model = loaded.name if loaded else str(model)
    if missing_artifact(model) or read_artifact(model).routes_as != "source":
        raise BenchError(f"reproduce takes a source model (smollm2-135m, a checkpoint directory, a .gguf), not "
                         f"{model}: the analyses run on its weights and it is exported once into DIR/graph")
    parse_tasks(grid.tasks)  # unknown task names fail before any work
    data = resolve_data_dir(data_dir)
    calib = Path(grid.calib) if Path(grid.calib).is_absolute() else data / grid.calib
    if not calib.is_file():
        raise BenchError(f"calibration file {calib} not found; pass --calib FILE (text or .jsonl)")
    from painters.fileio import check_output_dir, command_reads

    check_output_dir(out, command_reads(calib, data, models=[model]))
    old_meta = _check_resumable(out, grid, model)
    started = time.time()
    prov = provenance(command)

    loaded = loaded or load_source(model)
    _check_same_weights(out, old_meta, loaded.hash)
    grid = grid_for(grid, loaded.num_layers)
    _check_runs(out, loaded.hash, grid)
    if not (out / "analysis" / "importance.json").exists() or not (out / "analysis" / "similarity.json").exists():
        from painters.analysis.calibration import calibration_ids

        # before the export, not after it: a calibration file too short for the grid fails in seconds
        calibration_ids(calib, loaded.tokenizer, samples=grid.samples, seq_len=grid.seq_len,
                        model_name=f"model {model!r}", fewer="run --quick (16 × 256 tokens)"
                        if grid.samples * grid.seq_len > QUICK.samples * QUICK.seq_len else
                        "use the default --calib (DATA/gsm8k/train.jsonl)")
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    meta = old_meta if old_meta is not None else {"model": model, "invocations": []}
    if not isinstance(meta.get("invocations"), list):
        meta["invocations"] = []
    meta.update(model=model, num_layers=loaded.num_layers, model_hash=loaded.hash, grid=asdict(grid))
    meta["invocations"].append({**prov, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))})
    _write_json(meta_path, meta)

    graph = out / "graph" / "model.onnx"
    if not graph.exists():
        from painters.export.onnx_export import export_model

        progress(f"exporting {model} to {graph}")
        export_model(loaded, graph)
    analysis = out / "analysis"
    importance, similarity = analysis / "importance.json", analysis / "similarity.json"
    if not importance.exists():
        from painters.analysis import measure_importance

        progress(f"importance scores on {calib.name}")
        measure_importance(loaded, calib, samples=grid.samples, seq_len=grid.seq_len, out=importance)
    if not similarity.exists():
        from painters.analysis import measure_similarity

        progress(f"hidden-state similarity on {calib.name}")
        measure_similarity(loaded, calib, samples=grid.samples, seq_len=grid.seq_len, out=similarity)
    del loaded  # the runs use the compiled graphs only

    todo = [r for r in planned_runs(grid, meta["num_layers"]) if not (out / "runs" / f"{r.plan}.json").exists()]
    progress(f"{len(todo)} runs to do")
    if todo:
        timed = _Timer(graph, importance, grid, threads)
        try:
            for i, run in enumerate(todo, 1):
                progress(f"[{i}/{len(todo)}] {run.plan}")
                record = _run_one(run, grid, timed, data_dir=str(data), model=model, provenance=prov)
                record["reproduce"] = {"model_hash": meta["model_hash"], **{k: getattr(grid, k) for k in _RUN_KEYS}}
                save_run(out, record)
        finally:
            timed.close()
    meta["invocations"][-1]["wall_s"] = round(time.time() - started, 1)
    _write_json(meta_path, meta)
    return write_report(out)


@dataclass
class _Timer:
    """Compiled runners for a plan and the baseline runner kept open for latency ratios in the same rounds."""

    graph: Path
    scores: Path
    grid: Grid
    threads: int | None
    _baseline: object = field(default=None, init=False)

    def open(self, plan: str):
        from painters.compiler.variants import compiled_variants
        from painters.routing import open_runner

        path = compiled_variants(self.graph, [plan], scores=str(self.scores))[plan]
        return open_runner(str(path), None, threads=self.threads)

    def latency(self, plan: str) -> dict:
        from painters.bench.latency import benchmark

        if self._baseline is None:
            self._baseline = self.open("baseline")
        runners = {"baseline": self._baseline}
        if plan != "baseline":
            runners[plan] = self.open(plan)
        try:
            rows = benchmark(runners, prompts=(self.grid.prompt,), gen=self.grid.gen, warmup=1,
                             iters=self.grid.iters)
        finally:
            if plan != "baseline":
                runners[plan].close()
        row, base = (next(r for r in rows if r.plan == name) for name in (plan, "baseline"))
        return {"prompt": self.grid.prompt, "gen": self.grid.gen, "iters": self.grid.iters, "backend": row.backend,
                "prefill_ms": row.prefill_ms, "decode_ms": row.decode_ms, "baseline_prefill_ms": base.prefill_ms,
                "baseline_decode_ms": base.decode_ms, "prefill_ratio": row.prefill_ratio,
                "decode_ratio": row.decode_ratio, "kv_cache_bytes": row.kv_cache_bytes,
                "baseline_kv_cache_bytes": base.kv_cache_bytes}

    def close(self) -> None:
        if self._baseline is not None:
            self._baseline.close()


def _run_one(run: PlannedRun, grid: Grid, timer: _Timer, *, data_dir: str, model: str, provenance: dict) -> dict:
    """One plan: accuracy through ``sweep.run_plan`` (the sweep's own run), then its latency vs baseline."""
    from painters.experiments.sweep import run_plan

    record = run_plan(model, run.variant, run.n, run.plan, grid.tasks, open_plan=timer.open, limit=grid.limit,
                      data_dir=data_dir)
    lat = timer.latency(run.plan)
    record.update(experiment=run.experiment, seed=run.seed, latency=lat, latency_ratio=lat["decode_ratio"],
                  provenance=provenance)
    return record


def parse_ints(text: str | None, option: str = "--n") -> tuple[int, ...]:
    """``2,4,8`` or ``2..8`` (inclusive) → a tuple; None or empty → () (the default axis); ``option`` names errors."""
    if not text:
        return ()
    from painters.experiments.sweep import parse_range

    return tuple(parse_range(text, option))


def describe_grid(grid: Grid, num_layers: int) -> Sequence[str]:
    """Plan names of a grid (for ``--dry-run``)."""
    return [r.plan for r in planned_runs(grid_for(grid, num_layers), num_layers)]
