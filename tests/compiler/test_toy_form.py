"""A third block form, written and registered from this test module alone, fuses a parallel group.

The toy blocks of :mod:`tests.compiler.test_passes_toy` (``h = x + x·Wo``, ``x' = h + h·W1``, present
``Concat(past, heads(x·Wk))``) match neither built-in form. :class:`ToyForm` implements the
:class:`~painters.compiler.forms.base.BlockForm` protocol for them — a matcher with why-not reasons, the group's
dimensions, fused key/value projections side by side and a wide block that averages the members — and is
registered with one call; the compiled group must then be one wide stage whose slot holds both members' heads,
with the same logits and KV as the unfused compile.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from painters.compiler.compile import prepare
from painters.compiler.forms import registry
from painters.compiler.forms.base import GroupDims, Mismatch, Region, const, need
from painters.compiler.layout import slot_layout
from painters.compiler.passes.instantiate import InstantiateStagesPass
from painters.decoder_io import KINDS, is_past, present_name
from painters.plans import Stage, parse_plan
from tests.compiler.test_passes_toy import HEAD_DIM, HEADS, HIDDEN, toy_decoder


def _producer(value: ir.Value, op: str, nodes: set) -> ir.Node:
    node = value.producer()
    need(node is not None and node.op_type == op and node in nodes, f"{value.name} is not made by a {op} of the block")
    return node


class ToyForm:
    """The toy block as a plug-in form (see the module docstring)."""

    name = "toy"
    attention = None
    wide_in_place = False

    def match(self, block: Region) -> dict[str, ir.Value]:
        attn, mlp = set(block.attn_nodes), set(block.mlp_nodes)
        need(not block.shared_nodes, "the block has shared nodes")
        out = _producer(block.x_out, "Add", mlp)
        need(out.inputs[0] is block.h, "the MLP residual does not add h")
        w1 = _producer(out.inputs[1], "MatMul", mlp).inputs[1]
        h = _producer(block.h, "Add", attn)
        need(h.inputs[0] is block.x_in, "the attention residual does not add the block input")
        wo = _producer(h.inputs[1], "MatMul", attn).inputs[1]
        parts = {"o": wo, "mlp": w1}
        for kind, past, present in zip(KINDS, block.past, block.present):
            concat = _producer(present, "Concat", attn)
            need(concat.inputs[0] is past, f"present {kind} does not extend its past")
            proj = _producer(concat.inputs[1], "Transpose", attn).inputs[0]
            parts[kind] = _producer(_producer(proj, "Reshape", attn).inputs[0], "MatMul", attn).inputs[1]
        return parts

    def why_not(self, stage: Stage) -> str | None:
        return "kv=mean groups have no toy wide form" if stage.shared_kv else None

    def group_dims(self, members) -> GroupDims:
        for m, member in enumerate(members):
            need(all(const(member[n]).shape == (HIDDEN, HIDDEN) for n in member), f"member {m}: weights differ")
        return GroupDims(k=len(members), heads=HEADS, kv_heads=HEADS, head_dim=HEAD_DIM, hidden=HIDDEN,
                         inter=HIDDEN)

    def fused_weights(self, graph: ir.Graph, blocks, members, dims: GroupDims) -> dict[str, ir.Value]:
        weights = {}
        for kind in KINDS:  # member m's heads side by side: columns m·H … (m+1)·H
            array = np.concatenate([const(m[kind]) for m in members], axis=1)
            name = f"toy{'_'.join(map(str, blocks))}.{kind}"
            weights[kind] = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.FLOAT),
                                     const_value=ir.tensor(array, name=name))
            graph.register_initializer(weights[kind])
        return weights

    def wide_block(self, graph, before, index, blocks, members, dims, weights, shared_kv, opset):
        return _ToyWide(graph, before, index, members, dims, weights)


class _ToyWide:
    def __init__(self, graph, before, index, members, dims, weights):
        self.graph, self.before, self.members, self.dims, self.w = graph, before, members, dims, weights
        self.prefix = f"stage{index}/toy"

    def op(self, op_type, inputs, name, **attrs):
        node = ir.node(op_type, inputs, attributes=attrs or None, name=f"{self.prefix}/{name}")
        node.outputs[0].name = f"{self.prefix}/{name}"
        self.graph.insert_before(self.before, node)
        return node.outputs[0]

    def build(self, x, past):
        shape = self.op("Constant", [], "heads_shape",
                        value=ir.tensor(np.array([0, 0, self.dims.k * HEADS, HEAD_DIM], np.int64)))
        present = []
        for kind, p in zip(KINDS, past):
            heads = self.op("Reshape", [self.op("MatMul", [x, self.w[kind]], f"{kind}_proj"), shape], f"{kind}_heads")
            new = self.op("Transpose", [heads], f"{kind}_t", perm=[0, 2, 1, 3])
            present.append(self.op("Concat", [p, new], f"{kind}_present", axis=2))
        outs = []
        for m, member in enumerate(self.members):
            h = self.op("Add", [x, self.op("MatMul", [x, member["o"]], f"m{m}/o_proj")], f"m{m}/h")
            outs.append(self.op("Add", [h, self.op("MatMul", [h, member["mlp"]], f"m{m}/mlp")], f"m{m}/out"))
        scale = self.op("Constant", [], "scale", value=ir.tensor(np.array(1 / len(outs), np.float32)))
        return self.op("Mul", [self.op("Sum", outs, "sum"), scale], "mean"), tuple(present)


@pytest.fixture
def toy_form():
    form = ToyForm()
    registry.register(form)
    yield form
    registry.unregister(form)


def _compiled(plan: str, fuse: bool):
    rng = np.random.default_rng(0)
    weights = [{n: (rng.standard_normal((HIDDEN, HIDDEN)) * 0.3).astype(np.float32) for n in ("k", "v", "o", "mlp")}
               for _ in range(4)]
    model = toy_decoder(weights)
    structure = prepare(model)
    layout = slot_layout(parse_plan(plan, structure.num_layers), structure, fuse_parallel=fuse, warn=False)
    InstantiateStagesPass(structure, layout)(model)
    return model, structure, layout


def _run(model: ir.Model) -> dict[str, np.ndarray]:
    proto = ir.serde.serialize_model(model)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.array([[1, 5, 3], [2, 7, 0]], np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones(ids.shape, np.int64)}
    for i in session.get_inputs():
        if is_past(i.name):
            feeds[i.name] = np.zeros((2, i.shape[1], 0, HEAD_DIM), np.float32)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def test_a_form_registered_from_a_test_fuses_a_parallel_group(toy_form):
    model, structure, layout = _compiled("parallel_1_3", fuse=True)
    assert all(b.block_form is toy_form for b in structure.blocks)
    assert layout.fused_stages == [1] and layout.slots[1].heads == 2 * HEADS and layout.slots[1].plan_slots == (1, 2)
    assert any(n.name.startswith("stage1/toy/") for n in model.graph)

    reference, _, unfused = _compiled("parallel_1_3", fuse=False)
    assert unfused.fused_stages == [] and len(unfused.slots) == 4
    got, want = _run(model), _run(reference)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-5)
    for kind in KINDS:  # the wide slot holds member 0's heads, then member 1's
        np.testing.assert_allclose(got[present_name(1, kind)], np.concatenate(
            [want[present_name(1, kind)], want[present_name(2, kind)]], axis=1), rtol=1e-6, atol=1e-6)


def test_without_the_form_the_group_says_why_not(toy_form):
    registry.unregister(toy_form)
    try:
        _, structure, layout = _compiled("parallel_1_3", fuse=True)
    finally:
        registry.register(toy_form)
    assert structure.blocks[1].block_form is None and layout.fused_stages == []
    assert layout.stages[1].reason.startswith("member 0 (block 1): ")  # each built-in form's why-not reason
    _, structure, layout = _compiled("parallel_1_3:kvmean", fuse=True)
    assert layout.fused_stages == [] and layout.stages[1].reason == "kv=mean groups have no toy wide form"
    block = prepare(toy_decoder([{n: np.eye(HIDDEN, dtype=np.float32) for n in ("k", "v", "o", "mlp")}])).blocks[0]
    swapped = type(block)(**{**vars(block), "present": block.present[::-1]})  # the value's Concat reads key's past
    with pytest.raises(Mismatch, match="present key does not extend its past"):
        toy_form.match(swapped)
