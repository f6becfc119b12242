"""The ``painters.*`` metadata a graph carries, and its readers: what the compiler wrote once, read back.

The compiler records a compiled graph's plan (``painters.schedule``) and its KV-slot layout
(``painters.slot_layout``: per compiled slot, the stage that fills it, the plan slots it holds and its head
count) when it writes the graph; runners, the bench and ``painters inspect`` read them here. The module sits
below compiler and runtime alike (it imports only plans and errors), so a runner can read what the compiler
decided without importing the compiler.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

from painters.errors import CompileError, PaintersError
from painters.plans import Plan

__all__ = ["PLAN", "SCHEDULE", "SLOT_LAYOUT", "SOURCE_HASH", "painters_metadata", "read_schedule",
           "read_slot_layout", "slot_heads", "kv_in_place", "GQA", "pads_rows"]

PLAN = "painters.plan"
SCHEDULE = "painters.schedule"
SLOT_LAYOUT = "painters.slot_layout"
SOURCE_HASH = "painters.source_hash"


def painters_metadata(props: Mapping[str, str]) -> dict[str, str]:
    """The ``painters.*`` entries of a graph's metadata (ONNX metadata_props, ORT custom metadata, a sidecar)."""
    return {k: v for k, v in props.items() if k.startswith("painters.")}


def _json(meta: Mapping[str, str], key: str):
    try:
        return json.loads(meta[key])
    except ValueError as exc:
        raise CompileError(f"metadata {key} is not valid JSON ({exc}); the graph was edited or written by another "
                           "tool — recompile it with `painters compile`") from None


def read_schedule(meta: Mapping[str, str]) -> Plan | None:
    """The plan a compiled graph runs (None for an uncompiled export); refuses a malformed record."""
    if SCHEDULE not in meta:
        return None
    try:
        return Plan.from_json(_json(meta, SCHEDULE))
    except CompileError:
        raise
    except PaintersError as exc:
        raise CompileError(f"metadata {SCHEDULE} is malformed: {exc}") from None


def read_slot_layout(meta: Mapping[str, str]) -> dict | None:
    """The recorded slot layout (``SlotLayout.to_json``'s form), None if absent; refuses malformed ones."""
    text = meta.get(SLOT_LAYOUT)
    if text is None:
        return None
    try:
        data = json.loads(text)
        fused = [int(i) for i in data["fused_stages"]]
        slots = [{"stage": int(s["stage"]), "plan_slots": [int(p) for p in s["plan_slots"]],
                  "heads": None if s["heads"] is None else int(s["heads"]),
                  "in_place": bool(s.get("in_place", False)), "attention": s.get("attention")}
                 for s in data["slots"]]
    except (ValueError, TypeError, KeyError) as exc:
        raise CompileError(f"metadata {SLOT_LAYOUT} is malformed ({type(exc).__name__}: {exc}); the graph was "
                           "edited or written by another tool — recompile it with `painters compile`") from None
    return {"fused_stages": fused, "slots": slots}


def slot_heads(meta: Mapping[str, str], io_heads: Sequence[int | None], where: str = "the graph") -> list[int]:
    """Heads per KV slot, as the compiler laid them out (a fused parallel slot holds k × kv_heads heads).

    ``io_heads`` are the head dims of the past-key inputs (None where symbolic). A compiled graph's recorded
    layout decides and must agree with them wherever both are known; a graph without a layout (an export, a
    foreign graph) is uncompiled, one slot per attention sublayer, and its IO is all there is.
    """
    layout = read_slot_layout(meta)
    if layout is None:
        recorded: list[int | None] = list(io_heads)
    else:
        recorded = [s["heads"] for s in layout["slots"]]
        if len(recorded) != len(io_heads):
            raise CompileError(f"metadata {SLOT_LAYOUT} of {where} lists {len(recorded)} KV slots but it has "
                               f"{len(io_heads)}; recompile it with `painters compile`")
    heads = []
    for slot, (want, have) in enumerate(zip(recorded, io_heads)):
        if want is not None and have is not None and want != have:
            raise CompileError(f"metadata {SLOT_LAYOUT} of {where} gives KV slot {slot} {want} heads but its input "
                               f"has {have}; the graph was edited after compiling — recompile it")
        if want is None and have is None:
            raise CompileError(f"KV slot {slot} of {where} has a symbolic head count; re-export the model with "
                               "static kv heads")
        heads.append(want if want is not None else have)
    return heads


def kv_in_place(meta: Mapping[str, str]) -> bool:
    """Whether every KV slot of a compiled graph may be bound as one buffer for past and present.

    The compiler decides it per slot (``Slot.in_place``: one ``GroupQueryAttention`` writes the slot); a
    runner decodes in place only when all slots allow it, and a graph without a layout never does.
    """
    layout = read_slot_layout(meta)
    return bool(layout and layout["slots"] and all(s["in_place"] for s in layout["slots"]))


GQA = "GroupQueryAttention"


def pads_rows(meta: Mapping[str, str], op_types: Callable[[], set[str]]) -> bool:
    """Whether a batch may mix rows of different lengths (padding masked out by ``attention_mask``).

    ``GroupQueryAttention`` may not: it takes a row's filled positions to be the first ``sum(mask)`` ones and
    refuses several rows that continue a cache. A compiled graph's layout says which operator writes each
    slot; a graph without one (an export, the builder's own folder) is asked for its operators (``op_types``).
    """
    layout = read_slot_layout(meta)
    if layout is not None:
        return not any(s["attention"] == GQA for s in layout["slots"])
    return GQA not in op_types()
