"""Issue 32, class 5: the CI gate refuses a baseline of another model, backend, batch, prompt or decode length, and a
result compared with itself (each used to pass with exit 0: the gate failed open on provenance)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.reliability.checks import assert_refused, run_cli


def _result(path: Path, *, model_hash: object = "m" * 64, backend: str = "onnxruntime", gen: int = 32,
            batch: int = 1, prompt: int = 128, skip: float = 0.8, note: str = "") -> Path:
    rows = [{"plan": plan, "backend": backend, "batch": batch, "prompt": prompt, "gen": gen,
             "prefill_ratio": ratio, "decode_ratio": ratio} for plan, ratio in (("baseline", 1.0), ("skip_1_3", skip))]
    head = {"model": "model.onnx", "note": note or path.name}
    if model_hash is not ...:
        head["model_hash"] = model_hash
    path.write_text(json.dumps({**head, "rows": rows}))
    return path


def _gate(result: Path, baseline: Path) -> list:
    return ["bench", "check", result, "--baseline", baseline]


@pytest.mark.parametrize("spelling", ["same", "dot", "symlink", "hardlink", "copy"])
def test_a_result_is_never_its_own_baseline(tmp_path, spelling):
    result = _result(tmp_path / "r.json")
    baseline = {"same": result, "dot": tmp_path / "." / "r.json", "symlink": tmp_path / "link.json",
                "hardlink": tmp_path / "hard.json", "copy": tmp_path / "copy.json"}[spelling]
    if spelling == "symlink":
        baseline.symlink_to(result)
    elif spelling == "hardlink":
        os.link(result, baseline)
    elif spelling == "copy":
        baseline.write_bytes(result.read_bytes())
    assert_refused(_gate(result, baseline), [tmp_path], "is the baseline")


@pytest.mark.parametrize(("new", "old", "needle"), [
    ({"model_hash": "a" * 64}, {"model_hash": "b" * 64}, "compare results of one model"),
    ({"model_hash": "a" * 64}, {"model_hash": "A" * 64}, "compare results of one model"),
    ({"model_hash": ...}, {}, "records no model_hash"),
    ({}, {"model_hash": ...}, "records no model_hash"),
    ({"model_hash": ""}, {}, "records no model_hash"),
    ({}, {"model_hash": None}, "records no model_hash"),
    ({"model_hash": 7}, {}, "records no model_hash"),
    ({"backend": "tensorrt"}, {}, "backend"),
    ({}, {"backend": "torch"}, "backend"),
    ({"gen": 8}, {}, "gen"),
    ({}, {"gen": 64}, "gen"),
    ({"batch": 8}, {}, "share no"),
    ({"prompt": 512}, {}, "share no"),
    ({"batch": 8, "prompt": 512}, {"gen": 1}, "share no"),
])
def test_a_baseline_of_another_setup_is_refused(tmp_path, new, old, needle):
    result = _result(tmp_path / "r.json", **new)
    baseline = _result(tmp_path / "b.json", **old)
    assert_refused(_gate(result, baseline), [tmp_path], needle)


def test_the_same_setup_still_compares_and_flags_a_regression(tmp_path):
    baseline = _result(tmp_path / "b.json")
    code, out = run_cli(_gate(_result(tmp_path / "r.json"), baseline))
    assert code == 0 and "4 ratios compared, 0 regressed" in out, out
    code, out = run_cli(_gate(_result(tmp_path / "slow.json", skip=0.95), baseline))
    assert code == 1 and "REGRESSION skip_1_3" in out, out
