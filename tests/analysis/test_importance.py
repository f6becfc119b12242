"""Module importance: equals an independent loop over the HF modules; calibration files; scores files; CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from painters.analysis import (
    CalibrationError,
    calibration_ids,
    drop_plan,
    importance_scores,
    iterative_drop_order,
    measure_importance,
)
from painters.cli import main
from painters.errors import PaintersError, PlanError
from painters.export.sources import LoadedModel
from painters.plans import least_important, load_scores, parse_plan
from painters.runtime.torch_ref import plan_forward
from tests.conftest import DATA, requires_data

L = 8


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 256, (3, 24), generator=torch.Generator().manual_seed(1))


class ByteTokenizer:
    """Bytes as token ids (fits tiny-llama's 256-token vocabulary): a tokenizer that costs nothing to load."""

    eos_token_id = 2

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [list(t.encode()) for t in texts]}


@pytest.fixture(scope="module")
def tiny_text(tiny):
    """tiny-llama with a byte tokenizer, so the text path runs end to end."""
    return LoadedModel(tiny.model, ByteTokenizer(), "tiny-llama", tiny.hash)


def _independent(model, ids, drop=()):
    """Scores straight from the HF modules with F.cosine_similarity; ``drop`` holds (kind, layer) removed."""
    inner = model.model
    B, T = ids.shape
    x = inner.embed_tokens(ids)
    pe = inner.rotary_emb(x, torch.arange(T)[None].expand(B, T))
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    bias = torch.zeros(1, 1, T, T).masked_fill(~causal, torch.finfo(torch.float32).min)
    out = {"attn": [], "mlp": [], "block": []}

    def score(a, b):
        return 1 - F.cosine_similarity(a, b, dim=-1).double().mean().item()

    with torch.no_grad():
        for i, layer in enumerate(inner.layers):
            if ("block", i) in drop or {("attn", i), ("mlp", i)} <= set(drop):
                for k in out:
                    out[k].append(math.nan)
                continue
            h = x
            if ("attn", i) not in drop:
                a, _ = layer.self_attn(layer.input_layernorm(x), position_embeddings=pe, attention_mask=bias)
                h = x + a
            y = h + layer.mlp(layer.post_attention_layernorm(h)) if ("mlp", i) not in drop else h
            out["attn"].append(score(x, h) if ("attn", i) not in drop else math.nan)
            out["mlp"].append(score(h, y) if ("mlp", i) not in drop else math.nan)
            out["block"].append(score(x, y))
            x = y
    return out


def _close(got, want, tol=1e-5):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (math.isnan(g) and math.isnan(w)) or abs(g - w) <= tol, (got, want)


@pytest.mark.parametrize("batch_size", [None, 2])
def test_scores_equal_an_independent_loop(tiny, ids, batch_size):
    scores = importance_scores(tiny.model, ids, batch_size=batch_size, model_hash=tiny.hash)
    want = _independent(tiny.model, ids)
    for kind in ("attn", "mlp", "block"):
        _close(getattr(scores, kind), want[kind])
    assert scores.model_hash == tiny.hash and scores.num_layers == L


@pytest.mark.parametrize("drop", [[("attn", 2)], [("mlp", 0), ("attn", 5)], [("block", 3)], [("attn", 4), ("mlp", 4)]])
def test_scores_with_dropped_modules_equal_an_independent_loop(tiny, ids, drop):
    scores = importance_scores(tiny.model, ids, dropped=drop)
    want = _independent(tiny.model, ids, drop)
    for kind in ("attn", "mlp", "block"):
        _close(getattr(scores, kind), want[kind])


def test_drop_plan_parses_back_and_matches_the_reference_executor(tiny, ids):
    plan = drop_plan(L, [("attn", 1), ("mlp", 1), ("mlp", 3), ("attn", 5)])
    assert plan.name == "drop_attn_5+drop_mlp_3+drop_block_1"
    assert parse_plan(plan.name, L).steps == plan.steps
    assert drop_plan(L).name == "baseline"


def _independent_iterative(model, ids, kind, n):
    dropped = []
    for _ in range(n):
        s = _independent(model, ids, dropped)
        kinds = ("attn", "mlp") if kind == "joint" else (kind,)
        pool = [(s[k][i], i, o, k) for o, k in enumerate(kinds) for i in range(L) if not math.isnan(s[k][i])]
        _, i, _, k = min(pool)
        dropped.append((k, i))
    return dropped


@pytest.mark.parametrize("kind", ["attn", "block", "joint"])
def test_iterative_order_equals_an_independent_rescoring_loop(tiny, ids, kind):
    order = iterative_drop_order(tiny.model, ids, kind, 3)
    assert [(d.kind, d.layer) for d in order] == _independent_iterative(tiny.model, ids, kind, 3)
    first = importance_scores(tiny.model, ids)
    assert (order[0].kind, order[0].layer) == least_important(first, kind, 1)[0]


