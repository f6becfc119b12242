"""Plan names and plan files → schedules: every name kind, composition, bad input, files, scores, properties.

The expected schedules are written out by hand for small models, so a change in what a name means (and hence
in what every backend executes) fails here first, with the offending name in the test id.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from painters.errors import PlanError
from painters.plans import (
    GRAMMAR,
    Scores,
    Step,
    least_important,
    load_plan_file,
    load_scores,
    painters_reference_plan,
    parse_plan,
    symmetric_plan,
)
from painters.plans.schedule import MAX_LOOPS


def seq(*blocks: int) -> tuple[Step, ...]:
    """Plain sequential steps, one per block: most of a schedule is this."""
    return tuple(Step((b,)) for b in blocks)


def par(*blocks: int, loops: int = 1) -> tuple[Step, ...]:
    """One parallel group step."""
    return (Step(tuple(blocks), parallel=True, loops=loops),)


def no_attn(b: int) -> tuple[Step, ...]:
    return (Step((b,), attn=False),)


def no_mlp(b: int) -> tuple[Step, ...]:
    return (Step((b,), mlp=False),)


def spec_shuffle(a: int, b: int, seed: int) -> list[int]:
    """The order the issue defines literally (global random.seed + shuffle), leaving global state untouched."""
    state = random.getstate()
    try:
        order = list(range(a, b))
        random.seed(seed)
        random.shuffle(order)
        return order
    finally:
        random.setstate(state)


# ---------------------------------------------------------------------------------------------------------------
# Every name kind, L = 8.

NAMED_SCHEDULES = {
    "baseline": seq(0, 1, 2, 3, 4, 5, 6, 7),
    "skip_2_5": seq(0, 1, 5, 6, 7),
    "skip_0_1": seq(1, 2, 3, 4, 5, 6, 7),
    "skip_7_8": seq(0, 1, 2, 3, 4, 5, 6),
    "repeat_2_6": seq(0, 1, 4, 4, 4, 4, 6, 7),  # (2+6)//2 = 4
    "repeat_2_5": seq(0, 1, 3, 3, 3, 5, 6, 7),  # (2+5)//2 = 3
    "repeat_0_8": seq(4, 4, 4, 4, 4, 4, 4, 4),
    "reverse_2_6": seq(0, 1, 5, 4, 3, 2, 6, 7),
    "reverse_0_8": seq(7, 6, 5, 4, 3, 2, 1, 0),
    "shuffle_1_7_s3": seq(0, 1, 3, 4, 6, 5, 2, 7),
    "parallel_2_5": seq(0, 1) + par(2, 3, 4) + seq(5, 6, 7),
    "parallel_2_5_x3": seq(0, 1) + par(2, 3, 4, loops=3) + seq(5, 6, 7),
    "parallel_0_8_x1": par(0, 1, 2, 3, 4, 5, 6, 7),
    "dup_3_x3": seq(0, 1, 2, 3, 3, 3, 4, 5, 6, 7),
    "dup_7_x1": seq(0, 1, 2, 3, 4, 5, 6, 7),
    "swap_1_6": seq(0, 6, 2, 3, 4, 5, 1, 7),
    "swap_6_1": seq(0, 6, 2, 3, 4, 5, 1, 7),
    "drop_attn_1,3-4": seq(0) + no_attn(1) + seq(2) + no_attn(3) + no_attn(4) + seq(5, 6, 7),
    "drop_mlp_7": seq(0, 1, 2, 3, 4, 5, 6) + no_mlp(7),
    "drop_mlp_2-2": seq(0, 1) + no_mlp(2) + seq(3, 4, 5, 6, 7),
    "drop_block_0,2-3": seq(1, 4, 5, 6, 7),
    "drop_block_6,1": seq(0, 2, 3, 4, 5, 7),
    # Composition: each part rewrites its own blocks, in original positions.
    "parallel_1_3+drop_attn_5,6+swap_0_7": seq(7) + par(1, 2) + seq(3, 4) + no_attn(5) + no_attn(6) + seq(0),
    "skip_0_2+reverse_2_5+dup_6_x2": seq(4, 3, 2, 5, 6, 6, 7),
    "baseline+skip_3_4": seq(0, 1, 2, 4, 5, 6, 7),
    "drop_attn_0+drop_mlp_1+drop_block_2": no_attn(0) + no_mlp(1) + seq(3, 4, 5, 6, 7),
    "repeat_0_2+repeat_2_4": seq(1, 1, 3, 3, 4, 5, 6, 7),
}


@pytest.mark.parametrize("name", NAMED_SCHEDULES)
def test_named_schedule(name: str) -> None:
    plan = parse_plan(name, 8)
    assert plan.steps == NAMED_SCHEDULES[name]
    assert plan.num_layers == 8 and plan.kv == "exact" and str(plan) == name


def test_shuffle_matches_the_spec_recipe_and_leaves_global_random_alone() -> None:
    """The seeded order is the reference code's; parsing must not reseed the caller's generator."""
    for a, b, s in [(1, 7, 3), (0, 8, 0), (4, 28, 0), (2, 30, 12345)]:
        expected = spec_shuffle(a, b, s)
        random.seed(99)
        before = random.random()
        random.seed(99)
        plan = parse_plan(f"shuffle_{a}_{b}_s{s}", 32)
        assert random.random() == before
        assert [st.blocks[0] for st in plan.steps[a:b]] == expected
    assert spec_shuffle(1, 7, 3) == [1, 3, 4, 6, 5, 2]


def test_kv_suffix() -> None:
    mean = parse_plan("parallel_2_5:kvmean", 8)
    assert mean.kv == "mean" and mean.steps == NAMED_SCHEDULES["parallel_2_5"]
    assert str(mean) == "parallel_2_5:kvmean"
    exact = parse_plan("parallel_2_5:kvexact", 8)
    assert exact.kv == "exact" and str(exact) == "parallel_2_5"
    assert parse_plan("  parallel_1_3+skip_4_6:kvmean \n", 8).kv == "mean"


def test_every_grammar_example_parses() -> None:
    """`plans list` shows these; each must be a working plan on a 32-layer model."""
    scores = Scores(tuple(i / 32 for i in range(32)), tuple(1 - i / 32 for i in range(32)), (0.5,) * 32)
    for form, (example, meaning) in GRAMMAR.items():
        plan = parse_plan(example, 32, scores=scores)
        assert plan.block_evals > 0, form
        assert meaning
    assert parse_plan(GRAMMAR["PLAN:kvmean"][0], 32).kv == "mean"


# ---------------------------------------------------------------------------------------------------------------
# Bad input: PlanError quoting the offending part and showing the valid form.

BAD_NAMES = [
    # unknown names and malformed numbers
    ("foo_1_2", 8, ["'foo_1_2'", "skip_A_B", "plans list"]),
    ("skip_01_3", 8, ["'skip_01_3'", "skip_A_B"]),
    ("skip_1_x", 8, ["'skip_1_x'", "valid forms"]),
    ("skip_-1_3", 8, ["'skip_-1_3'", "valid forms"]),
    ("skip_1", 8, ["'skip_1'", "valid forms"]),
    ("drop_attn_4,,5", 8, ["'drop_attn_4,,5'", "drop_attn_LIST"]),
    ("drop_attn_4-", 8, ["'drop_attn_4-'", "drop_attn_LIST"]),
    ("drop_attn_", 8, ["'drop_attn_'", "drop_attn_LIST"]),
    ("drop_foo_k2", 8, ["'drop_foo_k2'", "drop_KIND_kN"]),
    ("dup_3_x", 8, ["'dup_3_x'", "dup_I_xK"]),
    ("parallel_1_3_x-1", 8, ["'parallel_1_3_x-1'", "parallel_A_B_xR"]),
    ("shuffle_1_3", 8, ["'shuffle_1_3'", "shuffle_A_B_sS"]),
    ("skip_\u0661_\u0663", 8, ["valid forms"]),  # Arabic-Indic digits are not numbers here
    ("skip_1_1\u0663", 8, ["valid forms"]),
    ("", 8, ["unknown plan ''"]),
    ("baseline+", 8, ["unknown plan ''"]),
    ("Baseline", 8, ["'Baseline'"]),
    ("baseline:kvfoo", 8, ["':kvfoo'", ":kvmean"]),
    ("baseline:kvmean:kvmean", 8, [":kvmean"]),
    ("skip_" + "1" * 5000 + "_2", 8, ["malformed number"]),
    # ranges outside [0, L)
    ("skip_2_9", 8, ["'skip_2_9'", "8 blocks", "B ≤ 8"]),
    ("parallel_4_29_x3", 28, ["'parallel_4_29_x3'", "B ≤ 28"]),
    ("dup_8_x2", 8, ["'dup_8_x2'", "valid 0–7"]),
    ("swap_0_8", 8, ["'swap_0_8'", "valid 0–7"]),
    ("drop_attn_8", 8, ["'drop_attn_8'", "valid 0–7"]),
    ("drop_mlp_6-8", 8, ["'drop_mlp_6-8'", "valid 0–7"]),
    ("drop_block_99999999999999999999", 8, ["'drop_block_99999999999999999999'", "valid 0–7"]),
    # empty range, A >= B
    ("skip_3_3", 8, ["'skip_3_3'", "empty range", "A < B"]),
    ("reverse_5_2", 8, ["'reverse_5_2'", "A < B"]),
    ("parallel_4_4", 8, ["'parallel_4_4'", "A < B"]),
    ("drop_attn_5-3", 8, ["'drop_attn_5-3'", "LO ≤ HI"]),
    # loop counts
    ("parallel_1_3_x0", 8, ["'parallel_1_3_x0'", "parallel_A_B_xR"]),
    ("parallel_1_3_x1001", 8, ["'parallel_1_3_x1001'", f"R ≤ {MAX_LOOPS}"]),
    ("dup_1_x0", 8, ["'dup_1_x0'", "dup_I_xK"]),
    ("dup_1_x99999999999999", 8, ["'dup_1_x99999999999999'", f"K ≤ {MAX_LOOPS}"]),  # must not allocate 1e14 steps
    # other structural mistakes
    ("swap_3_3", 8, ["'swap_3_3'", "I ≠ J"]),
    ("drop_attn_2,2", 8, ["'drop_attn_2,2'", "twice"]),
    ("drop_attn_1,0-2", 8, ["'drop_attn_1,0-2'", "twice"]),
    # overlapping composed parts
    ("skip_1_3+drop_attn_2", 8, ["'skip_1_3'", "'drop_attn_2'", "block 2", "disjoint"]),
    ("parallel_0_4+swap_3_7", 8, ["'parallel_0_4'", "'swap_3_7'", "disjoint"]),
    ("repeat_2_6+dup_4_x2", 8, ["'repeat_2_6'", "'dup_4_x2'"]),
    ("baseline+drop_mlp_1+drop_attn_1", 8, ["'drop_mlp_1'", "'drop_attn_1'"]),
    ("skip_1_2+skip_1_2", 8, ["'skip_1_2'", "disjoint"]),
    # nothing left to run
    ("skip_0_8", 8, ["leaves zero blocks", "0..7"]),
    ("drop_block_0-7", 8, ["leaves zero blocks"]),
    ("skip_0_4+skip_4_8", 8, ["leaves zero blocks"]),
    # kN without scores
    ("drop_attn_k2", 8, ["'drop_attn_k2'", "scores file", "--scores"]),
    ("drop_joint_k1+skip_5_6", 8, ["'drop_joint_k1'", "--scores"]),
    # model size
    ("baseline", 0, ["at least one layer"]),
]


@pytest.mark.parametrize(("name", "layers", "needles"), BAD_NAMES, ids=[b[0][:40] for b in BAD_NAMES])
def test_bad_name(name: str, layers: int, needles: list[str]) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(name, layers)
    for needle in needles:
        assert needle in str(info.value)


def test_plan_error_is_a_value_error() -> None:
    """Callers that predate PlanError catch ValueError; that must keep working."""
    with pytest.raises(ValueError):
        parse_plan("nope", 4)


# ---------------------------------------------------------------------------------------------------------------
# Paper correspondence.


def test_painters_reference_examples_from_the_issue() -> None:
    assert painters_reference_plan("skip", 14, 32) == "skip_15_18"
    assert painters_reference_plan("loop_parallel", 3, 32, repeat=3) == "parallel_4_29_x3"
    assert parse_plan("skip_15_18", 32).steps == seq(*range(15), *range(18, 32))
    assert parse_plan("parallel_4_29_x3", 32).steps == seq(0, 1, 2, 3) + par(*range(4, 29), loops=3) + seq(29, 30, 31)


@pytest.mark.parametrize(("method", "kind"), [("skip", "skip"), ("middle_repeat", "repeat"), ("reverse", "reverse"),
                                              ("random", "shuffle"), ("parallel", "parallel"),
                                              ("loop_parallel", "parallel")])
@pytest.mark.parametrize("n", [0, 3, 9, 14])
def test_painters_reference_modifies_layers_n_plus_1_to_l_minus_n_minus_1(method: str, kind: str, n: int) -> None:
    """The reference code's start_layer N touches N+1 … L−N−1 inclusive: nothing outside, all of it inside."""
    name = painters_reference_plan(method, n, 32, repeat=2, seed=5)
    assert name.startswith(kind + "_")
    plan = parse_plan(name, 32)
    modified = set(range(n + 1, 32 - n - 1 + 1))
    baseline = seq(*range(32))
    assert plan.steps[: n + 1] == baseline[: n + 1]
    assert plan.steps[len(plan.steps) - n:] == baseline[32 - n:]
    touched = {b for s in plan.steps[n + 1: len(plan.steps) - n] for b in s.blocks}
    assert touched <= modified
    if method == "loop_parallel":
        assert plan.steps[n + 1] == Step(tuple(sorted(modified)), parallel=True, loops=2)
    if method == "random":
        assert name.endswith("_s5")


