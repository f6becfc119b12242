"""`painters deploy triton`: the written config.pbtxt parses as Triton's ModelConfig and matches the graph."""

from __future__ import annotations

import os

import onnx
import pytest
from click.testing import CliRunner

from painters.cli import main
from painters.errors import PaintersError
from painters.serve.triton import deploy_triton


def _dims(value_info) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]


def test_config_matches_graph_and_files_are_linked(tiny_onnx, tmp_path):
    text_format = pytest.importorskip("google.protobuf.text_format")
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                           reason="tritonclient[grpc] is not installed")
    target = deploy_triton(tiny_onnx, tmp_path / "repo", "tiny")
    config = text_format.Parse((target / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    graph = onnx.load(tiny_onnx, load_external_data=False).graph
    types = {onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32, onnx.TensorProto.INT64: model_config_pb2.TYPE_INT64}
    for written, values in ((config.input, graph.input), (config.output, graph.output)):
        assert [(t.name, t.data_type, list(t.dims)) for t in written] == \
            [(v.name, types[v.type.tensor_type.elem_type], _dims(v)) for v in values]
    assert config.name == "tiny" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 0
    assert config.parameters["painters.kv_slots"].string_value == "8"
    kv = [t for t in config.input if t.name.startswith("past_key_values.")]
    assert len(kv) == 16 and all(list(t.dims) == [-1, 2, -1, 16] for t in kv)
    data = [f for f in os.listdir(tiny_onnx.parent) if f.endswith(".data")]
    assert data and sorted(os.listdir(target / "1")) == sorted(["model.onnx", *data])
    for name in data:  # hard links: the same bytes, the input untouched
        assert os.path.samefile(target / "1" / name, tiny_onnx.parent / name)
    assert (tiny_onnx.parent / tiny_onnx.name).is_file()


def test_refuses_existing_target_and_bad_input(tiny_onnx, tmp_path):
    deploy_triton(tiny_onnx, tmp_path / "repo", "m")
    before = (tmp_path / "repo" / "m" / "config.pbtxt").read_text()
    result = CliRunner().invoke(main, ["deploy", "triton", str(tiny_onnx), "-o", str(tmp_path / "repo"),
                                       "--name", "m"])
    assert result.exit_code == 2 and "already exists" in result.output
    assert (tmp_path / "repo" / "m" / "config.pbtxt").read_text() == before
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(PaintersError, match="engine"):
        deploy_triton(tmp_path / "x.txt", tmp_path / "repo2")
    assert not (tmp_path / "repo2").exists()
