"""Rewrite a discovered decoder graph to a plan's schedule (drop, duplicate, reorder, parallelize).

Every stage of :meth:`Plan.stages` instantiates the blocks it runs by cloning their nodes through a value
map: the block's input becomes the current residual stream, its past-KV inputs become the stage's slot
inputs, and everything else it reads (initializers, rotary tables, the mask) maps to itself. Clones
therefore share weights: duplicating a block adds nodes, never weight bytes.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx_ir as ir

from painters.compiler.blocks import Block, BlockStructure, past_name, present_name
from painters.plans import Plan, Stage

__all__ = ["RewriteToPlanPass", "clone_nodes", "mean_of"]


def clone_nodes(graph: ir.Graph, nodes: list[ir.Node], value_map: dict[ir.Value, ir.Value], suffix: str,
                meta: dict[str, str], before: ir.Node) -> None:
    """Insert copies of ``nodes`` (in order) before ``before``, reading through ``value_map``.

    The clones' outputs are recorded in ``value_map``. Inserting ahead of the epilogue keeps the graph
    topologically sorted, so no sort pass is needed.
    """
    for node in nodes:
        if any(attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for attr in node.attributes.values()):
            raise NotImplementedError(f"node {node.name}: subgraph attributes are not supported in blocks")
        clone = ir.Node(node.domain, node.op_type,
                        [value_map.get(v, v) if v is not None else None for v in node.inputs],
                        attributes=list(node.attributes.values()), overload=node.overload,
                        num_outputs=len(node.outputs), version=node.version, name=f"{node.name}{suffix}")
        clone.metadata_props.update(node.metadata_props)
        clone.metadata_props.update(meta)
        for old, new in zip(node.outputs, clone.outputs):
            new.name = f"{old.name}{suffix}"
            new.shape, new.type = old.shape, old.type
            value_map[old] = new
        graph.insert_before(before, clone)


def mean_of(graph: ir.Graph, values: list[ir.Value], name: str, before: ir.Node | None = None) -> ir.Value:
    """``Sum(values) · (1/k)``: one Sum and one scale, a pattern TensorRT fuses into the consumers."""
    if len(values) == 1:
        return values[0]
    dtype = values[0].dtype.numpy()
    total = ir.node("Sum", values, name=f"{name}/Sum")
    scale = ir.node("Constant", [], attributes={"value": ir.tensor(np.array(1.0 / len(values), dtype=dtype))},
                    name=f"{name}/scale")
    mean = ir.node("Mul", [total.outputs[0], scale.outputs[0]], name=f"{name}/Mul")
    for node in (total, scale, mean):
        graph.insert_before(before, node) if before is not None else graph.append(node)
    total.outputs[0].name, scale.outputs[0].name, mean.outputs[0].name = f"{name}/sum", f"{name}/k", name
    for v in (total.outputs[0], mean.outputs[0]):
        v.shape, v.type = values[0].shape, values[0].type
    return mean.outputs[0]


class RewriteToPlanPass(ir.passes.InPlacePass):
    """Replace the baseline blocks with the plan's stages; KV IO renumbered 0..slots−1 in execution order."""

    def __init__(self, structure: BlockStructure, plan: Plan):
        super().__init__()
        self.structure = structure
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, st, plan = model.graph, self.structure, self.plan
        slot_inputs = self._slot_inputs()
        presents: dict[int, list[tuple[ir.Value, ir.Value]]] = defaultdict(list)
        self.before = next(n for n in graph if any(v is st.final for v in n.inputs))  # the epilogue's start
        x = st.x0
        for index, stage in enumerate(plan.stages()):
            x = self._stage(graph, index, stage, x, slot_inputs, presents)
        st.final.replace_all_uses_with(x)

        graph.outputs.clear()
        graph.remove(list(st.block_nodes()), safe=True)
        old_pasts = {v for b in st.blocks for v in b.past}
        for value in [v for v in graph.inputs if v in old_pasts]:
            graph.inputs.remove(value)
        graph.inputs.extend(v for kv in slot_inputs for v in kv)
        outputs = [st.logits]
        for slot in range(len(slot_inputs)):
            for kind, members in zip(("key", "value"), zip(*presents[slot])):
                value = mean_of(graph, list(members), f"{present_name(slot, kind)}/mean")
                value.name = present_name(slot, kind)
                outputs.append(value)
        graph.outputs.extend(outputs)
        return ir.passes.PassResult(model, modified=True)

    def _slot_inputs(self) -> list[tuple[ir.Value, ir.Value]]:
        inputs = []
        for slot, block in enumerate(self.plan.slot_blocks()):
            pair = []
            for kind, old in zip(("key", "value"), self.structure.blocks[block].past):
                pair.append(ir.Value(name=past_name(slot, kind), shape=old.shape, type=old.type))
            inputs.append(tuple(pair))
        return inputs

    def _stage(self, graph, index: int, stage: Stage, x: ir.Value, slot_inputs, presents) -> ir.Value:
        outs = []
        for member, (b, slot) in enumerate(zip(stage.blocks, stage.slots)):
            block: Block = self.structure.blocks[b]
            suffix = f"/stage{index}" + (f"/m{member}" if len(stage.blocks) > 1 else "")
            value_map: dict[ir.Value, ir.Value] = {block.x_in: x}
            meta = {"painters.block": str(b), "painters.stage": str(index)}
            h = x
            if stage.attn:
                value_map.update(zip(block.past, slot_inputs[slot]))
                clone_nodes(graph, block.attn_nodes, value_map, suffix, {**meta, "painters.sublayer": "attn"},
                            self.before)
                h = value_map[block.h]
                presents[slot].append((value_map[block.present[0]], value_map[block.present[1]]))
            out = h
            if stage.mlp:
                value_map[block.h] = h
                clone_nodes(graph, block.mlp_nodes, value_map, suffix, {**meta, "painters.sublayer": "mlp"},
                            self.before)
                out = value_map[block.x_out]
            outs.append(out)
        return mean_of(graph, outs, f"stage{index}/mean", self.before)
