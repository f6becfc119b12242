"""The GroupQueryAttention form: ONNX Runtime GenAI's builder block (one fused attention operator).

Its matcher is :func:`painters.compiler.forms.gqa_match.match_gqa` and its wide blocks
:class:`painters.compiler.forms.wide_gqa.WideGqaBlock` (one wide ``GroupQueryAttention``) and, under
``--weights int4``, :class:`painters.compiler.forms.wide_gqa_int4.WideGqaInt4Block`.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from painters.compiler.forms.base import GroupDims, Region
from painters.compiler.forms.gqa_match import GqaBlock, match_gqa
from painters.compiler.forms.wide_gqa import WideGqaBlock, gqa_fused_weights, gqa_group_dims
from painters.compiler.forms.wide_gqa_int4 import WideGqaInt4Block, gqa_int4_fused_weights
from painters.compiler.forms.wide_int4 import int4_why_not
from painters.ort_ops import GQA
from painters.plans import Stage

__all__ = ["GqaForm", "GQA_FORM"]


class GqaForm:
    """A builder block; a fused group's slot is written by one ``GroupQueryAttention``, so it decodes in place."""

    name = "gqa"
    attention = GQA
    wide_in_place = True
    int4_wide = True  # groups fuse under --weights int4 too (WideGqaInt4Block)

    def match(self, block: Region) -> GqaBlock:
        """See :func:`~painters.compiler.forms.gqa_match.match_gqa`."""
        return match_gqa(block)

    def why_not(self, stage: Stage) -> str | None:
        """kv=mean groups: the operator writes each member's keys itself, so they cannot be averaged."""
        if stage.shared_kv:
            return "kv=mean groups of GroupQueryAttention blocks have no wide form (the operator writes each " \
                   "member's keys)"
        return None

    def group_dims(self, members: Sequence[GqaBlock]) -> GroupDims:
        """See :func:`~painters.compiler.forms.wide_gqa.gqa_group_dims`."""
        return gqa_group_dims(list(members))

    def fused_weights(self, graph: ir.Graph, blocks: tuple[int, ...], members: Sequence[GqaBlock],
                      dims: GroupDims) -> dict[str, ir.Value]:
        """See :func:`~painters.compiler.forms.wide_gqa.gqa_fused_weights`."""
        return gqa_fused_weights(graph, blocks, list(members), dims)

    def wide_block(self, graph: ir.Graph, before: ir.Node, index: int, blocks: tuple[int, ...],
                   members: Sequence[GqaBlock], dims: GroupDims, weights: dict[str, ir.Value], shared_kv: bool,
                   opset: int) -> WideGqaBlock:
        """See :class:`~painters.compiler.forms.wide_gqa.WideGqaBlock`."""
        return WideGqaBlock(graph, before, index, blocks, list(members), dims, weights, shared_kv, opset)

    def int4_why_not(self, dims: GroupDims, block_size: int) -> str | None:
        """See :func:`~painters.compiler.forms.wide_int4.int4_why_not`."""
        return int4_why_not(dims, block_size)

    def int4_fused_weights(self, graph: ir.Graph, blocks: tuple[int, ...], members: Sequence[GqaBlock],
                           dims: GroupDims) -> dict[str, ir.Value]:
        """See :func:`~painters.compiler.forms.wide_gqa_int4.gqa_int4_fused_weights`."""
        return gqa_int4_fused_weights(graph, blocks, list(members), dims)

    def int4_wide_block(self, graph: ir.Graph, before: ir.Node, index: int, blocks: tuple[int, ...],
                        members: Sequence[GqaBlock], dims: GroupDims, weights: dict[str, ir.Value],
                        shared_kv: bool, opset: int) -> WideGqaInt4Block:
        """See :class:`~painters.compiler.forms.wide_gqa_int4.WideGqaInt4Block`."""
        return WideGqaInt4Block(graph, before, index, blocks, list(members), dims, weights, shared_kv, opset)


GQA_FORM = GqaForm()
