"""Every supported family, as a tiny random checkpoint: export, every plan kind, parity with HF and the reference.

Each family is saved with ``save_pretrained`` and exported once through :func:`export_onnx` (the CLI's path:
model_type guard, weight check, export self-check). Its ONNX graph is then checked against

* the Hugging Face model itself (``model(...)`` prefill logits and ``generate`` greedy tokens), at prompts longer
  than any sliding window and decoding past it;
* the reference executor running the same plan, for one plan of every kind (both KV modes, fused and unfused
  parallel groups). Weights are drawn with ``initializer_range=0.2`` so that every plan visibly changes the
  logits (asserted), which makes a plan that silently did nothing fail.
"""

from __future__ import annotations

import json

import pytest
import torch

from painters.runtime.base import left_pad, positions_from_mask
from tests.compiler.parity import assert_plan_parity
from tests.export.test_export import _hf_greedy, check_parity

COMMON = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.2, tie_word_embeddings=False,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)

# name → (model_type, config overrides). Windows of 4 are shorter than every prompt below.
FAMILIES = {
    "mistral-window4": ("mistral", dict(sliding_window=4)),
    "qwen2-window4": ("qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=2)),
    "qwen3": ("qwen3", dict(head_dim=8)),
    "granite": ("granite", dict(embedding_multiplier=3.0, residual_multiplier=0.5, attention_multiplier=0.4,
                                logits_scaling=2.0)),
    "olmo": ("olmo", dict(clip_qkv=0.5)),
    "phi3": ("phi3", dict(partial_rotary_factor=0.5)),
    "stablelm": ("stablelm", dict(use_parallel_residual=True, qk_layernorm=True, partial_rotary_factor=0.5)),
    "gpt_neox": ("gpt_neox", dict(num_key_value_heads=None, rotary_pct=0.25, use_parallel_residual=True)),
    "gemma": ("gemma", dict(head_dim=8)),
    "gemma2": ("gemma2", dict(head_dim=8, sliding_window=4, final_logit_softcapping=3.0, attn_logit_softcapping=2.0)),
    "gemma3": ("gemma3_text", dict(head_dim=8, sliding_window=4, final_logit_softcapping=3.0,
                                   layer_types=["sliding_attention", "full_attention"] * 2)),
}

PROMPTS = [[1, 17, 99, 3, 45, 8, 100, 7, 9, 12], [1, 5, 6, 77, 23, 4]]
N_TOKENS = 12

# Every plan kind for 4 layers in few compiles (each costs seconds): reorder + repeat + attention drop; parallel
# (fused where the family matches) + MLP drop + skip with kv=mean; looped parallel with exact KV; one unfused
# group. Baseline parity is test_export_matches_hf with test_reference_matches_hf.
PLANS = ["swap_0_3+drop_attn_1+dup_2_x2", "parallel_1_3+drop_mlp_0+skip_3_4:kvmean", "parallel_0_4_x2"]
UNFUSED = ["parallel_1_3"]


def _tiny_checkpoint(name: str, root):
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, overrides = FAMILIES[name]
    kwargs = {k: v for k, v in {**COMMON, **overrides}.items() if v is not None}  # None: a field it lacks
    config = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    path = root / name
    model.save_pretrained(path)
    return path


# Exported in every run: the sliding window (Mistral), the multipliers and a scaled embedding (Granite), and
# interleaved local/global layers with their own rotary bases, post-norms and soft-capping (Gemma 3). The other
# families export in about a minute each and carry the ``slow`` mark (the hooked oracle in
# tests/runtime/test_families_oracle.py covers every family's block plans without an export).
CORE = ("mistral-window4", "granite", "gemma3")


@pytest.fixture(scope="module", params=[n if n in CORE else pytest.param(n, marks=pytest.mark.slow) for n in FAMILIES])
def family(request, tmp_path_factory):
    """(LoadedModel, exported .onnx) of one family, exported once per module."""
    from painters.export.onnx_export import export_onnx
    from painters.export.sources import load_source

    root = tmp_path_factory.mktemp(request.param)
    ckpt = _tiny_checkpoint(request.param, root)
    out = export_onnx(ckpt, root / "onnx" / "model.onnx")
    return request.param, load_source(ckpt), out


def test_export_matches_hf(family):
    """ORT graph vs the HF model: prefill logits (left-padded) within 1e-4, then greedy tokens past any window."""
    _, loaded, onnx_path = family
    check_parity(loaded, onnx_path, PROMPTS, n_tokens=N_TOKENS)


def test_reference_matches_hf(family):
    """The reference executor's baseline equals ``model(...)`` and ``generate`` (its own cached decoding)."""
    from painters.plans import parse_plan
    from painters.runtime.torch_ref import TorchRunner, plan_forward

    _, loaded, _ = family
    ids, mask = left_pad(PROMPTS)
    t = torch.from_numpy
    pos = positions_from_mask(mask, ids.shape[1])
    with torch.no_grad():
        want = loaded.model(input_ids=t(ids), attention_mask=t(mask), position_ids=t(pos)).logits
    got = plan_forward(loaded.model, parse_plan("baseline", 4), t(ids), t(mask), t(pos)).logits
    real = torch.from_numpy(mask.astype(bool))
    assert (got - want)[real].abs().max() <= 1e-5 * want[real].abs().max()
    runner = TorchRunner(loaded.model, parse_plan("baseline", 4), device="cpu")
    assert runner.generate(PROMPTS, N_TOKENS) == [_hf_greedy(loaded.model, p, N_TOKENS) for p in PROMPTS]


@pytest.mark.parametrize("name", [n for n, (_, o) in FAMILIES.items() if o.get("sliding_window")])
def test_window_is_exercised(name):
    """A sliding-window family's prompts are longer than the window: a plain causal mask gives other logits."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, overrides = FAMILIES[name]
    fields = {**COMMON, **overrides}
    windowed = AutoConfig.for_model(model_type, **fields)
    if getattr(windowed, "layer_types", None):  # Qwen2, Gemma2/3: every layer global
        full = AutoConfig.for_model(model_type, **{**fields, "layer_types": ["full_attention"] * 4})
    else:
        full = AutoConfig.for_model(model_type, **{**fields, "sliding_window": None})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(windowed).eval()
    causal = AutoModelForCausalLM.from_config(full).eval()
    causal.load_state_dict(model.state_dict())
    ids = torch.tensor([PROMPTS[0]])
    with torch.no_grad():
        a, b = model(ids).logits, causal(ids).logits
    assert (a - b).abs().max() > 1e-2 * a.abs().max()


def _visible(loaded, plan_name):
    """Relative max change of the reference logits that ``plan_name`` makes against baseline."""
    from painters.plans import parse_plan
    from painters.runtime.torch_ref import plan_forward

    ids, mask = left_pad(PROMPTS)
    t = torch.from_numpy
    pos = t(positions_from_mask(mask, ids.shape[1]))
    base = plan_forward(loaded.model, parse_plan("baseline", 4), t(ids), t(mask), pos).logits
    got = plan_forward(loaded.model, parse_plan(plan_name, 4), t(ids), t(mask), pos).logits
    return float((got - base).abs().max() / base.abs().max())


@pytest.mark.parametrize("plan", PLANS)
def test_plan_parity(family, tmp_path, plan):
    _, loaded, onnx_path = family
    assert_plan_parity(loaded, onnx_path, plan, tmp_path, PROMPTS, n_tokens=8)
    assert _visible(loaded, plan) > 1e-2, f"{plan} barely changes the logits: the test would not see a no-op"


@pytest.mark.parametrize("plan", UNFUSED)
def test_unfused_parallel_parity(family, tmp_path, plan):
    from painters.compiler.graph_io import load_graph

    _, loaded, onnx_path = family
    result = assert_plan_parity(loaded, onnx_path, plan, tmp_path, PROMPTS, n_tokens=8, fuse_parallel=False)
    layout = json.loads(load_graph(result.output).metadata_props["painters.slot_layout"])
    assert layout["fused_stages"] == []


def test_fusion_where_blocks_match(family):
    """Which blocks the wide-block fusion recognises (recorded so a family that stops matching is noticed)."""
    from painters.compiler.blocks import discover_blocks
    from painters.compiler.graph_io import load_graph

    name, _, onnx_path = family
    blocks = discover_blocks(load_graph(onnx_path)).blocks
    assert len(blocks) == 4
    fused = [b.form is not None for b in blocks]
    assert fused == [FUSES[name]] * 4, [b.mismatch for b in blocks]


# Whether the Llama matcher (wide-block fusion of parallel groups) recognises the family's blocks; the others
# run parallel groups unfused, with the compiler's notice naming why (projection bias, another norm, ...).
FUSES = {"mistral-window4": True, "qwen2-window4": False, "qwen3": False, "granite": False, "olmo": False,
         "phi3": False, "stablelm": False, "gpt_neox": False, "gemma": False, "gemma2": False, "gemma3": False}


def test_unsupported_options_are_named(tmp_path):
    """A family option painters does not implement is refused by name, before anything is written."""
    from painters.errors import ExportError
    from painters.export.onnx_export import export_onnx

    ckpt = _tiny_checkpoint("mistral-window4", tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="rope type 'dynamic'"):
        export_onnx(ckpt, tmp_path / "out" / "model.onnx")
    assert not (tmp_path / "out").exists()

