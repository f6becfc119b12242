"""The one router from (MODEL, plans, backend) to runners, for bench, sweeps, serving and lm-eval.

MODEL decides what a plan means:

* a source (``smollm2-135m``, ``tiny-llama``, a checkpoint directory, a ``.gguf``) is loaded once; each plan runs
  on the torch reference executor (``torch``) or as the papers' eager Hugging Face path (``hf``);
* an exported ``.onnx`` is compiled once per plan (cached, :func:`painters.compiler.variants.compiled_variants`) and
  run by onnxruntime (``onnxruntime``, ``onnxruntime-cuda``) or built into a cached TensorRT engine and run there
  (``tensorrt``, ``tensorrt-rtx``);
* a compiled ``.onnx`` or a TensorRT ``.engine`` carries its plan: asking for another is an error;
* a ``.gguf`` (or ``smollm2-135m``) with ``--backend llama.cpp`` runs in llama.cpp as it is, its plan read from its
  record (baseline if none); a plan on a plain GGUF is deployed once into the cache
  (:func:`painters.targets.gguf.gguf_from_gguf`, quantized bytes kept) and run there;
* a deployed checkpoint with its own modeling code (Nemotron-NAS, ``auto_map``) runs its plan in transformers.

What MODEL is comes from :func:`painters.artifact.read_artifact` (by content, not suffix); plans are compared
by schedule (``drop_attn_1,2`` is ``drop_attn_1-2``), the artifact's from its record. The backends a kind of
artifact may run on are one table (``ROUTES``): another runner is one more row there and one more branch in
:meth:`ModelRunners.open`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from painters.artifact import Checkpoint, Engine, GenaiFolder, Graph, missing_artifact, read_artifact
from painters.decoder_io import precision_of
from painters.errors import BenchError, PlanError
from painters.plans import Plan
from painters.runtime.base import Runner
from painters.targets.common import DeployError

__all__ = ["open_runners", "open_runner", "ModelRunners", "RunnerSet", "ideal_ratio", "decode_weight_bytes", "BACKENDS",
           "SOURCE_BACKENDS", "ENGINE_BACKENDS", "LLAMACPP", "VLLM"]

log = logging.getLogger(__name__)

SOURCE_BACKENDS = ("torch", "hf")
ENGINE_BACKENDS = ("tensorrt", "tensorrt-rtx")
LLAMACPP = "llama.cpp"
VLLM = "vllm"  # a source deployed with `painters deploy vllm`, served by vLLM in its own venv
BACKENDS = ("torch", "hf", "onnxruntime", "onnxruntime-cuda", *ENGINE_BACKENDS, LLAMACPP, VLLM)
# how an artifact routes (Artifact.routes_as, or the backend asked) → (its natural backend, the backends it may
# run on); "gguf" is any GGUF on llama.cpp, "remote" a checkpoint that carries its own modeling code
ROUTES = {"source": ("torch", SOURCE_BACKENDS),
          "graph": ("onnxruntime", ("onnxruntime", "onnxruntime-cuda", *ENGINE_BACKENDS)),
          "engine": ("tensorrt-rtx", ENGINE_BACKENDS),
          "gguf": (LLAMACPP, (LLAMACPP,)),
          "remote": ("hf", ("hf",)),
          "vllm": (VLLM, (VLLM,))}


class RunnerSet(dict):
    """Runners keyed by row name (``PLAN``, ``hf/PLAN``, ``genai/PLAN``); as a context manager it closes them all."""

    def __enter__(self) -> RunnerSet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close every runner (device sessions, buffers)."""
        for runner in self.values():
            runner.close()


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
        self.model = model
        self.scores, self.fuse_parallel, self.threads, self.profile = scores, fuse_parallel, threads, profile
        what = missing_artifact(model)
        if what:
            raise BenchError(f"{what} {model} not found")
        if backend == LLAMACPP:  # llama.cpp runs a GGUF file (the built-in name stands for its own GGUF)
            self.artifact = read_artifact(_gguf_path(model))
            self.kind = "gguf"
        else:
            self.artifact = read_artifact(model)
            self.kind = self.artifact.routes_as
        if self.kind == "source" and backend in (None, "hf") and isinstance(self.artifact, Checkpoint):
            from painters.runtime.remote_code import is_remote_code

            if is_remote_code(self.artifact.path):  # a deployed Nemotron-NAS directory: its own code, its plan
                self.kind = "remote"
        if backend == VLLM:
            if self.kind != "source":
                raise BenchError(f"the vllm backend serves a source model deployed with `painters deploy vllm`; pass "
                                 f"the source {model} was made from (e.g. smollm2-135m or a checkpoint directory)")
            self.kind = "vllm"
        # the file a graph or engine backend opens (a GenAI folder's graph)
        self.path = self.artifact.graph if isinstance(self.artifact, GenaiFolder) else self.artifact.path
        self.backend = backend or ROUTES[self.kind][0]
        self._check_backend()
        self.fixed: Plan | None = None  # the plan a compiled graph, an engine or a deployed GGUF runs
        self._num_layers: int | None = None
        if self.kind == "vllm":
            self._scores = None  # the deployment reads the source and scores itself (painters.targets.vllm)
        elif self.kind == "remote":
            from painters.runtime.remote_code import RemoteCodeRunner

            self._remote = RemoteCodeRunner(self.path, threads=threads)
            self.fixed, self._scores = self._remote.plan, None
            self._num_layers = self.fixed.num_layers if self.fixed else None
        elif self.kind == "source":
            self._load_source(dtype or "fp32")
        elif self.kind == "gguf":
            self._read_gguf()
        else:
            self._read_artifact()
        if self.backend in ENGINE_BACKENDS:  # before any engine is built or loaded
            from painters.tensorrt_lib import require_cuda

            require_cuda(f"{model}: running a {self.backend} engine")

    # ---- what MODEL is --------------------------------------------------------------------------------------

    def _check_backend(self) -> None:
        model, backend = self.model, self.backend
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

    def _read_gguf(self) -> None:
        """The plan a GGUF records and its block count (a plain GGUF's record is baseline with ``blocks``)."""
        record = self.artifact.record
        self.fixed = record.plan
        blocks = self.fixed.num_layers if self.fixed else record.extra.get("blocks")
        if blocks is None:
            raise BenchError(f"{self.path}: the GGUF records no block count (ARCH.block_count); it is not a "
                             "model llama.cpp runs — convert it again with llama.cpp's convert_hf_to_gguf.py")
        self._num_layers = int(blocks)
        self._scores = None
        if self.scores:
            from painters.fileio import file_hash
            from painters.plans import load_scores

            self._scores = load_scores(self.scores, model_hash=file_hash(self.path))

    def _read_artifact(self) -> None:
        """The plan and block count a graph or engine records (an engine's sidecar holds the graph's record)."""
        if self.kind == "graph":  # its external data checked before any runner hands the file to onnxruntime
            from painters.compiler.graph_io import load_graph

            load_graph(self.path)
        record = self.artifact.record
        self.fixed = record.plan
        if self.fixed is not None:
            self._num_layers = self.fixed.num_layers
        self._scores = None
        if self.scores:
            from painters.plans import load_scores

            self._scores = load_scores(self.scores, model_hash=record.source_hash)

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
        have = self.fixed.name if self.fixed is not None else self.artifact.record.plan_name
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
        if self.kind == "vllm":
            from painters.runtime.vllm import open_vllm

            return open_vllm(self.model, plan or "baseline", scores=self.scores)
        if self.kind == "source":
            return self._open_source(plan or "baseline")
        if self.kind == "gguf":
            return self._open_gguf(plan)
        if self.kind == "remote":
            if plan is not None and self.fixed is not None:
                self._refuse_other_plan(plan)
            return self._remote
        if self.kind == "engine" or self.fixed is not None:
            if plan is not None:
                self._refuse_other_plan(plan)
            return self._open_graph(self.path)
        if plan is None:
            return self._open_graph(self.path)
        from painters.compiler.variants import compiled_variants  # baseline too: every plan through one pipeline

        compiled = compiled_variants(self.path, [plan], scores=self.scores, fuse_parallel=self.fuse_parallel)
        return self._open_graph(compiled[plan])

    def _open_source(self, plan: str) -> Runner:
        from painters.runtime.hf import HfRunner
        from painters.runtime.torch_ref import TorchRunner

        parsed = self.parse(plan)
        runner_class = HfRunner if self.backend == "hf" else TorchRunner
        log.info("%s runner: %s, plan %s", self.backend, self.loaded.name, parsed)
        return runner_class(self.loaded.model, parsed, tokenizer=self.loaded.tokenizer, model_hash=self.loaded.hash)

    def _open_gguf(self, plan: str | None) -> Runner:
        """llama.cpp on the GGUF, or on the plan deployed from a plain GGUF into the cache (once per plan)."""
        from painters.runtime.llamacpp import LlamaCppRunner

        path = self.path
        if self.fixed is not None and plan is not None:
            self._refuse_other_plan(plan)
        elif plan is not None and plan.strip() != "baseline":
            path = _deployed_gguf(self.path, self.parse(plan), self.scores)
        runner = LlamaCppRunner(path, threads=self.threads)
        runner.artifact = read_artifact(path)
        return runner

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
        if not isinstance(self.artifact, Engine):  # a graph (or a plan compiled from it): build it first
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
                 anchor: str | Sequence[str] | None = None, scores: str | None = None, fuse_parallel: bool = True,
                 threads: int | None = None, dtype: str | None = None,
                 profile: str | None = None) -> RunnerSet:
    """Runners for ``plans`` of MODEL, keyed by plan name (None: the model's own plan, keyed by its name).

    The result is a dict and a context manager (``with open_runners(...) as runners:`` closes them all).

    ``anchor`` — one or several, each adding rows for the same plans, so engines sit in one table:
    a source model (with a graph MODEL) adds the papers' eager Hugging Face path for every plan as ``hf/PLAN``, in
    the graph's dtype unless ``dtype`` says otherwise; ``ort-genai:DIR`` times onnxruntime-genai's generator on the
    builder's folder DIR with every plan compiled on it, as ``genai/PLAN`` (:mod:`painters.bench.genai_anchor`);
    ``vllm:SRC`` serves every plan deployed on the source SRC with vLLM, as ``vllm/PLAN``
    (:mod:`painters.runtime.vllm`); ``llama.cpp:FILE`` runs every plan a GGUF can carry and the full model in
    llama.cpp, as ``llama.cpp/PLAN`` (a plan it cannot carry is left out with a warning). On an error every runner
    opened so far is closed. Other arguments: :class:`ModelRunners`.
    """
    plans = list(plans) if plans else [None]
    anchors = [anchor] if isinstance(anchor, str) else list(anchor or ())
    models = ModelRunners(model, backend, scores=scores, fuse_parallel=fuse_parallel, threads=threads, dtype=dtype,
                          profile=profile)
    engines = (f"{LLAMACPP}:", f"{VLLM}:")
    if models.kind == "source" and any(not a.startswith(engines) for a in anchors):
        raise BenchError("--anchor adds the papers' path beside an exported .onnx; with a source MODEL use "
                         "--backend hf instead")
    runners = RunnerSet()
    try:
        for plan in plans:
            runner = models.open(plan)
            runners[plan if plan is not None else runner.info.plan] = runner
        names = list(runners)  # every anchor adds rows for the model's own plans, not for another anchor's
        for one in anchors:
            runners.update(_anchor_runners(one, names, first=runners[names[0]], scores=scores, threads=threads,
                                           dtype=dtype))
    except BaseException:
        runners.close()
        raise
    return runners


