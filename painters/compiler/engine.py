"""TensorRT and TensorRT-RTX engines from ONNX decoder graphs: one builder for both flavours, and a cache.

The network is strongly typed, so the engine computes in the graph's own dtypes; ``precision`` is only
checked against them. Every engine gets two optimization profiles over the named dims batch, seq and
past: prefill (seq as given) and decode (seq = 1), because one profile stretched over both makes the
decode kernels pay for prefill-sized tactics. TensorRT-RTX builds without a GPU for an explicit compute
capability; TensorRT builds for the GPU it runs on.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from painters.cache import cache_dir
from painters.decoder_io import (
    INPUT_IDS,
    LOGITS,
    ONNX_DTYPES,
    PRECISIONS,
    dim_roles,
    dtype_name,
    is_past,
    past_name,
    precision_of,
)
from painters.errors import BuildError, CompileError
from painters.fileio import atomic_write, check_outputs, file_hash

__all__ = ["BACKENDS", "DEFAULT_PROFILE", "DEFAULT_COMPUTE_CAPABILITY", "DimRange", "GraphInfo", "EngineFromOnnx",
           "import_trt", "gpu_name", "trt_logger", "parse_profile", "profile_shapes", "graph_info", "engine_key",
           "sidecar_path", "build_engine", "cached_engine"]

log = logging.getLogger(__name__)

BACKENDS = ("tensorrt-rtx", "tensorrt")
DEFAULT_PROFILE = "batch=1:1:8,seq=1:128:512,past=0:128:512"
DEFAULT_COMPUTE_CAPABILITY = "8.9"  # Ada: the oldest RTX target that runs fp32 GEMMs (SM75 refuses them)
_DIMS = ("batch", "seq", "past")
_MAX_DIM = 2**31 - 1  # TensorRT shapes are int32


@dataclass(frozen=True)
class DimRange:
    """min ≤ opt ≤ max of one named dim; TensorRT tunes for opt and accepts anything in range."""

    min: int
    opt: int
    max: int

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass
class GraphInfo:
    """What the builder and the cache key need from a graph, read without its weights."""

    path: Path
    inputs: list[tuple[str, str, tuple[int | str, ...]]]  # (name, dtype, dims); symbolic dims as their names
    outputs: list[tuple[str, str, tuple[int | str, ...]]]
    dtype: str | None  # the float dtype activations and the KV cache use
    metadata: dict[str, str] = field(default_factory=dict)
    external: list[tuple[str, int]] = field(default_factory=list)  # (location, bytes) of external data files


def import_trt(backend: str):
    """The TensorRT module of ``backend``, imported on first use so the rest of painters runs without it."""
    if backend not in BACKENDS:
        raise BuildError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    rtx_pip = "pip install tensorrt-rtx-cu13 tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings"
    try:
        return importlib.import_module("tensorrt_rtx" if backend == "tensorrt-rtx" else "tensorrt")
    except ImportError as exc:
        if backend == "tensorrt":
            raise BuildError(f"backend 'tensorrt' needs NVIDIA TensorRT, which is not installed ({exc}); install it "
                             f"with `pip install painters[trt]`, or use --backend tensorrt-rtx: TensorRT-RTX is the "
                             f"pip-installable alternative (`{rtx_pip}`) and builds without a GPU") from exc
        raise BuildError(f"backend 'tensorrt-rtx' needs TensorRT-RTX, which is not installed ({exc}); "
                         f"install it with `{rtx_pip}`") from exc


@functools.cache
def gpu_name() -> str | None:
    """The CUDA GPU's name, or None on a machine without one (TensorRT-RTX then builds for a named target)."""
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def parse_profile(spec: str | None) -> dict[str, DimRange]:
    """Parse ``batch=1:8:32,seq=1:128:2048,past=0:512:4096``; dims left out keep their defaults.

    A single number (``batch=4``) fixes a dim. batch and seq start at 1; past may be 0 (empty cache).
    """
    dims = _parse_items(DEFAULT_PROFILE)
    dims.update(_parse_items(spec or ""))
    return dims


