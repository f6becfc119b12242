"""The scoring engine: shared-context KV scoring equals full-sequence scoring; metrics; evaluate; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from painters.bench import accuracy
from painters.bench.accuracy import encode_pair, evaluate, loglikelihood, render_markdown
from painters.bench.metrics import (
    exact_match,
    gsm8k_scores,
    mean_stderr,
    multiple_choice_scores,
    perplexity,
    regex_extract,
)
from painters.errors import BenchError
from painters.routing import open_runner


class ByteTokenizer:
    """UTF-8 bytes as token ids (tiny-llama's vocabulary is 256): enough to drive every task end to end."""

    bos_token_id, eos_token_id = 1, 2

    def encode(self, text, add_special_tokens=False):
        return list(text.encode("utf-8"))

    def decode(self, ids, skip_special_tokens=False):
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def tiny_runner():
    import torch

    from painters.export.sources import load_source
    from painters.plans import parse_plan
    from painters.runtime.torch_ref import TorchRunner

    # One intra-op thread: on a shared 2-core machine, torch's spinning thread pool is ~10x slower than one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    loaded = load_source("tiny-llama")
    yield TorchRunner(loaded.model, parse_plan("baseline", loaded.num_layers), tokenizer=ByteTokenizer(),
                      model_hash=loaded.hash, device="cpu")
    torch.set_num_threads(threads)


def _requests(seed=0):
    """Contexts of different lengths, each with 1-4 continuations of 1-5 tokens (some shared contexts)."""
    rng = np.random.default_rng(seed)
    out = []
    for n_ctx in (7, 3, 12, 1, 7):
        ctx = rng.integers(3, 256, n_ctx).tolist()
        for _ in range(rng.integers(1, 5)):
            out.append((ctx, rng.integers(3, 256, rng.integers(1, 6)).tolist()))
    return out


def _full_sequence(runner, ctx, cont):
    ids = np.asarray([ctx + cont], dtype=np.int64)
    logits, _ = runner.prefill(ids, np.ones_like(ids))
    rows = logits[0, len(ctx) - 1:-1].astype(np.float64)
    peak = rows.max(-1, keepdims=True)
    logp = rows - peak - np.log(np.exp(rows - peak).sum(-1, keepdims=True))
    return float(logp[np.arange(len(cont)), cont].sum()), bool((rows.argmax(-1) == cont).all())


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_shared_context_equals_full_sequence(tiny_runner, batch_size):
    requests = _requests()
    got = loglikelihood(tiny_runner, requests, batch_size=batch_size)
    for (ctx, cont), (ll, greedy) in zip(requests, got):
        ref_ll, ref_greedy = _full_sequence(tiny_runner, ctx, cont)
        assert ll == pytest.approx(ref_ll, abs=1e-4)
        assert greedy == ref_greedy


def test_shared_context_on_onnxruntime(tiny_onnx):
    """The same check through the exported graph: left-padded past and right-padded continuations."""
    runner = open_runner(str(tiny_onnx))
    requests = _requests(seed=1)
    for (ctx, cont), (ll, greedy) in zip(requests, loglikelihood(runner, requests, batch_size=64)):
        ref_ll, ref_greedy = _full_sequence(runner, ctx, cont)
        assert ll == pytest.approx(ref_ll, abs=1e-4)
        assert greedy == ref_greedy


def test_greedy_continuation_is_flagged(tiny_runner):
    ctx = [5, 6, 7, 8]
    (cont,) = tiny_runner.generate([ctx], 4)
    ((_, greedy), (_, other)) = loglikelihood(tiny_runner, [(ctx, cont), (ctx, cont[:-1] + [(cont[-1] + 1) % 256])])
    assert greedy and not other


def test_encode_pair_moves_trailing_space():
    tok = ByteTokenizer()
    assert encode_pair(tok, "ab ", "c") == ([97, 98], [32, 99])
    assert encode_pair(tok, "", "c") == ([1], [99])


def test_multiple_choice_metrics():
    # acc picks the highest loglikelihood; acc_norm divides by the choice's length in characters.
    assert multiple_choice_scores([-4.0, -6.0], gold=1, norm_lengths=[2, 6]) == {"acc": 0.0, "acc_norm": 1.0}
    assert multiple_choice_scores([-1.0, -1.0], gold=0) == {"acc": 1.0}  # ties go to the first choice
    assert mean_stderr([1.0, 0.0, 1.0, 0.0]) == pytest.approx(np.std([1, 0, 1, 0], ddof=1) / 2)
    assert perplexity([-2.0, -4.0]) == pytest.approx(np.exp(3.0))


def test_gsm8k_filters():
    completion = " She pays 2 * $1,200 = $2,400.\n#### 2,400"
    assert regex_extract(completion, r"#### (\-?[0-9\.\,]+)") == "2,400"
    assert gsm8k_scores(completion, "blah\n#### 2400") == {"exact_match,strict-match": 1.0,
                                                          "exact_match,flexible-extract": 1.0}
    # No "####": strict fails, flexible takes the last number (the trailing period is ignored).
    assert gsm8k_scores(" So the answer is 18.", "x\n#### 18") == {"exact_match,strict-match": 0.0,
                                                                  "exact_match,flexible-extract": 1.0}
    assert exact_match("[invalid]", "#### 3") == 0.0


def _write(root, rel, rows):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def toy_data(tmp_path):
    """Hand-made items in the real layout (the real data is never copied)."""
    arc = {"id": "x", "question": {"stem": "Which is hot?", "choices": [{"text": "ice", "label": "1"},
                                                                        {"text": "fire", "label": "2"}]},
           "answerKey": "2"}
    _write(tmp_path, "arc/ARC-Easy-Test.jsonl", [arc, arc])
    _write(tmp_path, "hellaswag/hellaswag_val.jsonl", [{"activity_label": "Cooking", "ctx_a": "A man cooks.",
                                                        "ctx_b": "he", "endings": ["eats.", "sleeps."], "label": 0}])
    _write(tmp_path, "winogrande/dev.jsonl", [{"sentence": "Tom helped Ann because _ was kind.", "option1": "Tom",
                                               "option2": "Ann", "answer": "1"}])
    _write(tmp_path, "lambada/lambada_test.jsonl", [{"text": "the cat sat on the mat"}])
    gsm = {"question": "What is 1+1?", "answer": "1+1=2\n#### 2"}
    _write(tmp_path, "gsm8k/test.jsonl", [gsm])
    _write(tmp_path, "gsm8k/train.jsonl", [gsm] * 5)
    return tmp_path


def test_evaluate_every_task(tiny_runner, toy_data, monkeypatch):
    monkeypatch.setattr(accuracy, "GENERATION_CHUNK", 16)
    results = evaluate(tiny_runner, "arc_easy,hellaswag,winogrande,lambada,gsm8k", num_fewshot=None,
                       batch_size=4, data_dir=toy_data)
    assert list(results) == ["arc_easy", "hellaswag", "winogrande", "lambada", "gsm8k"]
    arc = results["arc_easy"]
    assert arc["n"] == 2 and set(arc["metrics"]) == {"acc", "acc_norm"} and arc["stderr"]["acc"] == 0.0
    assert (arc["backend"], arc["plan"], arc["model_hash"]) == ("torch", "baseline", tiny_runner.info.model_hash)
    assert results["lambada"]["metrics"]["perplexity"] > 1 and results["lambada"]["stderr"]["perplexity"] is None
    assert results["gsm8k"]["num_fewshot"] == 5 and results["gsm8k"]["n"] == 1
    table = render_markdown(results)
    assert "| arc_easy | 2 | 0 | acc |" in table and "**acc_norm**" in table


def test_evaluate_needs_a_tokenizer(tiny_runner, toy_data, monkeypatch):
    monkeypatch.setattr(tiny_runner, "tokenizer", None)
    with pytest.raises(BenchError, match="no tokenizer"):
        evaluate(tiny_runner, "arc_easy", data_dir=toy_data)


def test_open_runner_errors(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"")
    with pytest.raises(BenchError, match="torch backend runs a source model"):
        open_runner(str(onnx), backend="torch")
    with pytest.raises(BenchError, match="needs a graph or engine"):
        open_runner("tiny-llama", backend="onnxruntime")
    with pytest.raises(BenchError, match="unknown backend"):
        open_runner("tiny-llama", backend="jax")


def test_compiled_plan_is_fixed(tiny_onnx, tmp_path):
    """An exported graph compiles a plan; a compiled graph runs its own, compared by schedule, not by name."""
    from painters.compiler.compile import compile_model

    assert open_runner(str(tiny_onnx), plan="baseline").info.plan == "baseline"
    compiled = compile_model(tiny_onnx, "drop_attn_1,2", tmp_path / "drop.onnx").output
    assert open_runner(str(compiled), plan="drop_attn_1-2").info.plan == "drop_attn_1,2"
    with pytest.raises(BenchError, match="compiled for plan 'drop_attn_1,2'"):
        open_runner(str(compiled), plan="skip_2_4")


def test_cli_accuracy(tiny_runner, toy_data, tmp_path, monkeypatch):
    from painters import routing as runners
    from painters.cli import main

    monkeypatch.setattr(runners, "open_runner", lambda *a, **k: tiny_runner)  # the CLI imports it when run
    out = tmp_path / "res" / "acc.json"
    result = CliRunner().invoke(main, ["bench", "accuracy", "tiny-llama", "--tasks", "arc_easy", "--data",
                                       str(toy_data), "--limit", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "| arc_easy | 1 | 0 |" in result.output
    saved = json.loads(out.read_text())
    assert saved["model"] == "tiny-llama" and saved["results"]["arc_easy"]["n"] == 1
    assert [p.name for p in out.parent.iterdir()] == ["acc.json"]  # no temp file left behind


def test_cli_reports_errors(tmp_path):
    from painters.cli import main

    result = CliRunner().invoke(main, ["bench", "accuracy", "tiny-llama", "--tasks", "arc_easy", "--data",
                                       str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = CliRunner().invoke(main, ["bench", "accuracy", "tiny-llama", "--tasks", "nope"])
    assert result.exit_code == 2 and "unknown task 'nope'" in result.output


class ScriptedRunner:
    """Stands in for a runner whose greedy output is a fixed text per prompt (checks chunking and stops)."""

    name = "scripted"

    def __init__(self, scripts):
        from painters.runtime.base import ModelInfo

        self.scripts = scripts  # prompt's first token -> bytes it "generates"
        self.tokenizer = ByteTokenizer()
        self.info = ModelInfo(1, 1, 1, 256, "float32", eos_token_id=2)
        self.calls = 0

    def generate(self, prompts, max_new_tokens, stop_ids=(), pad_id=0):
        self.calls += 1
        out = []
        for p in prompts:
            script = self.scripts[p[0]]
            done = len(p) - 1  # prompts are one token; the rest is what was generated so far
            new = []
            for tok in script[done:done + max_new_tokens]:
                new.append(tok)
                if tok in stop_ids:
                    break
            out.append(new)
        return out


def test_greedy_until_chunks_and_stops(monkeypatch):
    monkeypatch.setattr(accuracy, "GENERATION_CHUNK", 4)
    runner = ScriptedRunner({10: b"1+1=2\n#### 2\n\nQuestion: more", 11: b"abc\x02tail", 12: b"x" * 50})
    texts = accuracy.greedy_until(runner, [[10], [11], [12]], ("Question:", "\n\n"), max_new_tokens=9, batch_size=8)
    assert texts == ["1+1=2\n###", "abc", "x" * 9]  # budget 9; eos (id 2) ends a row and is cut like a stop
    texts = accuracy.greedy_until(runner, [[10]], ("Question:", "\n\n"), max_new_tokens=256)
    assert texts == ["1+1=2\n#### 2"]