def _anchor_runners(anchor: str, names: list[str], *, first: Runner, scores: str | None, threads: int | None,
                    dtype: str | None) -> dict[str, Runner]:
    """The rows one ``--anchor`` adds for the plans ``names`` (see :func:`open_runners`)."""
    runners: dict[str, Runner] = {}
    try:
        if anchor.startswith(f"{VLLM}:"):  # vLLM serving each plan deployed on the source: rows vllm/PLAN
            from painters.runtime.vllm import open_vllm

            for name in names:
                runners[f"{VLLM}/{name}"] = open_vllm(anchor.removeprefix(f"{VLLM}:"), name, scores=scores)
        elif anchor.startswith("ort-genai:"):  # ONNX Runtime GenAI's generator: rows genai/PLAN
            from painters.bench.genai_anchor import genai_runners

            runners.update(genai_runners(anchor, names, scores))
        elif anchor.startswith(f"{LLAMACPP}:"):  # llama.cpp: rows llama.cpp/PLAN and llama.cpp/baseline
            runners.update(_llamacpp_rows(anchor.removeprefix(f"{LLAMACPP}:"), names, scores, threads))
        else:
            hf = ModelRunners(anchor, "hf", scores=scores, threads=threads,
                              dtype=dtype or precision_of(first.info.dtype) or "fp32")
            for name in names:
                runners[f"hf/{name}"] = hf.open(name)
    except BaseException:
        RunnerSet(runners).close()
        raise
    return runners


