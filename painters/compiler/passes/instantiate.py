"""Instantiate a plan's stages from its slot layout: per stage, clones of the blocks it runs or one wide block.

The layout (:func:`painters.compiler.layout.slot_layout`) has already decided which stages fuse and which
compiled KV slot each one fills, so this pass only builds. The KV inputs are created once, named by their
compiled slot; each stage then reads the current residual stream:

* a cloned stage copies each member's nodes through a value map: the block's input becomes the stream, its
  past-KV inputs become the member's slot inputs, and everything else it reads (initializers, rotary tables,
  the mask) maps to itself, so clones share weights — duplicating a block adds nodes, never weight bytes;
  several members are averaged, ``Sum · 1/k``;
* a fused stage is one wide block that the members' block form builds from their typed descriptions
  (:meth:`~painters.compiler.forms.base.BlockForm.wide_block`; with ``int4``, its ``int4_wide_block``, whose
  float weights the int4 pass after this one converts to the members' own blocks).

Finally the baseline blocks and their KV inputs are removed and the outputs become ``logits`` and one
present pair per compiled slot (a ``kv=mean`` stage left unfused averages its members' presents). The
identity plan (every block once, in order, all sublayers, unfused) leaves the graph untouched.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx_ir as ir

from painters.compiler.blocks import Block, BlockStructure
from painters.compiler.layout import SlotLayout, StageLayout
from painters.decoder_io import KINDS, past_name, present_name

__all__ = ["InstantiateStagesPass", "clone_nodes", "mean_of"]


def clone_nodes(graph: ir.Graph, nodes: list[ir.Node], value_map: dict[ir.Value, ir.Value], suffix: str,
                meta: dict[str, str], before: ir.Node) -> None:
    """Insert copies of ``nodes`` (in order) before ``before``, reading through ``value_map``.

    The clones' outputs are recorded in ``value_map``. Inserting ahead of the epilogue keeps the graph
    topologically sorted.
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


def is_identity(structure: BlockStructure, layout: SlotLayout) -> bool:
    """Whether the layout runs every block once, in order, with both sublayers, in its own slot."""
    return (len(layout.stages) == structure.num_layers and not layout.fused_stages
            and all(s.stage.blocks == (i,) and s.stage.attn and s.stage.mlp and s.member_slots == (i,)
                    for i, s in enumerate(layout.stages)))


