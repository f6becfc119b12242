"""TensorRT and TensorRT-RTX as painters uses them: importing the module, its logger, the GPU, the engine sidecar.

The engine builder (:mod:`painters.compiler.engine`) and the engine runner (:mod:`painters.runtime.trt`) both
need these; they live here, below both, so the runtime never imports the compiler. Nothing here imports
TensorRT or torch at module level: painters runs without either.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
from pathlib import Path

from painters.errors import BuildError

__all__ = ["BACKENDS", "import_trt", "gpu_name", "require_cuda", "trt_logger", "sidecar_path", "read_sidecar"]

log = logging.getLogger(__name__)

BACKENDS = ("tensorrt-rtx", "tensorrt")
_RTX_PIP = "pip install tensorrt-rtx-cu13 tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings"


def import_trt(backend: str):
    """The TensorRT module of ``backend``, imported on first use so the rest of painters runs without it."""
    if backend not in BACKENDS:
        raise BuildError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    try:
        return importlib.import_module("tensorrt_rtx" if backend == "tensorrt-rtx" else "tensorrt")
    except ImportError as exc:
        if backend == "tensorrt":
            raise BuildError(f"backend 'tensorrt' needs NVIDIA TensorRT, which is not installed ({exc}); install it "
                             f"with `pip install painters[trt]`, or use --backend tensorrt-rtx: TensorRT-RTX is the "
                             f"pip-installable alternative (`{_RTX_PIP}`) and builds without a GPU") from exc
        raise BuildError(f"backend 'tensorrt-rtx' needs TensorRT-RTX, which is not installed ({exc}); "
                         f"install it with `{_RTX_PIP}`") from exc


@functools.cache
def gpu_name() -> str | None:
    """The CUDA GPU's name, or None on a machine without one (TensorRT-RTX then builds for a named target)."""
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def require_cuda(what: str) -> None:
    """Refuse ``what`` (running an engine) on a machine without a CUDA GPU, before anything is built or loaded."""
    if gpu_name() is None:
        raise BuildError(f"{what} needs a CUDA GPU and no CUDA GPU is available (torch sees none); run the .onnx "
                         "with --backend onnxruntime on this machine, or run the engine on a GPU machine")


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


def sidecar_path(engine_path: str | Path) -> Path:
    """The JSON beside an engine recording its key, source graph, graph metadata and checksum."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path: str | Path) -> dict:
    """The sidecar record of an engine, or {} when it has none or it is unreadable (the engine still runs)."""
    try:
        record = json.loads(sidecar_path(engine_path).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
