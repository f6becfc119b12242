"""The committed SmolLM2 reference report (docs/results/smollm2-135m): its numbers are its run files'.

The report, its ``figures.json`` and its tables are rebuilt here from the committed ``runs/``, ``analysis/`` and
``meta.json`` alone (no model, no data) and must come out identical; every figure it links exists. A report
edited by hand, or run files changed without regenerating it, fail this test.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from painters.experiments.report import FIGURES, figure_data, write_report

REPORT = Path(__file__).resolve().parents[2] / "docs" / "results" / "smollm2-135m"


def test_committed_report_rederives_from_its_run_files(tmp_path):
    assert (REPORT / "report.md").is_file(), f"{REPORT} holds no report"
    copy = tmp_path / "report"
    copy.mkdir()
    for name in ("runs", "analysis"):
        shutil.copytree(REPORT / name, copy / name)
    shutil.copy(REPORT / "meta.json", copy / "meta.json")
    assert figure_data(REPORT) == json.loads((REPORT / "figures.json").read_text())
    write_report(copy)
    assert (copy / "report.md").read_text() == (REPORT / "report.md").read_text()
    assert (copy / "figures.json").read_text() == (REPORT / "figures.json").read_text()
    linked = set(re.findall(r"\]\(([^)]+\.png)\)", (REPORT / "report.md").read_text()))
    assert linked and linked <= set(FIGURES)
    for name in FIGURES:
        assert (REPORT / name).stat().st_size > 0, name
