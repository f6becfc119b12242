"""Hostile and careless input values: each is a one-line error with exit 2 (or 1 for a failed gate), inputs unchanged.

Covers issue 15 items 9, 10, 12 (plan-file values), 13 (limits) and 15 (plan-file name); fast, no model loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from painters.cli import main
from painters.errors import PlanError
from painters.plans import parse_plan
from painters.plans.grammar import load_plan_file


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(args: list[str]):
    return CliRunner().invoke(main, args)


def _one_line_error(result, exit_code: int, *needles: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


# item 13: limits ---------------------------------------------------------------------------------------------

def test_plans_show_huge_layer_count_fails_fast():
    start = time.perf_counter()
    result = _run(["plans", "show", "baseline", "--layers", "1000000000"])
    _one_line_error(result, 2, "error:", "at most 10000")
    assert time.perf_counter() - start < 5


def test_drop_list_with_a_huge_range_fails_before_listing_it():
    start = time.perf_counter()
    with pytest.raises(PlanError, match="does not exist"):
        parse_plan("drop_attn_0-999999999", 8)
    assert time.perf_counter() - start < 1


def test_plan_file_with_20000_steps_is_refused(tmp_path):
    plan = tmp_path / "long.json"
    plan.write_text(json.dumps({"steps": [0] * 20_000}))
    before = _sha(plan)
    start = time.perf_counter()
    result = _run(["plans", "show", str(plan), "--layers", "8"])
    _one_line_error(result, 2, "20000 steps", "at most 10000")
    assert time.perf_counter() - start < 5
    assert _sha(plan) == before


def test_unrolled_block_evaluations_are_capped():
    with pytest.raises(PlanError, match="block evaluations"):
        parse_plan("parallel_0_200_x1000", 200)


# item 12 / 15: plan-file values ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, needle", [
    (7, "must be a non-empty string"),
    (["a"], "must be a non-empty string"),
    ("", "must be a non-empty string"),
    ("x" * 300, "at most 200"),
    ("../escape", "letters, digits"),
])
def test_plan_file_name_must_be_a_short_safe_string(tmp_path, name, needle):
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"name": name, "steps": [0, 1]}))
    before = _sha(plan)
    _one_line_error(_run(["plans", "show", str(plan), "--layers", "8"]), 2, "error:", needle)
    assert _sha(plan) == before


def test_a_300_digit_shuffle_seed_is_a_name_error():
    result = _run(["plans", "show", "shuffle_1_5_s" + "7" * 300, "--layers", "8"])
    _one_line_error(result, 2, "at most 200")


def test_plan_file_that_is_a_fifo_or_a_device_does_not_hang(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    _one_line_error(_run(["plans", "show", str(fifo), "--layers", "8"]), 2, "not a regular file")
    if Path("/dev/zero").exists():
        link = tmp_path / "zero.json"
        link.symlink_to("/dev/zero")
        _one_line_error(_run(["plans", "show", str(link), "--layers", "8"]), 2, "not a regular file")


def test_oversized_or_binary_plan_file_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (2 << 20))
    _one_line_error(_run(["plans", "show", str(big), "--layers", "8"]), 2, "bytes")
    binary = tmp_path / "bin.json"
    binary.write_bytes(bytes(range(256)))
    _one_line_error(_run(["plans", "show", str(binary), "--layers", "8"]), 2, "cannot be read")


# item 9: latency sizes are usage errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--batch", "0"], ["--batch", "1,-2"], ["--batch", "x"], ["--prompt", "0"], ["--prompt", ","],
    ["--gen", "0"], ["--gen", "-5"], ["--iters", "0"], ["--warmup", "-1"], ["--threads", "0"],
])
def test_latency_sizes_must_be_positive(tmp_path, args):
    json_out = tmp_path / "lat.json"
    result = _run(["bench", "latency", "no-such-model.onnx", *args, "--json", str(json_out)])
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output and args[0] in result.output
    assert not json_out.exists()


# item 10: the CI gate fails closed --------------------------------------------------------------------------------

def _result(path: Path, rows: list[tuple[str, float]]) -> Path:
    path.write_text(json.dumps({"model_hash": "m", "stored_as": path.name, "rows": [
        {"plan": p, "batch": 1, "prompt": 8, "prefill_ratio": r, "decode_ratio": r} for p, r in rows]}))
    return path


@pytest.mark.parametrize("measured, extra, code, needle", [
    ([("baseline", 1.0), ("skip_1_3", float("nan"))], [], 2, "not a positive finite ratio"),
    ([("baseline", 1.0), ("skip_1_3", float("inf"))], [], 2, "not a positive finite ratio"),
    ([("baseline", 1.0)], [], 2, "only in"),
    ([("baseline", 1.0), ("skip_1_3", 0.8), ("dup_1_x2", 1.2)], [], 2, "only in"),
    ([("baseline", 1.0), ("skip_1_3", 0.8)], ["--max-regression", "-0.5"], 2, "--max-regression"),
    ([("baseline", 1.0), ("skip_1_3", 0.8)], ["--max-regression", "nan"], 2, "finite"),
    ([("baseline", 1.0), ("skip_1_3", 0.95)], [], 1, "REGRESSION skip_1_3"),
])
def test_gate_fails_on_anything_it_cannot_compare(tmp_path, measured, extra, code, needle):
    stored = _result(tmp_path / "stored.json", [("baseline", 1.0), ("skip_1_3", 0.8)])
    result = _result(tmp_path / "result.json", measured)
    before = (_sha(stored), _sha(result))
    out = _run(["bench", "check", str(result), "--baseline", str(stored), *extra])
    _one_line_error(out, code, needle)
    assert (_sha(stored), _sha(result)) == before


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00binary", b'{"rows": [{"plan": 1}]}', b"[]"])
def test_gate_refuses_malformed_results(tmp_path, content):
    stored = _result(tmp_path / "stored.json", [("baseline", 1.0)])
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    _one_line_error(_run(["bench", "check", str(bad), "--baseline", str(stored)]), 2, "error:", str(bad))
    assert bad.read_bytes() == content


def test_gate_passes_when_everything_compares(tmp_path):
    stored = _result(tmp_path / "stored.json", [("baseline", 1.0), ("skip_1_3", 0.8)])
    result = _result(tmp_path / "result.json", [("baseline", 1.0), ("skip_1_3", 0.82)])
    out = _run(["bench", "check", str(result), "--baseline", str(stored)])
    assert out.exit_code == 0 and "4 ratios compared, 0 regressed" in out.output


# properties: plan names and plan files either parse to a valid schedule or raise PlanError ------------------------

_SETTINGS = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
_name_alphabet = st.sampled_from(list("0123456789_,-+:xsk") + ["skip", "repeat", "reverse", "shuffle", "parallel",
                                  "dup", "swap", "drop_attn", "drop_mlp", "drop_block", "baseline", "kvmean"])


@_SETTINGS
@given(text=st.one_of(st.text(max_size=60), st.lists(_name_alphabet, max_size=12).map("".join)),
       layers=st.integers(min_value=-3, max_value=40))
def test_plan_names_parse_or_raise_plan_error(text, layers):
    if text.strip().endswith((".yaml", ".yml", ".json")):
        text += "_"  # names only here; files have their own property
    try:
        plan = parse_plan(text, layers)
    except PlanError:
        return
    assert plan.validate() is plan and 1 <= plan.num_layers <= 40
    assert all(0 <= b < layers for stage in plan.stages() for b in stage.blocks)


_json_value = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 12), st.text(max_size=5)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.sampled_from(
                                                       ["block", "attn", "mlp", "parallel", "loops", "x"]),
                                                       inner, max_size=4)), max_leaves=12)


@_SETTINGS
@given(steps=st.lists(_json_value, max_size=10), name=st.one_of(st.none(), _json_value),
       kv=st.sampled_from(["exact", "mean", "other", 3]), layers=st.integers(min_value=0, max_value=12))
def test_plan_files_parse_or_raise_plan_error(tmp_path, steps, name, kv, layers):
    path = tmp_path / "plan.json"
    data = {"steps": steps, "kv": kv, **({} if name is None else {"name": name})}
    path.write_text(json.dumps(data))
    try:
        plan = load_plan_file(path, layers)
    except PlanError:
        return
    assert plan.validate() is plan
    assert all(0 <= b < layers for stage in plan.stages() for b in stage.blocks)