class InstantiateStagesPass(ir.passes.InPlacePass):
    """Replace the baseline blocks with the layout's stages (see the module docstring)."""

    def __init__(self, structure: BlockStructure, layout: SlotLayout, int4: bool = False):
        super().__init__()
        self.structure = structure
        self.layout = layout
        self.int4 = int4

    def requires(self, model: ir.Model) -> None:
        """The structure must be this graph's: its blocks' values still in the graph, its KV inputs present."""
        inputs = set(model.graph.inputs)
        if not all(p in inputs for b in self.structure.blocks for p in b.past):
            raise ir.passes.PreconditionError("the block structure's past-KV inputs are not inputs of this graph; "
                                              "discover the blocks of the graph being instantiated")
        if self.structure.final.producer() is None or self.structure.final.producer().graph is not model.graph:
            raise ir.passes.PreconditionError("the block structure's final stream value is not in this graph")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, st = model.graph, self.structure
        if is_identity(st, self.layout):
            return ir.passes.PassResult(model, modified=False)
        self.opset = model.opset_imports.get("", 0)
        self.before = next(n for n in graph if any(v is st.final for v in n.inputs))  # the epilogue's start
        self.slot_inputs = [self._slot_input(slot) for slot in range(self.layout.kv_slots)]
        self.presents: dict[int, list[tuple[ir.Value, ir.Value]]] = defaultdict(list)
        self.weights: dict[tuple[int, ...], dict[str, ir.Value]] = {}
        x = st.x0
        for stage in self.layout.stages:
            x = self._wide(graph, stage, x) if stage.fused else self._cloned(graph, stage, x)
        st.final.replace_all_uses_with(x)

        graph.outputs.clear()
        graph.remove(list(st.block_nodes()), safe=True)
        old_pasts = {v for b in st.blocks for v in b.past}
        for value in [v for v in graph.inputs if v in old_pasts]:
            graph.inputs.remove(value)
        defaults = [v for v in graph.inputs if v.const_value is not None]  # optional inputs (logits_to_keep) last
        for value in defaults:
            graph.inputs.remove(value)
        graph.inputs.extend([*(v for kv in self.slot_inputs for v in kv), *defaults])
        outputs = [st.logits]
        for slot in range(self.layout.kv_slots):
            for kind, members in zip(KINDS, zip(*self.presents[slot])):
                value = mean_of(graph, list(members), f"{present_name(slot, kind)}/mean", self.before)
                value.name = present_name(slot, kind)
                outputs.append(value)
        graph.outputs.extend(outputs)
        return ir.passes.PassResult(model, modified=True)

    def _slot_input(self, slot: int) -> tuple[ir.Value, ir.Value]:
        """The graph inputs of a compiled slot: the filling block's past shape with the slot's head count."""
        spec = self.layout.slots[slot]
        stage = self.layout.stages[spec.stage]
        member = next(m for m, s in enumerate(stage.member_slots) if s == slot)
        block = self.structure.blocks[stage.stage.blocks[member]]
        pair = []
        for kind, old in zip(KINDS, block.past):
            dims = list(old.shape) if old.shape is not None else None
            if dims is not None and spec.heads is not None:
                dims[1] = spec.heads
            pair.append(ir.Value(name=past_name(slot, kind), shape=ir.Shape(dims) if dims is not None else None,
                                 type=old.type))
        return pair[0], pair[1]

    def _wide(self, graph: ir.Graph, stage: StageLayout, x: ir.Value) -> ir.Value:
        blocks = stage.stage.blocks
        members = [self.structure.blocks[b].form for b in blocks]
        form = self.structure.blocks[blocks[0]].block_form  # the layout fused only members of one form
        dims = form.group_dims(members)
        weights, wide = ((form.int4_fused_weights, form.int4_wide_block) if self.int4
                         else (form.fused_weights, form.wide_block))
        if blocks not in self.weights:  # the loops of one group share one set of fused weights
            self.weights[blocks] = weights(graph, blocks, members, dims)
        slot = stage.member_slots[0]
        out, present = wide(graph, self.before, stage.index, blocks, members, dims, self.weights[blocks],
                            stage.stage.shared_kv, self.opset).build(x, self.slot_inputs[slot])
        self.presents[slot].append(present)
        return out

    def _cloned(self, graph: ir.Graph, stage: StageLayout, x: ir.Value) -> ir.Value:
        outs = []
        several = len(stage.stage.blocks) > 1
        for member, (b, slot) in enumerate(zip(stage.stage.blocks, stage.member_slots)):
            block: Block = self.structure.blocks[b]
            suffix = f"/stage{stage.index}" + (f"/m{member}" if several else "")
            value_map: dict[ir.Value, ir.Value] = {block.x_in: x}
            meta = {"painters.block": str(b), "painters.stage": str(stage.index)}
            h = x
            if stage.stage.attn or stage.stage.mlp:  # what both sublayers read (a parallel block's one norm)
                clone_nodes(graph, block.shared_nodes, value_map, suffix, {**meta, "painters.sublayer": "shared"},
                            self.before)
            if stage.stage.attn:
                value_map.update(zip(block.past, self.slot_inputs[slot]))
                clone_nodes(graph, block.attn_nodes, value_map, suffix, {**meta, "painters.sublayer": "attn"},
                            self.before)
                h = value_map[block.h]
                self.presents[slot].append((value_map[block.present[0]], value_map[block.present[1]]))
            out = h
            if stage.stage.mlp:
                value_map[block.h] = h
                clone_nodes(graph, block.mlp_nodes, value_map, suffix, {**meta, "painters.sublayer": "mlp"},
                            self.before)
                out = value_map[block.x_out]
            outs.append(out)
        return mean_of(graph, outs, f"stage{stage.index}/mean", self.before)
