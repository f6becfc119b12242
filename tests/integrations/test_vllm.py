"""Every plan kind on vLLM itself (the painters plugin, vLLM's CPU build) against the reference executor.

A seeded random tiny Llama (4 layers, hidden 192, 6 heads of 32 and 3 KV heads, so tensor parallelism 3 divides
them; vLLM's CPU attention takes head sizes from 32 up) with norm gains drawn around 1 (a gain of exactly 1 would
hide a norm applied to the wrong stream) is deployed with ``painters deploy vllm`` for each plan and served by vLLM
at tensor_parallel_size 1 and 3. vLLM's greedy tokens must be the reference's, and both its prompt logprobs and
its **decode-step** logprobs (read from vLLM's paged KV cache: a repeated block that shared one cache would pass
the prompt and fail here) must equal :func:`painters.runtime.torch_ref.plan_forward` run on the whole sequence
without a cache, within ``ATOL`` (fp32 on both sides; measured differences are ~1e-6).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from painters.errors import ExportError
from painters.plans import Plan, parse_plan

ATOL = 2e-4  # fp32 logprobs: vLLM's kernels vs torch's sum in another order
PROMPTS = [[1, 17, 99, 250, 3, 44, 401, 12, 7, 300, 5, 88], [1, 400, 2, 9]]
GEN = 6
TINY = dict(vocab_size=576, hidden_size=192, intermediate_size=384, num_hidden_layers=4, num_attention_heads=6,
            num_key_value_heads=3, max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2)
# one plan per kind of the grammar, composed parts, and a plan file's explicit loop
PLANS = ["baseline", "skip_1_3", "repeat_0_4", "reverse_0_4", "shuffle_0_4_s1", "parallel_1_3", "parallel_0_4_x2",
         "dup_1_x3", "swap_0_3", "drop_attn_1,2", "drop_mlp_0,3", "drop_block_2", "parallel_0_2_x3+drop_attn_3"]
# tp 3 spawns three engine processes per load (~2 min each on 2 cores): two composed plans cover the kinds
TP3_PLANS = ["parallel_0_2_x2+drop_attn_2+dup_3_x2", "repeat_0_4"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1 + 0.5 * torch.randn_like(param))
    path = tmp_path_factory.mktemp("tiny-vllm") / "src"
    model.save_pretrained(path)
    return path, model


def _reference(model, plan, prompt: list[int], generated: list[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(prompt logprobs, decode-step logprobs, greedy tokens) of ``plan`` on prompt+generated, no KV cache."""
    import torch

    from painters.runtime.torch_ref import plan_forward

    ids = torch.tensor([prompt + generated])
    out = plan_forward(model, plan, ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None])
    logp = torch.log_softmax(out.logits[0].double(), -1).numpy()
    seq = prompt + generated
    P = len(prompt)
    prompt_lp = np.array([logp[i - 1, seq[i]] for i in range(1, P)])
    step_lp = np.array([logp[P - 1 + k, tok] for k, tok in enumerate(generated)])
    greedy = [int(logp[P - 1 + k].argmax()) for k in range(len(generated))]
    return prompt_lp, step_lp, greedy


def _check(model, plan, rows) -> None:
    for prompt, row in zip(PROMPTS, rows):
        prompt_lp, step_lp, greedy = _reference(model, plan, prompt, row["tokens"])
        assert row["tokens"] == greedy, f"{plan}: vLLM tokens {row['tokens']} vs reference {greedy}"
        np.testing.assert_allclose(row["prompt_logprobs"], prompt_lp, atol=ATOL, err_msg=f"{plan}: prompt")
        np.testing.assert_allclose(row["logprobs"], step_lp, atol=ATOL, err_msg=f"{plan}: decode steps")


