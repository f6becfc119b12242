"""`painters deploy hf`: transformers loads the output and its logits equal the reference executor's for the plan."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from painters.cli import main
from painters.targets.common import DeployError
from painters.targets.hf import deploy_hf
from tests.targets.conftest import engine_logits, reference_logits

BLOCK_PLANS = ["skip_1_3", "repeat_0_4", "reverse_0_4", "shuffle_0_4_s1", "dup_1_x2", "swap_0_3", "drop_block_2",
               "reverse_0_2+dup_3_x2"]
# Qwen2 keeps its first max_window_layers (2) layers full: only plans that keep full layers first are expressible.
QWEN_PLANS = ["skip_1_3", "dup_1_x2", "drop_block_0", "swap_2_3"]
CASES = [(f, p) for f in ("llama", "gemma3", "gpt_neox") for p in BLOCK_PLANS] + [("qwen2-window4", p)
                                                                                   for p in QWEN_PLANS]


@pytest.mark.parametrize("family,plan", CASES)
def test_hf_output_matches_reference(checkpoints, tmp_path, family, plan):
    from transformers import AutoModelForCausalLM

    src = checkpoints(family)
    out = deploy_hf(src, plan, tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert config["painters"]["target"] == "hf" and config["painters"]["plan"]["plan"] == plan
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    want, ids, mask = reference_logits(src, plan)
    got = engine_logits(model, ids, mask)
    real = np.asarray(mask, bool)  # left padding rows: compare real positions only
    np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=1e-4)


def test_layer_types_follow_their_layers(checkpoints, tmp_path):
    src = checkpoints("gemma3")
    out = deploy_hf(src, "reverse_0_4", tmp_path / "out")
    before = json.loads((src / "config.json").read_text())["layer_types"]
    assert json.loads((out / "config.json").read_text())["layer_types"] == before[::-1]


def test_qwen_max_window_layers_follows(checkpoints, tmp_path):
    out = deploy_hf(checkpoints("qwen2-window4"), "dup_1_x2", tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["max_window_layers"] == 3


@pytest.mark.parametrize("family,plan,says", [
    ("qwen2-window4", "reverse_0_4", "max_window_layers"),
    ("llama", "drop_attn_1", "painters deploy nemotron-nas"),
    ("gpt_neox", "drop_mlp_1", "painters deploy vllm"),
    ("llama", "parallel_1_3", "painters deploy vllm"),
    ("llama", "skip_1_3:kvmean", "painters deploy vllm"),
])
def test_refusals_name_the_target_that_can(checkpoints, tmp_path, family, plan, says):
    with pytest.raises(DeployError, match=says):
        deploy_hf(checkpoints(family), plan, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_exit_2_and_summary(checkpoints, tmp_path):
    src = checkpoints("llama")
    bad = CliRunner().invoke(main, ["deploy", "hf", str(src), "--plan", "parallel_1_3", "-o", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "painters deploy vllm" in bad.output and len(bad.output.splitlines()) == 1
    ok = CliRunner().invoke(main, ["deploy", "hf", str(src), "--plan", "dup_1_x2", "-o", str(tmp_path / "o")])
    assert ok.exit_code == 0, ok.output
    assert "blocks [1] are written once per occurrence" in ok.output and "5 layers from 4" in ok.output
    same = CliRunner().invoke(main, ["deploy", "hf", str(src), "--plan", "skip_1_2", "-o", str(src)])
    assert same.exit_code == 2 and "overwrite the input" in same.output
