"""The one router (``open_runners``): what MODEL and BACKEND route to, including TensorRT latency from the CLI.

The TensorRT runs themselves need a GPU (tests/compiler/test_engine.py runs them there); here the routing is
checked: an engine goes to the TensorRT runner, an .onnx with a TensorRT backend is built into the engine
cache first, and without a CUDA GPU both stop with one line, exit 2, before anything is built.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from painters.cli import main
from painters.errors import BenchError, BuildError
from painters.routing import ModelRunners, open_runners
from tests.compiler.test_engine import make_decoder, needs_rtx


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


no_gpu = pytest.mark.skipif(_has_gpu(), reason="checks the message on a machine without a CUDA GPU")


@pytest.fixture(scope="module")
def toy_engine(tmp_path_factory) -> Path:
    """A TensorRT-RTX engine (built without a GPU) of the toy decoder, with its sidecar."""
    from painters.compiler.engine import build_engine

    pytest.importorskip("tensorrt_rtx")
    root = tmp_path_factory.mktemp("toy_engine")
    onnx_path = make_decoder(root / "model.onnx")
    return build_engine(onnx_path, root / "toy.engine", profile="batch=1:1:2,seq=1:4:8,past=0:4:8",
                        compute_capability="8.9")


@no_gpu
@needs_rtx
@pytest.mark.parametrize("backend", ["tensorrt-rtx", "tensorrt"])
def test_latency_of_an_engine_routes_to_tensorrt(toy_engine, backend):
    result = CliRunner().invoke(main, ["bench", "latency", str(toy_engine), "--backend", backend])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and "no CUDA GPU is available" in line and str(toy_engine) in line
    assert "source model" not in line


@no_gpu
def test_latency_of_a_graph_on_tensorrt_stops_before_building(tmp_path, monkeypatch):
    monkeypatch.setenv("PAINTERS_CACHE", str(tmp_path / "cache"))
    onnx_path = make_decoder(tmp_path / "m" / "model.onnx")
    result = CliRunner().invoke(main, ["bench", "latency", str(onnx_path), "--backend", "tensorrt-rtx"])
    assert result.exit_code == 2 and "no CUDA GPU is available" in result.output, result.output
    assert "pass an engine" not in result.output.lower()
    assert not list((tmp_path / "cache").rglob("*.engine"))  # nothing was built for a run that cannot happen


@needs_rtx
def test_graph_with_tensorrt_backend_runs_the_cached_engine(tmp_path, monkeypatch):
    """With the GPU check passed, an .onnx is built into the engine cache and that engine is what runs."""
    import painters.runtime.trt
    import painters.tensorrt_lib

    opened = []

    class Recorder:
        def __init__(self, path, *, backend):
            opened.append((Path(path), backend))
            self.info = SimpleNamespace(plan="baseline")

    monkeypatch.setenv("PAINTERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(painters.tensorrt_lib, "require_cuda", lambda what: None)  # as on a GPU machine
    monkeypatch.setattr(painters.runtime.trt, "TrtRunner", Recorder)
    onnx_path = make_decoder(tmp_path / "m" / "model.onnx")
    runners = open_runners(str(onnx_path), None, "tensorrt-rtx", profile="batch=1:1:2,seq=1:4:8,past=0:4:8")
    ((engine, backend),) = opened
    assert list(runners) == ["baseline"] and backend == "tensorrt-rtx"
    assert engine.parent == tmp_path / "cache" / "engines" and engine.suffix == ".engine" and engine.is_file()
    record = json.loads(engine.with_name(engine.name + ".json").read_text())
    assert record["onnx"] == str(onnx_path.resolve()) and record["inputs"]["profile"].startswith("batch=1:1:2")


@needs_rtx
def test_engine_keeps_its_plan(toy_engine, monkeypatch):
    import painters.tensorrt_lib

    monkeypatch.setattr(painters.tensorrt_lib, "require_cuda", lambda what: None)  # as on a GPU machine
    with pytest.raises(BenchError, match="compiled for plan 'baseline'"):
        ModelRunners(str(toy_engine)).open("skip_0_1")
    with pytest.raises(BenchError, match="runs only with --backend tensorrt or tensorrt-rtx"):
        ModelRunners(str(toy_engine), "onnxruntime")


def test_missing_engine_and_unknown_backend(tmp_path):
    with pytest.raises(BenchError, match="engine .*absent.engine not found"):
        open_runners(str(tmp_path / "absent.engine"))
    with pytest.raises(BenchError, match="unknown backend 'jax'"):
        open_runners("tiny-llama", None, "jax")


@no_gpu
def test_trt_runner_says_there_is_no_gpu(tmp_path):
    from painters.runtime.trt import TrtRunner

    with pytest.raises(BuildError, match="no CUDA GPU is available"):
        TrtRunner(tmp_path / "x.engine")
