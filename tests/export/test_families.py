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
from tests.families import COMMON, FAMILIES, PROMPTS, family_params, tiny_checkpoint

N_TOKENS = 12

# Every plan kind for 4 layers in few compiles (each costs seconds): reorder + repeat + attention drop; parallel
# (fused where the family matches) + MLP drop + skip with kv=mean; looped parallel with exact KV; one unfused
# group. Baseline parity is test_export_matches_hf with test_reference_matches_hf.
PLANS = ["swap_0_3+drop_attn_1+dup_2_x2", "parallel_1_3+drop_mlp_0+skip_3_4:kvmean", "parallel_0_4_x2"]
UNFUSED = ["parallel_1_3"]


@pytest.fixture(scope="module", params=family_params())
def family(request, family_exports):
    """(name, LoadedModel, exported .onnx) of one family (exported once per run, shared with the engine and
    bench tests)."""
    export, loaded = family_exports.loaded(request.param)
    return request.param, loaded, export.onnx


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

    ckpt = tiny_checkpoint("mistral-window4", tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="rope type 'dynamic'"):
        export_onnx(ckpt, tmp_path / "out" / "model.onnx")
    assert not (tmp_path / "out").exists()