def _serve(worker, tiny_dir, tmp_path, name: str, tp: int):
    from painters.targets.vllm import deploy_vllm

    src, model = tiny_dir
    out = deploy_vllm(src, name, tmp_path / "deployed")
    plan = parse_plan(name, TINY["num_hidden_layers"])
    worker.request(op="load", model=str(out), tp=tp)
    return model, plan, worker.request(op="generate", prompts=PROMPTS, max_tokens=GEN)["rows"]


@pytest.fixture(scope="module")
def worker1(vllm_env):
    from painters.runtime.vllm import VllmWorker

    worker = VllmWorker(tp=1)
    yield worker
    worker.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", PLANS)
def test_plan_matches_reference_tp1(worker1, tiny_dir, tmp_path, name):
    _check(*_serve(worker1, tiny_dir, tmp_path, name, tp=1))


@pytest.fixture(scope="module")
def worker3(vllm_env):
    from painters.runtime.vllm import VllmWorker

    worker = VllmWorker(tp=3)
    yield worker
    worker.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", TP3_PLANS)
def test_plan_matches_reference_tp3(worker3, tiny_dir, tmp_path, name):
    _check(*_serve(worker3, tiny_dir, tmp_path, name, tp=3))


def test_deploy_stores_weights_once_and_records_plan(tiny_dir, tmp_path):
    """The checkpoint hard-links the source's safetensors (a repeated block is not copied) and carries the plan."""
    from painters.targets.vllm import deploy_vllm

    src, _ = tiny_dir
    out = deploy_vllm(src, "dup_1_x3", tmp_path / "d")
    weights = out / "model.safetensors"
    assert weights.stat().st_ino == (src / "model.safetensors").stat().st_ino
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["PaintersLlamaForCausalLM"]
    record = config["painters"]
    assert record["target"] == "vllm" and record["plan"]["kv_slots"] == 6 and len(record["source_hash"]) == 64
    assert Plan.from_json(record["plan"]) == parse_plan("dup_1_x3", 4)
    # a deployment redeployed with another plan hard-links the same file and keeps the source's hash
    again = deploy_vllm(out, "skip_1_3", tmp_path / "e")
    assert (again / "model.safetensors").stat().st_ino == weights.stat().st_ino
    record2 = json.loads((again / "config.json").read_text())["painters"]
    assert record2["source_hash"] == record["source_hash"] and record2["plan"]["plan"] == "skip_1_3"


def test_deploy_refuses_kvmean_and_other_families(tiny_dir, tmp_path):
    from painters.targets.vllm import deploy_vllm

    src, _ = tiny_dir
    with pytest.raises(ExportError, match="kvmean"):
        deploy_vllm(src, "parallel_1_3:kvmean", tmp_path / "d")
    assert not (tmp_path / "d").exists()
    other = tmp_path / "qwen"
    other.mkdir()
    config = json.loads((src / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "qwen2"}))
    with pytest.raises(ExportError, match="model_type 'qwen2'"):
        deploy_vllm(other, "baseline", tmp_path / "d")
    with pytest.raises(ExportError, match="inside the source"):
        deploy_vllm(src, "baseline", src / "sub")


