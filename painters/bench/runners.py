"""Open the runner bench measures: MODEL and BACKEND decide the executor, a plan applies to sources only."""

from __future__ import annotations

import logging
from pathlib import Path

from painters.errors import BenchError
from painters.runtime.base import Runner

__all__ = ["open_runner", "BACKENDS"]

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "onnxruntime-cuda", "tensorrt", "tensorrt-rtx")
_ENGINE_BACKENDS = ("tensorrt", "tensorrt-rtx")


def _check_fixed_plan(model: Path, plan: str | None, runner: Runner) -> None:
    if plan is not None and plan.strip() != runner.info.plan:
        runner.close()
        raise BenchError(f"{model} is compiled for plan {runner.info.plan!r}; its plan cannot change at run time. "
                         f"Drop --plan, compile it with `painters compile {model} --plan {plan}`, or pass the "
                         f"source model (e.g. smollm2-135m) to run plan {plan!r} on the torch backend")


def open_runner(model: str, backend: str | None = None, plan: str | None = None, scores: str | None = None,
                threads: int | None = None) -> Runner:
    """A runner for MODEL: ``.onnx`` → OrtRunner, ``.engine`` → TrtRunner, anything else → TorchRunner.

    Args:
        model: An exported/compiled ``.onnx``, a TensorRT ``.engine``, or a source (``smollm2-135m``,
            ``tiny-llama``, a checkpoint directory or a ``.gguf``).
        backend: One of ``BACKENDS``; None picks the natural one for MODEL (``tensorrt-rtx`` for an engine).
        plan: A plan name or file, applied by the torch backend (default ``baseline``). Compiled models
            carry their plan; a different one here is an error.
        scores: Importance scores for ``drop_*_kN`` plans (torch backend).
        threads: CPU threads for onnxruntime / torch.
    """
    if backend is not None and backend not in BACKENDS:
        raise BenchError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    path = Path(model)
    if path.suffix == ".onnx":
        return _open_onnx(path, backend, plan, threads)
    if path.suffix == ".engine":
        return _open_engine(path, backend, plan)
    return _open_source(model, backend, plan, scores, threads)


def _open_onnx(path: Path, backend: str | None, plan: str | None, threads: int | None) -> Runner:
    backend = backend or "onnxruntime"
    if backend == "torch":
        raise BenchError(f"the torch backend runs a source model, not a graph: pass the source {path} was exported "
                         f"from (e.g. smollm2-135m, a checkpoint directory or a .gguf) with --plan, or use "
                         f"--backend onnxruntime for {path.name}")
    if backend in _ENGINE_BACKENDS:
        raise BenchError(f"{backend} runs an engine: build one with `painters compile {path} --plan P --engine "
                         f"OUT.engine` and pass OUT.engine")
    if not path.is_file():
        raise BenchError(f"model {path} not found")
    from painters.runtime.ort import OrtRunner

    runner = OrtRunner(path, device="cuda" if backend == "onnxruntime-cuda" else "cpu", threads=threads)
    runner.name = backend
    _check_fixed_plan(path, plan, runner)
    return runner


def _open_engine(path: Path, backend: str | None, plan: str | None) -> Runner:
    if backend is not None and backend not in _ENGINE_BACKENDS:
        raise BenchError(f"{path} is a TensorRT engine; it runs only with --backend tensorrt or tensorrt-rtx")
    if not path.is_file():
        raise BenchError(f"engine {path} not found")
    try:
        from painters.runtime.trt import TrtRunner
    except ModuleNotFoundError as exc:
        if exc.name not in ("painters.runtime.trt", "tensorrt", "tensorrt_rtx"):
            raise
        raise BenchError(f"cannot run {path}: the TensorRT runtime is unavailable ({exc}); "
                         "install painters[trt] or use an .onnx model") from exc
    runner = TrtRunner(path, backend=backend or "tensorrt-rtx")
    _check_fixed_plan(path, plan, runner)
    return runner


def _open_source(model: str, backend: str | None, plan: str | None, scores: str | None,
                 threads: int | None) -> Runner:
    if backend not in (None, "torch"):
        raise BenchError(f"{model} is a source model; the {backend} backend needs a graph or engine: export it with "
                         f"`painters export {model} -o model.onnx` (and `painters compile` for a plan), or use "
                         f"--backend torch")
    from painters.export.sources import load_source
    from painters.plans import load_scores, parse_plan
    from painters.runtime.torch_ref import TorchRunner

    if threads:
        import torch

        torch.set_num_threads(threads)
    loaded = load_source(model)
    score_table = load_scores(scores, model_hash=loaded.hash) if scores else None
    parsed = parse_plan(plan or "baseline", loaded.num_layers, scores=score_table)
    log.info("torch runner: %s, plan %s", loaded.name, parsed)
    return TorchRunner(loaded.model, parsed, tokenizer=loaded.tokenizer, model_hash=loaded.hash)
