"""Issue 29 item 5: ``--weights int4`` corners are refused in one line (exit 2, nothing written).

int4 of an int4 graph would record a block size the weights do not have (or quantize nothing and say it did);
a GGUF that is not the graph's source, a missing one, options without ``--weights int4`` and a block size a
GGUF's blocks do not have are refused by name.
"""

from __future__ import annotations

import numpy as np
import pytest

from painters.compiler.graph_io import load_graph
from painters.compiler.passes.quantize import DEFAULT_QUANTIZER
from tests.reliability.checks import assert_refused, run_cli


@pytest.fixture
def foreign_gguf(tmp_path):
    """A valid GGUF whose one Q4_0 tensor is no weight of tiny-llama."""
    import gguf

    path = tmp_path / "g" / "other.gguf"
    path.parent.mkdir()
    writer = gguf.GGUFWriter(str(path), "llama")
    data = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    writer.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q4_0),
                      raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("args, needles", [
    (["--block-size", "128"], ["add --weights int4"]),
    (["--gguf", "none"], ["add --weights int4"]),
    (["--weights", "int4", "--gguf", "missing.gguf"], ["--gguf missing.gguf: no such file"]),
])
def test_int4_option_misuse_refused(model_dir, tmp_path, args, needles):
    assert_refused(["compile", "--plan", "skip_1_3", model_dir, "-o", tmp_path / "o" / "x.onnx", *args],
                   [model_dir.parent, tmp_path], *needles)


def test_a_gguf_the_graph_did_not_come_from_is_refused(model_dir, tmp_path, foreign_gguf):
    assert_refused(["compile", "--plan", "skip_1_3", model_dir, "-o", tmp_path / "o" / "x.onnx", "--weights", "int4",
                    "--gguf", foreign_gguf], [model_dir.parent, tmp_path],
                   "columns are no row of other.gguf", "--gguf none")


def test_a_ggufs_blocks_are_32_wide(model_dir, tmp_path, foreign_gguf):
    assert_refused(["compile", "--plan", "skip_1_3", model_dir, "-o", tmp_path / "o" / "x.onnx", "--weights", "int4",
                    "--gguf", foreign_gguf, "--block-size", "128"], [model_dir.parent, tmp_path],
                   "--block-size 128", "32 wide")


def test_int4_of_an_int4_graph_is_refused_and_its_block_size_kept(model_dir, tmp_path):
    first = model_dir.with_name("q128.onnx")
    code, output = run_cli(["compile", "--plan", "baseline", model_dir, "-o", first, "--weights", "int4",
                            "--block-size", "128"])
    assert code == 0, output
    assert_refused(["compile", "--plan", "skip_1_3", first, "-o", tmp_path / "o" / "x.onnx", "--weights", "int4"],
                   [model_dir.parent, tmp_path],
                   f"already has quantized weights (int4/block128/{DEFAULT_QUANTIZER}/level4)", "drop --weights int4")
    again = model_dir.with_name("again.onnx")
    code, output = run_cli(["compile", "--plan", "skip_1_3", first, "-o", again])
    assert code == 0, output
    graph = load_graph(again)
    assert graph.metadata_props["painters.weights"] == f"int4/block128/{DEFAULT_QUANTIZER}/level4"
    assert {n.attributes["block_size"].as_int() for n in graph.graph if n.op_type == "MatMulNBits"} == {128}