def _llamacpp_rows(path: str, names: list[str], scores: str | None, threads: int | None) -> dict[str, Runner]:
    """llama.cpp rows: a deployed GGUF runs its own plan; a plain one every plan a GGUF carries, and baseline."""
    engine = ModelRunners(path, LLAMACPP, scores=scores, threads=threads)
    if engine.fixed is not None:
        return {f"{LLAMACPP}/{engine.fixed.name}": engine.open(None)}
    runners: dict[str, Runner] = {}
    for name in dict.fromkeys([*names, "baseline"]):
        try:
            runners[f"{LLAMACPP}/{name}"] = engine.open(name)
        except DeployError as exc:  # a parallel group or a loop: no GGUF carries it (the vLLM anchor does)
            log.warning("%s/%s left out: %s", LLAMACPP, name, exc)
    return runners


def _gguf_path(model: str) -> Path:
    if model == "smollm2-135m":
        from painters.export.sources import smollm2_path

        return smollm2_path()
    path = Path(model)
    if not path.is_file():
        raise BenchError(f"GGUF {path} not found; the {LLAMACPP} backend runs a .gguf file (or smollm2-135m)")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise BenchError(f"the {LLAMACPP} backend runs a .gguf (or smollm2-135m), not {model}; deploy one with "
                             f"`painters deploy gguf {model} --plan PLAN -o OUT.gguf`")
    return path


