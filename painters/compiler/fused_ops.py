"""The fused (non-ONNX-domain) operators painters knows, and the check that refuses any other.

Block discovery follows the residual stream through plain dataflow and the rewrite clones block nodes op by op,
so a fused operator is safe only when painters knows what it does to that stream: that it reads a sublayer's
input and writes its output (attention with its KV cache, a quantized MatMul), or — for the residual-add norm
— that it is split before discovery (:mod:`painters.compiler.passes.skip_norms`). An operator outside this
table might hide a residual add, a cache or state across blocks, so :func:`check_fused_ops` refuses it, naming
the op and the block it sits in (or that it sits between blocks).
"""

from __future__ import annotations

import onnx_ir as ir

from painters.compiler.blocks import BlockStructure
from painters.errors import CompileError
from painters.ort_ops import GATHER_BLOCK_QUANTIZED, GQA, MATMUL_NBITS, MHA, MS_DOMAIN, ROTARY, SKIP_NORM

__all__ = ["KNOWN_FUSED_OPS", "unknown_fused_ops", "check_fused_ops"]

# (domain, op_type) → why it is safe to clone inside a block or leave in the shared context
KNOWN_FUSED_OPS: dict[tuple[str, str], str] = {
    (MS_DOMAIN, GQA): "attention with rotary and KV cache; reads the block's own slot",
    (MS_DOMAIN, MHA): "attention with KV cache; reads the block's own slot",
    (MS_DOMAIN, ROTARY): "rotary position embedding of q or k",
    (MS_DOMAIN, SKIP_NORM): "residual add + RMSNorm; split before discovery",
    (MS_DOMAIN, MATMUL_NBITS): "a MatMul with block-quantized weights",
    (MS_DOMAIN, GATHER_BLOCK_QUANTIZED): "an embedding Gather with block-quantized weights",
}


def unknown_fused_ops(model: ir.Model) -> list[ir.Node]:
    """Nodes outside the ONNX domains whose operator painters does not know, in graph order."""
    return [n for n in model.graph
            if n.domain not in ("", "ai.onnx") and (n.domain, n.op_type) not in KNOWN_FUSED_OPS]


def _describe(node: ir.Node) -> str:
    return f"fused operator {node.domain}.{node.op_type} (node {node.name!r})"


def check_fused_ops(model: ir.Model, structure: BlockStructure | None, discovery_error: str | None = None) -> None:
    """Refuse a graph with an unknown fused operator, naming it and its block (or "between blocks").

    ``structure`` is None when discovery itself failed (``discovery_error`` says why); the unknown operator
    is then the likely cause and is named first.
    """
    unknown = unknown_fused_ops(model)
    if not unknown:
        return
    node = unknown[0]
    known = ", ".join(sorted(op for _, op in KNOWN_FUSED_OPS))
    if structure is None:
        raise CompileError(f"{_describe(node)} is unknown to painters and block discovery failed around it "
                           f"({discovery_error}); painters knows {known} — export the model without it")
    owner = {n: b.index for b in structure.blocks for n in (*b.attn_nodes, *b.mlp_nodes)}
    where = f"in block {owner[node]}" if node in owner else "between blocks (outside every decoder block)"
    raise CompileError(f"{_describe(node)} {where} is unknown to painters: it may carry the residual stream or "
                       f"state across blocks; painters knows {known} — export the model without it")
