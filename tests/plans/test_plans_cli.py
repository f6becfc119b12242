"""`painters plans list|show`: what a user sees before compiling, and exit code 2 with one line on bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from painters.cli import main
from painters.plans import GRAMMAR, Scores, parse_plan


def run(*args: str) -> tuple[int, str, str]:
    """Invoke `painters ARGS` in-process; (exit code, stdout, stderr)."""
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_list_shows_every_form_with_its_example() -> None:
    code, out, _ = run("plans", "list")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(GRAMMAR)
    for line, (form, (example, meaning)) in zip(lines, GRAMMAR.items()):
        assert line.split()[:2] == [form, example] and line.endswith(meaning)


def test_show_json_is_exactly_to_json() -> None:
    code, out, _ = run("plans", "show", "parallel_4_28:kvmean", "--layers", "32", "--json")
    assert code == 0
    data = json.loads(out)
    assert data == parse_plan("parallel_4_28:kvmean", 32).to_json()
    assert set(data) == {"plan", "steps", "kv_slots", "block_evals", "num_layers", "kv"}
    assert set(data["steps"][0]) == {"blocks", "parallel", "loops", "attn", "mlp"}
    assert (data["kv"], data["kv_slots"], data["block_evals"]) == ("mean", 9, 32)
    assert data["steps"][4] == {"blocks": list(range(4, 28)), "parallel": True, "loops": 1, "attn": True, "mlp": True}


def test_show_text_kvmean() -> None:
    code, out, _ = run("plans", "show", "parallel_4_28:kvmean", "--layers", "32")
    assert code == 0, out
    assert "plan parallel_4_28:kvmean (32 layers, kv=mean)" in out
    assert "  block 3\n  parallel [4-27]\n  block 28\n" in out
    assert "block evaluations: 32 (attention 32, MLP 32)" in out
    assert "KV slots: 9\n" in out
    assert "ideal cost ratio vs baseline: 1.000" in out and "depth 9/32 = 0.281" in out
    assert "kv=mean saves 23 KV slots vs kv=exact (9 instead of 32)" in out


def test_show_text_exact_with_loops_and_drops() -> None:
    code, out, _ = run("plans", "show", "parallel_4_8_x2+drop_attn_9,10+drop_mlp_11", "--layers", "12")
    assert code == 0, out
    schedule = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert schedule == ["block 0", "block 1", "block 2", "block 3", "parallel [4-7] x2", "block 8",
                        "block 9 (attention dropped)", "block 10 (attention dropped)", "block 11 (MLP dropped)"]
    assert "block evaluations: 16 (attention 14, MLP 15)" in out
    assert "KV slots: 14" in out
    assert "1.208 of sublayer evaluations" in out and "depth 10/12" in out
    assert "kv=mean saves" not in out


def test_show_plan_file(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("kv: mean\nsteps: [0, {parallel: [1, 2], loops: 3}, {block: 3, attn: false}]\n")
    code, out, _ = run("plans", "show", str(path), "--layers", "4", "--json")
    assert code == 0, out
    assert json.loads(out) == parse_plan("parallel_1_3_x3+drop_attn_3:kvmean", 4).to_json() | {"plan": "mine"}
    code, out, _ = run("plans", "show", str(path), "--layers", "4")
    assert "parallel [1, 2] x3" in out and "kv=mean saves 3 KV slots vs kv=exact (4 instead of 7)" in out


def test_show_with_scores(tmp_path) -> None:
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(Scores((0.3, 0.1, 0.2), (0.5, 0.6, 0.0), (1.0, 1.0, 1.0), model_hash="m").to_json()))
    code, out, _ = run("plans", "show", "drop_joint_k2", "--layers", "3", "--scores", str(path), "--json")
    assert code == 0, out
    assert json.loads(out)["steps"] == [{"blocks": [0], "parallel": False, "loops": 1, "attn": True, "mlp": True},
                                        {"blocks": [1], "parallel": False, "loops": 1, "attn": False, "mlp": True},
                                        {"blocks": [2], "parallel": False, "loops": 1, "attn": True, "mlp": False}]


@pytest.mark.parametrize(("args", "needles"), [
    (["skip_4_40", "--layers", "32"], ["'skip_4_40'", "B ≤ 32"]),
    (["nonsense", "--layers", "32"], ["'nonsense'", "skip_A_B"]),
    (["skip_1_3+drop_attn_2", "--layers", "8"], ["'skip_1_3'", "'drop_attn_2'", "disjoint"]),
    (["drop_attn_k2", "--layers", "8"], ["'drop_attn_k2'", "--scores"]),
    (["drop_attn_k2", "--layers", "8", "--scores", "absent.json"], ["absent.json", "not found"]),
    (["baseline", "--layers", "0"], ["at least one layer"]),
    (["missing.yaml", "--layers", "4"], ["missing.yaml", "cannot be read"]),
])
def test_show_bad_plan_exits_2_with_one_line(args: list[str], needles: list[str]) -> None:
    code, out, err = run("plans", "show", *args)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err


def test_show_needs_layers() -> None:
    code, _, err = run("plans", "show", "baseline")
    assert code == 2 and "--layers" in err
