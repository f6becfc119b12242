"""``--anchor ort-genai:DIR``: onnxruntime-genai's generator timed beside painters' graphs, rows genai/PLAN."""

from __future__ import annotations

import pytest

from painters.errors import BenchError


def test_genai_anchor_rows(tiny_onnx, genai_dirs, tmp_path, monkeypatch):
    from painters.bench.latency import benchmark
    from painters.routing import ideal_ratio, open_runners

    monkeypatch.setenv("PAINTERS_CACHE", str(tmp_path / "cache"))
    runners = open_runners(str(tiny_onnx), ["baseline", "skip_2_5"], anchor=f"ort-genai:{genai_dirs['fp32']}")
    ideal = {name: ideal_ratio(runner) for name, runner in runners.items()}
    try:
        assert set(runners) == {"baseline", "skip_2_5", "genai/baseline", "genai/skip_2_5"}
        assert ideal["genai/skip_2_5"] == ideal["skip_2_5"] == pytest.approx(5 / 8)
        rows = benchmark(runners, prompts=(8,), gen=4, warmup=0, iters=1)
    finally:
        for runner in runners.values():
            runner.close()
    genai = {r.plan: r for r in rows if r.plan.startswith("genai/")}
    assert all(r.backend == "onnxruntime-genai" and r.prefill_ms > 0 and r.decode_ms > 0 for r in genai.values())
    # GenAI's cache is one max_length buffer per compiled KV slot: the skip plan's has 5 slots, baseline's 8
    assert genai["genai/skip_2_5"].kv_cache_bytes * 8 == genai["genai/baseline"].kv_cache_bytes * 5


def test_genai_anchor_needs_a_genai_folder(tiny_onnx, tmp_path):
    from painters.routing import open_runners

    with pytest.raises(BenchError, match="not an ONNX Runtime GenAI folder"):
        open_runners(str(tiny_onnx), ["baseline"], anchor=f"ort-genai:{tmp_path}")


def test_bench_on_a_genai_graph_keeps_one_folder_per_plan(genai_dirs, tmp_path, monkeypatch):
    """painters' own runner on compiled builder graphs: each plan's GenAI config stays with its graph."""
    import json

    from painters.compiler.variants import compiled_variants

    paths = compiled_variants(genai_dirs["fp32"] / "model.onnx", ["skip_2_5", "dup_4_x3"], out_dir=tmp_path)
    layers = {plan: json.loads((p.parent / "genai_config.json").read_text())["model"]["decoder"]["num_hidden_layers"]
              for plan, p in paths.items()}
    assert layers == {"skip_2_5": 5, "dup_4_x3": 10}
