"""What a graph's recorded slot layout means for running it: heads per slot, in-place decoding, padded rows.

The record itself (keys, parsing, the typed :class:`~painters.artifact.RecordedLayout`) lives in
:mod:`painters.artifact`; this module sits below compiler and runtime alike (it imports only the record and
errors), so a runner can act on what the compiler decided without importing the compiler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from painters.artifact import SLOT_LAYOUT, RecordedLayout
from painters.errors import CompileError
from painters.ort_ops import GQA

__all__ = ["slot_heads", "kv_in_place", "GQA", "pads_rows"]


def slot_heads(layout: RecordedLayout | None, io_heads: Sequence[int | None], where: str = "the graph") -> list[int]:
    """Heads per KV slot, as the compiler laid them out (a fused parallel slot holds k × kv_heads heads).

    ``io_heads`` are the head dims of the past-key inputs (None where symbolic). A compiled graph's recorded
    layout decides and must agree with them wherever both are known; a graph without a layout (an export, a
    foreign graph) is uncompiled, one slot per attention sublayer, and its IO is all there is.
    """
    if layout is None:
        recorded: list[int | None] = list(io_heads)
    else:
        recorded = layout.slot_heads
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


def kv_in_place(layout: RecordedLayout | None) -> bool:
    """Whether every KV slot of a compiled graph may be bound as one buffer for past and present.

    The compiler decides it per slot (``Slot.in_place``: one ``GroupQueryAttention`` writes the slot); a
    runner decodes in place only when all slots allow it, and a graph without a layout never does.
    """
    return bool(layout and layout.slots and all(s.in_place for s in layout.slots))


def pads_rows(layout: RecordedLayout | None, op_types: Callable[[], set[str]]) -> bool:
    """Whether a batch may mix rows of different lengths (padding masked out by ``attention_mask``).

    ``GroupQueryAttention`` may not: it takes a row's filled positions to be the first ``sum(mask)`` ones and
    refuses several rows that continue a cache. A compiled graph's layout says which operator writes each
    slot; a graph without one (an export, the builder's own folder) is asked for its operators (``op_types``).
    """
    if layout is not None:
        return not any(s.attention == GQA for s in layout.slots)
    return GQA not in op_types()
