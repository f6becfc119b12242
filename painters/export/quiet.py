"""Silence known-harmless third-party export messages, narrowly and only around the exporter call."""

from __future__ import annotations

import contextlib
import logging
import re
import warnings

__all__ = ["quiet_exporter"]

# torch.onnx logs one line per torchvision op it cannot register; painters never uses torchvision ops.
_TORCHVISION = re.compile(r"torchvision is not installed\. Skipping torchvision::")
_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


class _DropTorchvision(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _TORCHVISION.match(record.getMessage())


@contextlib.contextmanager
def quiet_exporter():
    """Drop messages that say nothing about the user's model; ``painters -v`` (INFO logging) keeps them all.

    - torchvision op registration skips (above).
    - torch's pytree ``LeafSpec`` deprecation, raised inside torch.export's own unpickling (copyreg).
    - "The axis name: X will not be used, since it shares the same shape constraints with another axis: X":
      torch warns whenever one ``Dim`` is reused across inputs, which is how a shared axis is declared; only
      the self-referential form (same name twice) is dropped, so a real axis conflict still shows.
    """
    if logging.getLogger("painters").getEffectiveLevel() <= logging.INFO:
        yield
        return
    reg_logger = logging.getLogger(_REGISTRATION_LOGGER)
    drop = _DropTorchvision()
    reg_logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                    category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name: (\w+) will not be used, since it shares "
                                    r"the same shape constraints with another axis: \1\.$", category=UserWarning)
            yield
    finally:
        reg_logger.removeFilter(drop)