def _deployed_gguf(path: Path, plan: Plan, scores: str | None) -> Path:
    """``plan`` on the plain GGUF ``path``, deployed once under ``$PAINTERS_CACHE/gguf`` (keyed by file and plan)."""
    from painters.cache import cache_dir
    from painters.fileio import file_hash
    from painters.targets.gguf import gguf_from_gguf

    key = hashlib.sha256(f"{file_hash(path)}:{plan.to_json_text()}".encode()).hexdigest()[:16]
    out = cache_dir("gguf") / f"{path.stem}.{key}.gguf"
    if not out.is_file():
        gguf_from_gguf(path, plan, out)
    return out


def open_runner(model: str, backend: str | None = None, plan: str | None = None, scores: str | None = None,
                threads: int | None = None) -> Runner:
    """The one runner of :func:`open_runners` for a single plan (accuracy, serving, lm-eval)."""
    (runner,) = open_runners(model, [plan] if plan else None, backend, scores=scores, threads=threads).values()
    return runner


def ideal_ratio(runner: Runner) -> float | None:
    """Sublayer evaluations of the runner's plan relative to baseline, from the record it carries (an uncompiled
    export runs baseline: 1.0); None when the runner carries no record."""
    artifact = getattr(runner, "artifact", None)
    return artifact.record.ideal_ratio() if artifact is not None and artifact.record is not None else None


def decode_weight_bytes(runner: Runner) -> int | None:
    """Weights one decode step of the runner reads (:mod:`painters.bench.weight_reads`), from the ONNX graph it
    runs (onnxruntime and GenAI runners); None for engines and source models."""
    from painters.bench.weight_reads import weight_bytes

    artifact = getattr(runner, "artifact", None)
    if isinstance(artifact, GenaiFolder):
        return weight_bytes(artifact.graph) if artifact.graph.is_file() else None
    if isinstance(artifact, Graph) and artifact.path.is_file():
        return weight_bytes(artifact.path)
    return None
