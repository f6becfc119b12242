"""``scripts/profile_decode.py``: the decode steps' kernel time per operator type, from ONNX Runtime's profiler."""

from __future__ import annotations

import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "profile_decode.py"


def test_profile_counts_every_decode_step_and_node(tiny_onnx):
    import onnx

    profile = runpy.run_path(str(SCRIPT))["profile"]
    result = profile(tiny_onnx, prompt=5, gen=3, threads=1)
    assert result["steps"] == 3  # the prefill run left out
    graph = onnx.load(tiny_onnx, load_external_data=False).graph
    matmuls = sum(n.op_type == "MatMul" for n in graph.node)
    # every MatMul of the graph ran once per step (ONNX Runtime may fuse some into other kernels: at most as many)
    assert 0 < result["ops"]["MatMul"][1] <= matmuls
    assert all(us > 0 for us, _ in result["ops"].values())


def test_a_missing_graph_is_refused_with_exit_2(tmp_path, capsys):
    main = runpy.run_path(str(SCRIPT))["main"]
    assert main([str(tmp_path / "nope.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
