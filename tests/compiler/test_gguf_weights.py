"""Exact int4/int8 weights from a GGUF's own blocks (``GgufWeightsPass``): one MatMul per block type.

A GGUF is written with gguf-py's quantizer; the graph's fp32 weights are gguf-py's de-quantization of it (what a
GGUF export holds). With ``accuracy_level`` 0 (fp32 activations) the converted graph must equal the fp32 product
up to float summation order; a re-quantizing graph does not.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx_ir.passes.common import RemoveUnusedNodesPass

from painters.compiler.passes.gguf_blocks import EXACT, to_nbits
from painters.compiler.passes.gguf_weights import GgufWeightsPass
from painters.errors import CompileError

K, N = 96, 24
# fp32 activations: the converted weights are exact, only the order of the float sums differs (measured ~1e-7)
REL_EXACT = 1e-5


def _gguf(path, tensors: dict[str, tuple[np.ndarray, str]]):
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    for name, (array, kind) in tensors.items():
        qtype = gguf.GGMLQuantizationType[kind]
        raw = array if kind == "F32" else gguf.quants.quantize(array, qtype)
        writer.add_tensor(name, raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _dequantized(array: np.ndarray, kind: str) -> np.ndarray:
    import gguf

    qtype = gguf.GGMLQuantizationType[kind]
    return gguf.quants.dequantize(gguf.quants.quantize(array, qtype), qtype)


def _matmul_model(weight_kn: np.ndarray, *, transposed: bool = False) -> ir.Model:
    """``Y = X · W`` with W stored [K, N], or stored [N, K] and read through a Transpose (a tied head)."""
    stored = weight_kn.T.copy() if transposed else weight_kn
    w = ir.Value(name="w", const_value=ir.tensor(stored, name="w"))
    w.shape, w.dtype = w.const_value.shape, w.const_value.dtype
    x = ir.Value(name="x", shape=ir.Shape([2, 5, K]), type=ir.TensorType(ir.DataType.FLOAT))
    nodes = []
    b = w
    if transposed:
        nodes.append(ir.Node("", "Transpose", [w], attributes=[ir.AttrInt64s("perm", [1, 0])], name="t"))
        b = nodes[-1].outputs[0]
    nodes.append(ir.Node("", "MatMul", [x, b], name="mm"))
    y = nodes[-1].outputs[0]
    y.name, y.shape, y.type = "y", ir.Shape([2, 5, N]), ir.TensorType(ir.DataType.FLOAT)
    graph = ir.Graph([x], [y], nodes=nodes, initializers=[w], opset_imports={"": 17})
    return ir.Model(graph, ir_version=9)


def _run(model: ir.Model, x: np.ndarray, tmp_path, level: int | None = None) -> np.ndarray:
    import onnxruntime as ort

    if level is not None:
        for node in model.graph:
            if node.op_type == "MatMulNBits":
                node.attributes["accuracy_level"] = ir.AttrInt64("accuracy_level", level)
    path = tmp_path / f"m{level}.onnx"
    ir.save(model, path)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("kind", sorted(EXACT))
@pytest.mark.parametrize("transposed", [False, True])
def test_gguf_blocks_exact(tmp_path, kind, transposed):
    rng = np.random.default_rng(0)
    original = (rng.standard_normal((N, K)) * 0.05 + 0.01).astype(np.float32)
    path = _gguf(tmp_path / "w.gguf", {"blk.0.w": (original, kind)})
    w_nk = _dequantized(original, kind)  # what a GGUF export's fp32 graph holds
    x = rng.standard_normal((2, 5, K)).astype(np.float32)
    want = x @ w_nk.T
    model = _matmul_model(np.ascontiguousarray(w_nk.T), transposed=transposed)
    assert GgufWeightsPass(path).call(model).modified
    RemoveUnusedNodesPass()(model)  # a tied head's Transpose goes with unused nodes, as in compile
    ops = [n.op_type for n in model.graph]
    assert "MatMulNBits" in ops
    node = next(n for n in model.graph if n.op_type == "MatMulNBits")
    assert node.attributes["bits"].as_int() == EXACT[kind].bits
    assert node.attributes["block_size"].as_int() == 32
    assert ("Add" in ops) == EXACT[kind].has_min  # the block minima term
    assert "w" not in model.graph.initializers, "the fp32 weight must not stay in the graph"
    got = _run(model, x, tmp_path, level=0)
    diff = np.abs(got - want).max() / np.abs(want).max()
    assert diff <= REL_EXACT, f"{kind}: relative max diff {diff:.2e} > {REL_EXACT:.0e}"


def test_gguf_float_tensor_stays_float_and_foreign_weight_refused(tmp_path):
    rng = np.random.default_rng(1)
    w_nk = rng.standard_normal((N, K)).astype(np.float32)
    path = _gguf(tmp_path / "f.gguf", {"blk.0.w": (w_nk, "F32")})
    model = _matmul_model(np.ascontiguousarray(w_nk.T))
    assert not GgufWeightsPass(path).call(model).modified  # F32 in the file: the float MatMul is its exact form
    assert [n.op_type for n in model.graph] == ["MatMul"]
    other = _matmul_model(np.ascontiguousarray(w_nk.T) + 1e-3)
    with pytest.raises(CompileError, match=r"weight w: 24 of its 24 columns are no row of f\.gguf"):
        GgufWeightsPass(path).call(other)


def test_gguf_kquant_refused_by_name():
    raw = np.zeros((2, 144), dtype=np.uint8)  # two Q4_K super-blocks' bytes
    with pytest.raises(ValueError, match="GGUF type Q4_K has no exact MatMulNBits form"):
        to_nbits(raw, "Q4_K")


def test_gguf_blocks_need_an_fp32_graph(tmp_path):
    rng = np.random.default_rng(2)
    original = rng.standard_normal((N, K)).astype(np.float32)
    path = _gguf(tmp_path / "h.gguf", {"blk.0.w": (original, "Q4_0")})
    model = _matmul_model(np.ascontiguousarray(_dequantized(original, "Q4_0").T))
    w = model.graph.initializers["w"]
    w.const_value = ir.tensor(w.const_value.numpy().astype(np.float16), name="w")
    w.dtype = ir.DataType.FLOAT16
    with pytest.raises(CompileError, match="weight w is FLOAT16: exact GGUF blocks need a graph exported in fp32"):
        GgufWeightsPass(path).call(model)


def _gather_model(table: np.ndarray, tied: bool = False) -> ir.Model:
    """``Gather(emb, ids)``; ``tied``: the table stored ``[K, N]`` and read through ``Transpose`` (the builder's
    embedding tied to its head's weight)."""
    stored = np.ascontiguousarray(table.T) if tied else table
    t = ir.Value(name="emb", const_value=ir.tensor(stored, name="emb"))
    t.shape, t.dtype = t.const_value.shape, t.const_value.dtype
    ids = ir.Value(name="ids", shape=ir.Shape([2, 3]), type=ir.TensorType(ir.DataType.INT64))
    nodes = [ir.Node("", "Transpose", [t], attributes=[ir.AttrInt64s("perm", [1, 0])], name="t")] if tied else []
    node = ir.Node("", "Gather", [nodes[0].outputs[0] if tied else t, ids], attributes=[ir.AttrInt64("axis", 0)],
                   name="g")
    y = node.outputs[0]
    y.name, y.shape, y.type = "y", ir.Shape([2, 3, K]), ir.TensorType(ir.DataType.FLOAT)
    return ir.Model(ir.Graph([ids], [y], nodes=[*nodes, node], initializers=[t], opset_imports={"": 17}),
                    ir_version=9)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("kind", sorted(EXACT))
def test_gguf_embedding_lookup(tmp_path, kind, tied):
    """Tables of block types without a minimum become GatherBlockQuantized (bit-exact), a tied table's Transpose
    and fp32 weight gone; Q4_1/Q5_1 stay Gather."""
    import onnxruntime as ort

    original = np.random.default_rng(3).standard_normal((N, K)).astype(np.float32)
    path = _gguf(tmp_path / "e.gguf", {"token_embd.weight": (original, kind)})
    table = _dequantized(original, kind)
    model = _gather_model(table, tied)
    assert GgufWeightsPass(path).call(model).modified != EXACT[kind].has_min
    ops = [n.op_type for n in model.graph]
    if EXACT[kind].has_min:
        assert ops == ["Transpose", "Gather"] if tied else ["Gather"]
    else:
        assert ops == ["GatherBlockQuantized"] and "emb" not in model.graph.initializers
    ir.save(model, tmp_path / "g.onnx")
    ids = np.array([[0, 5, 23], [7, 7, 1]], dtype=np.int64)
    got = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    np.testing.assert_array_equal(got, table[ids])


def test_block_sums_shared_by_matmuls_of_one_input(tmp_path):
    """q, k and v (gate and up) read one activation: its block sums are computed once for all their minima."""
    rng = np.random.default_rng(4)
    originals = [rng.standard_normal((N, K)).astype(np.float32) for _ in range(2)]
    path = _gguf(tmp_path / "s.gguf", {f"blk.0.w{i}": (o, "Q4_1") for i, o in enumerate(originals)})
    weights = [np.ascontiguousarray(_dequantized(o, "Q4_1").T) for o in originals]
    x = ir.Value(name="x", shape=ir.Shape([2, 5, K]), type=ir.TensorType(ir.DataType.FLOAT))
    inits, nodes, outs = [], [], []
    for i, w in enumerate(weights):
        v = ir.Value(name=f"w{i}", const_value=ir.tensor(w, name=f"w{i}"))
        v.shape, v.dtype = v.const_value.shape, v.const_value.dtype
        inits.append(v)
        nodes.append(ir.Node("", "MatMul", [x, v], name=f"mm{i}"))
        y = nodes[-1].outputs[0]
        y.name, y.shape, y.type = f"y{i}", ir.Shape([2, 5, N]), ir.TensorType(ir.DataType.FLOAT)
        outs.append(y)
    model = ir.Model(ir.Graph([x], outs, nodes=nodes, initializers=inits, opset_imports={"": 17}), ir_version=9)
    assert GgufWeightsPass(path).call(model).modified
    ops = [n.op_type for n in model.graph]
    assert ops.count("ReduceSum") == 1 and ops.count("MatMulNBits") == 2 and ops.count("Add") == 2
    import onnxruntime as ort

    for node in model.graph:
        if node.op_type == "MatMulNBits":
            node.attributes["accuracy_level"] = ir.AttrInt64("accuracy_level", 0)
    ir.save(model, tmp_path / "s.onnx")
    xs = rng.standard_normal((2, 5, K)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": xs})
    for g, w in zip(got, weights):
        want = xs @ w
        assert np.abs(g - want).max() / np.abs(want).max() <= REL_EXACT


@pytest.mark.parametrize("kind", sorted(EXACT))
def test_tied_lookup_reads_the_heads_blocks(tmp_path, kind):
    """A lookup through ``Transpose`` of the head's weight (the builder's tied embedding) reads the head's own
    ``MatMulNBits`` blocks and scales — one copy of the table — bit-exact; minimum types keep an fp32 Gather."""
    import onnxruntime as ort

    original = np.random.default_rng(5).standard_normal((N, K)).astype(np.float32)
    path = _gguf(tmp_path / "t.gguf", {"token_embd.weight": (original, kind)})
    table = _dequantized(original, kind)  # [N, K]: rows are tokens
    w = ir.Value(name="w", const_value=ir.tensor(np.ascontiguousarray(table.T), name="w"))  # the head's [K, N]
    w.shape, w.dtype = w.const_value.shape, w.const_value.dtype
    ids = ir.Value(name="ids", shape=ir.Shape([2, 3]), type=ir.TensorType(ir.DataType.INT64))
    x = ir.Value(name="x", shape=ir.Shape([2, 5, K]), type=ir.TensorType(ir.DataType.FLOAT))
    t = ir.Node("", "Transpose", [w], attributes=[ir.AttrInt64s("perm", [1, 0])], name="t")
    g = ir.Node("", "Gather", [t.outputs[0], ids], attributes=[ir.AttrInt64("axis", 0)], name="g")
    mm = ir.Node("", "MatMul", [x, w], name="mm")
    for out, name, shape in ((g.outputs[0], "emb", [2, 3, K]), (mm.outputs[0], "y", [2, 5, N])):
        out.name, out.shape, out.type = name, ir.Shape(shape), ir.TensorType(ir.DataType.FLOAT)
    model = ir.Model(ir.Graph([ids, x], [g.outputs[0], mm.outputs[0]], nodes=[t, g, mm], initializers=[w],
                              opset_imports={"": 17}), ir_version=9)
    assert GgufWeightsPass(path).call(model).modified
    ops = {n.op_type: n for n in model.graph}
    blocks = ops["MatMulNBits"].inputs[1]
    if EXACT[kind].has_min:
        assert ops["Gather"].inputs[0].producer().op_type == "Transpose"
    else:
        assert "Gather" not in ops and "Transpose" not in ops and "w" not in model.graph.initializers
        assert ops["GatherBlockQuantized"].inputs[0] is blocks  # the head's blocks, not a copy
        assert sum(v.const_value.nbytes for v in model.graph.initializers.values()) < table.nbytes / 2
    for node in model.graph:
        if node.op_type == "MatMulNBits":
            node.attributes["accuracy_level"] = ir.AttrInt64("accuracy_level", 0)
    ir.save(model, tmp_path / "t.onnx")
    token_ids = np.array([[0, 5, 23], [7, 7, 1]], dtype=np.int64)
    xs = np.random.default_rng(6).standard_normal((2, 5, K)).astype(np.float32)
    emb, y = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"ids": token_ids, "x": xs})
    np.testing.assert_array_equal(emb, table[token_ids])
    want = xs @ table.T
    assert np.abs(y - want).max() / np.abs(want).max() <= REL_EXACT


