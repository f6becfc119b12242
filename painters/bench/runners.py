"""The one router from (MODEL, plans, backend) to runners, for bench, sweeps, serving and lm-eval.

MODEL decides what a plan means:

* a source (``smollm2-135m``, ``tiny-llama``, a checkpoint directory, a ``.gguf``) is loaded once; each plan runs
  on the torch reference executor (``torch``) or as the papers' eager Hugging Face path (``hf``);
* an exported ``.onnx`` is compiled once per plan (cached, :func:`painters.bench.latency.compiled_variants`) and
  run by onnxruntime (``onnxruntime``, ``onnxruntime-cuda``) or built into a cached TensorRT engine and run there
  (``tensorrt``, ``tensorrt-rtx``);
* a compiled ``.onnx`` or a TensorRT ``.engine`` carries its plan: asking for another is an error.

Plans are compared by schedule (``drop_attn_1,2`` is ``drop_attn_1-2``), the graph's from its
``painters.schedule`` metadata (:mod:`painters.graph_metadata`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from painters.decoder_io import precision_of
from painters.errors import BenchError, PlanError
from painters.graph_metadata import PLAN, painters_metadata, read_schedule
from painters.plans import Plan
from painters.runtime.base import Runner
from painters.tensorrt_lib import read_sidecar

__all__ = ["open_runners", "open_runner", "ModelRunners", "ideal_ratio", "decode_weight_bytes", "BACKENDS",
           "SOURCE_BACKENDS", "ENGINE_BACKENDS", "VLLM_BACKEND"]

log = logging.getLogger(__name__)

SOURCE_BACKENDS = ("torch", "hf")
ENGINE_BACKENDS = ("tensorrt", "tensorrt-rtx")
VLLM_BACKEND = "vllm"  # a source deployed with `painters deploy vllm`, served by vLLM in its own venv
BACKENDS = ("torch", "hf", "onnxruntime", "onnxruntime-cuda", *ENGINE_BACKENDS, VLLM_BACKEND)


class ModelRunners:
    """MODEL opened once; :meth:`open` gives a runner for a plan (see the module docstring).

    Args:
        model: a source, an exported or compiled ``.onnx``, or a TensorRT ``.engine``.
        backend: one of ``BACKENDS``; None picks MODEL's natural one (torch, onnxruntime, tensorrt-rtx).
        scores: importance scores for ``drop_*_kN`` plans.
        fuse_parallel: compile parallel groups as wide blocks (an exported ``.onnx``).
        threads: CPU threads (onnxruntime, torch).
        dtype: fp32, fp16 or bf16 of a source model [fp32].
        profile: engine shape ranges when an ``.onnx`` is built for a TensorRT backend [the builder's default].
    """

    def __init__(self, model: str, backend: str | None = None, *, scores: str | None = None,
                 fuse_parallel: bool = True, threads: int | None = None, dtype: str | None = None,
                 profile: str | None = None):
        if backend is not None and backend not in BACKENDS:
            raise BenchError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.model, self.path = model, Path(model)
        self.scores, self.fuse_parallel, self.threads, self.profile = scores, fuse_parallel, threads, profile
        self.kind = {".onnx": "graph", ".engine": "engine"}.get(self.path.suffix, "source")
        self.backend = backend or {"graph": "onnxruntime", "engine": "tensorrt-rtx", "source": "torch"}[self.kind]
        self._check_backend()
        self.fixed: Plan | None = None  # the plan a compiled graph or an engine runs
        self._num_layers: int | None = None
        self._meta: dict[str, str] = {}
        if self.backend == VLLM_BACKEND:
            self._scores = None  # the deployment reads the source and scores itself (painters.targets.vllm)
        elif self.kind == "source":
            self._load_source(dtype or "fp32")
        else:
            self._read_artifact()
        if self.backend in ENGINE_BACKENDS:  # before any engine is built or loaded
            from painters.tensorrt_lib import require_cuda

            require_cuda(f"{model}: running a {self.backend} engine")

    # ---- what MODEL is --------------------------------------------------------------------------------------

    def _check_backend(self) -> None:
        model, backend = self.model, self.backend
        if backend == VLLM_BACKEND:
            if self.kind != "source":
                raise BenchError(f"the vllm backend serves a source model deployed with `painters deploy vllm`; pass "
                                 f"the source {model} was made from (e.g. smollm2-135m or a checkpoint directory)")
            return
        if self.kind == "source" and backend not in SOURCE_BACKENDS:
            raise BenchError(f"{model} is a source model; the {backend} backend needs a graph or engine: export it "
                             f"with `painters export {model} -o model.onnx` and pass model.onnx (plans are compiled "
                             f"from it), or use --backend torch")
        if self.kind == "graph" and backend in SOURCE_BACKENDS:
            raise BenchError(f"the {backend} backend runs a source model, not a graph: pass the source {model} was "
                             f"exported from (e.g. smollm2-135m, a checkpoint directory or a .gguf), or use "
                             f"--backend onnxruntime for {self.path.name} (--anchor SRC times the papers' path beside "
                             "it)")
        if self.kind == "engine" and backend not in ENGINE_BACKENDS:
            raise BenchError(f"{model} is a TensorRT engine; it runs only with --backend tensorrt or tensorrt-rtx")

    def _load_source(self, dtype: str) -> None:
        from painters.export.sources import load_source
        from painters.plans import load_scores

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        self.loaded = load_source(self.model, dtype=dtype)
        self._num_layers = self.loaded.num_layers
        self._scores = load_scores(self.scores, model_hash=self.loaded.hash) if self.scores else None

    def _read_artifact(self) -> None:
        """The plan and block count a graph or engine records (its metadata; an engine's sidecar holds the graph's)."""
        if not self.path.is_file():
            what = "engine" if self.kind == "engine" else "model"
            raise BenchError(f"{what} {self.path} not found")
        if self.kind == "engine":
            self._meta = painters_metadata(read_sidecar(self.path).get("inputs", {}).get("metadata", {}))
        else:
            from painters.compiler.graph_io import load_graph

            self._meta = painters_metadata(load_graph(self.path).metadata_props)
        self.fixed = read_schedule(self._meta)
        if self.fixed is not None:
            self._num_layers = self.fixed.num_layers
        self._scores = None
        if self.scores:
            from painters.plans import load_scores

            self._scores = load_scores(self.scores, model_hash=self._meta.get("painters.source_hash", ""))

    @property
    def num_layers(self) -> int | None:
        """Decoder blocks of the source MODEL was made from (None: an engine without its sidecar)."""
        if self._num_layers is None and self.kind == "graph":
            from painters.compiler.compile import describe

            self._num_layers = describe(self.path).get("blocks")  # read once, when a plan needs it
        return self._num_layers

    # ---- plans ----------------------------------------------------------------------------------------------

    def parse(self, plan: str) -> Plan:
        """``plan`` (a name or a plan file) for this model's blocks."""
        from painters.plans import parse_plan

        if self.num_layers is None:
            raise BenchError(f"{self.model} records no block count (an engine without its sidecar?); run it "
                             "without a plan, or rebuild it with `painters engine build`")
        return parse_plan(plan, self.num_layers, scores=self._scores)

    def _refuse_other_plan(self, plan: str) -> None:
        """A compiled graph or engine runs the plan it was compiled for: refuse any other (by schedule)."""
        have = self.fixed.name if self.fixed is not None else self._meta.get(PLAN, "baseline")
        same = plan.strip() == have
        if not same and self.fixed is not None:
            try:
                same = self.parse(plan) == self.fixed
            except PlanError:
                same = False
        if not same:
            raise BenchError(f"{self.model} is compiled for plan {have!r}; its plan cannot change at run time. Drop "
                             f"--plan, compile the exported graph with `painters compile MODEL.onnx --plan {plan}`, "
                             f"or pass the source model (e.g. smollm2-135m) to run plan {plan!r} on the torch backend")

    # ---- runners --------------------------------------------------------------------------------------------

    def open(self, plan: str | None = None) -> Runner:
        """A runner for ``plan`` (None: the model's own plan, baseline for a source or an export)."""
        if self.backend == VLLM_BACKEND:
            from painters.runtime.vllm import open_vllm

            return open_vllm(self.model, plan or "baseline", scores=self.scores)
        if self.kind == "source":
            return self._open_source(plan or "baseline")
        if self.kind == "engine" or self.fixed is not None:
            if plan is not None:
                self._refuse_other_plan(plan)
            return self._open_graph(self.path)
        if plan is None:
            return self._open_graph(self.path)
        from painters.bench.latency import compiled_variants  # baseline too: every plan through one pipeline

        compiled = compiled_variants(self.path, [plan], scores=self.scores, fuse_parallel=self.fuse_parallel)
        return self._open_graph(compiled[plan])

    def _open_source(self, plan: str) -> Runner:
        from painters.runtime.hf import HfRunner
        from painters.runtime.torch_ref import TorchRunner

        parsed = self.parse(plan)
        runner_class = HfRunner if self.backend == "hf" else TorchRunner
        log.info("%s runner: %s, plan %s", self.backend, self.loaded.name, parsed)
        return runner_class(self.loaded.model, parsed, tokenizer=self.loaded.tokenizer, model_hash=self.loaded.hash)

    def _open_graph(self, path: Path) -> Runner:
        if self.backend in ENGINE_BACKENDS:
            return self._open_engine(path)
        from painters.runtime.ort import OrtRunner

        runner = OrtRunner(path, device="cuda" if self.backend == "onnxruntime-cuda" else "cpu", threads=self.threads)
        runner.name = self.backend
        return runner

    def _open_engine(self, path: Path) -> Runner:
        """An engine runs as it is; a graph is built into a cached engine first (never without a GPU to run it)."""
        from painters.tensorrt_lib import require_cuda

        require_cuda(f"{path}: running a {self.backend} engine")  # checked on entry too; kept beside the build
        if path.suffix != ".engine":
            from painters.compiler.engine import cached_engine

            path = cached_engine(path, backend=self.backend, profile=self.profile)
        try:
            from painters.runtime.trt import TrtRunner
        except ModuleNotFoundError as exc:
            if exc.name not in ("painters.runtime.trt", "tensorrt", "tensorrt_rtx"):
                raise
            raise BenchError(f"cannot run {path}: the TensorRT runtime is unavailable ({exc}); "
                             "install painters[trt] or use an .onnx model") from exc
        return TrtRunner(path, backend=self.backend)


def open_runners(model: str, plans: Sequence[str | None] | None = None, backend: str | None = None, *,
                 anchor: str | None = None, scores: str | None = None, fuse_parallel: bool = True,
                 threads: int | None = None, dtype: str | None = None,
                 profile: str | None = None) -> dict[str, Runner]:
    """Runners for ``plans`` of MODEL, keyed by plan name (None: the model's own plan, keyed by its name).

    ``anchor`` (a source model, with a graph MODEL) adds the papers' eager Hugging Face path for every plan as
    ``hf/PLAN``, in the graph's dtype unless ``dtype`` says otherwise; ``ort-genai:DIR`` instead times
    onnxruntime-genai's generator on the builder's folder DIR with every plan compiled on it, as ``genai/PLAN``
    (:mod:`painters.bench.genai_anchor`); ``vllm:SRC`` serves every plan deployed on the source SRC with vLLM, as
    ``vllm/PLAN`` (:mod:`painters.runtime.vllm`). On an error every runner opened so far
    is closed. Other arguments: :class:`ModelRunners`.
    """
    plans = list(plans) if plans else [None]
    models = ModelRunners(model, backend, scores=scores, fuse_parallel=fuse_parallel, threads=threads, dtype=dtype,
                          profile=profile)
    if anchor and models.kind == "source":
        raise BenchError("--anchor adds the papers' path beside an exported .onnx; with a source MODEL use "
                         "--backend hf instead")
    runners: dict[str, Runner] = {}
    try:
        for plan in plans:
            runner = models.open(plan)
            runners[plan if plan is not None else runner.info.plan] = runner
        if anchor and anchor.startswith("vllm:"):  # vLLM serving each plan deployed on the source: rows vllm/PLAN
            from painters.runtime.vllm import ANCHOR_PREFIX, open_vllm

            for name in list(runners):
                runners[f"vllm/{name}"] = open_vllm(anchor.removeprefix(ANCHOR_PREFIX), name, scores=scores)
        elif anchor and anchor.startswith("ort-genai:"):  # ONNX Runtime GenAI's generator: rows genai/PLAN
            from painters.bench.genai_anchor import genai_runners

            runners.update(genai_runners(anchor, list(runners), scores))
        elif anchor:
            first = next(iter(runners.values()))
            hf = ModelRunners(anchor, "hf", scores=scores, threads=threads,
                              dtype=dtype or precision_of(first.info.dtype) or "fp32")
            for name in list(runners):
                runners[f"hf/{name}"] = hf.open(name)
    except BaseException:
        for runner in runners.values():
            runner.close()
        raise
    return runners


def open_runner(model: str, backend: str | None = None, plan: str | None = None, scores: str | None = None,
                threads: int | None = None) -> Runner:
    """The one runner of :func:`open_runners` for a single plan (accuracy, serving, lm-eval)."""
    (runner,) = open_runners(model, [plan] if plan else None, backend, scores=scores, threads=threads).values()
    return runner


def ideal_ratio(runner: Runner) -> float | None:
    """Sublayer evaluations of the runner's plan relative to baseline: its own plan (torch, hf), or the schedule
    the compiler recorded in the graph (an uncompiled export runs baseline: 1.0); None when nothing says."""
    plan = getattr(runner, "plan", None)
    if isinstance(plan, Plan):
        return plan.ideal_cost_ratio()
    meta = getattr(runner, "metadata", None)
    if meta is None:
        return None
    schedule = read_schedule(meta)
    return schedule.ideal_cost_ratio() if schedule is not None else 1.0


def decode_weight_bytes(runner: Runner) -> int | None:
    """Weights one decode step of the runner reads (:mod:`painters.bench.weight_reads`), from the ONNX graph it
    runs (onnxruntime and GenAI runners); None for engines and source models."""
    from painters.bench.weight_reads import weight_bytes

    path = getattr(runner, "path", None)
    if path is None or Path(path).suffix != ".onnx" or not Path(path).is_file():
        return None
    return weight_bytes(path)

