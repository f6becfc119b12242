"""Instantiate a plan on an encoder graph: per stage, clones of the blocks it runs, averaged when parallel.

The encoder twin of :mod:`painters.compiler.passes.instantiate`, without KV slots: each stage reads the
current stream; a member's attention nodes are cloned unless its attention is dropped (then ``h`` is the
stream itself), its FFN nodes unless its FFN is dropped (then its output is ``h``) — the post-LN drop
semantics of :mod:`painters.runtime.encoder_ref`. Clones share every initializer, so duplicating a block
adds nodes, never weight bytes. The baseline blocks are then removed; the graph output keeps its name.
The identity plan leaves the graph untouched.
"""

from __future__ import annotations

import onnx_ir as ir

from painters.compiler.encoder_blocks import EncoderStructure
from painters.compiler.passes.instantiate import clone_nodes, mean_of
from painters.plans import Plan, Stage

__all__ = ["InstantiateEncoderStagesPass"]


def _is_identity(structure: EncoderStructure, stages: list[Stage]) -> bool:
    return len(stages) == structure.num_layers and all(
        s.blocks == (i,) and s.attn and s.mlp for i, s in enumerate(stages))


class InstantiateEncoderStagesPass(ir.passes.InPlacePass):
    """Replace the baseline encoder blocks with the plan's stages (see the module docstring)."""

    def __init__(self, structure: EncoderStructure, plan: Plan):
        super().__init__()
        self.structure = structure
        self.plan = plan

    def requires(self, model: ir.Model) -> None:
        final = self.structure.final.producer()
        if final is None or final.graph is not model.graph:
            raise ir.passes.PreconditionError("the encoder structure's final stream value is not in this graph; "
                                              "discover the blocks of the graph being instantiated")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, st = model.graph, self.structure
        stages = self.plan.stages()
        if _is_identity(st, stages):
            return ir.passes.PassResult(model, modified=False)
        # clones go before the head (or, for a bare encoder, before the last block's LN: sorted afterwards)
        before = next((n for n in graph if st.final in n.inputs), st.final.producer())
        x = st.x0
        for index, stage in enumerate(stages):
            x = self._stage(graph, index, stage, x, before)
        if st.final.is_graph_output():
            name = st.final.name
            st.final.name = f"{name}/baseline"
            out = ir.node("Identity", [x], name=f"{name}/Identity")
            graph.append(out)
            out.outputs[0].name, out.outputs[0].shape, out.outputs[0].type = name, st.final.shape, st.final.type
            graph.outputs[list(graph.outputs).index(st.final)] = out.outputs[0]
        else:
            st.final.replace_all_uses_with(x)
        graph.remove(list(st.block_nodes()), safe=True)
        return ir.passes.PassResult(model, modified=True)

    def _stage(self, graph: ir.Graph, index: int, stage: Stage, x: ir.Value, before: ir.Node) -> ir.Value:
        outs = []
        for member, b in enumerate(stage.blocks):
            block = self.structure.blocks[b]
            suffix = f"/stage{index}" + (f"/m{member}" if len(stage.blocks) > 1 else "")
            meta = {"painters.block": str(b), "painters.stage": str(index)}
            value_map: dict[ir.Value, ir.Value] = {block.x_in: x}
            h = x
            if stage.attn:
                clone_nodes(graph, block.attn_nodes, value_map, suffix, {**meta, "painters.sublayer": "attn"}, before)
                h = value_map[block.h]
            out = h
            if stage.mlp:
                value_map[block.h] = h
                clone_nodes(graph, block.mlp_nodes, value_map, suffix, {**meta, "painters.sublayer": "mlp"}, before)
                out = value_map[block.x_out]
            outs.append(out)
        return mean_of(graph, outs, f"stage{index}/mean", before)