def _parse_items(spec: str) -> dict[str, DimRange]:
    dims: dict[str, DimRange] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, values = (s.strip() for s in item.partition("="))
        if not sep or name not in _DIMS:
            raise BuildError(f"profile item {item!r}: expected NAME=MIN:OPT:MAX with NAME one of {', '.join(_DIMS)}, "
                             f"e.g. {DEFAULT_PROFILE}")
        if name in dims:
            raise BuildError(f"profile names {name} twice; give each of {', '.join(_DIMS)} at most once")
        parts = values.split(":") if ":" in values else [values] * 3
        try:
            lo, opt, hi = (int(p) for p in parts)
        except ValueError:
            raise BuildError(f"profile {item!r}: expected three integers MIN:OPT:MAX (or one, to fix the size), "
                             f"e.g. {name}=1:128:512") from None
        if max(lo, opt, hi) > _MAX_DIM:
            raise BuildError(f"profile {item!r}: {name} must be at most {_MAX_DIM} (TensorRT dims are 32-bit); "
                             f"e.g. {name}=1:128:512")
        floor = 0 if name == "past" else 1
        if lo < floor:
            raise BuildError(f"profile {item!r}: {name} starts at {floor} or more; write {name}={floor}:{opt}:{hi}")
        if not lo <= opt <= hi:
            fix = ":".join(str(v) for v in sorted((lo, opt, hi)))
            raise BuildError(f"profile {item!r}: needs min ≤ opt ≤ max; write {name}={fix}")
        dims[name] = DimRange(lo, opt, hi)
    return dims


def _profile_spec(dims: dict[str, DimRange]) -> str:
    return ",".join(f"{name}={dims[name]}" for name in _DIMS)


def profile_shapes(graph: GraphInfo, dims: dict[str, DimRange]) -> list[dict[str, tuple[tuple[int, ...], ...]]]:
    """Per input (min, opt, max) shapes of the two profiles: prefill (index 0) and decode (index 1, seq = 1).

    Static dims of the graph win over the spec, so a graph exported with a fixed batch still builds.
    """
    has_kv = any(is_past(name) for name, _, _ in graph.inputs)
    dims = dims if has_kv else {**dims, "past": DimRange(0, 0, 0)}  # no cache: the mask covers seq only
    profiles = []
    for seq in (dims["seq"], DimRange(1, 1, 1)):
        ranges = {**dims, "seq": seq}
        ranges["past+seq"] = DimRange(*(getattr(dims["past"], a) + getattr(seq, a) for a in ("min", "opt", "max")))
        profiles.append({name: _input_shapes(name, shape, ranges) for name, _, shape in graph.inputs
                         if not all(isinstance(d, int) for d in shape)})
    return profiles


def _input_shapes(name: str, shape: tuple[int | str, ...], ranges: dict[str, DimRange]):
    roles = dim_roles(name)
    if roles is None or len(roles) != len(shape):
        raise BuildError(f"input {name} {list(shape)} has symbolic dims but is not part of the decoder IO "
                         f"convention (input_ids, attention_mask, position_ids, {past_name('N', 'key/value')} with "
                         "the usual ranks); "
                         "painters cannot choose its shape range — export it with static dims or remove it")
    lows, opts, highs = [], [], []
    for axis, (dim, role) in enumerate(zip(shape, roles)):
        if isinstance(dim, int):
            r = DimRange(dim, dim, dim)
        elif role is None:
            raise BuildError(f"input {name}: dim {axis} ({dim!r}) is symbolic, but kv_heads and head_dim must be "
                             "static for painters to size the cache; re-export the model with static head dims")
        else:
            r = ranges[role]
        lows.append(r.min), opts.append(r.opt), highs.append(r.max)
    return tuple(lows), tuple(opts), tuple(highs)


