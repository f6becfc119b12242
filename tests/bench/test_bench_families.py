"""The bench on new families: accuracy and latency through the one router, onnxruntime graph vs torch reference.

Three structurally different families (tests/families.py, the exports of tests/export/test_families.py): GPT-NeoX
(parallel residual, partial rotary, LayerNorm with bias), Gemma 3 (interleaved local/global layers with their own
masks and rotary bases, soft-capping) and Granite (embedding/residual/attention/logit multipliers). Each runs a
plan that changes its structure through :func:`open_runners` on both backends: the compiled graph on onnxruntime
and the source checkpoint on the torch reference executor. ``evaluate`` (what ``painters bench accuracy`` runs)
must give the same per-choice loglikelihoods and the same metrics; ``painters bench latency`` with ``--anchor``
must report the same KV-cache bytes for the graph and the papers' eager path, fewer than baseline where the plan
averages KV slots.

The checkpoints have no tokenizer (vocabulary 128): a 7-bit byte tokenizer drives hand-made ASCII items in the
real data layout, so nothing here needs ../shared/data.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from painters.bench.accuracy import evaluate, score_loglikelihood, score_multiple_choice
from painters.bench.tasks import get_task, load_items
from painters.routing import ModelRunners, open_runners
from tests.families import FAMILIES, family_params

# name → a plan that changes the family's structure: GPT-NeoX drops a parallel block's attention (its MLP still
# reads the block input) beside a parallel group; reversing Gemma 3 moves local layers to global positions (each
# keeps its own window and rotary base); Granite skips a block with its KV slot averaged beside a group.
PLANS = {"gpt_neox": "parallel_1_3+drop_attn_0", "gemma3": "reverse_0_4",
         "granite": "parallel_1_3+drop_mlp_0+skip_3_4:kvmean"}
TOL = 1e-4  # loglikelihood sums of -30 to -50, fp32 ORT vs torch; measured at most 3.8e-6 on these items


class AsciiTokenizer:
    """7-bit bytes as token ids (the tiny families' vocabulary is 128); bos 1, eos 2 as in their configs."""

    bos_token_id, eos_token_id = 1, 2

    def encode(self, text, add_special_tokens=False):
        ids = list(text.encode("ascii"))
        return ids

    def decode(self, ids, skip_special_tokens=False):
        return bytes(int(i) for i in ids).decode("ascii", errors="replace")


def _write(root, rel, rows):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def toy_tasks(tmp_path_factory):
    """arc_easy (2-4 choices) and lambada items in the real files' layout, ASCII, prompts of 20-70 tokens."""
    root = tmp_path_factory.mktemp("toy_tasks")
    stems = [("Which is hot?", ["ice", "fire"]), ("What do bees make?", ["honey", "milk", "silk"]),
             ("Which planet do we live on?", ["Mars", "Earth", "Venus", "the Moon"]),
             ("What falls from clouds?", ["rain", "stones", "sand"]), ("A cat is a kind of", ["plant", "animal"])]
    arc = [{"id": str(i), "question": {"stem": q, "choices": [{"text": c, "label": "ABCD"[j]}
                                                                 for j, c in enumerate(cs)]}, "answerKey": "B"}
           for i, (q, cs) in enumerate(stems)]
    _write(root, "arc/ARC-Easy-Test.jsonl", arc)
    _write(root, "lambada/lambada_test.jsonl", [{"text": t} for t in (
        "the cat sat on the mat", "she opened the door and saw the sea", "one two three four five",
        "he wrote a letter to his mother")])
    return root


@pytest.fixture(scope="module", params=family_params(PLANS))
def pair(request, family_exports):
    """(name, plan, onnxruntime runner of the compiled plan, torch runner of the plan, torch baseline runner)."""
    import torch

    name = request.param
    export = family_exports(name)
    plan = PLANS[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one torch thread is faster than two contended ones
    ort = open_runners(str(export.onnx), [plan], "onnxruntime")[plan]
    source = ModelRunners(str(export.checkpoint), "torch")
    ref, base = source.open(plan), source.open("baseline")
    for runner in (ort, ref, base):
        runner.tokenizer = AsciiTokenizer()
    yield name, plan, ort, ref, base
    for runner in (ort, ref, base):
        runner.close()
    torch.set_num_threads(threads)


def test_accuracy_agrees(pair, toy_tasks):
    """Per-choice and per-passage loglikelihoods agree within TOL, so do the metrics; the plan visibly matters."""
    name, plan, ort, ref, base = pair
    arc = load_items(get_task("arc_easy"), toy_tasks)
    got, want, baseline = (np.concatenate(score_multiple_choice(r, arc, batch_size=4)) for r in (ort, ref, base))
    assert np.abs(got - want).max() <= TOL, f"{name} {plan}: arc_easy loglikelihoods differ"
    assert np.abs(want - baseline).max() > 1e-2, f"{plan} does not change {name}'s scores: the check would not see it"
    lam = load_items(get_task("lambada"), toy_tasks)
    (a, b) = (score_loglikelihood(r, lam) for r in (ort, ref))
    assert np.abs(np.array([x for x, _ in a]) - np.array([x for x, _ in b])).max() <= TOL
    assert [g for _, g in a] == [g for _, g in b]
    ra, rb = (evaluate(r, "arc_easy,lambada", batch_size=4, data_dir=toy_tasks) for r in (ort, ref))
    assert (ra["arc_easy"]["backend"], rb["arc_easy"]["backend"]) == ("onnxruntime", "torch")
    assert ra["arc_easy"]["plan"] == rb["arc_easy"]["plan"] == plan
    assert ra["arc_easy"]["metrics"] == rb["arc_easy"]["metrics"]
    assert ra["lambada"]["metrics"]["acc"] == rb["lambada"]["metrics"]["acc"]
    assert ra["lambada"]["metrics"]["perplexity"] == pytest.approx(rb["lambada"]["metrics"]["perplexity"], rel=1e-4)


def test_greedy_decoding_agrees(pair):
    """The runners' own cached greedy loops (what latency times) produce the same tokens."""
    _, _, ort, ref, _ = pair
    prompts = [[1, 17, 99, 3, 45, 8, 100, 7, 9, 12], [1, 5, 6, 77]]
    assert ort.generate(prompts, 8) == ref.generate(prompts, 8)


def test_latency_agrees(pair):
    """``benchmark`` (what ``painters bench latency`` times) on both backends: the same KV-cache bytes after the
    same prompt and decode steps, which a plan that drops or averages slots shrinks on both."""
    from painters.bench.latency import benchmark

    _, plan, ort, ref, base = pair
    rows = {r.plan: r for r in benchmark({"ort": ort, "torch": ref, "base": base}, prompts=(8,), gen=4, warmup=0,
                                         iters=1)}
    assert rows["ort"].kv_cache_bytes == rows["torch"].kv_cache_bytes > 0
    assert (rows["ort"].backend, rows["torch"].backend) == ("onnxruntime", "torch")
    if ":kvmean" in plan:
        assert rows["ort"].kv_cache_bytes < rows["base"].kv_cache_bytes


def test_latency_cli_with_anchor(pair, family_exports, tmp_path):
    """``painters bench latency GRAPH --plans baseline,PLAN --anchor CKPT`` measures every row, and the eager path's
    cache equals the graph's, except on baseline of a windowed family: there the anchor runs Hugging Face's own
    ``generate`` cache, whose sliding-window layers keep only their last ``sliding_window - 1`` positions, where
    the graph (like the papers' plan path and the reference executor) keeps every position."""
    from painters.cli import main

    name, plan, *_ = pair
    export = family_exports(name)
    out = tmp_path / "lat.json"
    result = CliRunner().invoke(main, ["bench", "latency", str(export.onnx), "--plans", f"baseline,{plan}",
                                       "--anchor", str(export.checkpoint), "--prompt", "8", "--gen", "4",
                                       "--warmup", "0", "--iters", "1", "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["plan"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"baseline", plan, "hf/baseline", f"hf/{plan}"}
    assert all(r["prefill_ms"] > 0 and r["decode_ms"] > 0 for r in rows.values())
    windowed = FAMILIES[name][1].get("sliding_window")
    for p in ("baseline", plan):
        graph, eager = rows[p]["kv_cache_bytes"], rows[f"hf/{p}"]["kv_cache_bytes"]
        assert eager < graph if windowed and p == "baseline" else eager == graph, (p, graph, eager)
