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


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory):
    """(model, graph): a 2-block random Llama exported in fp16; the export's own self-check (against the fp32
    forward of the fp16 weights) runs and passes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from painters.export.onnx_export import export_model
    from painters.export.sources import LoadedModel

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2,
                                         initializer_range=0.2)).half().eval()
    path = export_model(LoadedModel(model, None, "tiny16", "0"), tmp_path_factory.mktemp("fp16") / "model.onnx")
    return model, path


def test_fp16_export_is_checked_against_fp32(fp16_export):
    """The fp16 graph is within 4e-3 of the fp32 forward of its own weights (measured 1.0e-3), and the probe
    leaves the model in fp16 with bit-identical weights."""
    model, path = fp16_export
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert 0 < check_export(model, path) <= 4e-3 < TOLERANCE["float16"]
    after = model.state_dict()
    assert all(after[k].dtype == torch.float16 and torch.equal(after[k], v) for k, v in before.items())


def test_fp16_export_against_a_different_model_fails(fp16_export):
    """The fp16 graph against a model whose LM head moved by 5 % (an ignored multiplier) is refused."""
    model, path = fp16_export
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.mul_(1.05)
    with pytest.raises(ExportError, match=r"prefill logits differ .*tolerance 2e-02 for float16"):
        check_export(other, path)


def test_bf16_is_not_checked(tiny, caplog):
    """onnxruntime-CPU cannot run bf16 decoder graphs: the check says so and returns NaN without running."""
    import math

    model = copy.deepcopy(tiny.model).to(torch.bfloat16)
    assert math.isnan(check_export(model, "never-opened.onnx"))
    assert "no tolerance is established for bfloat16" in caplog.text