def test_painters_reference_unknown_method() -> None:
    with pytest.raises(PlanError, match="'shuffle'.*known: skip"):
        painters_reference_plan("shuffle", 3, 32)


@pytest.mark.parametrize(("variant", "n", "expected"), [
    ("skip", 8, "skip_12_20"), ("repeat", 2, "repeat_15_17"), ("reverse", 3, "reverse_14_17"),
    ("shuffle", 4, "shuffle_14_18_s0"), ("parallel", 5, "parallel_13_18"), ("parallel_x3", 8, "parallel_12_20_x3"),
    ("drop_attn", 8, "drop_attn_12-19"),
])
def test_symmetric_plan(variant: str, n: int, expected: str) -> None:
    """The sweep grid modifies exactly n middle layers."""
    assert symmetric_plan(variant, n, 32) == expected
    plan = parse_plan(expected, 32)
    a = (32 - n) // 2
    assert plan.steps[:a] == seq(*range(a))
    assert plan.steps[len(plan.steps) - (32 - a - n):] == seq(*range(a + n, 32))
    middle = plan.steps[a: len(plan.steps) - (32 - a - n)]
    assert {b for s in middle for b in s.blocks} <= set(range(a, a + n))
    assert middle != seq(*range(a, a + n))


# ---------------------------------------------------------------------------------------------------------------
# Plan files: the same schedules as names.


