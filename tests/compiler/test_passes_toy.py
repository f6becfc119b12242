"""Pass-level tests on toy decoders of a few nodes, built with onnx-ir's tape as onnx-ir's own tests build theirs.

A toy block is ``h = x + x·Wo``, ``x' = h + h·W1``, with its present key/value ``Concat(past, heads(x·Wk))``:
enough for block discovery (residual Adds, KV IO) and small enough to assert each pass's structure exactly.
Numbers are checked against an independent reference: the same toy built directly with the plan's blocks.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx_ir import tape

from painters.compiler.compile import compile_passes, prepare, run_passes
from painters.compiler.layout import slot_layout
from painters.compiler.passes.anchor_shapes import AnchorKVShapesPass
from painters.compiler.passes.instantiate import InstantiateStagesPass
from painters.decoder_io import KINDS, LOGITS, is_past, past_name, present_name
from painters.plans import parse_plan

HIDDEN, HEADS, HEAD_DIM, VOCAB = 4, 1, 4, 8
FLOAT, INT64 = ir.TensorType(ir.DataType.FLOAT), ir.TensorType(ir.DataType.INT64)


def _weights(layers: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{n: (rng.standard_normal((HIDDEN, HIDDEN)) * 0.3).astype(np.float32) for n in ("k", "v", "o", "mlp")}
            for _ in range(layers)]


def toy_decoder(blocks: list[dict[str, np.ndarray]], *, shape_of_past: bool = False) -> ir.Model:
    """input_ids → Gather → blocks → MatMul(lm_head) → logits, one present pair per block.

    ``shape_of_past``: the prologue also reads ``Shape(past_key_values.{last}.key)`` into an output, as
    exporters do when they take the batch size or past length from any input that carries it.
    """
    ids = ir.Value(name="input_ids", shape=ir.Shape(["batch", "seq"]), type=INT64)
    mask = ir.Value(name="attention_mask", shape=ir.Shape(["batch", "total"]), type=INT64)
    pasts = [tuple(ir.Value(name=past_name(i, kind), shape=ir.Shape(["batch", HEADS, "past", HEAD_DIM]), type=FLOAT)
                   for kind in KINDS) for i in range(len(blocks))]
    graph = ir.Graph([ids, mask, *(v for pair in pasts for v in pair)], [], nodes=[], opset_imports={"": 18},
                     name="toy")
    t = tape.Tape(graph)

    def init(name: str, array: np.ndarray) -> ir.Value:
        value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(
            array.dtype)), const_value=ir.tensor(array, name=name))
        graph.register_initializer(value)
        return value

    rng = np.random.default_rng(1)
    emb = init("emb", rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32))
    lm_head = init("lm_head", rng.standard_normal((HIDDEN, VOCAB)).astype(np.float32))
    heads_shape = init("heads_shape", np.array([0, 0, HEADS, HEAD_DIM], np.int64))
    x = t.op("Gather", [emb, ids], name="embed")
    outputs: list[ir.Value] = []
    for i, w in enumerate(blocks):
        wk, wv, wo, w1 = (init(f"layers.{i}.{n}", w[n]) for n in ("k", "v", "o", "mlp"))
        for kind, weight, past in zip(KINDS, (wk, wv), pasts[i]):
            proj = t.op("MatMul", [x, weight], name=f"l{i}.{kind}_proj")
            heads = t.op("Reshape", [proj, heads_shape], name=f"l{i}.{kind}_heads")
            new = t.op("Transpose", [heads], {"perm": [0, 2, 1, 3]}, name=f"l{i}.{kind}_t")
            present = t.op("Concat", [past, new], {"axis": 2}, name=f"l{i}.{kind}_present")
            present.name = present_name(i, kind)
            outputs.append(present)
        h = t.op("Add", [x, t.op("MatMul", [x, wo], name=f"l{i}.o_proj")], name=f"l{i}.attn_residual")
        x = t.op("Add", [h, t.op("MatMul", [h, w1], name=f"l{i}.mlp")], name=f"l{i}.mlp_residual")
    logits = t.op("MatMul", [x, lm_head], name="lm_head")
    logits.name = LOGITS
    graph.outputs.extend([logits, *outputs])
    if shape_of_past:
        shape = t.op("Identity", [t.op("Shape", [pasts[-1][0]], name="shape_of_past")], name="past_shape")
        shape.name = "past_shape"
        graph.outputs.append(shape)
    return ir.Model(graph, ir_version=10)


def _run(model: ir.Model, ids: np.ndarray, past_len: int = 0) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    proto = ir.serde.serialize_model(model)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": np.ones((ids.shape[0], past_len + ids.shape[1]), np.int64)}
    rng = np.random.default_rng(2)
    for i in session.get_inputs():
        if is_past(i.name):
            feeds[i.name] = rng.standard_normal((ids.shape[0], HEADS, past_len, HEAD_DIM)).astype(np.float32)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def _instantiate(model: ir.Model, plan: str):
    structure = prepare(model)
    layout = slot_layout(parse_plan(plan, structure.num_layers), structure, warn=False)
    return InstantiateStagesPass(structure, layout)(model), structure, layout


IDS = np.array([[1, 5, 3], [2, 7, 0]], np.int64)


def test_identity_plan_is_not_modified():
    model = toy_decoder(_weights(3))
    before = [n.name for n in model.graph]
    result, structure, _ = _instantiate(model, "baseline")
    assert structure.num_layers == 3 and all(b.form is None for b in structure.blocks)  # toy blocks: no Llama form
    assert not result.modified and [n.name for n in model.graph] == before


def test_skip_clones_the_kept_blocks_and_renumbers_slots():
    weights = _weights(3)
    model = toy_decoder(weights)
    initializers = dict(model.graph.initializers)
    result, _, layout = _instantiate(model, "skip_1_2")
    assert result.modified and layout.kv_slots == 2
    graph = model.graph
    assert [v.name for v in graph.inputs] == ["input_ids", "attention_mask", *(past_name(s, k) for s in (0, 1)
                                                                              for k in KINDS)]
    assert [v.name for v in graph.outputs] == [LOGITS, *(present_name(s, k) for s in (0, 1) for k in KINDS)]
    blocks = {n.metadata_props.get("painters.block") for n in graph if "painters.stage" in n.metadata_props}
    assert blocks == {"0", "2"}
    assert not any(n.name.startswith("l1.") for n in graph)  # block 1's nodes are gone, not just unused
    assert graph.outputs[3].producer().metadata_props["painters.block"] == "2"  # present.1 comes from block 2
    assert dict(graph.initializers) == initializers  # clones read the same weights: no copy, none added
    want = _run(toy_decoder([weights[0], weights[2]]), IDS, past_len=2)
    got = _run(model, IDS, past_len=2)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-6)


def test_duplicated_block_shares_its_weights():
    weights = _weights(2)
    model = toy_decoder(weights)
    result, _, layout = _instantiate(model, "dup_1_x2")
    assert result.modified and layout.kv_slots == 3
    clones = [n for n in model.graph if n.metadata_props.get("painters.block") == "1" and n.op_type == "MatMul"
              and n.name.startswith("l1.mlp")]
    assert [n.metadata_props["painters.stage"] for n in clones] == ["1", "2"]
    assert clones[0].inputs[1] is clones[1].inputs[1] is model.graph.initializers["layers.1.mlp"]
    got = _run(model, IDS)
    want = _run(toy_decoder([weights[0], weights[1], weights[1]]), IDS)
    np.testing.assert_allclose(got[LOGITS], want[LOGITS], rtol=1e-6, atol=1e-6)


def test_parallel_group_is_averaged_and_keeps_a_slot_per_member():
    weights = _weights(3)
    model = toy_decoder(weights)
    result, _, layout = _instantiate(model, "parallel_0_2")
    assert result.modified and layout.fused_stages == [] and "member 0" in layout.stages[0].reason
    assert layout.kv_slots == 3
    mean = [n for n in model.graph if n.name.startswith("stage0/mean/")]
    assert [n.op_type for n in mean] == ["Sum", "Constant", "Mul"]
    assert mean[1].attributes["value"].as_tensor().numpy() == pytest.approx(0.5)


def test_pipeline_checks_the_result_and_requires_its_own_structure():
    model = toy_decoder(_weights(3))
    structure = prepare(model)
    layout = slot_layout(parse_plan("reverse_0_3", 3), structure, warn=False)
    result = run_passes(compile_passes(structure, layout), model)  # instantiate, clean up, sort, ONNX checker
    assert result.modified and len(model.graph.outputs) == 7
    other = toy_decoder(_weights(3))
    with pytest.raises(ir.passes.PreconditionError, match="discover the blocks of the graph"):
        InstantiateStagesPass(structure, layout)(other)  # a structure discovered on another graph


def test_anchor_kv_shapes_reads_batch_from_the_inputs_every_plan_keeps():
    model = toy_decoder(_weights(2), shape_of_past=True)
    want = _run(model, IDS, past_len=3)["past_shape"]
    result = AnchorKVShapesPass()(model)
    assert result.modified
    assert not [n for n in model.graph if n.op_type == "Shape" and is_past(n.inputs[0].name)]
    np.testing.assert_array_equal(_run(model, IDS, past_len=3)["past_shape"], want)
    assert not AnchorKVShapesPass()(model).modified  # nothing left to re-anchor
