"""Re-anchor shape reads of past-KV inputs on ``input_ids`` / ``attention_mask``.

Exporters pick any input that carries a symbolic dim: the dynamo exporter reads the batch size from, say,
the past-KV value input of layer 4 and the past length from that of layer 2, then shares the result
across all layers. A plan that drops layer 4's attention removes that input, so before any rewrite every
such ``Shape`` is replaced by the same numbers computed from the inputs every plan keeps:
batch = ``input_ids.shape[0]``, past = ``attention_mask.shape[1] − input_ids.shape[1]``, and the static
``kv_heads`` / ``head_dim``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from painters.decoder_io import ATTENTION_MASK, INPUT_IDS, is_past
from painters.errors import CompileError

__all__ = ["AnchorKVShapesPass"]


class AnchorKVShapesPass(ir.passes.InPlacePass):
    """Replace ``Shape`` of past-KV inputs with arithmetic on ``input_ids`` and ``attention_mask``."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        inputs = {v.name: v for v in graph.inputs}
        shapes = [u.node for v in graph.inputs if is_past(v.name)
                  for u in v.uses() if u.node.op_type == "Shape"]
        for node in shapes:
            kv = node.inputs[0]
            rank = len(kv.shape)
            start = node.attributes.get_int("start", 0)
            end = node.attributes.get_int("end", rank)
            start, end = start % rank if start < 0 else start, end % rank if end < 0 else min(end, rank)
            pieces = [self._dim(graph, node, inputs, kv, d) for d in range(start, end)]
            new = pieces[0] if len(pieces) == 1 else self._add(graph, node, "Concat", pieces, axis=0)
            node.outputs[0].replace_all_uses_with(new)
            graph.remove(node, safe=True)
        return ir.passes.PassResult(model, modified=bool(shapes))

    @staticmethod
    def _add(graph, before, op, inputs, **attrs) -> ir.Value:
        node = ir.node(op, inputs, attributes=attrs or None, name=f"{before.name}/anchor/{op}_{len(graph)}")
        graph.insert_before(before, node)
        return node.outputs[0]

    def _dim(self, graph, before, inputs, kv: ir.Value, d: int) -> ir.Value:
        if d == 0:
            return self._add(graph, before, "Shape", [inputs[INPUT_IDS]], start=0, end=1)
        if d == 2:
            total = self._add(graph, before, "Shape", [inputs[ATTENTION_MASK]], start=1, end=2)
            seq = self._add(graph, before, "Shape", [inputs[INPUT_IDS]], start=1, end=2)
            return self._add(graph, before, "Sub", [total, seq])
        size = kv.shape[d]
        if not isinstance(size, int):
            raise CompileError(f"{kv.name}: dim {d} is symbolic ({size!r}); its KV shape must be static here — "
                               "re-export the model (painters export writes static kv heads and head dims)")
        const = ir.node("Constant", [], attributes={"value": ir.tensor(np.array([size], dtype=np.int64))},
                        name=f"{before.name}/anchor/const_{d}")
        graph.insert_before(before, const)
        return const.outputs[0]