def without_name(plan_json: dict) -> dict:
    return {k: v for k, v in plan_json.items() if k != "plan"}


FILE_CASES = [
    ("parallel_2_5_x2+drop_attn_5+drop_mlp_6:kvmean", 8,
     "kv: mean\nsteps:\n  - 0\n  - 1\n  - {parallel: [2, 3, 4], loops: 2}\n  - {block: 5, attn: false}\n"
     "  - {block: 6, mlp: false}\n  - 7\n",
     {"kv": "mean", "steps": [0, 1, {"parallel": [2, 3, 4], "loops": 2}, {"block": 5, "attn": False},
                              {"block": 6, "mlp": False}, 7]}),
    ("reverse_1_4", 5, "- 0\n- 3\n- 2\n- 1\n- 4\n", [0, 3, 2, 1, 4]),
    ("dup_1_x2+skip_2_3", 4, "steps: [0, 1, 1, 3]\n", {"steps": [0, 1, 1, 3]}),
    ("parallel_0_3:kvmean", 3, "name: group\nkv: mean\nsteps: [{parallel: [0, 1, 2]}]\n",
     {"name": "group", "kv": "mean", "steps": [{"parallel": [0, 1, 2], "loops": 1, "attn": True, "mlp": True}]}),
]


@pytest.mark.parametrize(("name", "layers", "yaml_text", "json_data"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_plan_files_equal_names(tmp_path, name: str, layers: int, yaml_text: str, json_data) -> None:
    expected = parse_plan(name, layers)
    (tmp_path / "p.yaml").write_text(yaml_text)
    (tmp_path / "p.yml").write_text(yaml_text)
    (tmp_path / "p.json").write_text(json.dumps(json_data))
    for path in ("p.yaml", "p.yml", "p.json"):
        for plan in (load_plan_file(tmp_path / path, layers), parse_plan(str(tmp_path / path), layers)):
            assert plan.steps == expected.steps and plan.kv == expected.kv
            assert without_name(plan.to_json()) == without_name(expected.to_json())
            assert plan.stages() == expected.stages()


def test_plan_file_name(tmp_path) -> None:
    (tmp_path / "mine.yaml").write_text("steps: [1, 0]\n")
    (tmp_path / "named.json").write_text('{"name": "flip", "steps": [1, 0]}')
    assert str(load_plan_file(tmp_path / "mine.yaml", 2)) == "mine"
    assert str(load_plan_file(tmp_path / "named.json", 2)) == "flip"
    assert load_plan_file(tmp_path / "mine.yaml", 2).steps == parse_plan("swap_0_1", 2).steps


BAD_FILES = [
    ("unknown.yaml", "steps: [0]\nloops: 2\n", ["unknown keys ['loops']", "valid: name, kv, steps"]),
    ("unknown_int.yaml", "steps: [0]\n1: 2\nfoo: 3\n", ["unknown keys [1, 'foo']"]),
    ("stepkey.yaml", "steps: [{block: 0, atn: false}]\n", ["'atn'", "{block, attn, mlp}"]),
    ("groupkey.json", '{"steps": [{"parallel": [0, 1], "loop": 2}]}', ["'loop'", "{parallel: [..], loops, attn, mlp}"]),
    ("notlist.json", '{"steps": 5}', ["'steps' must be a list", "got 5"]),
    ("notmapping.yaml", "just text\n", ["expected a mapping with a 'steps' list"]),
    ("nosteps.yaml", "name: x\n", ["'steps'"]),
    ("empty.yaml", "", ["'steps'"]),
    ("zero.yaml", "steps: []\n", ["leaves zero blocks"]),
    ("badyaml.yaml", "steps: [0, {\n", ["is not valid YAML"]),
    ("badjson.json", "{steps: [0]}", ["is not valid JSON"]),
    ("stepstr.yaml", "steps: [zero]\n", ["step 'zero' must be a block index or a mapping"]),
    ("stepbool.yaml", "steps: [true]\n", ["step True must be a block index"]),
    ("blockbool.yaml", "steps: [{block: true}]\n", ["needs an integer 'block'"]),
    ("noblock.yaml", "steps: [{attn: false}]\n", ["needs an integer 'block'"]),
    ("flag.yaml", "steps: [{block: 1, attn: 1}]\n", ["attn/mlp must be true or false"]),
    ("both.yaml", "steps: [{block: 1, attn: false, mlp: false}]\n", ["drops both attention and MLP"]),
    ("kv.yaml", "kv: average\nsteps: [0]\n", ["kv must be 'exact' or 'mean'", "'average'"]),
    ("members.yaml", "steps: [{parallel: 3}]\n", ["parallel must be a list of block indices"]),
    ("loops.yaml", "steps: [{parallel: [0, 1], loops: 2.5}]\n", ["loops must be an integer"]),
    ("loops0.yaml", "steps: [{parallel: [0, 1], loops: 0}]\n", ["loops must be 1..1000, got 0"]),
    ("loopsbig.yaml", "steps: [{parallel: [0, 1], loops: 1000000000000}]\n", ["loops must be 1..1000"]),
    ("range.yaml", "steps: [0, 4]\n", ["uses block 4", "valid 0–3"]),
    ("negative.yaml", "steps: [-1]\n", ["uses block -1"]),
    ("twice.yaml", "steps: [{parallel: [1, 1]}]\n", ["lists a block twice"]),
    ("emptygroup.yaml", "steps: [{parallel: []}]\n", ["a step with no blocks"]),
]


@pytest.mark.parametrize(("filename", "text", "needles"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_plan_file(tmp_path, filename: str, text: str, needles: list[str]) -> None:
    path = tmp_path / filename
    path.write_text(text)
    with pytest.raises(PlanError) as info:
        parse_plan(str(path), 4)
    for needle in needles:
        assert needle in str(info.value)


def test_missing_plan_file(tmp_path) -> None:
    with pytest.raises(PlanError, match="cannot be read"):
        parse_plan(str(tmp_path / "absent.yaml"), 4)


# ---------------------------------------------------------------------------------------------------------------
# Scores: drop_KIND_kN.

SCORES = Scores(attn=(0.5, 0.1, 0.3, 0.1, 0.9, 0.2), mlp=(0.4, 0.05, 0.6, 0.7, 0.2, 0.8),
                block=(0.9, 0.3, 0.2, 0.5, 0.1, 0.6), model_hash="abc123")


@pytest.fixture
def scores_file(tmp_path):
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(SCORES.to_json()))
    return path


@pytest.mark.parametrize(("name", "equivalent"), [
    ("drop_attn_k3", "drop_attn_1,3,5"),  # 0.1 (1) ties 0.1 (3): lower index first
    ("drop_attn_k1", "drop_attn_1"),
    ("drop_mlp_k2", "drop_mlp_1,4"),
    ("drop_block_k2", "drop_block_2,4"),
    ("drop_attn_k0", "baseline"),
    ("drop_joint_k2", "drop_block_1"),  # mlp 1 (0.05) and attn 1 (0.1): the whole block goes
    ("drop_joint_k3", "drop_block_1+drop_attn_3"),
    ("drop_joint_k4", "drop_block_1+drop_attn_3+drop_mlp_4"),  # attn 5 ties mlp 4 at 0.2: layer 4 first
    ("drop_joint_k5", "drop_block_1+drop_attn_3,5+drop_mlp_4"),
    ("drop_attn_k2+skip_4_6", "drop_attn_1,3+skip_4_6"),
])
def test_kn_plans(scores_file, name: str, equivalent: str) -> None:
    scores = load_scores(scores_file, model_hash="abc123")
    assert scores == SCORES
    plan = parse_plan(name, 6, scores=scores)
    assert plan.steps == parse_plan(equivalent, 6).steps
    assert parse_plan(str(plan), 6, scores=scores).steps == plan.steps


def test_least_important_tie_breaks() -> None:
    flat = Scores((0.1, 0.1), (0.1, 0.1), (0.1, 0.1))
    assert least_important(flat, "joint", 4) == [("attn", 0), ("mlp", 0), ("attn", 1), ("mlp", 1)]
    assert least_important(flat, "block", 1) == [("block", 0)]
    assert least_important(SCORES, "mlp", 3) == [("mlp", 1), ("mlp", 4), ("mlp", 0)]


@pytest.mark.parametrize(("name", "needles"), [
    ("drop_attn_k7", ["drop_attn_k7", "only 6 attn modules"]),
    ("drop_joint_k13", ["drop_joint_k13", "only 12"]),
    ("drop_block_k6", ["leaves zero blocks"]),
    ("drop_attn_k2+drop_attn_1", ["'drop_attn_k2'", "'drop_attn_1'", "disjoint"]),
])
def test_bad_kn_plans(name: str, needles: list[str]) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(name, 6, scores=SCORES)
    for needle in needles:
        assert needle in str(info.value)


def test_kn_scores_for_another_depth() -> None:
    with pytest.raises(PlanError, match="'drop_mlp_k1': the scores file covers 6 layers, the model has 8"):
        parse_plan("drop_mlp_k1", 8, scores=SCORES)


@pytest.mark.parametrize(("text", "needle"), [
    (None, "not found"),
    ("{not json", "is not JSON"),
    ('{"format": "other/1"}', "not a painters scores file"),
    ('{"format": "painters.scores/1", "attn": [1]}', "lacks per-layer lists"),
    ('{"format": "painters.scores/1", "attn": ["x"], "mlp": [1], "block": [1]}', "lacks per-layer lists"),
    ('{"format": "painters.scores/1", "attn": [1, 2], "mlp": [1], "block": [1, 2]}', "2/1/2 entries"),
])
def test_bad_scores_file(tmp_path, text: str | None, needle: str) -> None:
    path = tmp_path / "s.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(PlanError, match=needle):
        load_scores(path)


def test_scores_from_another_model(scores_file) -> None:
    with pytest.raises(PlanError, match="computed on another model"):
        load_scores(scores_file, model_hash="fff999")


# ---------------------------------------------------------------------------------------------------------------
# Properties over random names built from the grammar (sometimes invalid).

BAD_TOKENS = st.sampled_from(["", "-1", "01", "x", "1.5", "99999999999", "\u0663", "1" * 5000])


@st.composite
def number(draw, hi: int) -> str:
    """Usually a plausible index or count (0..hi), about one time in ten a malformed or huge token."""
    if draw(st.integers(0, 9)) == 0:
        return draw(BAD_TOKENS)
    return str(draw(st.integers(0, hi)))


@st.composite
def segment_part(draw, a: int, b: int, layers: int) -> str | None:
    """A part that only touches blocks a..b-1 (None: leave them alone), so segments compose."""
    size = b - a
    kinds = ["keep", "skip", "repeat", "reverse", "shuffle", "parallel", "parallelx", "drop"]
    kinds += ["dup"] if size == 1 else ["swap"]
    kind = draw(st.sampled_from(kinds))
    if kind == "keep":
        return None
    if kind in ("skip", "repeat", "reverse", "parallel"):
        return f"{kind}_{a}_{b}"
    if kind == "shuffle":
        return f"shuffle_{a}_{b}_s{draw(st.integers(0, 10**6))}"
    if kind == "parallelx":
        return f"parallel_{a}_{b}_x{draw(st.integers(1, 4))}"
    if kind == "dup":
        return f"dup_{a}_x{draw(st.integers(1, 4))}"
    if kind == "swap":
        return f"swap_{b - 1}_{a}"
    sub = draw(st.sampled_from(["attn", "mlp", "block"]))
    members = draw(st.lists(st.integers(a, b - 1), min_size=1, max_size=size, unique=True))
    items = [str(m) for m in members]
    if size > 1 and draw(st.booleans()):
        items = [f"{a}-{b - 1}"]
    return f"drop_{sub}_{','.join(items)}"


@st.composite
def structured_name(draw, layers: int) -> str:
    """Parts over disjoint segments of 0..L-1: valid except when every block ends up removed."""
    cuts = sorted(draw(st.sets(st.integers(1, layers - 1), max_size=4))) if layers > 1 else []
    bounds = [0, *cuts, layers]
    parts = [draw(segment_part(a, b, layers)) for a, b in zip(bounds, bounds[1:])]
    parts = [p for p in parts if p] or ["baseline"]
    parts = draw(st.permutations(parts))
    return "+".join(parts)


@st.composite
def random_part(draw, layers: int) -> str:
    """Any kind with independently drawn numbers: often out of range, overlapping or malformed."""
    n = lambda: draw(number(layers + 1))  # noqa: E731
    kind = draw(st.sampled_from(["baseline", "skip", "repeat", "reverse", "shuffle", "parallel", "parallelx", "dup",
                                 "swap", "drop", "drop_k", "junk"]))
    if kind == "baseline":
        return "baseline"
    if kind in ("skip", "repeat", "reverse", "parallel", "swap"):
        return f"{kind}_{n()}_{n()}"
    if kind == "shuffle":
        return f"shuffle_{n()}_{n()}_s{n()}"
    if kind == "parallelx":
        return f"parallel_{n()}_{n()}_x{n()}"
    if kind == "dup":
        return f"dup_{n()}_x{n()}"
    sub = draw(st.sampled_from(["attn", "mlp", "block", "joint"]))
    if kind == "drop":
        items = draw(st.lists(st.one_of(st.builds(n), st.builds(lambda: f"{n()}-{n()}")), min_size=1, max_size=3))
        return f"drop_{sub}_" + ",".join(items)
    if kind == "drop_k":
        return f"drop_{sub}_k{n()}"
    return draw(st.text(alphabet="abskip_x0123456789-,+:", max_size=12))


SUFFIX = st.sampled_from(["", "", ":kvmean", ":kvmean", ":kvexact", ":kvbad"])


@st.composite
def plan_name(draw, layers: int) -> str:
    """Half structured (mostly valid) names, half free combinations of random parts (mostly invalid)."""
    if draw(st.booleans()):
        body = draw(structured_name(layers))
    else:
        body = "+".join(draw(st.lists(random_part(layers), min_size=1, max_size=3)))
    return body + draw(SUFFIX)


@st.composite
def maybe_scores(draw, layers: int) -> Scores | None:
    if draw(st.booleans()):
        return None
    size = draw(st.sampled_from([layers, layers, layers + 1]))
    values = st.lists(st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]), min_size=size, max_size=size).map(tuple)
    return Scores(draw(values), draw(values), draw(values))


PROPERTY_SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(data=st.data(), layers=st.integers(1, 12))
def test_random_names_parse_or_plan_error(data, layers: int) -> None:
    """Any name either parses to a consistent, re-parseable plan or fails with PlanError, never anything else."""
    name = data.draw(plan_name(layers), label="name")
    scores = data.draw(maybe_scores(layers), label="scores")
    try:
        plan = parse_plan(name, layers, scores=scores)
    except PlanError as exc:
        assert str(exc)
        return
    again = parse_plan(str(plan), layers, scores=scores)
    assert again.steps == plan.steps and again.kv == plan.kv and str(again) == str(plan)
    assert plan.kv == ("mean" if name.endswith(":kvmean") else "exact")
    stages = plan.stages()
    assert plan.block_evals == sum(len(s.blocks) * s.loops for s in plan.steps) == sum(len(s.blocks) for s in stages)
    slots = [slot for s in stages for slot in s.slots if slot is not None]
    assert sorted(set(slots)) == list(range(plan.kv_slots))  # numbered 0..n-1 in execution order
    assert slots == sorted(slots)
    assert all(0 <= b < layers for s in plan.steps for b in s.blocks)
    assert 0 < plan.depth <= plan.block_evals


@PROPERTY_SETTINGS
@given(data=st.data(), layers=st.integers(1, 12))
def test_disjoint_parts_always_compose(data, layers: int) -> None:
    """Parts over disjoint segments are valid in any order; only removing every block is refused."""
    body = data.draw(structured_name(layers), label="body")
    try:
        exact = parse_plan(body, layers)
    except PlanError as exc:
        assert "leaves zero blocks" in str(exc)
        return
    assert parse_plan("+".join(reversed(body.split("+"))), layers).steps == exact.steps
    mean = parse_plan(body + ":kvmean", layers)
    assert mean.steps == exact.steps and mean.block_evals == exact.block_evals
    saved = sum((len(s.blocks) - 1) * s.loops for s in exact.steps if s.parallel and s.attn)
    assert exact.kv_slots - mean.kv_slots == saved


@PROPERTY_SETTINGS
@given(text=st.text(max_size=30), layers=st.integers(-2, 40))
def test_arbitrary_text_parses_or_plan_error(text: str, layers: int) -> None:
    try:
        parse_plan(text, layers)
    except PlanError:
        pass


@PROPERTY_SETTINGS
@given(data=st.data(), layers=st.integers(2, 16))
def test_reorders_match_a_reference_model(data, layers: int) -> None:
    """Single reorder parts against a direct list model of the issue's definitions."""
    a = data.draw(st.integers(0, layers - 1))
    b = data.draw(st.integers(a + 1, layers))
    kind = data.draw(st.sampled_from(["skip", "repeat", "reverse", "shuffle", "parallel", "swap", "dup"]))
    order = list(range(layers))
    if kind == "skip":
        name, expected = f"skip_{a}_{b}", seq(*order[:a], *order[b:])
    elif kind == "repeat":
        name, expected = f"repeat_{a}_{b}", seq(*order[:a], *[(a + b) // 2] * (b - a), *order[b:])
    elif kind == "reverse":
        name, expected = f"reverse_{a}_{b}", seq(*order[:a], *order[a:b][::-1], *order[b:])
    elif kind == "shuffle":
        s = data.draw(st.integers(0, 2**40))
        name, expected = f"shuffle_{a}_{b}_s{s}", seq(*order[:a], *spec_shuffle(a, b, s), *order[b:])
    elif kind == "parallel":
        r = data.draw(st.integers(1, 4))
        name, expected = f"parallel_{a}_{b}_x{r}", seq(*order[:a]) + par(*order[a:b], loops=r) + seq(*order[b:])
    elif kind == "swap":
        j = data.draw(st.integers(0, layers - 1).filter(lambda j: j != a))
        order[a], order[j] = order[j], order[a]
        name, expected = f"swap_{a}_{j}", seq(*order)
    else:
        k = data.draw(st.integers(1, 4))
        name, expected = f"dup_{a}_x{k}", seq(*order[:a], *[a] * k, *order[a + 1:])
    if not expected:
        with pytest.raises(PlanError, match="leaves zero blocks"):
            parse_plan(name, layers)
        return
    assert parse_plan(name, layers).steps == expected


def test_split_plans_keeps_index_lists():
    from painters.plans import split_plans

    assert split_plans("baseline,drop_attn_4,9-12,skip_1_3, parallel_2_5_x2,drop_mlp_1,3") == [
        "baseline", "drop_attn_4,9-12", "skip_1_3", "parallel_2_5_x2", "drop_mlp_1,3"]
    assert split_plans("") == [] and split_plans("drop_block_0") == ["drop_block_0"]
