"""Encoder graphs (BERT): every block plan kind compiled and checked against the encoder reference executor.

The reference is the Hugging Face model's own layer modules run in plan order
(:func:`painters.runtime.encoder_ref.encoder_plan_forward`); its baseline is checked against the model's own
forward first. Tolerance: relative max logit difference ≤ 1e-4 (fp32; measured ≤ 3e-6 on this model).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from painters.cli import main
from painters.compiler.compile import compile_model, describe
from painters.errors import PlanError
from painters.export.encoder_sources import load_encoder
from painters.plans import parse_plan
from painters.runtime.encoder_ref import encoder_plan_forward

# One plan of every block-plan kind, for a 6-layer encoder.
ENCODER_PLANS = ["skip_2_4", "repeat_1_5", "reverse_1_5", "shuffle_1_5_s3", "parallel_1_5", "parallel_1_5_x2",
                 "dup_3_x3", "swap_1_4", "drop_attn_1,3", "drop_mlp_0,5", "drop_block_2-3",
                 "parallel_1_3+drop_attn_4+dup_0_x2"]
REL = 1e-4


@pytest.fixture(scope="module")
def loaded(tiny_bert_dir):
    return load_encoder(tiny_bert_dir)


@pytest.fixture(scope="module")
def batch():
    """Two pair examples of different lengths (the second padded), with segment ids."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 90, (2, 9), generator=g)  # the tiny vocab has 94 tokens
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    types = torch.zeros(2, 9, dtype=torch.long)
    types[:, 5:] = 1
    return ids, mask, types


def _ort(path, batch) -> np.ndarray:
    import onnxruntime as ort

    ids, mask, types = (t.numpy() for t in batch)
    return ort.InferenceSession(str(path)).run(None, {"input_ids": ids, "attention_mask": mask,
                                                      "token_type_ids": types})[0]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_reference_baseline_is_the_hf_forward(loaded, batch):
    ids, mask, types = batch
    want = loaded.model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.detach()
    got = encoder_plan_forward(loaded.model, parse_plan("baseline", 6), ids, mask, types)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_export_is_an_encoder_graph(tiny_bert_onnx, loaded, batch):
    graph = onnx.load(tiny_bert_onnx, load_external_data=False).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.output] == ["logits"]
    info = describe(tiny_bert_onnx)
    assert info["blocks"] == 6 and info["kv_slots"] == 0 and info["kind"] == "encoder"
    want = encoder_plan_forward(loaded.model, parse_plan("baseline", 6), *batch).numpy()
    assert _rel(_ort(tiny_bert_onnx, batch), want) <= REL


@pytest.mark.parametrize("plan", ENCODER_PLANS)
def test_plan_parity(tiny_bert_onnx, loaded, batch, plan, tmp_path):
    result = compile_model(tiny_bert_onnx, plan, tmp_path / "out.onnx")
    assert result.kv_slots == 0 and result.output_bytes <= result.source_bytes
    want = encoder_plan_forward(loaded.model, result.plan, *batch).numpy()
    got = _ort(result.output, batch)
    assert _rel(got, want) <= REL, f"{plan}: relative max logit diff {_rel(got, want):.2e}"
    base = encoder_plan_forward(loaded.model, parse_plan("baseline", 6), *batch).numpy()
    assert _rel(want, base) > 0.05, f"{plan} barely changes the logits; the test model cannot tell plans apart"
    meta = {p.key: p.value for p in onnx.load(result.output, load_external_data=False).metadata_props}
    assert json.loads(meta["painters.schedule"])["plan"] == plan


def test_bare_encoder_keeps_its_output(tmp_path, batch):
    """A BertModel (no head) exports last_hidden_state; a plan keeps that output name and shape."""
    from painters.export.onnx_export import export_onnx
    from tests.tiny_bert import save_tiny_bert

    ckpt = save_tiny_bert(tmp_path / "bare", head=False, layers=3)
    path = export_onnx(ckpt, tmp_path / "onnx" / "model.onnx")
    loaded = load_encoder(ckpt)
    result = compile_model(path, "reverse_0_3", tmp_path / "onnx" / "rev.onnx")
    assert [o.name for o in onnx.load(result.output, load_external_data=False).graph.output] == ["last_hidden_state"]
    want = encoder_plan_forward(loaded.model, result.plan, *batch).numpy()
    got = _ort(result.output, batch)
    assert got.shape == (2, 9, 32) and _rel(got, want) <= REL


def test_kvmean_is_refused(tiny_bert_onnx, tmp_path):
    with pytest.raises(PlanError, match="encoders have none"):
        compile_model(tiny_bert_onnx, "parallel_1_5:kvmean", tmp_path / "out.onnx")
    res = CliRunner().invoke(main, ["compile", "--plan", "parallel_1_5:kvmean", str(tiny_bert_onnx),
                                    "-o", str(tmp_path / "x.onnx")])
    assert res.exit_code == 2 and "':kvmean'" in res.output and not (tmp_path / "x.onnx").exists()
