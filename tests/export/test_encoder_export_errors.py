"""Encoder checkpoints painters does not implement are refused by name before anything is written."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from painters.cli import main
from tests.tiny_bert import save_tiny_bert


@pytest.mark.parametrize(("edit", "message"), [
    ({"architectures": ["BertForMaskedLM"]}, "supported: BertModel, BertForSequenceClassification"),
    ({"is_decoder": True}, "configured as a decoder"),
    ({"position_embedding_type": "relative_key"}, "absolute position embeddings only"),
])
def test_unsupported_encoder_is_named(tmp_path, edit, message):
    ckpt = save_tiny_bert(tmp_path / "ckpt", layers=1)
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, **edit}))
    out = tmp_path / "out" / "model.onnx"
    res = CliRunner().invoke(main, ["export", str(ckpt), "-o", str(out)])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not out.parent.exists() or not any(out.parent.iterdir())
