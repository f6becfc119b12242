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