@pytest.mark.slow
def test_router_backend_generates_reference_tokens_and_times(vllm_env, tiny_dir, monkeypatch, tmp_path):
    """`--backend vllm` through the router: the runner's greedy tokens are the reference's, and bench latency runs."""
    from painters.bench.latency import benchmark
    from painters.routing import open_runners

    monkeypatch.setenv("PAINTERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PAINTERS_VLLM_PYTHON", str(vllm_env))
    src, model = tiny_dir
    runners = open_runners(str(src), ["dup_1_x3"], "vllm")
    try:
        runner = runners["dup_1_x3"]
        assert runner.name == "vllm" and runner.info.num_slots == 6
        tokens = runner.generate(PROMPTS[:1], GEN)[0]
        assert tokens == _reference(model, parse_plan("dup_1_x3", 4), PROMPTS[0], tokens)[2]
        # bench accuracy's scoring on vLLM (its prompt logprobs) equals the reference executor's
        from painters.bench.accuracy import loglikelihood
        from painters.runtime.torch_ref import TorchRunner

        requests = [(PROMPTS[0][:7], PROMPTS[0][7:]), (PROMPTS[1][:2], PROMPTS[1][2:]), (PROMPTS[0][:3], [99])]
        got = loglikelihood(runner, requests)
        want = loglikelihood(TorchRunner(model, parse_plan("dup_1_x3", 4)), requests)
        assert [g for _, g in got] == [g for _, g in want]
        np.testing.assert_allclose([ll for ll, _ in got], [ll for ll, _ in want], atol=ATOL * 4)
        (row,) = benchmark(runners, prompts=(8,), gen=3, warmup=0, iters=1)
        assert row.backend == "vllm" and row.decode_ms > 0 and row.prefill_ms > 0
        assert row.kv_cache_bytes == 6 * 2 * 3 * 32 * 4 * (8 + 3 + 1)
    finally:
        for r in runners.values():
            r.close()


SMOLLM2_PLANS = ["parallel_13_17_x2", "skip_4_26+dup_27_x2", "drop_attn_4,9-12+reverse_20_24"]


@pytest.mark.slow
def test_smollm2_plans_match_reference(vllm_env, worker1, smollm2, tmp_path):
    """SmolLM2 (a GGUF source, de-quantized once; later plans redeploy from that copy) on vLLM at tp 1."""
    from painters.targets.vllm import deploy_vllm

    base = deploy_vllm("smollm2-135m", SMOLLM2_PLANS[0], tmp_path / "first")
    for name in SMOLLM2_PLANS:
        out = base if name == SMOLLM2_PLANS[0] else deploy_vllm(base, name, tmp_path / name)
        worker1.request(op="load", model=str(out), tp=1)
        rows = worker1.request(op="generate", prompts=SMOLLM2_PROMPTS, max_tokens=GEN)["rows"]
        plan = parse_plan(name, smollm2.num_layers)
        for prompt, row in zip(SMOLLM2_PROMPTS, rows):
            prompt_lp, step_lp, greedy = _reference(smollm2.model, plan, prompt, row["tokens"])
            assert row["tokens"] == greedy, name
            np.testing.assert_allclose(row["prompt_logprobs"], prompt_lp, atol=ATOL, err_msg=name)
            np.testing.assert_allclose(row["logprobs"], step_lp, atol=ATOL, err_msg=name)


SMOLLM2_PROMPTS = [[504, 3575, 282, 4649, 314], [1, 4093, 2115, 253, 655, 30, 339, 940, 1789]]


NAS_PLAN = "drop_attn_1,3+drop_mlp_2"  # layer 0 keeps its attention: vLLM takes the KV head count from it


@pytest.mark.slow
def test_nemotron_nas_checkpoint_served_by_vllms_own_decilm(worker1, tiny_dir, tmp_path):
    """`painters deploy nemotron-nas` served by vLLM's own ``DeciLMForCausalLM`` (no painters plugin in the config:
    its configuration class comes through ``auto_map``, hence ``trust_remote_code``) equals the reference."""
    from painters.targets.nemotron_nas import deploy_nemotron_nas

    src, model = tiny_dir
    out = deploy_nemotron_nas(src, NAS_PLAN, tmp_path / "nas")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["DeciLMForCausalLM"] and config["model_type"] == "nemotron-nas"
    assert [(b["attention"]["no_op"], b["ffn"]["no_op"]) for b in config["block_configs"]] == [
        (False, False), (True, False), (False, True), (True, False)]
    worker1.request(op="load", model=str(out), tp=1, trust_remote_code=True)
    rows = worker1.request(op="generate", prompts=PROMPTS, max_tokens=GEN)["rows"]
    _check(model, parse_plan(NAS_PLAN, TINY["num_hidden_layers"]), rows)
