"""`painters reproduce` on tiny-llama (with a byte tokenizer): the report's numbers re-derived from its run files.

One small grid (7 plans, arc_easy × 2 items, one-round latency) is run once per module; the tests read it.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from tests.conftest import DATA, requires_data

pytestmark = [requires_data("arc", "ARC-Easy-Test.jsonl"), requires_data("gsm8k", "train.jsonl")]

GRID = dict(tasks="arc_easy", limit=2, ns=(2,), ks=(2,), seeds=(0, 1), samples=4, seq_len=32, prompt=8, gen=2,
            iters=1, variants=("skip", "shuffle", "parallel_x2"), kinds=("attn", "joint"))
COMMAND = "painters reproduce CKPT -o OUT (test)"


@pytest.fixture(scope="module")
def checkpoint(tiny):
    """tiny-llama with the byte tokenizer (tasks and calibration need one): the session's model, not a copy."""
    from dataclasses import replace

    from tests.byte_tokenizer import byte_tokenizer

    return replace(tiny, tokenizer=byte_tokenizer())


@pytest.fixture(scope="module")
def reproduced(checkpoint, tiny_onnx, tmp_path_factory) -> Path:
    """The grid, run once. DIR/graph is the session's tiny-llama export hard-linked with the tokenizer beside
    it: reproduce keeps an existing graph (it resumes), and this saves a second export."""
    import os

    from painters.experiments.reproduce import Grid, run_reproduce
    from tests.byte_tokenizer import byte_tokenizer

    out = tmp_path_factory.mktemp("reproduce")
    (out / "graph").mkdir()
    for f in tiny_onnx.parent.iterdir():
        if f.is_file():
            os.link(f, out / "graph" / f.name)
    byte_tokenizer().save_pretrained(out / "graph")
    run_reproduce(checkpoint, out, Grid(**GRID), data_dir=str(DATA), command=COMMAND)
    return out


def _runs(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}


def _score(run: dict, task: str = "arc_easy") -> float:
    res = run["tasks"][task]
    return res["metrics"][res["main_metric"]]


def test_report_numbers_rederive_from_the_run_files(reproduced):
    """figures.json (what the PNGs draw) equals numbers recomputed here from runs/*.json; every figure exists."""
    from painters.experiments.report import FIGURES

    runs = _runs(reproduced)
    fig = json.loads((reproduced / "figures.json").read_text())
    assert len(runs) == 1 + 4 + 2  # baseline; skip, random order once per seed (2), parallel_x2; 2 drop kinds
    assert fig["baseline"]["arc_easy"] == _score(runs["baseline"])
    for variant in GRID["variants"]:
        scores = [_score(r) for r in runs.values() if r.get("experiment") == "painters" and r["variant"] == variant]
        assert scores, variant
        n, mean, sd, count = fig["painters_variants"]["arc_easy"][variant][0]
        assert (n, count) == (2, len(scores))
        assert mean == pytest.approx(statistics.fmean(scores)) and sd == pytest.approx(statistics.pstdev(scores))
    assert len([r for r in runs.values() if r["variant"] == "shuffle"]) == 2  # one run per seed
    wm = fig["what_matters"]
    for kind in GRID["kinds"]:
        run = runs[f"drop_{kind}_k2"]
        lat = run["latency"]
        assert wm["score"]["arc_easy"][f"drop_{kind}"] == [[2, _score(run)]]
        assert wm["kv_ratio"][f"drop_{kind}"] == [[2, lat["kv_cache_bytes"] / lat["baseline_kv_cache_bytes"]]]
        assert wm["decode_speedup"][f"drop_{kind}"] == [[2, pytest.approx(1 / lat["decode_ratio"])]]
    # measured, not derived: two of tiny-llama's 8 attention layers dropped keep 6/8 of the KV cache
    assert wm["kv_ratio"]["drop_attn"][0][1] == pytest.approx(6 / 8)
    pts = [(name, r["latency"]["decode_ratio"], _score(r)) for name, r in runs.items()]
    front = {a for a, x, y in pts if not any(x2 <= x and y2 >= y and (x2, y2) != (x, y) for _, x2, y2 in pts)}
    assert set(fig["pareto"]["arc_easy"]["front"]) == front
    ranked = [v for v, _ in fig["ranking"]["arc_easy"]]
    means = {v: rows[0][1] for v, rows in fig["painters_variants"]["arc_easy"].items()}
    assert [means[v] for v in ranked] == sorted(means.values(), reverse=True)
    for name in FIGURES:
        assert (reproduced / name).stat().st_size > 0, name


def test_report_names_command_commit_and_every_run(reproduced):
    report = (reproduced / "report.md").read_text()
    runs = _runs(reproduced)
    commits = {r["provenance"]["commit"] for r in runs.values()}
    assert COMMAND in report
    assert all(c is None or c in report for c in commits)
    for name, run in runs.items():
        assert f"| {name} | {run['variant']} | {run['n']} | {_score(run):.4g} |" in report, name
    for figure in ("painters_variants.png", "what_matters.png", "pareto.png", "similarity.png", "importance.png"):
        assert f"]({figure})" in report
    assert "48.4% speedup" in report  # the papers' statements sit beside the findings


def test_rerun_resumes_and_refuses_other_settings(reproduced, checkpoint, monkeypatch):
    import painters.experiments.sweep
    from painters.errors import BenchError
    from painters.experiments.reproduce import Grid, run_reproduce

    before = {p.name: p.stat().st_mtime_ns for p in (reproduced / "runs").glob("*.json")}
    (reproduced / "runs" / "skip_3_5.json").unlink()
    done = []
    real = painters.experiments.sweep.run_plan
    monkeypatch.setattr(painters.experiments.sweep, "run_plan", lambda *a, **k: done.append(a[3]) or real(*a, **k))
    run_reproduce(checkpoint, reproduced, Grid(**GRID), data_dir=str(DATA), command=COMMAND)
    assert done == ["skip_3_5"]
    after = {p.name: p.stat().st_mtime_ns for p in (reproduced / "runs").glob("*.json")}
    assert {k: v for k, v in after.items() if k != "skip_3_5.json"} == \
        {k: v for k, v in before.items() if k != "skip_3_5.json"}
    with pytest.raises(BenchError, match="limit: 2 → 3"):
        run_reproduce(checkpoint, reproduced, Grid(**{**GRID, "limit": 3}), data_dir=str(DATA))


def test_cli_rejects_a_compiled_graph(tmp_path):
    from click.testing import CliRunner

    from painters.cli import main

    result = CliRunner().invoke(main, ["reproduce", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "source model" in result.output
    assert not (tmp_path / "r").exists()
