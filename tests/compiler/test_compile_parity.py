"""Acceptance: every plan kind, compiled to ONNX, equals the reference executor (both KV modes)."""

from __future__ import annotations

import json

import pytest

from painters.compiler.graph_io import initializer_bytes, load_graph
from tests.compiler.parity import TINY_PLANS, assert_plan_parity

PROMPTS = [[1, 17, 99, 3, 45, 8, 200], [1, 5, 6]]


@pytest.mark.parametrize("kv", ["", ":kvmean"])
@pytest.mark.parametrize("plan", TINY_PLANS)
def test_tiny_plan_parity(tiny, tiny_onnx, tmp_path, plan, kv):
    assert_plan_parity(tiny, tiny_onnx, plan + kv, tmp_path, PROMPTS)


@pytest.mark.parametrize("kv", ["", ":kvmean"])
@pytest.mark.parametrize("plan", [p for p in TINY_PLANS if "parallel" in p])
def test_tiny_unfused_parallel_parity(tiny, tiny_onnx, tmp_path, plan, kv):
    """Parallel plans compile fused by default; the rewrite's own (unfused) groups must be right too."""
    result = assert_plan_parity(tiny, tiny_onnx, plan + kv, tmp_path, PROMPTS, fuse_parallel=False)
    assert json.loads(load_graph(result.output).metadata_props["painters.slot_layout"])["fused_stages"] == []


def test_plan_file_parity(tiny, tiny_onnx, tmp_path):
    plan = tmp_path / "custom.yaml"
    plan.write_text("kv: mean\nsteps:\n  - 0\n  - {block: 1, attn: false}\n  - {parallel: [2, 3, 4], loops: 2}\n"
                    "  - {block: 6, mlp: false}\n  - 5\n  - 7\n")
    result = assert_plan_parity(tiny, tiny_onnx, str(plan), tmp_path, PROMPTS)
    assert result.plan.name == "custom" and result.plan.kv == "mean"


@pytest.mark.parametrize("plan", ["dup_3_x4", "parallel_2_6_x3", "baseline", "swap_0_7+dup_3_x3"])
def test_duplicates_share_weights(tiny_onnx, tmp_path, plan):
    from painters.compiler.compile import compile_model

    source = initializer_bytes(load_graph(tiny_onnx))
    out = compile_model(tiny_onnx, plan, tmp_path / "out.onnx", fuse_parallel=False).output
    assert initializer_bytes(load_graph(out)) == source
    fused = compile_model(tiny_onnx, plan, tmp_path / "fused.onnx").output  # norm gains folded: a little less
    assert initializer_bytes(load_graph(fused)) <= source


def test_repeat_keeps_only_the_repeated_block(tiny_onnx, tmp_path):
    """repeat_1_7 runs block 4 six times: five blocks leave the graph and block 4's weights are not copied."""
    from painters.compiler.compile import compile_model

    source = initializer_bytes(load_graph(tiny_onnx))
    skip = initializer_bytes(load_graph(compile_model(tiny_onnx, "skip_1_7", tmp_path / "skip.onnx").output))
    repeat = initializer_bytes(load_graph(compile_model(tiny_onnx, "repeat_1_7", tmp_path / "rep.onnx").output))
    block = (source - skip) / 6
    assert block > 0 and repeat - skip == block


@pytest.mark.parametrize("plan", ["skip_2_5", "drop_block_0,7", "drop_mlp_3"])
def test_dropping_removes_weights(tiny_onnx, tmp_path, plan):
    from painters.compiler.compile import compile_model

    source = initializer_bytes(load_graph(tiny_onnx))
    out = compile_model(tiny_onnx, plan, tmp_path / "out.onnx").output
    assert initializer_bytes(load_graph(out)) < source


def test_attention_drop_has_no_kv_io(tiny_onnx, tmp_path):
    from painters.compiler.compile import compile_model

    out = compile_model(tiny_onnx, "drop_attn_0-2,5", tmp_path / "out.onnx").output
    model = load_graph(out)
    pasts = [f"past_key_values.{i}.{k}" for i in range(4) for k in ("key", "value")]
    assert [v.name for v in model.graph.inputs][3:] == [*pasts, "logits_to_keep"]  # the optional input last
    assert [v.name for v in model.graph.outputs][1:] == [f"present.{i}.{k}" for i in range(4) for k in ("key", "value")]
    meta = model.metadata_props
    assert meta["painters.plan"] == "drop_attn_0-2,5" and meta["painters.kv_slots"] == "4"
    assert json.loads(meta["painters.schedule"])["steps"][0] == {"blocks": [0], "parallel": False, "loops": 1,
                                                                  "attn": False, "mlp": True}


SMOLLM2_PLANS = ["baseline", "skip_13_17", "repeat_11_19", "reverse_11_19", "shuffle_11_19_s0", "parallel_4_26",
                 "parallel_11_19_x2", "dup_15_x2", "swap_10_20", "drop_attn_20-27", "drop_mlp_12,14",
                 "drop_block_5-6", "parallel_8_20+drop_attn_24-27"]


@pytest.mark.slow
@pytest.mark.parametrize("kv", ["", ":kvmean"])
@pytest.mark.parametrize("plan", SMOLLM2_PLANS)
def test_smollm2_plan_parity(smollm2, smollm2_onnx, tmp_path, plan, kv):
    if kv and "parallel" not in plan:
        pytest.skip("kv=mean only changes parallel groups; kv=exact covers this plan")
    tok = smollm2.tokenizer
    prompts = [tok.encode("The capital of France is"), tok.encode("Q: What is 2 + 3?\nA:")]
    assert_plan_parity(smollm2, smollm2_onnx, plan + kv, tmp_path, prompts)
