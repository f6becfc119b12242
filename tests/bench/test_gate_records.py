"""The CI gate matches rows by the schedule their runner's record ran, not by the plan's spelling."""

from __future__ import annotations

import json

import pytest

from painters.bench.gate import check_regressions
from painters.bench.latency import schedule_text
from painters.errors import BenchError
from painters.plans import parse_plan


def _result(path, rows, model_hash="m0"):
    data = {"model": "m.onnx", "model_hash": model_hash, "rows": [
        {"plan": name, "schedule": schedule, "backend": "onnxruntime", "batch": 1, "prompt": 8, "gen": 4,
         "prefill_ratio": ratio, "decode_ratio": ratio} for name, schedule, ratio in rows]}
    path.write_text(json.dumps(data))
    return path


def test_two_spellings_of_one_plan_are_one_row(tmp_path):
    same = schedule_text(parse_plan("drop_attn_1,2", 8))
    assert same == schedule_text(parse_plan("drop_attn_1-2", 8))
    new = _result(tmp_path / "new.json", [("baseline", "baseline", 1.0), ("drop_attn_1,2", same, 1.5)])
    old = _result(tmp_path / "old.json", [("baseline", "baseline", 1.0), ("drop_attn_1-2", same, 1.0)])
    regressions, compared = check_regressions(new, old, 0.10)
    assert compared == 4
    assert [(r.plan, r.metric) for r in regressions] == [("drop_attn_1,2", "prefill_ratio"),
                                                        ("drop_attn_1,2", "decode_ratio")]


def test_one_name_for_two_schedules_is_not_compared(tmp_path):
    """A plan file renamed over another plan: same name, other schedule — the gate refuses instead of comparing."""
    a, b = schedule_text(parse_plan("skip_1_3", 8)), schedule_text(parse_plan("skip_2_4", 8))
    new = _result(tmp_path / "new.json", [("baseline", "baseline", 1.0), ("p.yaml", a, 0.8)])
    old = _result(tmp_path / "old.json", [("baseline", "baseline", 1.0), ("p.yaml", b, 0.8)])
    with pytest.raises(BenchError, match="only in"):
        check_regressions(new, old, 0.10)