def test_iterative_rejects_bad_counts(tiny, ids):
    with pytest.raises(PlanError, match="1–7"):
        iterative_drop_order(tiny.model, ids, "block", 8)
    with pytest.raises(PlanError, match="unknown drop kind"):
        iterative_drop_order(tiny.model, ids, "head", 1)


def test_id_path_rejects_bad_ids(tiny):
    with pytest.raises(CalibrationError, match="vocabulary is 0..255"):
        importance_scores(tiny.model, torch.full((2, 8), 300))
    with pytest.raises(CalibrationError, match="shape"):
        importance_scores(tiny.model, torch.zeros(8, dtype=torch.long))


def test_jsonl_rule_text_then_question(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"question": "ab", "answer": "zz"}\n\n{"text": "cd", "question": "no"}\n')
    got = calibration_ids(f, ByteTokenizer(), samples=1, seq_len=6)
    assert got.tolist() == [[ord("a"), ord("b"), 2, ord("c"), ord("d"), 2]]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(CalibrationError, match="bad.jsonl:1: no text field 'text' or 'question'"):
        calibration_ids(bad, ByteTokenizer(), samples=1, seq_len=2)


def test_too_short_file_names_its_token_count_and_writes_nothing(tiny_text, tmp_path):
    calib = tmp_path / "short.txt"
    calib.write_text("x" * 99)  # 99 bytes + EOS = 100 tokens
    out = tmp_path / "scores.json"
    with pytest.raises(CalibrationError, match=r"has 100 tokens; 4 × 32 = 128 are needed"):
        measure_importance(tiny_text, calib, samples=4, seq_len=32, out=out, plot=tmp_path / "bars.png")
    assert list(tmp_path.iterdir()) == [calib]


def test_empty_file(tiny_text, tmp_path):
    calib = tmp_path / "empty.jsonl"
    calib.write_text("\n \n")
    with pytest.raises(CalibrationError, match="is empty"):
        measure_importance(tiny_text, calib, samples=2, seq_len=8)
    with pytest.raises(CalibrationError, match="not found"):
        measure_importance(tiny_text, tmp_path / "absent.txt")


def test_model_without_tokenizer_is_a_clear_error(tiny, tmp_path):
    calib = tmp_path / "c.txt"
    calib.write_text("hello " * 100)
    with pytest.raises(PaintersError, match="has no tokenizer"):
        measure_importance(tiny, calib, samples=2, seq_len=8)


def test_text_path_writes_a_scores_file_bound_to_the_model(tiny_text, tmp_path):
    calib = tmp_path / "c.txt"
    calib.write_text("The quick brown fox jumps over the lazy dog.\n" * 20)
    out, bars = tmp_path / "scores.json", tmp_path / "bars.png"
    res = measure_importance(tiny_text, calib, samples=4, seq_len=32, iterative="attn", drop=2, out=out, plot=bars)
    ids = torch.tensor(list(calib.read_bytes()[:128])).view(4, 32)
    _close(res.scores.attn, _independent(tiny_text.model, ids)["attn"])
    data = json.loads(out.read_text())
    assert data["samples"] == 4 and data["seq_len"] == 32 and len(data["calibration_sha256"]) == 64
    assert data["model_hash"] == tiny_text.hash
    layers = ",".join(map(str, sorted(d.layer for d in res.order)))
    assert data["iterative"]["plan"] == res.plan_name == f"drop_attn_{layers}"
    assert bars.read_bytes()[:4] == b"\x89PNG"
    assert load_scores(out, model_hash=tiny_text.hash).attn == res.scores.attn
    with pytest.raises(PlanError, match="computed on another model"):
        load_scores(out, model_hash="f" * 64)
    plan = parse_plan("drop_attn_k3", L, scores=load_scores(out, model_hash=tiny_text.hash))
    assert sum(not s.attn for s in plan.steps) == 3
    got = plan_forward(tiny_text.model, plan, ids, torch.ones_like(ids), torch.arange(32).expand(4, 32)).logits
    assert torch.isfinite(got).all()


def test_iterative_needs_kind_and_count(tiny_text, tmp_path):
    with pytest.raises(PlanError, match="--drop N"):
        measure_importance(tiny_text, tmp_path / "c.txt", iterative="attn")


