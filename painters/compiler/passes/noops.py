"""Remove nodes that return their input unchanged: same-dtype ``Cast``, one-input ``Concat``/``Sum``, ``Identity``.

The TorchScript exporter records ``x.to(torch.float32)`` on a float32 tensor as a Cast and then routes the
residual stream through it (``.to`` returned the same tensor object), so the residual Add reads ``Cast(x)``;
caches built with ``torch.cat`` of one tensor leave one-input Concats on the past-KV inputs. Dropping these
keeps the residual chain and the KV inputs visible to block discovery.
"""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["RemoveNoOpsPass"]


def _is_noop(node: ir.Node) -> bool:
    if node.domain not in ("", "ai.onnx") or not node.inputs or node.inputs[0] is None:
        return False
    if node.op_type == "Identity" or (node.op_type in ("Concat", "Sum") and len(node.inputs) == 1):
        return True
    source = node.inputs[0]
    return node.op_type == "Cast" and source.dtype is not None and node.attributes.get_int("to") == source.dtype.value


class RemoveNoOpsPass(ir.passes.InPlacePass):
    """Replace the outputs of no-op nodes by their inputs (graph outputs are left alone)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        outputs = set(graph.outputs)
        removed = 0
        for node in list(graph):
            if _is_noop(node) and node.outputs[0] not in outputs:
                node.outputs[0].replace_all_uses_with(node.inputs[0])
                graph.remove(node, safe=True)
                removed += 1
        return ir.passes.PassResult(model, modified=bool(removed))
