"""The engine cache key: a sha256 naming everything that changes an engine's bytes.

It hashes every byte of the graph and of its external data files, the graph's painters metadata, the backend
and TensorRT version, the precision, the profile and the target GPU. It is computed once per
:class:`~painters.compiler.engine.request.EngineRequest` and handed to the builder, which records it in the
sidecar, and to the cache, which compares it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from painters.cache import cache_dir
from painters.compiler.engine.profiles import profile_spec
from painters.compiler.engine.request import EngineRequest, engine_request
from painters.fileio import atomic_write

__all__ = ["EngineKey", "key_of", "engine_key", "content_hash"]


@dataclass(frozen=True)
class EngineKey:
    """The key (hex sha256) and the inputs it hashes (written to the sidecar, so a mismatch can be explained)."""

    digest: str
    inputs: dict


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
    atomic_write(memo, digest.encode())
    return digest


def key_of(request: EngineRequest) -> EngineKey:
    """The key of a resolved request (hashes the graph and its data files once; memoized across runs)."""
    graph = request.graph
    external = [(name, size, content_hash(graph.path.parent / name)) for name, size in graph.external]
    inputs = {"graph": content_hash(graph.path), "external": external, "metadata": graph.metadata,
              "backend": request.backend, "trt_version": request.trt.__version__, "precision": request.dtype,
              "profile": profile_spec(request.dims), "target": request.target}
    return EngineKey(hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest(), inputs)


def engine_key(onnx_path: str | Path, *, backend: str = "tensorrt-rtx", precision: str | None = None,
               profile: str | None = None, compute_capability: str | None = None) -> tuple[str, dict]:
    """(key, the inputs it hashes) for these settings: :func:`key_of` of a freshly resolved request."""
    key = key_of(engine_request(onnx_path, backend=backend, precision=precision, profile=profile,
                                compute_capability=compute_capability))
    return key.digest, key.inputs
