"""Tracing a torch module to ONNX, shared by the decoder and encoder exports.

Both exports hold ``nn.Linear`` weights transposed while they trace (so the graph's MatMuls read the module's
own weights, never a folded copy), call ``torch.onnx.export`` with the same options, and accept the same opsets.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
import types
from typing import Any

from painters.errors import ExportError
from painters.export.quiet import quiet_exporter

__all__ = ["linears_as_matmul", "trace_module", "check_opset", "MIN_OPSET"]

log = logging.getLogger(__name__)


def _matmul_forward(self, x):
    out = x @ self.weight
    return out if self.bias is None else out + self.bias


def _transposed(weight):
    return weight.detach().t().contiguous()


@contextlib.contextmanager
def linears_as_matmul(model, transpose=_transposed):
    """During export, hold every ``nn.Linear`` weight transposed ([in, out]) and compute ``x @ W``.

    The exporter turns ``F.linear`` into ``MatMul(x, Transpose(W))`` and constant-folds the transpose into a
    *new* initializer: a second copy of every weight, which a 7B model cannot afford in 24 GiB. Swapping
    one matrix at a time keeps at most one extra matrix alive, and the graph's MatMuls read initializers
    named after their modules. The model is restored on exit.
    """
    import torch

    owners: dict[int, int] = {}
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None:
                owners[id(p)] = owners.get(id(p), 0) + 1
    # A weight tied to another module (the LM head to the embedding) stays as it is: its Transpose then has a
    # second reader (the embedding's Gather), so the exporter's optimizer keeps it as a node over the one stored
    # weight instead of folding it into a second copy.
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and owners[id(m.weight)] == 1]
    try:
        for m in linears:
            m.weight = torch.nn.Parameter(transpose(m.weight), requires_grad=False)
            m.forward = types.MethodType(_matmul_forward, m)
        yield
    finally:
        gc.collect()  # the traced program's references to W^T must be gone before W is rebuilt
        for m in linears:
            m.weight = torch.nn.Parameter(transpose(m.weight), requires_grad=False)
            del m.forward


def trace_module(module, args: tuple, dynamic: tuple, input_names: list[str], output_names: list[str], *,
                 opset: int | None, what: str = "") -> Any:
    """``torch.onnx.export`` (dynamo, optimized, weights left as tensors) of a wrapper, quietly; its onnx-ir model.

    The one set of exporter options decoder and encoder export share, so both graphs come out the same way.
    """
    import torch

    start = time.perf_counter()
    with quiet_exporter():
        program = torch.onnx.export(
            module, args, dynamic_shapes=dynamic, dynamo=True, optimize=True, opset_version=opset,
            input_names=input_names, output_names=output_names, external_data=True, verbose=False,
        )
    log.info("traced %sin %.1f s", what, time.perf_counter() - start)
    return program.model


# torch's dynamo exporter emits onnxscript's torchlib, written at opset 18; it converts up to torch's maximum.
MIN_OPSET = 18


def check_opset(opset: int | None) -> None:
    """Refuse an opset the exporter cannot write (it would otherwise fail deep in tracing, or ignore it)."""
    if opset is None:
        return
    from torch.onnx._constants import ONNX_MAX_OPSET

    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= ONNX_MAX_OPSET:
        raise ExportError(f"--opset {opset!r} is not supported: the exporter writes opsets {MIN_OPSET}..."
                          f"{ONNX_MAX_OPSET}; pick one in that range or leave --opset out for the default")
