"""What an engine is built from, resolved once: the graph (read without its weights), backend, dtype, profile
and target GPU. The builder and the cache key both read one :class:`EngineRequest`, so neither re-reads the
graph nor re-decides the target.

The network is strongly typed, so the engine computes in the graph's own dtypes; ``precision`` is only
checked against them. TensorRT-RTX builds without a GPU for an explicit compute capability; TensorRT builds
for the GPU it runs on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from painters.artifact import painters_props
from painters.compiler.engine.profiles import DimRange, parse_profile
from painters.decoder_io import INPUT_IDS, LOGITS, ONNX_DTYPES, PRECISIONS, dtype_name, is_past, precision_of
from painters.errors import BuildError, CompileError
from painters.tensorrt_lib import BACKENDS, gpu_name, import_trt

__all__ = ["GraphInfo", "graph_info", "EngineRequest", "engine_request", "DEFAULT_COMPUTE_CAPABILITY"]

DEFAULT_COMPUTE_CAPABILITY = "8.9"  # Ada: the oldest RTX target that runs fp32 GEMMs (SM75 refuses them)

IO = list[tuple[str, str, tuple[int | str, ...]]]  # (name, dtype, dims); symbolic dims as their names


@dataclass
class GraphInfo:
    """What the builder and the cache key need from a graph, read without its weights."""

    path: Path
    inputs: IO
    outputs: IO
    dtype: str | None  # the float dtype activations and the KV cache use
    metadata: dict[str, str] = field(default_factory=dict)
    external: list[tuple[str, int]] = field(default_factory=list)  # (location, bytes) of external data files

    def files(self) -> list[Path]:
        """Every file a build reads through this graph: itself, its external data, its side files."""
        from painters.compiler.graph_io import SIDE_FILES

        parent = self.path.parent
        return [self.path, *(parent / name for name, _ in self.external),
                *(f for f in (parent / n for n in SIDE_FILES) if f.is_file())]


def graph_info(onnx_path: str | Path) -> GraphInfo:
    """Read IO, float dtype, painters metadata and external data files of a graph; weights stay on disk."""
    from painters.compiler.graph_io import allowed_dir, external_files, fed_inputs, load_graph

    path = Path(onnx_path)
    try:
        model = load_graph(path)
        external = external_files(model, path.parent, allowed=allowed_dir(path))
    except CompileError as exc:  # an engine build reports its input's problems as build errors
        raise BuildError(str(exc)) from exc
    floats = {"float32", "float16", "bfloat16"}

    def io(values) -> IO:
        return [(v.name, _dtype_name(v.dtype), tuple(d if isinstance(d, int) else str(d.value or f"?{i}")
                                                     for i, d in enumerate(v.shape or ())))
                for v in values]

    if INPUT_IDS not in {v.name for v in model.graph.inputs} or LOGITS not in {v.name for v in model.graph.outputs}:
        raise BuildError(f"{path} is not a painters decoder graph (it needs an input {INPUT_IDS!r} and an output "
                         f"{LOGITS!r}); export the model with `painters export` and build from that")
    # The KV cache's dtype is the activation dtype; without a cache, the float dtype with the most weights.
    dtype = next((dt for name, dt, _ in io(model.graph.inputs) if is_past(name)), None)
    if dtype is None:
        counts: dict[str, int] = {}
        for v in model.graph.initializers.values():
            name = _dtype_name(v.const_value.dtype) if v.const_value is not None else None
            if name in floats:
                counts[name] = counts.get(name, 0) + v.const_value.size
        dtype = max(counts, key=counts.get) if counts else None
    return GraphInfo(path, io(fed_inputs(model.graph)), io(model.graph.outputs), dtype,
                     painters_props(model.metadata_props),
                     [(name, (path.parent / name).stat().st_size) for name in external])


def _dtype_name(dtype) -> str:
    return dtype_name(ONNX_DTYPES, dtype.name if dtype is not None else None)


@dataclass
class EngineRequest:
    """One engine to build, every setting resolved and checked (see :func:`engine_request`)."""

    graph: GraphInfo
    backend: str
    trt: Any  # the TensorRT module of the backend
    dtype: str  # the graph's float dtype (what the strongly typed network computes in)
    dims: dict[str, DimRange]
    target: str  # label of the target GPU, e.g. "SM89" or "gpu:NVIDIA H100"
    capability: Any  # trt.ComputeCapability to set, or None (TensorRT: the GPU it runs on)


def engine_request(onnx_path: str | Path, *, backend: str | None = None, precision: str | None = None,
                   profile: str | None = None, compute_capability: str | None = None) -> EngineRequest:
    """Resolve and check every build setting once: cheap checks first, then the graph, then TensorRT."""
    backend = backend or "tensorrt-rtx"
    if backend not in BACKENDS:
        raise BuildError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision is not None and precision not in PRECISIONS:
        raise BuildError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    dims = parse_profile(profile)
    graph = graph_info(onnx_path)
    dtype = _check_precision(graph, precision)
    trt = import_trt(backend)
    target, capability = _target(trt, backend, compute_capability)
    return EngineRequest(graph, backend, trt, dtype, dims, target, capability)


def _check_precision(graph: GraphInfo, precision: str | None) -> str:
    if precision is None:
        return graph.dtype or "unknown"
    if graph.dtype != PRECISIONS[precision]:
        have = precision_of(graph.dtype) or graph.dtype
        raise BuildError(f"{graph.path} computes in {graph.dtype} but precision {precision} was asked; the engine "
                         f"is strongly typed and follows the graph's dtypes, so re-export the model with "
                         f"`painters export --dtype {precision}`, or drop --precision (or pass {have})")
    return graph.dtype


def _target(trt, backend: str, compute_capability: str | None) -> tuple[str, Any]:
    """(label for the cache key, ComputeCapability or None) of the GPU the engine is for."""
    gpu = gpu_name()
    if backend == "tensorrt":
        if compute_capability:
            raise BuildError("--compute-capability applies to tensorrt-rtx only; TensorRT builds for the GPU it "
                             "runs on, so leave it out")
        if gpu is None:
            raise BuildError("backend tensorrt builds for the GPU it runs on and this machine has none (torch sees no "
                             "CUDA device); build on the target machine, or use --backend tensorrt-rtx with "
                             "--compute-capability 8.9, which builds without a GPU")
        return f"gpu:{gpu}", None
    if compute_capability is None and gpu is not None:
        return f"current:{gpu}", trt.ComputeCapability.CURRENT
    text = compute_capability or DEFAULT_COMPUTE_CAPABILITY
    name = "SM" + text.strip().upper().removeprefix("SM").replace(".", "")
    offered = [n for n in trt.ComputeCapability.__members__ if n[2:].isdigit()]
    if name not in offered:
        raise BuildError(f"compute capability {text!r} is not a TensorRT-RTX {trt.__version__} target; choose one of "
                         + ", ".join(f"{n[2:-1]}.{n[-1]}" for n in offered))
    return name, getattr(trt.ComputeCapability, name)
