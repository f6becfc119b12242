"""llama.cpp's own converter on painters' checkpoints, and painters' GGUFs, run in llama.cpp against the reference.

Tolerance: f32 weights and an f32 KV cache; llama.cpp and torch accumulate in different orders (atol 2e-3 on logits
of magnitude ~5), and greedy tokens are equal.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

ATOL = 2e-3
BF_PROMPTS = [[1, 60, 200, 3, 45, 8, 100, 7, 9, 12, 261, 265], [1, 5, 6, 77, 23, 4, 259, 264]]


def _llamacpp_logits(path, prompts):
    from painters.runtime.llamacpp import LlamaCppRunner

    with LlamaCppRunner(path, threads=1, n_ctx=64, kv_f32=True) as runner:
        return [runner.prefill(np.array([p]), np.ones((1, len(p)), np.int64))[0][0] for p in prompts], runner.info


def _reference(src, plan, prompts):
    from painters.export.sources import load_source
    from painters.plans import parse_plan
    from painters.runtime.torch_ref import TorchRunner

    loaded = load_source(src)
    runner = TorchRunner(loaded.model, parse_plan(plan, loaded.num_layers), device="cpu")
    return [runner.prefill(np.array([p]), np.ones((1, len(p)), np.int64))[0][0] for p in prompts], runner


@pytest.mark.parametrize("plan", ["drop_attn_1,4", "drop_attn_2+reverse_3_6"])
def test_converter_reads_nemotron_nas_output(bf_llama, llamacpp_tree, tmp_path, plan):
    """`deploy nemotron-nas` → llama.cpp's convert_hf_to_gguf.py (its deci path) → llama.cpp ≈ the reference."""
    import gguf

    from painters.targets.llamacpp_convert import convert_checkpoint
    from painters.targets.nemotron_nas import deploy_nemotron_nas

    ckpt = deploy_nemotron_nas(bf_llama, plan, tmp_path / "nas")
    out = convert_checkpoint(ckpt, tmp_path / "nas.gguf")
    assert gguf.GGUFReader(str(out)).fields["general.architecture"].contents() == "deci"
    got, _ = _llamacpp_logits(out, BF_PROMPTS)
    want, _ = _reference(bf_llama, plan, BF_PROMPTS)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=ATOL)


def test_llamacpp_deci_drops_attention_of_ffn_free_layers(bf_llama, llamacpp_tree, tmp_path):
    """llama.cpp 0.3.36's deci graph computes an FFN-free layer as if the whole block were dropped (a `continue`
    before the attention's residual Add in src/models/deci.cpp): the converter's own output of drop_mlp_2 equals
    drop_block_2. painters' gguf target works around it (gguf.FFN_STUB); when this test fails, llama.cpp was fixed
    and the stub can go."""
    from painters.targets.llamacpp_convert import convert_checkpoint
    from painters.targets.nemotron_nas import deploy_nemotron_nas

    out = convert_checkpoint(deploy_nemotron_nas(bf_llama, "drop_mlp_2", tmp_path / "nas"), tmp_path / "nas.gguf")
    got, _ = _llamacpp_logits(out, BF_PROMPTS)
    as_block, _ = _reference(bf_llama, "drop_block_2", BF_PROMPTS)
    as_mlp, _ = _reference(bf_llama, "drop_mlp_2", BF_PROMPTS)
    for g, b, m in zip(got, as_block, as_mlp):
        np.testing.assert_allclose(g, b, atol=ATOL)
        assert np.abs(g - m).max() > 100 * ATOL


@pytest.mark.parametrize("plan", ["skip_1_3", "dup_2_x2+reverse_4_6", "drop_attn_2,5", "drop_mlp_1+swap_3_5"])
def test_painters_gguf_from_converted_llama(bf_llama, llamacpp_tree, tmp_path, plan):
    """The converter's plain f32 GGUF → `deploy gguf` (bytes copied; deci for drops) → llama.cpp ≈ the reference,
    with equal greedy tokens."""
    from painters.runtime.llamacpp import LlamaCppRunner
    from painters.targets.gguf import deploy_gguf
    from painters.targets.llamacpp_convert import convert_checkpoint

    base = tmp_path / "base.gguf"
    convert_checkpoint(bf_llama, base)
    out = deploy_gguf(base, plan, tmp_path / "plan.gguf")
    got, info = _llamacpp_logits(out, BF_PROMPTS)
    assert info.plan == plan
    want, ref = _reference(bf_llama, plan, BF_PROMPTS)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=ATOL)
    with LlamaCppRunner(out, threads=1, n_ctx=64, kv_f32=True) as runner:
        assert runner.generate(BF_PROMPTS, 8) == ref.generate(BF_PROMPTS, 8)


def test_deploy_gguf_from_checkpoint_uses_the_converter(bf_llama, llamacpp_tree, tmp_path):
    """`painters deploy gguf DIR` (a Hugging Face source) converts through llama.cpp and records the plan."""
    from painters.runtime.llamacpp import gguf_plan
    from painters.targets.gguf import deploy_gguf

    out = deploy_gguf(bf_llama, "drop_mlp_3+drop_attn_4+skip_1_2", tmp_path / "hf.gguf")
    assert gguf_plan(out).name == "drop_mlp_3+drop_attn_4+skip_1_2"
    got, _ = _llamacpp_logits(out, BF_PROMPTS)
    want, _ = _reference(bf_llama, "drop_mlp_3+drop_attn_4+skip_1_2", BF_PROMPTS)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=ATOL)


