"""`painters bench latency` (interleaved plans, ratios to baseline, the papers' path beside) and the CI gate."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from painters.bench.gate import check_regressions
from painters.bench.latency import benchmark, format_table
from painters.cli import main
from painters.errors import BenchError
from painters.routing import ideal_ratio, open_runners


def test_plans_side_by_side_with_the_papers_path(tiny_onnx):
    runners = open_runners(str(tiny_onnx), ["baseline", "skip_2_6", "drop_attn_0-3"], anchor="tiny-llama")
    ideal = {name: ideal_ratio(runner) for name, runner in runners.items()}
    assert list(runners) == ["baseline", "skip_2_6", "drop_attn_0-3", "hf/baseline", "hf/skip_2_6", "hf/drop_attn_0-3"]
    assert [runners[n].name for n in runners] == ["onnxruntime"] * 3 + ["hf"] * 3
    assert ideal["skip_2_6"] == ideal["hf/skip_2_6"] == 0.5 and ideal["drop_attn_0-3"] == 0.75
    rows = benchmark(runners, prompts=(16,), gen=4, warmup=0, iters=2, ideal=ideal)
    by = {r.plan: r for r in rows}
    assert by["baseline"].prefill_ratio == by["baseline"].decode_ratio == 1.0
    assert all(r.prefill_ratio > 0 and r.decode_ratio > 0 and len(r.samples["decode_ms"]) == 2 for r in rows)
    # the cache follows the KV slots: four of eight attention sublayers dropped, half the bytes
    assert by["drop_attn_0-3"].kv_cache_bytes * 2 == by["baseline"].kv_cache_bytes
    assert by["hf/baseline"].kv_cache_bytes == by["baseline"].kv_cache_bytes  # same model, same 16 + 4 positions
    assert "| hf/skip_2_6 | hf |" in format_table(rows) and "peak dev" not in format_table(rows)
    assert all(r.peak_device_bytes is None for r in rows)  # CPU runners: no device memory to report


def test_latency_cli_writes_json_and_gate_passes_against_a_stored_copy(tiny_onnx, tmp_path):
    out = tmp_path / "latency.json"
    result = CliRunner().invoke(main, ["bench", "latency", str(tiny_onnx), "--plans", "baseline,parallel_2_6",
                                       "--prompt", "8,16", "--gen", "2", "--warmup", "0", "--iters", "1",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [(r["plan"], r["prompt"]) for r in rows] == [("baseline", 8), ("parallel_2_6", 8), ("baseline", 16),
                                                        ("parallel_2_6", 16)]
    data = json.loads(out.read_text())
    assert data["model_hash"]  # the gate compares results of one model only
    stored = tmp_path / "stored.json"  # the same measurement kept as the CI baseline
    stored.write_text(json.dumps({**data, "stored_as": "ci baseline"}))
    gate = CliRunner().invoke(main, ["bench", "check", str(out), "--baseline", str(stored)])
    assert gate.exit_code == 0 and "8 ratios compared, 0 regressed" in gate.output
    itself = CliRunner().invoke(main, ["bench", "check", str(out), "--baseline", str(out)])
    assert itself.exit_code == 2 and "is the baseline" in itself.output


def _result(path, ratios: dict[str, float]):
    rows = [{"plan": p, "batch": 1, "prompt": 128, "prefill_ratio": r, "decode_ratio": r} for p, r in ratios.items()]
    path.write_text(json.dumps({"model_hash": "m", "stored_as": path.name, "rows": rows}))
    return path


def test_gate_flags_a_lost_speedup(tmp_path):
    stored = _result(tmp_path / "stored.json", {"baseline": 1.0, "skip_8_24": 0.50, "parallel_4_28": 0.60})
    measured = _result(tmp_path / "now.json", {"baseline": 1.0, "skip_8_24": 0.54, "parallel_4_28": 0.70})
    regressions, compared = check_regressions(measured, stored, 0.10)
    assert compared == 6 and [(r.plan, r.metric) for r in regressions] == [("parallel_4_28", "prefill_ratio"),
                                                                           ("parallel_4_28", "decode_ratio")]
    gate = CliRunner().invoke(main, ["bench", "check", str(measured), "--baseline", str(stored)])
    assert (gate.exit_code == 1
            and "REGRESSION parallel_4_28 batch=1 prompt=128 prefill_ratio: 0.600 → 0.700" in gate.output)


def test_gate_refuses_unrelated_results(tmp_path):
    a = _result(tmp_path / "a.json", {"skip_1_2": 0.9})
    b = _result(tmp_path / "b.json", {"skip_3_4": 0.9})
    with pytest.raises(BenchError, match="share no"):
        check_regressions(a, b)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(BenchError, match="not a painters latency result"):
        check_regressions(tmp_path / "bad.json", b)


def test_source_model_rejects_anchor_and_graph_backends():
    with pytest.raises(BenchError, match="--backend hf instead"):
        open_runners("tiny-llama", ["baseline"], anchor="tiny-llama")
    with pytest.raises(BenchError, match="needs a graph or engine"):
        open_runners("tiny-llama", ["baseline"], "onnxruntime")


def test_fusion_benchmark_times_both_twins(tiny_onnx, tmp_path, capsys):
    from painters.experiments.fusion import main as fusion_main

    out = tmp_path / "fusion.json"
    fusion_main([str(tiny_onnx), "--plans", "parallel_2_6_x2", "--prompt", "8", "--gen", "2", "--warmup", "0",
                 "--iters", "1", "--json", str(out)])
    data = json.loads(out.read_text())
    assert [r["plan"] for r in data["rows"]] == ["baseline", "parallel_2_6_x2", "parallel_2_6_x2+fused"]
    (ratio,) = data["fused_vs_unfused"]
    assert ratio["plan"] == "parallel_2_6_x2" and ratio["prefill_fused_over_unfused"] > 0
    assert "| parallel_2_6_x2 | 1 | 8 |" in capsys.readouterr().out


def test_compiled_cache_tells_hard_linked_twins_with_other_tokenizers_apart(tiny_onnx, tmp_path, monkeypatch):
    """A graph hard-linked beside a tokenizer gets its own compiled copy, with the tokenizer (the cache key once
    ignored the side files, so a twin reused the tokenizer-less outputs of the first compile)."""
    import os

    from painters.compiler.variants import compiled_variants
    from tests.byte_tokenizer import byte_tokenizer

    monkeypatch.setenv("PAINTERS_CACHE", str(tmp_path / "cache"))
    twin = tmp_path / "twin"
    twin.mkdir()
    for f in tiny_onnx.parent.iterdir():
        if f.is_file():
            os.link(f, twin / f.name)
    byte_tokenizer().save_pretrained(twin)
    bare = compiled_variants(tiny_onnx, ["baseline"])["baseline"]
    with_tok = compiled_variants(twin / tiny_onnx.name, ["baseline"])["baseline"]
    assert bare.parent != with_tok.parent
    assert not (bare.parent / "tokenizer.json").exists() and (with_tok.parent / "tokenizer.json").is_file()
    assert compiled_variants(twin / tiny_onnx.name, ["baseline"])["baseline"] == with_tok  # still cached
