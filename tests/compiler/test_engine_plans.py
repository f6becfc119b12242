"""CI proof for TensorRT: every compiled plan parses and builds a TensorRT-RTX engine on a CPU-only machine.

Running the engines needs a GPU (compute capability TensorRT-RTX supports); building them does not.
"""

from __future__ import annotations

import json

import pytest

from painters.compiler.compile import compile_model
from painters.compiler.graph_io import fed_inputs, load_graph
from tests.compiler.parity import TINY_PLANS

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (pip install painters[test]) is not installed")


def _graph_io(path) -> list[tuple[str, str]]:
    """The graph's inputs a caller feeds (one with an initializer default, logits_to_keep, is a constant to
    TensorRT) and its outputs."""
    graph = load_graph(path).graph
    return [(v.name, "input") for v in fed_inputs(graph)] + [(v.name, "output") for v in graph.outputs]


def build_and_check(onnx_path, engine_path, profile):
    from painters.compiler.engine import build_engine, sidecar_path

    build_engine(onnx_path, engine_path, backend="tensorrt-rtx", profile=profile, compute_capability="8.9")
    assert engine_path.stat().st_size > 0
    record = json.loads(sidecar_path(engine_path).read_text())
    assert [(name, mode) for name, mode, *_ in record["io"]] == _graph_io(onnx_path)


@pytest.mark.slow
@pytest.mark.parametrize("plan", [p for p in TINY_PLANS if p != "baseline"] + ["parallel_2_6:kvmean"])
def test_tiny_plan_engine_builds(tiny_onnx, tmp_path, plan):
    compiled = compile_model(tiny_onnx, plan, tmp_path / "m.onnx").output
    build_and_check(compiled, tmp_path / "m.engine", "batch=1:1:2,seq=1:16:64,past=0:16:64")


@pytest.fixture(scope="session")
def smollm2_fp16_onnx(tmp_path_factory):
    from painters.export.onnx_export import export_onnx

    return export_onnx("smollm2-135m", tmp_path_factory.mktemp("smollm2_fp16") / "model.onnx", dtype="fp16")


@pytest.mark.slow
@pytest.mark.parametrize("plan", ["baseline", "parallel_4_26"])
def test_smollm2_fp16_engine_builds(smollm2_fp16_onnx, tmp_path, plan):
    path = (smollm2_fp16_onnx if plan == "baseline"
            else compile_model(smollm2_fp16_onnx, plan, tmp_path / "m.onnx").output)
    build_and_check(path, tmp_path / "m.engine", "batch=1:1:4,seq=1:64:256,past=0:64:256")


@pytest.mark.slow
def test_smollm2_fp16_fuses(smollm2_fp16_onnx, tmp_path):
    """fp16 graphs fuse too (the stage mean's 1/22 is rounded to fp16), and the wide block computes the same."""
    import numpy as np

    from painters.compiler.graph_io import load_graph
    from painters.runtime.base import left_pad
    from painters.runtime.ort import OrtRunner

    fused = compile_model(smollm2_fp16_onnx, "parallel_4_26", tmp_path / "fused.onnx").output
    plain = compile_model(smollm2_fp16_onnx, "parallel_4_26", tmp_path / "plain.onnx", fuse_parallel=False).output
    assert json.loads(load_graph(fused).metadata_props["painters.slot_layout"])["fused_stages"] == [4]
    ids, mask = left_pad([[1, 504, 3458, 282, 4649, 314], [1, 19842, 28]])
    got, _ = OrtRunner(fused).prefill(ids, mask)
    want, _ = OrtRunner(plain).prefill(ids, mask)
    real = mask.astype(bool)
    assert np.abs(got[real] - want[real]).max() <= 2e-2 * np.abs(want[real]).max()
