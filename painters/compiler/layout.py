"""The slot layout: which stages of a plan run as wide blocks and which KV slot each stage fills, decided once.

:meth:`Plan.stages` numbers the *plan's* KV slots (one per member attention, one per stage for ``kv=mean``
groups), which is what the reference executor holds. A compiled graph may hold fewer: a fused parallel
stage keeps its members' slots side by side on the head axis, as one slot of k × kv_heads heads (kv=exact)
or its one shared slot (kv=mean). :func:`slot_layout` decides from the plan and the discovered blocks,
before any node is rewritten, which stages fuse (and why the others do not) and numbers the compiled slots
0..n−1 in execution order; the stage-instantiation pass builds exactly that, compile writes it to the
metadata ``painters.slot_layout`` once, and runners and ``painters inspect`` read it back
(:meth:`SlotLayout.from_metadata`).

A parallel stage fuses when it keeps attention and MLP, every member matched a block form
(:attr:`painters.compiler.blocks.Block.block_form`), the members agree in shapes and context
(:meth:`painters.compiler.forms.base.BlockForm.group_dims`), and no member also runs outside stages with the
same members (fused weights replace the members', so fusing it would copy its weights).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from painters.artifact import SLOT_LAYOUT, Record, RecordedLayout, Slot
from painters.compiler.blocks import BlockStructure
from painters.compiler.forms.base import Mismatch
from painters.plans import Plan, Stage

__all__ = ["SlotLayout", "StageLayout", "Slot", "slot_layout", "METADATA_KEY", "MIN_FUSE_OPSET"]

log = logging.getLogger(__name__)

METADATA_KEY = SLOT_LAYOUT
MIN_FUSE_OPSET = 13  # Split with sizes as an input, ReduceMean semantics the wide block relies on


@dataclass(frozen=True)
class StageLayout:
    """One stage of the plan as compiled: fused or cloned, and the compiled slot of each member.

    ``member_slots[m]`` is member m's compiled slot (None where attention is dropped); the members of a
    fused stage, or of a ``kv=mean`` stage, share one. ``reason`` says why a parallel stage is not fused.
    """

    index: int
    stage: Stage
    fused: bool
    member_slots: tuple[int | None, ...]
    reason: str | None = None


@dataclass(frozen=True)
class SlotLayout:
    """The compiled graph's stages and KV slots (see the module docstring)."""

    stages: tuple[StageLayout, ...]
    slots: tuple[Slot, ...]

    @property
    def kv_slots(self) -> int:
        return len(self.slots)

    @property
    def fused_stages(self) -> list[int]:
        return [s.index for s in self.stages if s.fused]

    @property
    def slot_heads(self) -> list[int | None]:
        return [s.heads for s in self.slots]

    @property
    def recorded(self) -> RecordedLayout:
        """What the artifact record keeps of it: the fused stages and every compiled slot."""
        return RecordedLayout(tuple(self.fused_stages), self.slots)

    def to_json(self) -> dict:
        """What the metadata records: the fused stages and, per compiled slot, its stage, plan slots and heads."""
        return self.recorded.to_json()

    @staticmethod
    def from_metadata(meta: dict[str, str]) -> RecordedLayout | None:
        """The recorded layout of a compiled graph, None if absent; refuses malformed ones."""
        return Record.from_props(meta).slot_layout


def _fuse_reason(structure: BlockStructure, stage: Stage, opset: int, int4_block: int | None) -> str | None:
    """Why a parallel stage cannot be one wide block (None: it can, weight sharing aside)."""
    if not (stage.attn and stage.mlp):
        return f"its {'attention' if not stage.attn else 'MLP'} is dropped"
    if opset < MIN_FUSE_OPSET:
        return f"opset {opset} < {MIN_FUSE_OPSET}"
    blocks = [structure.blocks[b] for b in stage.blocks]
    for m, block in enumerate(blocks):
        if block.form is None:
            return f"member {m} (block {block.index}): {block.mismatch}"
    if len({id(b.block_form) for b in blocks}) > 1:
        return "its members match different block forms"
    form = blocks[0].block_form
    reason = form.why_not(stage)
    if reason is not None:
        return reason
    if int4_block is not None and not form.int4_wide:
        return f"{form.name} blocks have no int4 wide form"
    try:
        dims = form.group_dims([b.form for b in blocks])
    except Mismatch as exc:
        return str(exc)
    return form.int4_why_not(dims, int4_block) if int4_block is not None else None


