"""Hidden-state similarity (Painters Figure 2): an independent computation, symmetry, unit diagonal, outputs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from painters.analysis import hidden_similarity, importance_scores, measure_similarity, plot_scores
from painters.analysis.calibration import CalibrationError
from painters.cli import main
from painters.export.sources import LoadedModel

L = 8


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 256, (3, 20), generator=torch.Generator().manual_seed(2))


class ByteTokenizer:
    eos_token_id = 2

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [list(t.encode()) for t in texts]}


def _hidden_states(model, ids):
    """Residual stream after the embedding and after each block, straight from the HF modules."""
    inner = model.model
    B, T = ids.shape
    x = inner.embed_tokens(ids)
    pe = inner.rotary_emb(x, torch.arange(T)[None].expand(B, T))
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    bias = torch.zeros(1, 1, T, T).masked_fill(~causal, torch.finfo(torch.float32).min)
    states = [x]
    with torch.no_grad():
        for layer in inner.layers:
            a, _ = layer.self_attn(layer.input_layernorm(x), position_embeddings=pe, attention_mask=bias)
            h = x + a
            x = h + layer.mlp(layer.post_attention_layernorm(h))
            states.append(x)
    return states


def test_matrix_equals_an_independent_computation(tiny, ids):
    sim = hidden_similarity(tiny.model, ids, batch_size=2, model_hash=tiny.hash)
    states = _hidden_states(tiny.model, ids)
    assert sim.num_layers == L and len(sim.matrix) == L + 1
    for i in range(L + 1):
        for j in range(L + 1):
            want = F.cosine_similarity(states[i], states[j], dim=-1).double().mean().item()
            assert abs(sim.matrix[i][j] - want) <= 1e-5, (i, j)


def test_diagonal_is_one_and_matrix_symmetric(tiny, ids):
    sim = hidden_similarity(tiny.model, ids)
    for i in range(L + 1):
        assert abs(sim.matrix[i][i] - 1) <= 1e-9
        for j in range(L + 1):
            assert sim.matrix[i][j] == pytest.approx(sim.matrix[j][i], abs=1e-12)


def test_drift_is_one_minus_block_importance(tiny, ids):
    sim = hidden_similarity(tiny.model, ids)
    scores = importance_scores(tiny.model, ids)
    assert sim.drift == pytest.approx([1 - b for b in scores.block], abs=1e-9)


def test_measure_writes_json_and_heatmap(tiny, tmp_path):
    loaded = LoadedModel(tiny.model, ByteTokenizer(), "tiny-llama", tiny.hash)
    calib = tmp_path / "c.jsonl"
    records = [{"question": f"How many apples does person {k} have?", "answer": "3"} for k in range(20)]
    calib.write_text("".join(json.dumps(r) + "\n" for r in records))
    out, png = tmp_path / "sim.json", tmp_path / "sim.png"
    sim = measure_similarity(loaded, calib, samples=4, seq_len=32, out=out, plot=png)
    data = json.loads(out.read_text())
    assert data["format"] == "painters.similarity/1" and data["model_hash"] == tiny.hash
    assert data["matrix"] == [list(r) for r in sim.matrix] and data["drift"] == list(sim.drift)
    assert data["samples"] == 4 and data["seq_len"] == 32
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_errors_write_nothing(tiny, tmp_path):
    calib = tmp_path / "c.txt"
    calib.write_text("short")
    loaded = LoadedModel(tiny.model, ByteTokenizer(), "tiny-llama", tiny.hash)
    with pytest.raises(CalibrationError, match="has 6 tokens"):
        measure_similarity(loaded, calib, samples=2, seq_len=8, out=tmp_path / "s.json", plot=tmp_path / "s.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def test_plot_scores(tiny, ids, tmp_path):
    path = plot_scores(importance_scores(tiny.model, ids), tmp_path / "bars.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_cli(tiny, tmp_path, monkeypatch):
    loaded = LoadedModel(tiny.model, ByteTokenizer(), "tiny-llama", tiny.hash)
    monkeypatch.setattr("painters.analysis.calibration.load_source", lambda src: loaded)
    calib = tmp_path / "c.txt"
    calib.write_text("A layer is a painter. " * 20)
    args = ["similarity", "tiny-llama", "--calib", str(calib), "--samples", "2", "--seq-len", "16",
            "--plot", str(tmp_path / "s.png"), "--json", str(tmp_path / "s.json")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "drift cos(h_i-1, h_i) by block:" in res.output and "9×9 matrix" in res.output
    assert (tmp_path / "s.png").exists() and (tmp_path / "s.json").exists()
