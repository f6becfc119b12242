"""Issue 15 items 14 and 15: every tensor that can name external data is checked; symlinks and empty files.

A graph's author chooses its external-data locations, so a location must stay inside the model's folder by
its own spelling, wherever the tensor sits (initializer, a Constant's value, a subgraph, a sparse tensor),
and resolve, symlinks followed, inside the real graph file's folder (onnxruntime's rule) to a regular file.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.reliability.checks import assert_refused, run_cli


def _external(name: str, location: str) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        tensor.external_data.add(key=key, value=value)
    return tensor


def _plant(model_path, where: str, location: str) -> None:
    """Put a tensor with external data ``location`` at ``where`` in the graph (wired to an extra output)."""
    model = onnx.load(model_path, load_external_data=False)
    graph = model.graph
    if where == "constant":
        graph.node.insert(0, helper.make_node("Constant", [], ["evil"], value=_external("evil_t", location)))
    elif where in ("subgraph_constant", "subgraph_initializer"):
        branch = helper.make_graph([], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])])
        if where == "subgraph_constant":
            branch.node.append(helper.make_node("Constant", [], ["t"], value=_external("t_value", location)))
        else:
            branch.initializer.append(_external("t", location))
        other = helper.make_graph([helper.make_node("Constant", [], ["e"], value=helper.make_tensor(
            "e_value", TensorProto.FLOAT, [4], [0.0] * 4))], "else", [],
            [helper.make_tensor_value_info("e", TensorProto.FLOAT, [4])])
        graph.node.insert(0, helper.make_node("Constant", [], ["cond"], value=helper.make_tensor(
            "c", TensorProto.BOOL, [], [True])))
        graph.node.insert(1, helper.make_node("If", ["cond"], ["evil"], then_branch=branch, else_branch=other))
    elif where == "sparse":
        sparse = helper.make_sparse_tensor(_external("evil", location),
                                           helper.make_tensor("idx", TensorProto.INT64, [4], [0, 1, 2, 3]), [4])
        graph.sparse_initializer.append(sparse)
    graph.output.append(helper.make_tensor_value_info("evil", TensorProto.FLOAT, [4]))
    onnx.save(model, model_path)


WHERE = ["constant", "subgraph_constant", "subgraph_initializer", "sparse"]


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/hostname", "sub/../../secret.bin"])
@pytest.mark.parametrize("where", WHERE)
def test_external_data_outside_the_folder_is_refused_wherever_it_sits(model_dir, tmp_path, where, location):
    (tmp_path / "secret.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    _plant(model_dir, where, location)
    folders = [tmp_path]
    for args in (["inspect", model_dir], ["compile", "--plan", "skip_1_3", model_dir, "-o", tmp_path / "o" / "x.onnx"],
                 ["engine", "build", model_dir, "-o", tmp_path / "e" / "x.engine"],
                 ["bench", "latency", model_dir, "--prompt", "4", "--gen", "1"]):
        assert_refused(args, folders, "path traversal")


def test_a_folder_symlink_cannot_carry_a_location_out(model_dir, tmp_path):
    (tmp_path / "secret.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    (model_dir.parent / "sub").symlink_to(tmp_path, target_is_directory=True)
    _plant(model_dir, "constant", "sub/secret.bin")
    assert_refused(["inspect", model_dir], [tmp_path], "outside the model's directory", "path traversal")


def test_external_data_inside_the_folder_in_a_constant_is_carried_along(model_dir, tmp_path):
    """A legitimate Constant with external data: compile elsewhere links its file into the output's folder."""
    (model_dir.parent / "extra.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    _plant(model_dir, "constant", "extra.bin")
    from painters.compiler.graph_io import external_files, load_graph

    assert external_files(load_graph(model_dir), model_dir.parent) == ["extra.bin", "model.onnx.data"]


def test_symlinked_data_pointing_to_the_models_real_data_is_accepted(model_dir, tmp_path):
    """A folder of links to a model (the graph and its data, as a model store or cache lays it out): the data
    resolves beside the real graph file, so inspect, compile and onnxruntime all accept it."""
    alias = tmp_path / "alias"
    alias.mkdir()
    (alias / "model.onnx").symlink_to(model_dir)
    (alias / "model.onnx.data").symlink_to(model_dir.with_name("model.onnx.data"))
    code, output = run_cli(["inspect", alias / "model.onnx"])
    assert code == 0, output
    out = tmp_path / "out" / "x.onnx"
    code, output = run_cli(["compile", "--plan", "skip_1_3", alias / "model.onnx", "-o", out])
    assert code == 0, output
    assert (out.parent / "model.onnx.data").read_bytes() == model_dir.with_name("model.onnx.data").read_bytes()
    assert (alias / "model.onnx.data").is_symlink()  # the link is left as it was
    code, output = run_cli(["bench", "latency", alias / "model.onnx", "--prompt", "4", "--gen", "1", "--iters", "1",
                            "--warmup", "0"])
    assert code == 0, output


def test_symlinked_data_pointing_away_from_the_graph_file_is_refused(model_dir, tmp_path):
    """A real graph file whose data links into another folder: onnxruntime refuses it, so compile does too."""
    alias = tmp_path / "alias"
    alias.mkdir()
    shutil.copy(model_dir, alias / "model.onnx")
    (alias / "model.onnx.data").symlink_to(model_dir.with_name("model.onnx.data"))
    for args in (["inspect", alias / "model.onnx"], ["compile", "--plan", "skip_1_3", alias / "model.onnx"]):
        assert_refused(args, [tmp_path], "outside the model's directory")


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_symlinked_data_to_something_not_a_file_is_refused(model_dir, tmp_path, target):
    data = model_dir.with_name("model.onnx.data")
    data.unlink()
    if target == "fifo":  # inside the folder: passes the place check, must fail the kind check
        os.mkfifo(model_dir.with_name("fifo"))
        target, needle = model_dir.with_name("fifo"), "not a regular file"
    elif not os.path.exists(target):
        pytest.skip(f"{target} is absent")
    else:
        needle = "outside the model's directory"
    data.symlink_to(target)
    assert_refused(["inspect", model_dir], [tmp_path], needle, "refusing it")


@pytest.mark.parametrize("content, needle", [(b"", "is empty (0 bytes)"), (b"hello world\n", "not a readable ONNX"),
                                             (b"\x08\x07", "not an ONNX model (it has no graph")])
def test_an_empty_or_non_onnx_file_is_named_so(tmp_path, content, needle):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(content)
    for args in (["inspect", bad], ["compile", "--plan", "skip_1_3", bad],
                 ["engine", "build", bad, "-o", tmp_path / "x.engine"],
                 ["bench", "latency", bad, "--prompt", "4", "--gen", "1"]):
        try:
            message = assert_refused(args, [tmp_path], needle)
        except AssertionError:  # the router names every kind it could not recognise the file as
            message = assert_refused(args, [tmp_path], "is not an ONNX graph, a TensorRT engine")
        assert "input_ids" not in message