def test_a_lookup_reading_the_heads_weight_the_same_way_round_keeps_its_own_rows(tmp_path):
    """Head blocks are shared only with a lookup that reads the weight the other way round (the tie's transpose):
    a Gather of the very [K, K] initializer a MatMul reads untransposed wants the weight's rows, not the head's."""
    import onnxruntime as ort

    original = np.random.default_rng(7).standard_normal((K, K)).astype(np.float32)
    path = _gguf(tmp_path / "t.gguf", {"output.weight": (original, "Q8_0")})
    head = _dequantized(original, "Q8_0")  # the GGUF's rows: the head's output columns
    w = ir.Value(name="w", const_value=ir.tensor(np.ascontiguousarray(head.T), name="w"))  # MatMul weight [K, N]
    w.shape, w.dtype = w.const_value.shape, w.const_value.dtype
    ids = ir.Value(name="ids", shape=ir.Shape([2, 3]), type=ir.TensorType(ir.DataType.INT64))
    x = ir.Value(name="x", shape=ir.Shape([2, 5, K]), type=ir.TensorType(ir.DataType.FLOAT))
    g = ir.Node("", "Gather", [w, ids], attributes=[ir.AttrInt64("axis", 0)], name="g")
    mm = ir.Node("", "MatMul", [x, w], name="mm")
    for out, name, shape in ((g.outputs[0], "emb", [2, 3, K]), (mm.outputs[0], "y", [2, 5, K])):
        out.name, out.shape, out.type = name, ir.Shape(shape), ir.TensorType(ir.DataType.FLOAT)
    model = ir.Model(ir.Graph([ids, x], [g.outputs[0], mm.outputs[0]], nodes=[g, mm], initializers=[w],
                              opset_imports={"": 17}), ir_version=9)
    assert GgufWeightsPass(path).call(model).modified
    assert {n.op_type for n in model.graph} == {"Gather", "MatMulNBits"}  # w's rows are no GGUF rows: fp32 lookup
    ir.save(model, tmp_path / "t.onnx")
    token_ids = np.array([[0, 5, 23], [7, 7, 1]], dtype=np.int64)
    xs = np.zeros((2, 5, K), dtype=np.float32)
    (emb, _) = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"ids": token_ids, "x": xs})
    np.testing.assert_array_equal(emb, head.T[token_ids])
