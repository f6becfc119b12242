"""The block-form plug-in interface: what a form must say about one block and build for a parallel group.

A *form* is one way a decoder block can be written in a graph (the decomposed Llama export, ONNX Runtime GenAI's
``GroupQueryAttention`` block, …). Discovery asks every registered form (:mod:`painters.compiler.forms.registry`)
to :meth:`BlockForm.match` a discovered block; the first typed description that fits is kept with the form that
made it, and layout and instantiation ask that form — never an ``isinstance`` — whether a parallel group fuses
(:meth:`BlockForm.why_not`, :meth:`BlockForm.group_dims`) and how its wide block is built
(:meth:`BlockForm.fused_weights`, :meth:`BlockForm.wide_block`). The shared matcher helpers (``Mismatch``,
``need``, ``const``) live here so no form imports another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnx_ir as ir

from painters.plans import Stage

__all__ = ["Mismatch", "need", "const", "Region", "GroupDims", "WideBuilder", "BlockForm"]


class Mismatch(Exception):
    """A block does not follow a form's template; the message says where (the why-not reason)."""


def need(cond: bool, reason: str) -> None:
    """Raise :class:`Mismatch` with ``reason`` unless ``cond`` holds."""
    if not cond:
        raise Mismatch(reason)


def const(value: ir.Value | None) -> np.ndarray | None:
    """The value's constant (initializer or Constant node) as an array; external data is memory-mapped."""
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    if isinstance(tensor, ir.ExternalTensor) and tensor.size:
        # onnx-ir refuses data files with several hard links, and compiled graphs share the source's data
        # file by hard links; graph_io.external_files has already checked the location, so map it directly.
        return np.memmap(tensor.path, dtype=tensor.dtype.numpy(), mode="r", offset=tensor.offset or 0,
                         shape=tuple(tensor.shape.numpy()))
    return None if tensor is None else tensor.numpy()


class Region(Protocol):
    """What a matcher reads of a discovered block (:class:`painters.compiler.blocks.Block` is one)."""

    index: int
    x_in: ir.Value
    h: ir.Value
    x_out: ir.Value
    past: tuple[ir.Value, ir.Value]
    present: tuple[ir.Value, ir.Value]
    attn_nodes: list[ir.Node]
    mlp_nodes: list[ir.Node]
    shared_nodes: list[ir.Node]


@dataclass(frozen=True)
class GroupDims:
    """The shapes every member of a fused parallel group shares (k members of one form)."""

    k: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    inter: int


class WideBuilder(Protocol):
    """A wide block for one stage: ``build(x, past)`` adds its nodes and returns (output, (key, value))."""

    def build(self, x: ir.Value, past: tuple[ir.Value, ir.Value]) -> tuple[ir.Value, tuple[ir.Value, ir.Value]]:
        """Add the wide block's nodes before the anchor node; return its output and present KV."""


class BlockForm(Protocol):
    """One graph form of a decoder block (see the module docstring).

    ``attention`` names the ``com.microsoft`` operator that writes a fused group's KV slot (None: decomposed
    attention) and ``wide_in_place`` whether that slot may be bound as one buffer for past and present.
    ``int4_wide``: the form also builds wide blocks whose weights quantize to the members' own int4 blocks, with
    ``int4_why_not``, ``int4_fused_weights`` and ``int4_wide_block`` (as ``why_not``, ``fused_weights`` and
    ``wide_block``; see :class:`painters.compiler.forms.llama.LlamaForm`).
    """

    name: str
    attention: str | None
    wide_in_place: bool
    int4_wide: bool

    def match(self, block: Region) -> Any:
        """The block's typed description, or :class:`Mismatch` saying why it is not of this form."""

    def why_not(self, stage: Stage) -> str | None:
        """Why a parallel stage of this form's blocks has no wide form apart from its shapes (None: it may)."""

    def group_dims(self, members: Sequence[Any]) -> GroupDims:
        """The members' shared shapes; :class:`Mismatch` naming the first member that differs."""

    def fused_weights(self, graph: ir.Graph, blocks: tuple[int, ...], members: Sequence[Any],
                      dims: GroupDims) -> dict[str, ir.Value]:
        """The wide block's weights (computed lazily at save time), registered in ``graph``."""

    def wide_block(self, graph: ir.Graph, before: ir.Node, index: int, blocks: tuple[int, ...],
                   members: Sequence[Any], dims: GroupDims, weights: dict[str, ir.Value], shared_kv: bool,
                   opset: int) -> WideBuilder:
        """The builder of one stage's wide block."""