def graph_info(onnx_path: str | Path) -> GraphInfo:
    """Read IO, float dtype, painters metadata and external data files of a graph; weights stay on disk."""

    from painters.compiler.graph_io import allowed_dir, external_files, load_graph

    path = Path(onnx_path)
    try:
        model = load_graph(path)
        external = external_files(model, path.parent, allowed=allowed_dir(path))
    except CompileError as exc:
        raise BuildError(str(exc)) from exc
    floats = {"float32", "float16", "bfloat16"}

    def io(values) -> list[tuple[str, str, tuple[int | str, ...]]]:
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
    return GraphInfo(path, io(model.graph.inputs), io(model.graph.outputs), dtype,
                     {k: v for k, v in model.metadata_props.items() if k.startswith("painters.")},
                     [(name, (path.parent / name).stat().st_size) for name in external])


def _dtype_name(dtype) -> str:
    return dtype_name(ONNX_DTYPES, dtype.name if dtype is not None else None)


def _check_precision(graph: GraphInfo, precision: str | None) -> str:
    if precision is None:
        return graph.dtype or "unknown"
    if precision not in PRECISIONS:
        raise BuildError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
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


def content_hash(path: str | Path) -> str:
    """sha256 of every byte of ``path``, memoized by (resolved path, inode, size, mtime_ns, ctime_ns).

    Why a full hash: an engine bakes in every weight byte, so the cache key must change with any byte of the
    data (``file_hash`` samples files over 1 GiB and would miss an edit elsewhere). Why the memo is safe:
    every write to a file, and every ``utime`` that restores its mtime, sets its ctime to the current time,
    and nothing but the kernel can set ctime back, so an unchanged identity tuple means unchanged bytes;
    the memo only saves re-reading multi-GB data on every build.
    """
    path = Path(path).resolve()
    st = path.stat()
    ident = f"{path}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    memo = cache_dir("hashes") / (hashlib.sha256(ident.encode()).hexdigest() + ".sha256")
    if memo.is_file():
        return memo.read_text().strip()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(16 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    _write_atomic(memo, digest.encode())
    return digest


def _key_inputs(trt, graph: GraphInfo, backend: str, dtype: str, dims: dict[str, DimRange], target: str) -> dict:
    external = [(name, size, content_hash(graph.path.parent / name)) for name, size in graph.external]
    return {"graph": content_hash(graph.path), "external": external, "metadata": graph.metadata,
            "backend": backend, "trt_version": trt.__version__, "precision": dtype,
            "profile": _profile_spec(dims), "target": target}


def _digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def engine_key(onnx_path: str | Path, *, backend: str = "tensorrt-rtx", precision: str | None = None,
               profile: str | None = None, compute_capability: str | None = None) -> tuple[str, dict]:
    """sha256 naming everything that changes the engine bytes, and the inputs it hashes (for the sidecar)."""
    trt = import_trt(backend)
    dims = parse_profile(profile)
    graph = graph_info(onnx_path)
    inputs = _key_inputs(trt, graph, backend, _check_precision(graph, precision), dims,
                         _target(trt, backend, compute_capability)[0])
    return _digest(inputs), inputs


def trt_logger(trt):
    """One logger per TensorRT module (TensorRT warns when builders get different ones); keeps the errors."""
    if getattr(trt, "_painters_logger", None) is None:
        sev = trt.ILogger.Severity
        levels = {sev.INTERNAL_ERROR: logging.WARNING, sev.ERROR: logging.WARNING, sev.WARNING: logging.INFO,
                  sev.INFO: logging.DEBUG}

        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity, msg):
                if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                    self.errors.append(msg)
                if severity in levels:
                    log.log(levels[severity], "%s: %s", trt.__name__, msg)

        trt._painters_logger = _Logger()
    trt._painters_logger.errors.clear()
    return trt._painters_logger


def _write_atomic(path: Path, data) -> None:
    """Write via a temp file in the same directory and rename (:func:`painters.fileio.atomic_write`)."""
    atomic_write(path, data)


