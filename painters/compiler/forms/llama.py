"""The Llama form: the decomposed export of a Llama-family block (painters' own exporter, optimum's).

Its matcher is :func:`painters.compiler.forms.llama_match.match_llama` and its wide block
:class:`painters.compiler.forms.wide_block.WideBlock`; this module is the one place that names them together.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from painters.compiler.forms.base import GroupDims, Region
from painters.compiler.forms.llama_match import LlamaBlock, match_llama
from painters.compiler.forms.wide_block import WideBlock, fused_weights, group_dims
from painters.compiler.forms.wide_int4 import WideInt4Block, int4_fused_weights, int4_why_not, llama_parts
from painters.plans import Stage

__all__ = ["LlamaForm", "LLAMA"]


class LlamaForm:
    """Decomposed attention (MatMul/Softmax) and a SiLU-gated MLP; any parallel group of them may fuse."""

    name = "llama"
    attention = None  # decomposed: no com.microsoft operator writes a fused slot
    wide_in_place = False
    int4_wide = True  # groups fuse under --weights int4 too (WideInt4Block)

    def match(self, block: Region) -> LlamaBlock:
        """See :func:`~painters.compiler.forms.llama_match.match_llama`."""
        return match_llama(block)

    def why_not(self, stage: Stage) -> str | None:
        """Nothing beyond shapes: kv=exact and kv=mean groups both have a wide form."""
        return None

    def group_dims(self, members: Sequence[LlamaBlock]) -> GroupDims:
        """See :func:`~painters.compiler.forms.wide_block.group_dims`."""
        return group_dims(list(members))

    def fused_weights(self, graph: ir.Graph, blocks: tuple[int, ...], members: Sequence[LlamaBlock],
                      dims: GroupDims) -> dict[str, ir.Value]:
        """See :func:`~painters.compiler.forms.wide_block.fused_weights`."""
        return fused_weights(graph, blocks, list(members), dims)

    def wide_block(self, graph: ir.Graph, before: ir.Node, index: int, blocks: tuple[int, ...],
                   members: Sequence[LlamaBlock], dims: GroupDims, weights: dict[str, ir.Value], shared_kv: bool,
                   opset: int) -> WideBlock:
        """See :class:`~painters.compiler.forms.wide_block.WideBlock`."""
        return WideBlock(graph, before, index, blocks, list(members), dims, weights, shared_kv, opset)

    def int4_why_not(self, dims: GroupDims, block_size: int) -> str | None:
        """See :func:`~painters.compiler.forms.wide_int4.int4_why_not`."""
        return int4_why_not(dims, block_size)

    def int4_fused_weights(self, graph: ir.Graph, blocks: tuple[int, ...], members: Sequence[LlamaBlock],
                           dims: GroupDims) -> dict[str, ir.Value]:
        """See :func:`~painters.compiler.forms.wide_int4.int4_fused_weights`."""
        return int4_fused_weights(graph, blocks, [llama_parts(m) for m in members], dims)

    def int4_wide_block(self, graph: ir.Graph, before: ir.Node, index: int, blocks: tuple[int, ...],
                        members: Sequence[LlamaBlock], dims: GroupDims, weights: dict[str, ir.Value],
                        shared_kv: bool, opset: int) -> WideInt4Block:
        """See :class:`~painters.compiler.forms.wide_int4.WideInt4Block`."""
        return WideInt4Block(graph, before, index, blocks, list(members), dims, weights, shared_kv, opset)


LLAMA = LlamaForm()
