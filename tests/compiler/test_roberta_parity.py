"""RoBERTa encoders through the encoder path: export, every block plan kind, parity with the reference executor.

RoBERTa's layers are BERT's; what differs is around them: position ids are computed from the input ids
(``cumsum(ids != pad) + pad``, so they start at ``pad_token_id + 1`` and padding keeps position ``pad``), one
token type, and a classification head on the ``<s>`` token without a pooler. The batch below pads with the
pad id, so a graph that numbered positions from 0 would fail the baseline check. Tolerance as for BERT.
"""

from __future__ import annotations

import pytest
import torch

from painters.compiler.compile import compile_model
from painters.export.encoder_sources import load_encoder
from painters.plans import parse_plan
from painters.runtime.encoder_ref import encoder_plan_forward
from tests.compiler.test_encoder_parity import ENCODER_PLANS, REL, _ort, _rel

PAD = 1


@pytest.fixture(scope="module")
def roberta(tmp_path_factory):
    """(LoadedModel, exported graph) of a tiny random RobertaForSequenceClassification (6 layers)."""
    from painters.export.onnx_export import export_onnx
    from tests.tiny_bert import save_tiny_roberta

    root = tmp_path_factory.mktemp("roberta")
    ckpt = save_tiny_roberta(root / "ckpt")
    return load_encoder(ckpt), export_onnx(ckpt, root / "onnx" / "model.onnx")


@pytest.fixture(scope="module")
def batch():
    """Two sequences, the second padded with the pad id (its positions stop counting); one token type."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 90, (2, 9), generator=g)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    ids[1, 6:] = PAD
    return ids, mask, torch.zeros(2, 9, dtype=torch.long)


def test_reference_and_graph_are_the_hf_forward(roberta, batch):
    loaded, path = roberta
    ids, mask, types = batch
    with torch.no_grad():
        want = loaded.model(input_ids=ids, attention_mask=mask).logits
        zero_based = loaded.model(input_ids=ids, attention_mask=mask,
                                  position_ids=torch.arange(9).expand(2, 9)).logits
    got = encoder_plan_forward(loaded.model, parse_plan("baseline", 6), ids, mask, types)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert _rel(_ort(path, batch), want.numpy()) <= REL
    assert _rel(zero_based.numpy(), want.numpy()) > 1e-2  # positions from 0 would be visibly wrong


@pytest.mark.parametrize("plan", ENCODER_PLANS)
def test_plan_parity(roberta, batch, plan, tmp_path):
    loaded, path = roberta
    result = compile_model(path, plan, tmp_path / "out.onnx")
    want = encoder_plan_forward(loaded.model, result.plan, *batch).numpy()
    got = _ort(result.output, batch)
    assert _rel(got, want) <= REL, f"{plan}: relative max logit diff {_rel(got, want):.2e}"
    base = encoder_plan_forward(loaded.model, parse_plan("baseline", 6), *batch).numpy()
    assert _rel(want, base) > 0.05, f"{plan} barely changes the logits; the test model cannot tell plans apart"