class EngineFromOnnx:
    """Serialized engine bytes from an ONNX decoder graph: configure in ``__init__``, build in ``__call__``.

    After a call, ``network_io`` lists the parsed network's (name, "input"/"output", dtype, shape) and
    ``key``/``key_inputs``/``seconds`` describe the build.
    """

    def __init__(self, onnx_path: str | Path, *, backend: str | None = None, precision: str | None = None,
                 profile: str | None = None, compute_capability: str | None = None,
                 timing_cache: str | Path | None = None):
        self.onnx_path = Path(onnx_path)
        self.backend = backend or "tensorrt-rtx"
        self.precision, self.profile = precision, profile
        self.compute_capability, self.timing_cache = compute_capability, timing_cache
        self.network_io: list[tuple[str, str, str, tuple[int, ...]]] = []
        self.key, self.key_inputs, self.seconds = "", {}, 0.0

    def __call__(self):
        """Parse, configure and build; returns the serialized engine (a buffer)."""
        trt = import_trt(self.backend)
        dims = parse_profile(self.profile)
        graph = graph_info(self.onnx_path)
        dtype = _check_precision(graph, self.precision)
        profiles = profile_shapes(graph, dims)
        target, capability = _target(trt, self.backend, self.compute_capability)
        self.key_inputs = _key_inputs(trt, graph, self.backend, dtype, dims, target)
        self.key = _digest(self.key_inputs)

        start = time.perf_counter()
        logger = trt_logger(trt)
        builder = trt.Builder(logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(self.onnx_path)):  # from the path, so external data resolves
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors
            raise BuildError(f"{self.backend} cannot parse {self.onnx_path}:\n  " + "\n  ".join(errors))
        self.network_io = [(t.name, mode, t.dtype.name.lower(), tuple(t.shape)) for mode, count, get in
                           (("input", network.num_inputs, network.get_input),
                            ("output", network.num_outputs, network.get_output))
                           for t in map(get, range(count))]
        config = builder.create_builder_config()
        if capability is not None:
            config.num_compute_capabilities = 1
            config.set_compute_capability(capability, 0)
        for shapes in profiles:
            opt_profile = builder.create_optimization_profile()
            for name, (lo, opt, hi) in shapes.items():
                opt_profile.set_shape(name, lo, opt, hi)
            if config.add_optimization_profile(opt_profile) < 0:
                raise BuildError(f"{self.backend} rejected the profile {_profile_spec(dims)} for {self.onnx_path}: "
                                 + "; ".join(logger.errors))
        timing_path = self._timing_cache_path(trt)
        if timing_path is not None:
            data = timing_path.read_bytes() if timing_path.is_file() else b""
            config.set_timing_cache(config.create_timing_cache(data), ignore_mismatch=True)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise BuildError(f"{self.backend} could not build {self.onnx_path} for {target}:\n  "
                             + "\n  ".join(logger.errors or ["(no error reported; rerun with -v)"]))
        if timing_path is not None:
            _write_atomic(timing_path, memoryview(config.get_timing_cache().serialize()))
        self.seconds = time.perf_counter() - start
        log.info("built %s engine for %s from %s in %.1f s (%.1f MiB)", self.backend, target, self.onnx_path,
                 self.seconds, engine.nbytes / 2**20)
        return engine

    def _timing_cache_path(self, trt) -> Path | None:
        """Timing caches speed up rebuilds, but their APIs query the GPU: none without one."""
        gpu = gpu_name()
        if gpu is None:
            if self.timing_cache:
                log.warning("timing cache %s skipped: the timing-cache APIs need a GPU and none is present",
                            self.timing_cache)
            return None
        if self.timing_cache:
            return Path(self.timing_cache)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-")
        return cache_dir("engines") / f"{self.backend}-{trt.__version__}-{slug}.timing"