def test_cli_prints_the_table_and_errors_write_nothing(tiny_text, tmp_path, monkeypatch):
    calib = tmp_path / "c.txt"
    calib.write_text("Natalia sold clips to 48 of her friends in April.\n" * 20)
    runner = CliRunner()
    out = tmp_path / "s.json"
    monkeypatch.setattr("painters.analysis.calibration.load_source", lambda src: tiny_text)
    res = runner.invoke(main, ["importance", "tiny-llama", "--calib", str(calib), "--samples", "4", "--seq-len", "16",
                               "--json", str(out), "--iterative", "joint", "--drop", "2"])
    assert res.exit_code == 0, res.output
    assert "layer      attn       mlp     block" in res.output
    assert "attention layers, least important first:" in res.output and "iterative joint drop order" in res.output
    assert json.loads(out.read_text())["iterative"]["drop"] == 2
    short = runner.invoke(main, ["importance", "tiny-llama", "--calib", str(calib), "--samples", "64",
                                 "--json", str(tmp_path / "no.json")])
    assert short.exit_code == 2 and "tokens; 64 × 512 = 32768 are needed" in short.output
    assert not (tmp_path / "no.json").exists()


def test_cli_model_without_tokenizer(tmp_path):
    calib = tmp_path / "c.txt"
    calib.write_text("hello " * 100)
    args = ["importance", "tiny-llama", "--calib", str(calib), "--json", str(tmp_path / "s.json")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "has no tokenizer" in res.output
    assert not (tmp_path / "s.json").exists()


@pytest.mark.slow
@requires_data("gsm8k", "train.jsonl")
def test_smollm2_on_gsm8k_questions(smollm2):
    ids = calibration_ids(DATA / "gsm8k" / "train.jsonl", smollm2.tokenizer, samples=2, seq_len=64)
    first = smollm2.tokenizer(["Natalia sold clips"], add_special_tokens=False)["input_ids"][0]
    assert ids[0, : len(first)].tolist() == first
    scores = importance_scores(smollm2.model, ids[:1])
    assert all(0 <= v <= 2 for v in scores.attn) and scores.num_layers == smollm2.num_layers


# ---- every family: scores from the model's own forward -------------------------------------------------------
def _hooked_streams(model, ids):
    """Each decoder layer's input and output stream, and the attention-sum stream h where the family has a norm
    that reads it (Llama form: post_attention_layernorm; Gemma 2/3 sandwich norms: pre_feedforward_layernorm),
    all recorded by hooks on the model's own forward."""
    from tests.runtime.test_families_oracle import _layers

    inputs, outputs, mids = {}, {}, {}

    def grab(store, i, arg_of_hook):
        def hook(module, args, kwargs, *out):
            store[i] = arg_of_hook(args, kwargs, out)
        return hook

    handles = []
    for i, layer in enumerate(_layers(model)):
        first = lambda a, k, o: (a[0] if a else k["hidden_states"])  # noqa: E731
        handles.append(layer.register_forward_pre_hook(grab(inputs, i, first), with_kwargs=True))
        handles.append(layer.register_forward_hook(
            grab(outputs, i, lambda a, k, o: o[0][0] if isinstance(o[0], tuple) else o[0]), with_kwargs=True))
        parallel = getattr(layer, "use_parallel_residual", getattr(model.config, "use_parallel_residual", False))
        norm = getattr(layer, "pre_feedforward_layernorm", None) or getattr(layer, "post_attention_layernorm", None)
        if norm is not None and not parallel:
            handles.append(norm.register_forward_pre_hook(grab(mids, i, first), with_kwargs=True))
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return inputs, outputs, mids


def _one_minus_cos(a, b) -> float:
    return 1.0 - float(F.cosine_similarity(a.double(), b.double(), dim=-1).mean())


@pytest.mark.parametrize("name", ["llama", "mistral-window4", "qwen3", "granite", "olmo", "phi3", "stablelm",
                                  "gpt_neox", "gemma", "gemma2", "gemma3"])
def test_every_family_scores_equal_its_own_forward(tiny, name):
    """Block importance is 1 − cos(layer input, layer output) of the model's own forward on every family, and
    attention importance 1 − cos(x, h) where h is observable — so multipliers, scaled embeddings, windows and
    sandwich norms are counted as the model counts them (a Llama-only forward fails Granite, Gemma 2/3 and
    GPT-NeoX here)."""
    from tests.runtime.test_families_oracle import _model

    model = tiny.model if name == "llama" else _model(name)
    ids = torch.randint(3, 100, (2, 12), generator=torch.Generator().manual_seed(3))
    scores = importance_scores(model, ids)
    inputs, outputs, mids = _hooked_streams(model, ids)
    L = model.config.num_hidden_layers
    assert len(mids) in (0, L)
    for i in range(L):
        assert scores.block[i] == pytest.approx(_one_minus_cos(inputs[i], outputs[i]), abs=1e-6), (name, i)
        if mids:
            assert scores.attn[i] == pytest.approx(_one_minus_cos(inputs[i], mids[i]), abs=1e-6), (name, i)
            assert scores.mlp[i] == pytest.approx(_one_minus_cos(mids[i], outputs[i]), abs=1e-6), (name, i)
    assert max(scores.block) > 1e-3  # the scores are not trivially zero
