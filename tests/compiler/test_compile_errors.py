"""Bad input to `painters compile`: a reason naming the problem, exit code 2, nothing written."""

from __future__ import annotations

import shutil

import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner

from painters.cli import main
from painters.compiler.blocks import discover_blocks
from painters.errors import CompileError


def compile_cli(*args):
    result = CliRunner().invoke(main, ["compile", *map(str, args)])
    return result.exit_code, result.output


def assert_refused(directory, args, *needles):
    before = sorted(p.name for p in directory.iterdir())
    code, output = compile_cli(*args)
    assert code == 2, output
    for needle in needles:
        assert needle in output, output
    assert sorted(p.name for p in directory.iterdir()) == before


@pytest.fixture
def model_dir(tiny_onnx, tmp_path):
    """A private copy of the exported tiny model (tests may break it)."""
    out = tmp_path / "m"
    shutil.copytree(tiny_onnx.parent, out)
    return out


def test_plan_beyond_depth(model_dir):
    assert_refused(model_dir, [model_dir / "model.onnx", "--plan", "skip_5_12"], "skip_5_12", "8 blocks")


def test_output_equal_to_input(model_dir):
    path = model_dir / "model.onnx"
    assert_refused(model_dir, [path, "--plan", "skip_2_4", "-o", path], "would overwrite the input")


def test_missing_external_data(model_dir):
    (model_dir / "model.onnx.data").unlink()
    assert_refused(model_dir, [model_dir / "model.onnx", "--plan", "skip_2_4"], "external data file", "missing")


def test_external_data_outside_the_directory(model_dir):
    model = onnx.load(model_dir / "model.onnx", load_external_data=False)
    tensor = next(t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    next(e for e in tensor.external_data if e.key == "location").value = "../../etc/passwd"
    onnx.save(model, model_dir / "model.onnx")
    assert_refused(model_dir, [model_dir / "model.onnx", "--plan", "skip_2_4"], "path traversal")


def test_truncated_onnx(model_dir):
    path = model_dir / "model.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    assert_refused(model_dir, [path, "--plan", "baseline"], "not a readable ONNX model")


def test_scores_needed_for_kn_plans(model_dir):
    assert_refused(model_dir, [model_dir / "model.onnx", "--plan", "drop_attn_k2"], "needs a scores file")


def test_graph_without_blocks(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), tmp_path / "relu.onnx")
    assert_refused(tmp_path, [tmp_path / "relu.onnx", "--plan", "baseline"], "no graph input named 'input_ids'")


def test_broken_mlp_residual_is_named(tiny_onnx):
    """Turn block 3's MLP residual Add into a Sub: discovery must say which block and what is missing."""
    model = ir.load(tiny_onnx)
    structure = discover_blocks(model)
    structure.blocks[3].x_out.producer().op_type = "Sub"
    with pytest.raises(CompileError, match="block 3: no residual Add found after the MLP"):
        discover_blocks(model)


def test_default_output_beside_input_and_source_untouched(model_dir):
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    code, output = compile_cli(model_dir / "model.onnx", "--plan", "parallel_2_6:kvmean")
    assert code == 0, output
    out = model_dir / "model.parallel_2_6-kvmean.onnx"
    assert out.exists()
    assert {p.name: p.read_bytes() for p in model_dir.iterdir() if p.name in before} == before
    # the output references the source's data file in place; the only weights written are the fused group's
    fused = out.name + ".fused.data"
    assert sorted(p.name for p in model_dir.iterdir()) == sorted([*before, out.name, fused])
    code, output = compile_cli(model_dir / "model.onnx", "--plan", "parallel_2_6", "--no-fuse-parallel")
    assert code == 0, output
    assert sorted(p.name for p in model_dir.iterdir()) == sorted([*before, out.name, fused, "model.parallel_2_6.onnx"])


def test_output_in_another_directory_links_the_data(model_dir, tmp_path):
    out = tmp_path / "elsewhere" / "m.onnx"
    code, output = compile_cli(model_dir / "model.onnx", "--plan", "dup_2_x2", "-o", out)
    assert code == 0, output
    data = out.parent / "model.onnx.data"
    assert (data.samefile(model_dir / "model.onnx.data")
            or data.read_bytes() == (model_dir / "model.onnx.data").read_bytes())
    code, output = CliRunner().invoke(main, ["inspect", str(out)]).exit_code, ""
    assert code == 0