def sidecar_path(engine_path: str | Path) -> Path:
    """The JSON beside an engine recording its key, source graph and checksum."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, backend: str = "tensorrt-rtx",
                 precision: str | None = None, profile: str | None = None, compute_capability: str | None = None,
                 timing_cache: str | Path | None = None) -> Path:
    """Build an engine for ``onnx_path`` and write it atomically to ``engine_path`` with a sidecar JSON.

    Args:
        onnx_path: exported or compiled decoder graph; its external data stays beside it.
        engine_path: output file; replaced only once the build succeeded.
        backend: "tensorrt-rtx" (pip-installable, builds without a GPU) or "tensorrt".
        precision: fp32, fp16 or bf16; must match the graph's float dtype (None: take the graph's).
        profile: shape ranges such as ``batch=1:8:32,seq=1:128:2048,past=0:512:4096`` (None: the defaults).
        compute_capability: TensorRT-RTX target such as "8.9" (None: this GPU, or 8.9 without one).
        timing_cache: timing cache file, used only with a GPU (None: one beside the engine cache).
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    from painters.compiler.graph_io import graph_inputs, load_graph

    try:
        graph = load_graph(onnx_path)
    except CompileError as exc:  # an engine build reports its input's problems as build errors
        raise BuildError(str(exc)) from exc
    check_outputs([engine_path, sidecar_path(engine_path)], graph_inputs(graph, onnx_path))
    build = EngineFromOnnx(onnx_path, backend=backend, precision=precision, profile=profile,
                           compute_capability=compute_capability, timing_cache=timing_cache)
    engine = build()
    sidecar = sidecar_path(engine_path)
    sidecar.unlink(missing_ok=True)  # a crash between the two writes leaves no sidecar, hence a rebuild
    _write_atomic(engine_path, memoryview(engine))
    record = {"key": build.key, "inputs": build.key_inputs, "onnx": str(onnx_path.resolve()),
              "engine_hash": file_hash(engine_path), "engine_bytes": engine_path.stat().st_size,
              "seconds": round(build.seconds, 3), "io": build.network_io}
    _write_atomic(sidecar, json.dumps(record, indent=2).encode())
    return engine_path


def _cache_problem(engine: Path, sidecar: Path, key: str) -> str | None:
    """Why a cached engine cannot be used (None: it can); checks the sidecar before trusting the bytes."""
    if not engine.is_file():
        return "missing"
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        return f"its sidecar {sidecar.name} is missing or unreadable ({type(exc).__name__})"
    if record.get("key") != key:
        return f"its sidecar key {str(record.get('key'))[:16]}… disagrees with {key[:16]}…"
    size = engine.stat().st_size
    if size != record.get("engine_bytes"):
        return f"it has {size} bytes where the build wrote {record.get('engine_bytes')} (truncated or replaced)"
    if file_hash(engine) != record.get("engine_hash"):
        return "its bytes no longer match the checksum recorded at build time (corrupt)"
    return None


def cached_engine(onnx_path: str | Path, *, backend: str = "tensorrt-rtx", precision: str | None = None,
                  profile: str | None = None, compute_capability: str | None = None) -> Path:
    """An engine for these settings from ``$PAINTERS_CACHE/engines``, built on a miss.

    The key hashes the graph (every byte of the .onnx and of its external data files, painters metadata),
    backend and TensorRT version, precision, profile and target GPU. A cached engine whose sidecar or
    checksum disagrees is rebuilt with a warning, never loaded blindly.
    """
    onnx_path = Path(onnx_path)
    key, _ = engine_key(onnx_path, backend=backend, precision=precision, profile=profile,
                        compute_capability=compute_capability)
    engine = cache_dir("engines") / f"{onnx_path.stem}-{backend}-{key[:16]}.engine"
    problem = _cache_problem(engine, sidecar_path(engine), key)
    if problem is None:
        log.info("engine cache hit: %s", engine)
        return engine
    if problem != "missing":
        log.warning("cached engine %s is not usable: %s; rebuilding it", engine, problem)
    return build_engine(onnx_path, engine, backend=backend, precision=precision, profile=profile,
                        compute_capability=compute_capability)
