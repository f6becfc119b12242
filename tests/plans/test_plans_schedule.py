"""Plan → stages: loop unrolling, KV slot numbering in both KV modes, counts, JSON, validation, import hygiene.

Slot numbering is the contract between the reference executor, the ONNX rewrite and the engines, so it is
pinned here slot by slot rather than only by totals.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from painters.errors import PlanError
from painters.plans import Plan, Stage, Step, parse_plan
from painters.plans.schedule import MAX_LOOPS


def test_baseline_stages() -> None:
    plan = parse_plan("baseline", 3)
    assert plan.stages() == [Stage((0,), True, True, (0,)), Stage((1,), True, True, (1,)),
                             Stage((2,), True, True, (2,))]
    assert (plan.block_evals, plan.attn_evals, plan.mlp_evals, plan.kv_slots, plan.depth) == (3, 3, 3, 3, 3)
    assert plan.ideal_cost_ratio() == 1.0
    assert plan.slot_blocks() == [0, 1, 2]


def test_looped_parallel_exact() -> None:
    """kv=exact: every member of every iteration has its own slot, numbered in execution order."""
    plan = parse_plan("parallel_2_5_x2", 6)
    g = (2, 3, 4)
    assert plan.stages() == [
        Stage((0,), True, True, (0,)), Stage((1,), True, True, (1,)),
        Stage(g, True, True, (2, 3, 4)), Stage(g, True, True, (5, 6, 7)),
        Stage((5,), True, True, (8,)),
    ]
    assert plan.kv_slots == 9 and plan.block_evals == 9 and plan.depth == 5
    assert plan.slot_blocks() == [0, 1, 2, 3, 4, 2, 3, 4, 5]
    assert not any(s.shared_kv for s in plan.stages())
    assert plan.ideal_cost_ratio() == pytest.approx(18 / 12)


def test_looped_parallel_mean() -> None:
    """kv=mean: a group shares one averaged slot per iteration, saving members−1 slots per iteration."""
    plan = parse_plan("parallel_2_5_x2:kvmean", 6)
    g = (2, 3, 4)
    assert plan.stages() == [
        Stage((0,), True, True, (0,)), Stage((1,), True, True, (1,)),
        Stage(g, True, True, (2, 2, 2)), Stage(g, True, True, (3, 3, 3)),
        Stage((5,), True, True, (4,)),
    ]
    assert plan.kv_slots == 5 and plan.block_evals == 9 and plan.depth == 5
    assert plan.slot_blocks() == [0, 1, 2, 2, 5]
    assert [s.shared_kv for s in plan.stages()] == [False, False, True, True, False]
    exact = parse_plan("parallel_2_5_x2", 6)
    assert exact.kv_slots - plan.kv_slots == (3 - 1) * 2


def test_dropped_attention_has_no_slot() -> None:
    plan = parse_plan("drop_attn_1+drop_mlp_2", 4)
    assert [s.slots for s in plan.stages()] == [(0,), (None,), (1,), (2,)]
    assert (plan.block_evals, plan.attn_evals, plan.mlp_evals, plan.kv_slots) == (4, 3, 3, 3)
    assert plan.ideal_cost_ratio() == 0.75
    assert plan.slot_blocks() == [0, 2, 3]


def test_parallel_group_without_attention_in_both_modes() -> None:
    """A group that drops attention holds no slot, shared or not."""
    for kv in ("exact", "mean"):
        plan = Plan("p", (Step((0,)), Step((1, 2), parallel=True, loops=2, attn=False), Step((3,))), 4, kv).validate()
        assert [s.slots for s in plan.stages()] == [(0,), (None, None), (None, None), (1,)]
        assert plan.kv_slots == 2 and plan.attn_evals == 2 and plan.mlp_evals == 6
        assert not any(s.shared_kv for s in plan.stages())


def test_kvmean_leaves_sequential_steps_alone() -> None:
    assert parse_plan("reverse_0_4:kvmean", 4).stages() == parse_plan("reverse_0_4", 4).stages()
    assert parse_plan("dup_1_x3:kvmean", 4).kv_slots == 6


@pytest.mark.parametrize(("name", "layers", "evals", "exact_slots", "mean_slots", "depth"), [
    ("parallel_4_28", 32, 32, 32, 9, 9),
    ("parallel_4_29_x3", 32, 4 + 75 + 3, 82, 10, 10),
    ("skip_15_18", 32, 29, 29, 29, 29),
    ("dup_12_x2", 32, 33, 33, 33, 33),
    ("repeat_4_28", 32, 32, 32, 32, 32),
    ("parallel_8_20+drop_attn_24-27", 32, 32, 28, 17, 21),
    ("drop_block_3,7+parallel_10_12_x2", 32, 32, 32, 30, 30),
])
def test_counts(name: str, layers: int, evals: int, exact_slots: int, mean_slots: int, depth: int) -> None:
    exact = parse_plan(name, layers)
    mean = parse_plan(name + ":kvmean", layers)
    assert exact.block_evals == mean.block_evals == evals
    assert (exact.kv_slots, mean.kv_slots) == (exact_slots, mean_slots)
    assert exact.depth == mean.depth == depth
    assert exact.kv_slots == len(exact.slot_blocks()) and mean.kv_slots == len(mean.slot_blocks())


def test_to_json() -> None:
    plan = parse_plan("parallel_1_3_x2+drop_mlp_0:kvmean", 4)
    data = plan.to_json()
    assert data == {
        "plan": "parallel_1_3_x2+drop_mlp_0:kvmean", "num_layers": 4, "kv": "mean",
        "steps": [{"blocks": [0], "parallel": False, "loops": 1, "attn": True, "mlp": False},
                  {"blocks": [1, 2], "parallel": True, "loops": 2, "attn": True, "mlp": True},
                  {"blocks": [3], "parallel": False, "loops": 1, "attn": True, "mlp": True}],
        "kv_slots": 4, "block_evals": 6,
    }
    assert json.loads(plan.to_json_text()) == data


def test_json_rebuilds_the_same_plan() -> None:
    """Compiled graphs store to_json(); rebuilding a Plan from it must give the same schedule and counts."""
    plan = parse_plan("swap_0_5+parallel_1_4_x3+drop_attn_4:kvmean", 6)
    data = json.loads(plan.to_json_text())
    steps = tuple(Step(tuple(s["blocks"]), s["parallel"], s["loops"], s["attn"], s["mlp"]) for s in data["steps"])
    rebuilt = Plan(data["plan"], steps, data["num_layers"], data["kv"]).validate()
    assert rebuilt == plan and rebuilt.stages() == plan.stages()


def test_plans_are_values() -> None:
    """Equal schedules compare and hash equal (meta is ignored), so plans can key caches."""
    a, b = parse_plan("skip_1_2", 4), parse_plan("skip_1_2", 4)
    assert a == b and hash(a) == hash(b)
    assert a != parse_plan("skip_1_2:kvmean", 4)
    assert Plan("x", a.steps, 4, meta={"k": 1}) == Plan("x", a.steps, 4)


@pytest.mark.parametrize(("steps", "needle"), [
    ((), "leaves zero blocks"),
    ((Step((4,)),), "uses block 4; model has 4 (valid 0–3)"),
    ((Step((-1,)),), "uses block -1"),
    ((Step(()),), "a step with no blocks"),
    ((Step((0, 1), parallel=True, loops=0),), "loops must be 1..1000, got 0"),
    ((Step((0, 1), parallel=True, loops=MAX_LOOPS + 1),), "loops must be 1..1000"),
    ((Step((0,), attn=False, mlp=False),), "drops both attention and MLP"),
    ((Step((0, 1)),), "a sequential step has one block"),
    ((Step((1, 1), parallel=True),), "lists a block twice"),
])
def test_validate(steps: tuple[Step, ...], needle: str) -> None:
    with pytest.raises(PlanError) as info:
        Plan("custom", steps, 4).validate()
    assert needle in str(info.value) and "'custom'" in str(info.value)


def test_plans_package_imports_no_torch_or_onnx() -> None:
    """The plan language is pure data: importing it (and parsing) must not pull in a deep-learning stack."""
    code = ("import sys, painters.plans as p; p.parse_plan('parallel_4_28:kvmean', 32).stages(); "
            "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'onnx_ir', 'transformers', 'numpy') "
            "if m in sys.modules]; assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
