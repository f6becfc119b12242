"""Block discovery and plan parity on a graph the dynamo exporter did not make (TorchScript, HF forward)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx_ir as ir
import pytest

from painters.compiler.compile import prepare
from tests.compiler.parity import assert_plan_parity

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def torchscript_onnx(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("torchscript") / "model.onnx"
    subprocess.run([sys.executable, "-m", "tests.compiler.torchscript_export", str(out)], cwd=ROOT, check=True,
                   capture_output=True)
    return out


def test_blocks_found_in_torchscript_graph(torchscript_onnx):
    model = ir.load(torchscript_onnx)
    assert any(n.name.startswith("/m/model/layers.3/") for n in model.graph)
    structure = prepare(model)
    assert structure.num_layers == 8
    # every node discovery put in block i carries block i's name scope (when it has one)
    for block in structure.blocks:
        scoped = [n.name for n in (*block.shared_nodes, *block.attn_nodes, *block.mlp_nodes) if "/layers." in n.name]
        assert scoped and all(f"/layers.{block.index}/" in name for name in scoped)


@pytest.mark.parametrize("plan", ["baseline", "skip_2_5", "parallel_2_6_x2", "drop_attn_0,3-4",
                                  "parallel_1_4:kvmean", "dup_3_x2+swap_5_7"])
def test_torchscript_graph_plan_parity(tiny, torchscript_onnx, tmp_path, plan):
    assert_plan_parity(tiny, torchscript_onnx, plan, tmp_path, [[1, 17, 99, 3, 45, 8, 200], [1, 5, 6]])
