"""Issue 32, class 4: a scores file is validated completely — finite numbers in 0..2, no strings or booleans, one
per layer and kind, num_layers consistent, a model hash present (and matching) — before it ranks anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability.checks import assert_refused, run_cli

GOOD = {"format": "painters.scores/1", "model_hash": "h", "num_layers": 8,
        "attn": [0.5, 0.1, 0.3, 0.2, 0.9, 0.4, 0.6, 0.05], "mlp": [0.1] * 8, "block": [0.2] * 8}

BAD_VALUES = [float("nan"), float("inf"), float("-inf"), "0.1", True, False, None, -0.5, 3.0, [0.1], {"v": 1}]


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))  # json writes NaN/Infinity: Python's reader accepts them
    return path


@pytest.mark.parametrize("kind", ["attn", "mlp", "block"])
@pytest.mark.parametrize("index", [0, 7])
@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
def test_one_bad_score_is_refused(tmp_path, kind, index, value):
    data = json.loads(json.dumps(GOOD))
    data[kind][index] = value
    scores = _write(tmp_path / "s.json", data)
    assert_refused(["plans", "show", "drop_attn_k2", "--layers", "8", "--scores", scores], [tmp_path],
                   str(scores), f"{kind}[{index}]")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0], ids=repr)
@pytest.mark.parametrize("kind", ["attn", "mlp", "block"])
def test_all_scores_bad_is_refused(tmp_path, kind, value):
    scores = _write(tmp_path / "s.json", {**GOOD, kind: [value] * 8})
    assert_refused(["plans", "show", "drop_joint_k2", "--layers", "8", "--scores", scores], [tmp_path],
                   str(scores), f"{kind}[0]")


@pytest.mark.parametrize(("change", "needle"), [
    ({"model_hash": None}, "model_hash"),
    ({"model_hash": ""}, "model_hash"),
    ({"model_hash": "   "}, "model_hash"),
    ({"model_hash": 5}, "model_hash"),
    ({"model_hash": ["h"]}, "model_hash"),
    ({"num_layers": 7}, "num_layers is 7"),
    ({"num_layers": 9}, "num_layers is 9"),
    ({"num_layers": "8"}, "num_layers is '8'"),
    ({"num_layers": True}, "num_layers is True"),
    ({"num_layers": 8.0}, "num_layers is 8.0"),
    ({"num_layers": None}, "num_layers is None"),
    ({"attn": [], "mlp": [], "block": []}, "0/0/0 entries"),
    ({"attn": "01234567"}, "lacks per-layer lists"),
    ({"mlp": {"0": 0.1}}, "lacks per-layer lists"),
])
def test_header_fields_are_checked(tmp_path, change, needle):
    data = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    scores = _write(tmp_path / "s.json", data)
    assert_refused(["plans", "show", "drop_attn_k2", "--layers", "8", "--scores", scores], [tmp_path],
                   str(scores), needle)


def test_a_good_file_still_ranks(tmp_path):
    scores = _write(tmp_path / "s.json", GOOD)
    code, out = run_cli(["plans", "show", "drop_attn_k2", "--layers", "8", "--scores", scores, "--json"])
    assert code == 0, out
    steps = json.loads(out)["steps"]
    assert [i for i, s in enumerate(steps) if not s["attn"]] == [1, 7]  # 0.1 and 0.05: the two lowest


def test_rounding_below_zero_is_accepted(tmp_path):
    """1 − cos in float32 can be a hair below 0; that is a score, not a damaged file."""
    scores = _write(tmp_path / "s.json", {**GOOD, "mlp": [-1e-7] * 8})
    code, out = run_cli(["plans", "show", "drop_mlp_k1", "--layers", "8", "--scores", scores])
    assert code == 0, out


@pytest.mark.parametrize(("change", "needle"), [
    ({"attn": [0.1] * 7 + [float("nan")]}, "attn[7]"),
    ({"model_hash": ""}, "model_hash"),
    ({"num_layers": 6}, "num_layers is 6"),
    ({"block": [True] * 8}, "block[0]"),
])
@pytest.mark.parametrize("surface", ["compile", "latency"])
def test_compile_and_latency_refuse_bad_scores_before_writing(model_dir, tmp_path, change, needle, surface):
    scores = _write(tmp_path / "s.json", {**GOOD, **change})
    if surface == "compile":
        args = ["compile", "--plan", "drop_attn_k2", model_dir, "--scores", scores, "-o", tmp_path / "out.onnx"]
    else:
        args = ["bench", "latency", model_dir, "--plans", "baseline,drop_attn_k2", "--scores", scores,
                "--json", tmp_path / "lat.json", "--iters", "1", "--warmup", "0", "--gen", "1", "--prompt", "4"]
    assert_refused(args, [tmp_path, model_dir.parent], needle)


def test_compile_refuses_scores_of_another_model(model_dir, tmp_path):
    scores = _write(tmp_path / "s.json", {**GOOD, "model_hash": "f" * 64})
    assert_refused(["compile", "--plan", "drop_attn_k2", model_dir, "--scores", scores, "-o", tmp_path / "o.onnx"],
                   [tmp_path, model_dir.parent], "computed on another model")
