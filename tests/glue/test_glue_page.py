"""docs/results/glue-minilm-l6.md is what `painters bench glue-table --page` writes from the committed results file.

The page is never typed by hand: it re-renders byte for byte from docs/results/glue-minilm-l6.json, and its
numbers re-derive here from the raw results in that file.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean

import pytest
from click.testing import CliRunner

from painters.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs" / "results"
RESULTS, PAGE = DOCS / "glue-minilm-l6.json", DOCS / "glue-minilm-l6.md"


@pytest.fixture(scope="module")
def merged() -> dict:
    return json.loads(RESULTS.read_text())


def test_committed_page_rerenders_from_the_committed_results(tmp_path):
    out = tmp_path / "page.md"
    res = CliRunner().invoke(main, ["bench", "glue-table", "--page", "-o", str(out), str(RESULTS)])
    assert res.exit_code == 0, res.output
    assert out.read_text() == PAGE.read_text()


def test_page_numbers_rederive_from_the_raw_results(merged):
    page = PAGE.read_text()
    results = merged["results"]
    tasks = {r["task"] for r in results}
    seeds = {r["weights_hash"]: r["seed"] for r in merged["finetune"]}
    assert all(seeds[r["source_hash"]] == r["seed"] for r in results)  # every result traced to its fine-tuning
    for plan in dict.fromkeys(r["plan"] for r in results):
        by_task = {t: [r["score"] for r in results if r["plan"] == plan and r["task"] == t] for t in tasks}
        if all(by_task.values()):
            avg = fmean(fmean(v) for v in by_task.values())
            assert f"| {plan} | {avg:.1f} |" in page, plan  # the "against the baseline" table
    for r in merged["finetune"]:
        assert f"| {r['task']} | {r['seed']} | {r['examples']} |" in page
        assert r["examples"] > 600  # full train splits (SST-2: a stated subset), not the short runs of before
    assert "MNLI, QQP" in page and "QNLI" in page
    assert merged["provenance"]["commit"] in page
