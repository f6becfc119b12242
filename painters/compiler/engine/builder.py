"""The engine builder: parse a decoder graph with TensorRT's ONNX parser, add the two profiles, serialize.

:class:`EngineFromOnnx` makes the bytes; :func:`build_engine` writes them atomically with a sidecar JSON (key,
source graph, checksum, network IO). Both take an already resolved request and key where the caller has them
(the cache does), so a cache miss neither re-reads the graph nor re-hashes its data.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from painters.cache import cache_dir
from painters.compiler.engine.key import EngineKey, key_of
from painters.compiler.engine.profiles import profile_shapes, profile_spec
from painters.compiler.engine.request import EngineRequest, engine_request
from painters.errors import BuildError
from painters.fileio import atomic_write, check_outputs, file_hash, write_json
from painters.tensorrt_lib import gpu_name, sidecar_path, trt_logger

__all__ = ["EngineFromOnnx", "build_engine"]

log = logging.getLogger(__name__)


class EngineFromOnnx:
    """Serialized engine bytes from an ONNX decoder graph: configure in ``__init__``, build in ``__call__``.

    After a call, ``network_io`` lists the parsed network's (name, "input"/"output", dtype, shape) and
    ``key``/``key_inputs``/``seconds`` describe the build. ``request`` and ``key``, when given, are used as
    they are (the settings arguments are then ignored).
    """

    def __init__(self, onnx_path: str | Path, *, backend: str | None = None, precision: str | None = None,
                 profile: str | None = None, compute_capability: str | None = None,
                 timing_cache: str | Path | None = None, request: EngineRequest | None = None,
                 key: EngineKey | None = None):
        self.onnx_path = Path(onnx_path)
        self.backend = request.backend if request is not None else backend or "tensorrt-rtx"
        self.precision, self.profile = precision, profile
        self.compute_capability, self.timing_cache = compute_capability, timing_cache
        self.request, self._key = request, key
        self.network_io: list[tuple[str, str, str, tuple[int, ...]]] = []
        self.key, self.key_inputs, self.seconds = "", {}, 0.0

    def __call__(self):
        """Parse, configure and build; returns the serialized engine (a buffer)."""
        request = self.request or engine_request(self.onnx_path, backend=self.backend, precision=self.precision,
                                                 profile=self.profile, compute_capability=self.compute_capability)
        key = self._key or key_of(request)
        self.key, self.key_inputs = key.digest, key.inputs
        trt = request.trt
        profiles = profile_shapes(request.graph, request.dims)

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
        if request.capability is not None:
            config.num_compute_capabilities = 1
            config.set_compute_capability(request.capability, 0)
        for shapes in profiles:
            opt_profile = builder.create_optimization_profile()
            for name, (lo, opt, hi) in shapes.items():
                opt_profile.set_shape(name, lo, opt, hi)
            if config.add_optimization_profile(opt_profile) < 0:
                raise BuildError(f"{self.backend} rejected the profile {profile_spec(request.dims)} for "
                                 f"{self.onnx_path}: " + "; ".join(logger.errors))
        timing_path = self._timing_cache_path(trt)
        if timing_path is not None:
            data = timing_path.read_bytes() if timing_path.is_file() else b""
            config.set_timing_cache(config.create_timing_cache(data), ignore_mismatch=True)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise BuildError(f"{self.backend} could not build {self.onnx_path} for {request.target}:\n  "
                             + "\n  ".join(logger.errors or ["(no error reported; rerun with -v)"]))
        if timing_path is not None:
            atomic_write(timing_path, memoryview(config.get_timing_cache().serialize()))
        self.seconds = time.perf_counter() - start
        log.info("built %s engine for %s from %s in %.1f s (%.1f MiB)", self.backend, request.target,
                 self.onnx_path, self.seconds, engine.nbytes / 2**20)
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


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, backend: str = "tensorrt-rtx",
                 precision: str | None = None, profile: str | None = None, compute_capability: str | None = None,
                 timing_cache: str | Path | None = None, request: EngineRequest | None = None,
                 key: EngineKey | None = None) -> Path:
    """Build an engine for ``onnx_path`` and write it atomically to ``engine_path`` with a sidecar JSON.

    Args:
        onnx_path: exported or compiled decoder graph; its external data stays beside it.
        engine_path: output file; replaced only once the build succeeded.
        backend: "tensorrt-rtx" (pip-installable, builds without a GPU) or "tensorrt".
        precision: fp32, fp16 or bf16; must match the graph's float dtype (None: take the graph's).
        profile: shape ranges such as ``batch=1:8:32,seq=1:128:2048,past=0:512:4096`` (None: the defaults).
        compute_capability: TensorRT-RTX target such as "8.9" (None: this GPU, or 8.9 without one).
        timing_cache: timing cache file, used only with a GPU (None: one beside the engine cache).
        request, key: the resolved settings and their key, when the caller has them (the engine cache).
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    request = request or engine_request(onnx_path, backend=backend, precision=precision, profile=profile,
                                        compute_capability=compute_capability)
    check_outputs([engine_path, sidecar_path(engine_path)], request.graph.files())
    build = EngineFromOnnx(onnx_path, timing_cache=timing_cache, request=request, key=key)
    engine = build()
    sidecar = sidecar_path(engine_path)
    sidecar.unlink(missing_ok=True)  # a crash between the two writes leaves no sidecar, hence a rebuild
    atomic_write(engine_path, memoryview(engine))
    record = {"key": build.key, "inputs": build.key_inputs, "onnx": str(onnx_path.resolve()),
              "engine_hash": file_hash(engine_path), "engine_bytes": engine_path.stat().st_size,
              "seconds": round(build.seconds, 3), "io": build.network_io}
    write_json(sidecar, record)
    return engine_path
