"""Materialise the residual stream of graphs whose residual Adds are fused into the next norm, and fuse it back.

ONNX Runtime GenAI's model builder writes a Llama block as ``SkipSimplifiedLayerNormalization(r, d, g)``: one op
that adds the sublayer output ``d`` to the residual ``r`` and RMS-normalises the sum, returning the normalised
value (output 0) and the sum itself (output 3, the running residual). So the residual Add of block i's MLP lives
inside block i+1's first norm, and the stream value between two blocks is never a tensor of its own (after the
last block it is not even an output: the final norm has one output). A plan must be able to cut there, so:

* :class:`SplitSkipNormsPass` (before discovery) replaces every such op by ``Add(r, d)`` and
  ``SimplifiedLayerNormalization(sum, g)``. The stream is then the ordinary residual chain that
  :func:`painters.compiler.blocks.discover_blocks` follows, block boundaries are values again, and every plan
  kind goes through the stage-instantiation pass unchanged.
* :class:`FuseSkipNormsPass` (after instantiation) folds each ``Add`` whose sum is read by a
  ``SimplifiedLayerNormalization`` back into one ``SkipSimplifiedLayerNormalization`` (output 3 serves the
  Add's other readers). After a skip, block i+1's norm reads block i−1's sum and fuses with it exactly as in
  the builder's graph; only where the stream is a computed value that is not an Add (a parallel group's mean)
  does the norm stay a plain ``SimplifiedLayerNormalization``. The compiled graph keeps the builder's form.

Both ops are ONNX Runtime's: ``SimplifiedLayerNormalization`` in the default domain, the skip form in
``com.microsoft``. Output 0 is ``RMSNorm(r + d [+ bias]) · g``; outputs 1 and 2 (statistics) are never read by
the builder's graphs, and a graph that reads them is refused.
"""

from __future__ import annotations

import onnx_ir as ir

from painters.errors import CompileError
from painters.ort_ops import MS_DOMAIN, NORM, SKIP_NORM

__all__ = ["SplitSkipNormsPass", "FuseSkipNormsPass", "SKIP_NORM", "NORM", "MS_DOMAIN"]



def _outputs_read(value: ir.Value | None, graph_outputs: set[ir.Value]) -> bool:
    return value is not None and bool(value.name) and (bool(value.uses()) or value in graph_outputs)


class SplitSkipNormsPass(ir.passes.InPlacePass):
    """``SkipSimplifiedLayerNormalization(r, d, g[, bias])`` → ``Add(r, d)[+bias]`` → ``SimplifiedLayerNorm``."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        outputs = set(graph.outputs)
        nodes = [n for n in graph if n.domain == MS_DOMAIN and n.op_type == SKIP_NORM]
        for node in nodes:
            if any(_outputs_read(v, outputs) for v in node.outputs[1:3]):
                raise CompileError(f"{SKIP_NORM} {node.name!r} returns its mean/inverse-std statistics to other "
                                   "nodes; painters can only split the norm and residual sum it computes")
            r, d, gain, *rest = node.inputs
            bias = rest[0] if rest else None
            add = ir.node("Add", [r, d], name=f"{node.name}/residual_add")
            added = [add]
            if bias is not None:
                added.append(ir.node("Add", [add.outputs[0], bias], name=f"{node.name}/bias_add"))
            total = added[-1].outputs[0]
            eps = node.attributes.get_float("epsilon", 1e-5)
            norm = ir.node(NORM, [total, gain], attributes={"axis": -1, "epsilon": eps, "stash_type": 1},
                           name=f"{node.name}/norm")
            for new in (*added, norm):
                graph.insert_before(node, new)
            out = node.outputs[0]
            total.name, total.shape, total.type = f"{out.name}/residual", out.shape, out.type
            norm.outputs[0].shape, norm.outputs[0].type = out.shape, out.type
            if len(node.outputs) > 3 and node.outputs[3] is not None and node.outputs[3].name:
                node.outputs[3].replace_all_uses_with(total, replace_graph_outputs=True)
            out.replace_all_uses_with(norm.outputs[0], replace_graph_outputs=True)
            graph.remove(node, safe=True)
            norm.outputs[0].name = out.name
        return ir.passes.PassResult(model, modified=bool(nodes))


class FuseSkipNormsPass(ir.passes.InPlacePass):
    """``SimplifiedLayerNormalization(Add(r, d), g)`` → ``SkipSimplifiedLayerNormalization(r, d, g)``.

    Only an Add of two activations of the same shape (never a broadcast, never a constant operand) is
    folded; its other readers then read output 3. A graph output that is the Add's sum stays an Add.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        outputs = set(graph.outputs)
        fused = 0
        for norm in [n for n in graph if n.domain in ("", "ai.onnx") and n.op_type == NORM]:
            add = norm.inputs[0].producer() if norm.inputs[0] is not None else None
            if not self._fusable(norm, add, outputs):
                continue
            total = add.outputs[0]
            others = [u for u in total.uses() if u.node is not norm]
            skip = ir.Node(MS_DOMAIN, SKIP_NORM, [add.inputs[0], add.inputs[1], norm.inputs[1]],
                           attributes=[ir.AttrFloat32("epsilon", norm.attributes.get_float("epsilon", 1e-5))],
                           num_outputs=4 if others else 1, name=f"{norm.name}/skip")
            graph.insert_before(norm, skip)
            out = norm.outputs[0]
            skip.outputs[0].shape, skip.outputs[0].type = out.shape, out.type
            out.replace_all_uses_with(skip.outputs[0], replace_graph_outputs=True)
            if others:
                skip.outputs[1].name = skip.outputs[2].name = ""
                total.replace_all_uses_with(skip.outputs[3])
                skip.outputs[3].shape, skip.outputs[3].type = total.shape, total.type
            graph.remove([norm, add], safe=True)
            skip.outputs[0].name = out.name
            if others:
                skip.outputs[3].name = total.name
            fused += 1
        if fused and MS_DOMAIN not in model.opset_imports:
            model.opset_imports[MS_DOMAIN] = 1
        return ir.passes.PassResult(model, modified=bool(fused))

    @staticmethod
    def _fusable(norm: ir.Node, add: ir.Node | None, outputs: set[ir.Value]) -> bool:
        if add is None or add.op_type != "Add" or add.domain not in ("", "ai.onnx") or add.outputs[0] in outputs:
            return False
        if norm.attributes.get_int("axis", -1) != -1 or norm.attributes.get_int("stash_type", 1) != 1:
            return False
        a, b = add.inputs
        if a is None or b is None or a.const_value is not None or b.const_value is not None:
            return False
        shapes = (a.shape, b.shape)  # two [batch, seq, hidden] activations: never a broadcast
        return all(s is not None and len(s) == 3 for s in shapes) and isinstance(a.shape[2], int) \
            and a.shape[2] == b.shape[2]