def _drop_weight_sharing(stages: list[Stage], fused: set[int], reasons: dict[int, str]) -> None:
    """Fused weights replace the members' weights only when no other stage still needs those.

    Stages with the same members (the loops of one group) share one set of fused weights, so they are
    kept or dropped together; dropping them can make another group's blocks needed elsewhere: repeat.
    """
    changed = True
    while changed:
        changed = False
        for index in sorted(fused):
            if index not in fused:
                continue
            blocks = stages[index].blocks
            others = {b for j, s in enumerate(stages) if j not in fused or s.blocks != blocks for b in s.blocks}
            shared = sorted(set(blocks) & others)
            if shared:
                for twin in [j for j in fused if stages[j].blocks == blocks]:
                    reasons[twin] = f"block {shared[0]} also runs outside this group; fusing would copy its weights"
                    fused.discard(twin)
                changed = True


def _warn(stages: list[Stage], reasons: dict[int, str]) -> None:
    """One line per run of consecutive stages (the loops of one group) failing for the same reason."""
    runs: list[list[int]] = []
    for index in sorted(reasons):
        last = runs[-1][-1] if runs else None
        if last == index - 1 and stages[last].blocks == stages[index].blocks and reasons[last] == reasons[index]:
            runs[-1].append(index)
        else:
            runs.append([index])
    for run in runs:
        where = f"stage {run[0]}" if len(run) == 1 else f"stages {run[0]}-{run[-1]}"
        blocks = ",".join(map(str, stages[run[0]].blocks))
        log.warning("fuse-parallel: %s (parallel blocks %s) left unfused: %s", where, blocks, reasons[run[0]])


def slot_layout(plan: Plan, structure: BlockStructure, *, fuse_parallel: bool = True, opset: int = 18,
                warn: bool = True, int4_block: int | None = None) -> SlotLayout:
    """Decide which stages fuse and number the compiled KV slots 0..n−1 in execution order.

    Args:
        plan: the validated plan (for ``structure.num_layers`` blocks).
        structure: the discovered blocks, with their matched forms.
        fuse_parallel: fuse parallel groups where they can be (False: every stage is cloned).
        opset: the graph's default-domain opset.
        warn: log one line per group left unfused, with the reason.
        int4_block: the int4 block size when the weights become int4 (None: float); a group then fuses only
            where its form builds an int4 wide block (``BlockForm.int4_why_not``).
    """
    stages = plan.stages()
    reasons: dict[int, str] = {}
    fused: set[int] = set()
    if fuse_parallel:
        for index, stage in enumerate(stages):
            if len(stage.blocks) > 1:
                reason = _fuse_reason(structure, stage, opset, int4_block)
                if reason is None:
                    fused.add(index)
                else:
                    reasons[index] = reason
        _drop_weight_sharing(stages, fused, reasons)
        if warn:
            _warn(stages, reasons)

    out_stages: list[StageLayout] = []
    slots: list[Slot] = []
    for index, stage in enumerate(stages):
        plan_slots = tuple(dict.fromkeys(s for s in stage.slots if s is not None))
        heads = [h if isinstance(h := structure.blocks[b].kv_heads, int) else None for b in stage.blocks]
        if index in fused:
            k = 1 if stage.shared_kv else len(stage.blocks)
            form = structure.blocks[stage.blocks[0]].block_form  # its wide block writes the slot
            slots.append(Slot(index, plan_slots, k * heads[0], form.wide_in_place, form.attention))
            member_slots: tuple[int | None, ...] = (len(slots) - 1,) * len(stage.blocks)
        else:
            compiled: dict[int, int] = {}
            for member, plan_slot in enumerate(stage.slots):
                if plan_slot is not None and plan_slot not in compiled:
                    compiled[plan_slot] = len(slots)
                    block = structure.blocks[stage.blocks[member]]
                    alone = stage.slots.count(plan_slot) == 1  # kv=mean: the members' presents are averaged
                    slots.append(Slot(index, (plan_slot,), heads[member], alone and block.kv_in_place,
                                      block.fused_attention))
            member_slots = tuple(compiled.get(s) if s is not None else None for s in stage.slots)
        out_stages.append(StageLayout(index, stage, index in fused, member_slots, reasons.get(index)))
    return SlotLayout(tuple(out_stages), tuple(slots))
