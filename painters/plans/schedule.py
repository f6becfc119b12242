"""The plan object: an execution schedule over a model's decoder blocks, shared by every backend.

A plan is a sequence of steps. A step runs one block, or a parallel group of blocks that all read the same
residual stream and whose outputs are averaged, optionally looped (the average is fed back through the
group). ``Plan.stages()`` unrolls loops into the flat list that executors walk; it also assigns KV-cache
slots, so the reference executor, the ONNX rewrite and the engines agree on slot numbering by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from painters.errors import PlanError

__all__ = ["Step", "Stage", "Plan", "KVMode", "MAX_LOOPS", "MAX_LAYERS", "MAX_STEPS", "MAX_BLOCK_EVALS", "MAX_NAME"]

KVMode = Literal["exact", "mean"]

# Upper bound on a step's loops (and dup's K): schedules are unrolled into stages, so an absurd count from a
# typo would hang or exhaust memory instead of failing with a message.
MAX_LOOPS = 1000
# No released decoder has more than a few hundred blocks; 10,000 leaves room and keeps every O(layers) loop
# of the plan code instant. Checked before anything is built from the count.
MAX_LAYERS = 10_000
# Steps of one schedule and block evaluations after unrolling loops: a 20,000-step plan file otherwise compiles
# for minutes. parallel_0_L_x1000 on a 32-block model (32,000 evaluations) stays inside the cap.
MAX_STEPS = 10_000
MAX_BLOCK_EVALS = 100_000
# A plan's name becomes part of file names (M.NAME.onnx); file names are at most 255 bytes.
MAX_NAME = 200


@dataclass(frozen=True)
class Step:
    """One entry of a schedule: a block, or a parallel group of blocks (``parallel=True``)."""

    blocks: tuple[int, ...]
    parallel: bool = False
    loops: int = 1
    attn: bool = True
    mlp: bool = True

    def to_json(self) -> dict:
        return {"blocks": list(self.blocks), "parallel": self.parallel, "loops": self.loops,
                "attn": self.attn, "mlp": self.mlp}


@dataclass(frozen=True)
class Stage:
    """One unrolled step: members read the same input; with several members their outputs are averaged.

    ``slots[k]`` is the KV slot of member k (``None`` when its attention is dropped). Members of one stage
    share a slot exactly when the plan uses ``kv=mean``: they attend over a shared, averaged cache.
    """

    blocks: tuple[int, ...]
    attn: bool
    mlp: bool
    slots: tuple[int | None, ...]

    @property
    def shared_kv(self) -> bool:
        return len(self.blocks) > 1 and self.attn and len(set(self.slots)) == 1


@dataclass(frozen=True)
class Plan:
    """A validated schedule for a model with ``num_layers`` decoder blocks.

    Plans compare (and hash) by schedule, not by name: ``drop_attn_1,2`` and ``drop_attn_1-2`` are one plan.
    """

    name: str = field(compare=False)
    steps: tuple[Step, ...]
    num_layers: int
    kv: KVMode = "exact"
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __str__(self) -> str:
        return self.name

    def stages(self) -> list[Stage]:
        """Unroll loops and number KV slots 0..n-1 in execution order."""
        stages: list[Stage] = []
        next_slot = 0
        for step in self.steps:
            for _ in range(step.loops):
                if not step.attn:
                    slots: tuple[int | None, ...] = (None,) * len(step.blocks)
                elif self.kv == "mean" and step.parallel:
                    slots = (next_slot,) * len(step.blocks)
                    next_slot += 1
                else:
                    slots = tuple(range(next_slot, next_slot + len(step.blocks)))
                    next_slot += len(step.blocks)
                stages.append(Stage(step.blocks, step.attn, step.mlp, slots))
        return stages

    @property
    def kv_slots(self) -> int:
        return len({s for st in self.stages() for s in st.slots if s is not None})

    @property
    def block_evals(self) -> int:
        return sum(len(s.blocks) for s in self.stages())

    @property
    def attn_evals(self) -> int:
        return sum(len(s.blocks) for s in self.stages() if s.attn)

    @property
    def mlp_evals(self) -> int:
        return sum(len(s.blocks) for s in self.stages() if s.mlp)

    @property
    def depth(self) -> int:
        """Stages on the critical path: what a fused parallel group costs in launch-bound decoding."""
        return len(self.stages())

    def slot_blocks(self) -> list[int]:
        """The block whose attention fills each KV slot (the first member for a shared ``kv=mean`` slot)."""
        owners: dict[int, int] = {}
        for stage in self.stages():
            for block, slot in zip(stage.blocks, stage.slots):
                if slot is not None:
                    owners.setdefault(slot, block)
        return [owners[s] for s in range(len(owners))]

    def ideal_cost_ratio(self) -> float:
        """Sublayer evaluations relative to the baseline's 2·L (attention and MLP counted alike)."""
        return (self.attn_evals + self.mlp_evals) / (2 * self.num_layers)

    def to_json(self) -> dict:
        return {"plan": self.name, "num_layers": self.num_layers, "kv": self.kv,
                "steps": [s.to_json() for s in self.steps], "kv_slots": self.kv_slots,
                "block_evals": self.block_evals}

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: dict | str) -> Plan:
        """The plan :meth:`to_json` wrote (a dict, or its JSON text), validated; derived fields are checked.

        Raises :class:`PlanError` naming what is missing or inconsistent.
        """
        try:
            if isinstance(data, str):
                data = json.loads(data)
            steps = tuple(Step(tuple(int(b) for b in s["blocks"]), bool(s["parallel"]), int(s["loops"]),
                               bool(s["attn"]), bool(s["mlp"])) for s in data["steps"])
            plan = cls(str(data["plan"]), steps, int(data["num_layers"]), data.get("kv", "exact"))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise PlanError(f"not a painters schedule ({type(exc).__name__}: {exc}); write it with Plan.to_json") \
                from None
        if plan.kv not in ("exact", "mean"):
            raise PlanError(f"schedule {plan.name!r}: kv must be exact or mean, got {plan.kv!r}")
        plan.validate()
        for key in ("kv_slots", "block_evals"):
            if key in data and data[key] != getattr(plan, key):
                raise PlanError(f"schedule {plan.name!r}: {key} is {data[key]} but its steps give "
                                f"{getattr(plan, key)}")
        return plan

    def validate(self) -> Plan:
        """Check indices, loops and that something runs; return self for chaining."""
        L = self.num_layers
        check_layers(L)
        if not isinstance(self.name, str) or not self.name:
            raise PlanError(f"plan name must be a non-empty string, got {self.name!r}")
        if len(self.name.encode("utf-8", "surrogatepass")) > MAX_NAME:
            raise PlanError(f"plan name {self.name[:40]!r}... is {len(self.name)} characters; at most {MAX_NAME} "
                            "(it becomes part of output file names, capped at 255 bytes)")
        if len(self.steps) > MAX_STEPS:
            raise PlanError(f"plan {self.name!r} has {len(self.steps)} steps; at most {MAX_STEPS}")
        evals = sum(len(step.blocks) * step.loops for step in self.steps
                    if isinstance(step.loops, int) and 0 < step.loops <= MAX_LOOPS)
        if evals > MAX_BLOCK_EVALS:
            raise PlanError(f"plan {self.name!r} runs {evals} block evaluations; at most {MAX_BLOCK_EVALS}")
        if not self.steps:
            raise PlanError(f"plan {self.name!r} leaves zero blocks; keep at least one block of 0..{L - 1}")
        for step in self.steps:
            for b in step.blocks:
                if not 0 <= b < L:
                    raise PlanError(f"plan {self.name!r} uses block {b}; model has {L} (valid 0–{L - 1})")
            if not step.blocks:
                raise PlanError(f"plan {self.name!r}: a step with no blocks; list at least one block index")
            if not 1 <= step.loops <= MAX_LOOPS:
                raise PlanError(f"plan {self.name!r}: loops must be 1..{MAX_LOOPS}, got {step.loops}")
            if len(set(step.blocks)) != len(step.blocks):
                raise PlanError(f"plan {self.name!r}: parallel group {list(step.blocks)} lists a block twice; "
                                "list each member once")
            if not step.attn and not step.mlp:
                raise PlanError(f"plan {self.name!r}: step {step.blocks} drops both attention and MLP; "
                                "drop the block instead (leave it out of the schedule)")
            if len(step.blocks) > 1 and not step.parallel:
                raise PlanError(f"plan {self.name!r}: a sequential step has one block; got {step.blocks}")
        return self


def check_layers(num_layers: object) -> int:
    """``num_layers`` as a checked int: 1..MAX_LAYERS (before any loop over it runs)."""
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= MAX_LAYERS:
        raise PlanError(f"a model needs at least one layer and at most {MAX_LAYERS} (no real decoder has more "
                        f"than a few hundred), got {num_layers!r}")
    return num_layers

