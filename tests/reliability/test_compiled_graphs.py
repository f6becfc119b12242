"""Issue 15 items 6 and 15: a compiled graph is never compiled again under a false provenance, and runs as it is.

Compiling a compiled graph is refused (the fix is one composed plan on the source graph): its blocks are the
first plan's stages, so no schedule over the source could be recorded truthfully (see ``compiled_plan``).
"""

from __future__ import annotations

import json

import pytest

from tests.reliability.checks import assert_refused, run_cli


@pytest.fixture
def compiled(model_dir):
    def make(plan: str) -> object:
        out = model_dir.with_name(f"c-{plan}.onnx")
        code, output = run_cli(["compile", "--plan", plan, model_dir, "-o", out])
        assert code == 0, output
        return out

    return make


@pytest.mark.parametrize("first, second", [
    ("skip_1_3", "skip_1_3"),      # the case found: same plan twice
    ("skip_1_3", "drop_attn_2"),   # any second plan
    ("skip_1_3", "baseline"),      # even the identity would relabel it as baseline
    ("parallel_2_6", "skip_0_1"),  # fused stages are no source blocks
    ("drop_attn_0-7", "baseline"),  # no KV slots left: refused before discovery fails on it
])
def test_compiling_a_compiled_graph_is_refused(compiled, model_dir, tmp_path, first, second):
    graph = compiled(first)
    assert_refused(["compile", "--plan", second, graph, "-o", tmp_path / "out" / "x.onnx"],
                   [model_dir.parent, tmp_path], f"already compiled with plan {first}", "one composed plan",
                   "Compile the source graph")


def test_a_plan_file_on_a_compiled_graph_is_refused_too(compiled, model_dir, tmp_path):
    graph = compiled("skip_1_3")
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"steps": [0, 1, 2]}))
    assert_refused(["compile", "--plan", plan, graph], [model_dir.parent, tmp_path], "already compiled")


def test_a_graph_compiled_with_the_identity_plan_compiles_like_its_source(compiled, model_dir):
    """baseline keeps the source's blocks, so its graph is a source: same schedule as compiling the source."""
    graph = compiled("baseline")
    code, output = run_cli(["compile", "--plan", "drop_attn_2", graph, "-o", model_dir.with_name("again.onnx")])
    assert code == 0, output
    code, output = run_cli(["compile", "--plan", "drop_attn_2", model_dir, "-o", model_dir.with_name("direct.onnx")])
    assert code == 0, output
    infos = [json.loads(run_cli(["inspect", "--json", p])[1]) for p in ("again.onnx", "direct.onnx")
             for p in [model_dir.with_name(p)]]
    assert infos[0]["schedule"] == infos[1]["schedule"] and int(infos[0]["kv_slots"]) == int(infos[1]["kv_slots"]) == 7
    assert infos[0]["source_hash"] == infos[1]["source_hash"]


def test_bench_latency_runs_a_graph_with_every_attention_dropped(compiled, model_dir):
    """drop_attn of every layer leaves 0 KV slots: a valid graph, which bench latency measures as it is."""
    graph = compiled("drop_attn_0-7")
    code, output = run_cli(["bench", "latency", graph, "--prompt", "4", "--gen", "2", "--iters", "1",
                            "--warmup", "0"])
    assert code == 0, output
    row = next(line for line in output.splitlines() if line.startswith("| drop_attn_0-7 |"))
    assert "| 0.00 |" in row  # KV MiB: nothing cached
    assert row.rstrip("| ").endswith("0.500")  # ideal cost: the MLP half of every block


def test_bench_latency_refuses_a_second_plan_on_a_compiled_graph(compiled, model_dir):
    graph = compiled("skip_1_3")
    assert_refused(["bench", "latency", graph, "--plans", "baseline,skip_2_3", "--prompt", "4", "--gen", "1"],
                   [model_dir.parent], "is compiled for plan 'skip_1_3'")
