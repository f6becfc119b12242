"""`painters deploy nemotron-nas`: transformers (trust_remote_code) loads the output and matches the reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from painters.targets.common import DeployError
from painters.targets.nemotron_nas import deploy_nemotron_nas, ffn_mult_for
from tests.targets.conftest import engine_logits, reference_logits

PLANS = ["drop_attn_1,3", "drop_mlp_0,2", "drop_attn_2+drop_mlp_3", "drop_attn_1+reverse_2_4",
         "drop_mlp_1+dup_3_x2"]


@pytest.mark.parametrize("family", ["llama", "mistral-plain"])
@pytest.mark.parametrize("plan", PLANS)
def test_nemotron_output_matches_reference(checkpoints, tmp_path, family, plan):
    from transformers import AutoModelForCausalLM

    src = checkpoints("llama") if family == "llama" else checkpoints("mistral-plain")
    out = deploy_nemotron_nas(src, plan, tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "nemotron-nas" and config["architectures"] == ["DeciLMForCausalLM"]
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    want, ids, mask = reference_logits(src, plan)
    got = engine_logits(model, ids, mask)
    real = np.asarray(mask, bool)
    np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=1e-4)


def test_dropped_sublayers_are_absent_and_spelled_both_ways(checkpoints, tmp_path):
    out = deploy_nemotron_nas(checkpoints("llama"), "drop_attn_1+drop_mlp_2", tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    attn, ffn = config["block_configs"][1]["attention"], config["block_configs"][2]["ffn"]
    assert attn == {"no_op": True, "n_heads_in_group": None, "replace_with_linear": False}
    assert ffn == {"no_op": True, "ffn_mult": None, "replace_with_linear": False}
    assert config["block_configs"][0]["ffn"]["ffn_mult"] == 6.0  # hidden 64, intermediate 256
    names = set(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"])
    assert not any(n.startswith(("model.layers.1.self_attn", "model.layers.1.input_layernorm")) for n in names)
    assert not any(n.startswith(("model.layers.2.mlp", "model.layers.2.post_attention_layernorm")) for n in names)
    assert "model.layers.2.self_attn.q_proj.weight" in names and "model.layers.1.mlp.up_proj.weight" in names


def test_ffn_mult_of_known_models():
    assert ffn_mult_for(1536, 576) == 4.0  # SmolLM2
    assert ffn_mult_for(11008, 4096) == 4.03125  # Llama-2-7B
    assert ffn_mult_for(64, 32) is None  # not a multiple of 256: the block says intermediate_size


@pytest.mark.parametrize("family,plan,says", [
    ("gemma3", "drop_attn_1", "not 'gemma3_text'"),
    ("mistral-window4", "drop_attn_1", "sliding_window=4"),
    ("llama", "drop_attn_0", "layer 0 without attention"),
    ("llama", "parallel_1_3+drop_mlp_0", "painters deploy vllm"),
])
def test_refusals(checkpoints, tmp_path, family, plan, says):
    with pytest.raises(DeployError, match=says):
        deploy_nemotron_nas(checkpoints(family), plan, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_hf_backend_runs_the_deployed_directory(checkpoints, tmp_path):
    """`--backend hf` on a Nemotron-NAS directory: its own modeling code (trust_remote_code), its recorded plan."""
    from painters.routing import open_runner

    src = checkpoints("llama")
    out = deploy_nemotron_nas(src, "drop_attn_1+drop_mlp_2", tmp_path / "out")
    with open_runner(str(out), "hf") as runner:
        assert runner.info.plan == "drop_attn_1+drop_mlp_2"
        want, ids, mask = reference_logits(src, "drop_attn_1+drop_mlp_2")
        got, _ = runner.prefill(ids, mask)
        real = np.asarray(mask, bool)
        np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=1e-4)
        assert runner.generate([[1, 5, 9]], 4) == runner.generate([[1, 5, 9]], 4)


@pytest.mark.slow
def test_smollm2_nemotron_nas_matches_reference(tmp_path):
    """SmolLM2 (its Q4_1 GGUF as transformers dequantizes it) as Nemotron-NAS with drop_attn_k8: ffn_mult 4.0 is
    exact, and transformers with trust_remote_code reproduces the reference executor's logits."""
    from transformers import AutoModelForCausalLM

    from painters.export.sources import load_source
    from painters.plans import load_scores, parse_plan
    from painters.runtime.torch_ref import TorchRunner

    scores = "docs/results/smollm2-135m/analysis/importance.json"
    out = deploy_nemotron_nas("smollm2-135m", "drop_attn_k8", tmp_path / "out", scores=scores)
    config = json.loads((out / "config.json").read_text())
    assert {b["ffn"]["ffn_mult"] for b in config["block_configs"]} == {4.0}
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    loaded = load_source("smollm2-135m")
    plan = parse_plan("drop_attn_k8", 30, scores=load_scores(scores, model_hash=loaded.hash))
    ids = np.array([loaded.tokenizer.encode("The capital of France is Paris, and the capital of Italy is")])
    mask = np.ones_like(ids)
    want, _ = TorchRunner(loaded.model, plan, device="cpu").prefill(ids, mask)
    got = engine_logits(model, ids, mask)
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)
