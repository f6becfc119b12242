"""Export checks itself: a graph that differs from the source model is refused and nothing is written."""

from __future__ import annotations

import copy

import pytest
import torch

from painters.errors import ExportError
from painters.export.self_check import TOLERANCE, check_export


def test_exported_graph_passes(tiny, tiny_onnx):
    assert check_export(tiny.model, tiny_onnx) <= 1e-5 < TOLERANCE["float32"]


def test_a_different_model_fails(tiny, tiny_onnx):
    """The same graph against a model whose LM head moved by 1 %: the prefill logits differ, so it is refused."""
    other = copy.deepcopy(tiny.model)
    with torch.no_grad():
        other.lm_head.weight.mul_(1.01)
    with pytest.raises(ExportError, match=r"self-check failed: the graph's prefill logits differ .*tolerance 1e-03"):
        check_export(other, tiny_onnx)


def test_wrong_trace_is_refused_and_nothing_written(tmp_path, monkeypatch):
    """A family hook that traces a wrong head (logits × 1.05, as an ignored multiplier would) is caught."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from painters.export.onnx_export import export_model
    from painters.export.sources import LoadedModel
    from painters.runtime.families import Family

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()
    right = Family.logits
    monkeypatch.setattr(Family, "logits", lambda self, m, x: right(self, m, x) * 1.05)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="self-check failed"):
        export_model(LoadedModel(model, None, "wrong", "0"), out / "model.onnx")
    assert [p for p in out.rglob("*")] == []


def test_encoder_export_passes(tiny_bert_dir, tiny_bert_onnx):
    from painters.export.encoder_sources import load_encoder
    from painters.export.self_check import check_encoder_export

    assert check_encoder_export(load_encoder(tiny_bert_dir).model, tiny_bert_onnx) <= 1e-5 < TOLERANCE["float32"]


def test_encoder_against_a_different_model_fails(tiny_bert_dir, tiny_bert_onnx):
    """The encoder graph against a model whose classifier moved by 5 %: its logits are refused."""
    from painters.export.encoder_sources import load_encoder
    from painters.export.self_check import check_encoder_export

    other = load_encoder(tiny_bert_dir).model
    with torch.no_grad():
        other.classifier.weight.mul_(1.05)
    with pytest.raises(ExportError, match=r"self-check failed: the graph's prefill logits differ .*tolerance 1e-03"):
        check_encoder_export(other, tiny_bert_onnx)


def test_wrong_encoder_trace_is_refused_and_nothing_written(tmp_path, monkeypatch):
    """A bare encoder traced with a wrong output (last_hidden_state × 1.05) is refused; ``check=False`` skips it."""
    import painters.runtime.encoder_ref as encoder_ref
    from painters.export.encoder_export import export_encoder
    from painters.export.encoder_sources import load_encoder
    from tests.tiny_bert import save_tiny_bert

    loaded = load_encoder(save_tiny_bert(tmp_path / "ckpt", head=False, layers=1))
    right = encoder_ref.encoder_plan_forward
    monkeypatch.setattr(encoder_ref, "encoder_plan_forward", lambda *a: right(*a) * 1.05)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="self-check failed: the graph's prefill last_hidden_state differ"):
        export_encoder(loaded, out / "model.onnx")
    assert [p for p in out.rglob("*")] == []
    assert export_encoder(loaded, out / "model.onnx", check=False).is_file()
