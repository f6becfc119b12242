"""The engine cache: ``$PAINTERS_CACHE/engines``, keyed by :mod:`painters.compiler.engine.key`.

The key is computed once per lookup and handed to the builder on a miss, so a cache build hashes nothing
twice. A cached engine whose sidecar or checksum disagrees is rebuilt with a warning, never loaded blindly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from painters.cache import cache_dir
from painters.compiler.engine import builder
from painters.compiler.engine.key import key_of
from painters.compiler.engine.request import engine_request
from painters.fileio import file_hash
from painters.tensorrt_lib import sidecar_path

__all__ = ["cached_engine"]

log = logging.getLogger(__name__)


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
    backend and TensorRT version, precision, profile and target GPU.
    """
    onnx_path = Path(onnx_path)
    request = engine_request(onnx_path, backend=backend, precision=precision, profile=profile,
                             compute_capability=compute_capability)
    key = key_of(request)
    engine = cache_dir("engines") / f"{onnx_path.stem}-{request.backend}-{key.digest[:16]}.engine"
    problem = _cache_problem(engine, sidecar_path(engine), key.digest)
    if problem is None:
        log.info("engine cache hit: %s", engine)
        return engine
    if problem != "missing":
        log.warning("cached engine %s is not usable: %s; rebuilding it", engine, problem)
    return builder.build_engine(onnx_path, engine, request=request, key=key)
