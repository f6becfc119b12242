"""Run the ONNX checker on a rewritten graph's structure, with its external weights left out.

onnx-ir's ``CheckerPass`` hands the checker an in-memory proto, which has no model directory: every external
tensor left in it is looked up relative to the process's working directory and fails ("… should be stored in
model.onnx.data, but it is not regular file"). It drops only initializers over 1 KB, so a smaller external one
(GPT-NeoX's 384-byte ``query_key_value.bias`` of the tiny test model: saved externally from 256 bytes on) broke
every compile. The compiler never changes external weights (they stay in the source's data file, which
:func:`painters.compiler.graph_io.external_files` checks for location, presence and size), so the checker sees
them as typed graph inputs instead, like the large ones.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import CheckerPass

__all__ = ["CheckStructurePass"]


class CheckStructurePass(ir.passes.InPlacePass):
    """``CheckerPass`` with every external initializer's data hidden for the duration of the check."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        hidden = {v: v.const_value for v in model.graph.initializers.values()
                  if isinstance(v.const_value, ir.ExternalTensor)}
        for value, tensor in hidden.items():
            value.shape = value.shape or tensor.shape
            value.dtype = value.dtype or tensor.dtype
            value.const_value = None  # onnx-ir's helper passes data-less initializers as inputs
        try:
            CheckerPass()(model)
        finally:
            for value, tensor in hidden.items():
                value.const_value = tensor
        return ir.passes.PassResult(model, modified=False)
