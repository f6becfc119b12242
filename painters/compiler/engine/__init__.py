"""TensorRT and TensorRT-RTX engines from ONNX decoder graphs: one builder for both flavours, and a cache.

One module per job: :mod:`.profiles` (shape ranges), :mod:`.request` (the graph and settings, resolved and
checked once), :mod:`.key` (the cache key), :mod:`.builder` (parse, configure, build, write with a sidecar)
and :mod:`.cache` (reuse or rebuild). Importing TensorRT, its logger and GPU detection live in
:mod:`painters.tensorrt_lib`, which the engine runner shares without importing the compiler.
"""

from painters.compiler.engine.builder import EngineFromOnnx, build_engine
from painters.compiler.engine.cache import cached_engine
from painters.compiler.engine.key import EngineKey, content_hash, engine_key, key_of
from painters.compiler.engine.profiles import DEFAULT_PROFILE, DimRange, parse_profile, profile_shapes, profile_spec
from painters.compiler.engine.request import (
    DEFAULT_COMPUTE_CAPABILITY,
    EngineRequest,
    GraphInfo,
    engine_request,
    graph_info,
)
from painters.tensorrt_lib import BACKENDS, gpu_name, import_trt, sidecar_path, trt_logger

__all__ = ["BACKENDS", "DEFAULT_PROFILE", "DEFAULT_COMPUTE_CAPABILITY", "DimRange", "GraphInfo", "EngineFromOnnx",
           "EngineRequest", "EngineKey", "import_trt", "gpu_name", "trt_logger", "parse_profile", "profile_shapes",
           "profile_spec", "graph_info", "engine_request", "engine_key", "key_of", "content_hash", "sidecar_path",
           "build_engine", "cached_engine"]
