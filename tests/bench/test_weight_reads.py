"""Weight bytes a decode step reads, off the graph: a three-node graph, and plans against the model's parameters."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from painters.bench.latency import benchmark
from painters.bench.weight_reads import weight_bytes
from painters.routing import decode_weight_bytes, open_runners


def test_three_nodes_count_reads_not_tensors(tmp_path):
    """W read by two MatMuls counts twice (once through a Transpose, folded at load and counted where it is
    read); the embedding Gather reads a row, not its 10 × 4 table."""
    table = numpy_helper.from_array(np.zeros((10, 4), np.float32), "table")
    w = numpy_helper.from_array(np.zeros((4, 4), np.float32), "w")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["x"]),
             helper.make_node("MatMul", ["x", "w"], ["y"]),
             helper.make_node("Transpose", ["w"], ["wt"]),
             helper.make_node("MatMul", ["y", "wt"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])], [table, w])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), path, save_as_external_data=True, size_threshold=0)
    assert weight_bytes(path) == 2 * 4 * 4 * 4  # sizes from the external-data records, nothing loaded


def test_a_skip_reads_what_its_layers_hold(tiny, tiny_onnx):
    """baseline − skip_2_6 = the fp32 bytes of layers 2–5's parameters (counted on the HF model); a repeat adds
    one layer's; the bench reports the ratio beside the measured one."""
    per_layer = [4 * sum(p.numel() for n, p in tiny.model.named_parameters() if n.startswith(f"model.layers.{i}."))
                 for i in range(8)]
    runners = open_runners(str(tiny_onnx), ["baseline", "skip_2_6", "dup_3_x2"])
    try:
        got = {name: decode_weight_bytes(r) for name, r in runners.items()}
        assert got["baseline"] - got["skip_2_6"] == sum(per_layer[2:6])
        assert got["dup_3_x2"] - got["baseline"] == per_layer[3]
        rows = benchmark(runners, prompts=(8,), gen=2, warmup=0, iters=1, weights=got)
    finally:
        for r in runners.values():
            r.close()
    by = {r.plan: r for r in rows}
    assert by["skip_2_6"].weights_ratio == got["skip_2_6"] / got["baseline"] and by["baseline"].weights_ratio == 1.0
