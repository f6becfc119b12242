"""The ONNX Runtime GenAI builder's Llama block, as a typed form: what a wide GroupQueryAttention block needs.

After :class:`~painters.compiler.passes.skip_norms.SplitSkipNormsPass` a block of the builder's graph is

* attention: ``SimplifiedLayerNormalization(x, g1)`` → ``MatMul(·, W_qkv)`` (q, k and v packed) →
  ``GroupQueryAttention(qkv, ·, ·, past_k, past_v, seqlens_k, total_length, cos, sin)`` (rotary and cache inside)
  → ``MatMul(·, W_o)`` → ``h = Add(x, ·)``;
* MLP: ``SimplifiedLayerNormalization(h, g2)`` → ``MatMul(W_gate)``, ``MatMul(W_up)`` →
  ``gate · Sigmoid(gate) · up`` → ``MatMul(W_down)`` → ``Add(h, ·)``.

:func:`match_gqa` checks exactly that (every node of the block accounted for) and returns a :class:`GqaBlock`;
a :class:`~painters.compiler.forms.llama_match.Mismatch` says where the block differs. Quantized weights
(``MatMulNBits``) do not match: the wide block folds each member's norm gains into its weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx_ir as ir

from painters.compiler.forms.base import Mismatch, Region, need
from painters.ort_ops import GQA, MATMUL_NBITS, MS_DOMAIN, NORM

__all__ = ["GqaBlock", "match_gqa"]

ATTENTION_CONTEXT = slice(5, 9)  # GroupQueryAttention inputs every member reads alike: seqlens_k, length, cos, sin


@dataclass(frozen=True)
class GqaBlock:
    """A builder block's settings and weights (2-D initializers, ``[in, out]`` as MatMul reads them).

    Everything is taken at match time, as values and plain attributes: instantiation removes the block's nodes
    (which detaches their inputs), and fused weights are computed later still, when the graph is saved.
    """

    attention: dict[str, Any]  # GroupQueryAttention's attributes (num_heads, kv_num_heads, scale, rotary …)
    context: tuple[ir.Value, ...]  # its inputs every member reads alike: seqlens_k, total length, cos, sin
    kv_type: ir.TypeProtocol | None  # of its present outputs
    norm1: dict[str, Any]  # SimplifiedLayerNormalization attributes (axis, epsilon, stash_type)
    norm2: dict[str, Any]
    gain1: ir.Value
    gain2: ir.Value
    qkv: ir.Value
    o: ir.Value
    gate: ir.Value
    up: ir.Value
    down: ir.Value


def _attributes(node: ir.Node) -> dict[str, Any]:
    return {name: attr.value for name, attr in node.attributes.items()}


def _producer(v: ir.Value | None, op: str, nodes: set[ir.Node], domain: str = "") -> ir.Node:
    node = v.producer() if v is not None else None
    found = f"{node.domain + '.' if node.domain else ''}{node.op_type}" if node is not None else "nothing"
    ok = node is not None and node in nodes and node.op_type == op
    need(ok and (node.domain == domain or not domain and node.domain == "ai.onnx"),
         f"expected {op} producing {getattr(v, 'name', None)!r}, found {found}")
    return node


def _weight(node: ir.Node, what: str) -> ir.Value:
    w = node.inputs[1] if len(node.inputs) == 2 else None
    need(w is not None and w.is_initializer() and w.const_value is not None and w.shape is not None
         and len(w.shape) == 2, f"{what} is not a MatMul by a 2-D initializer")
    return w


def _other(node: ir.Node, known: ir.Value) -> ir.Value:
    """The operand of a two-input op that is not ``known``."""
    need(len(node.inputs) == 2 and known in node.inputs, f"{node.op_type} {node.name!r} does not read the stream")
    return node.inputs[1] if node.inputs[0] is known else node.inputs[0]


def _mlp_product(act: ir.Node, nodes: set[ir.Node]) -> tuple[ir.Node, ir.Node]:
    """``act = silu(gate) · up`` (either operand order): the gate and up MatMuls."""
    for silu_in, up_in in (act.inputs, act.inputs[::-1]):
        silu = silu_in.producer() if silu_in is not None else None
        if silu is None or silu not in nodes or silu.op_type != "Mul":
            continue
        a, b = silu.inputs
        for gate_out, sig_out in ((a, b), (b, a)):
            sig = sig_out.producer() if sig_out is not None else None
            if sig is not None and sig in nodes and sig.op_type == "Sigmoid" and sig.inputs[0] is gate_out:
                return _producer(gate_out, "MatMul", nodes), _producer(up_in, "MatMul", nodes)
    raise Mismatch("the MLP is not gate · Sigmoid(gate) · up")


def match_gqa(block: Region) -> GqaBlock:
    """The block as a :class:`GqaBlock`, or :class:`Mismatch` naming the first place it differs."""
    need(not block.shared_nodes, "the block has a norm shared by attention and MLP")
    attn_nodes, mlp_nodes = set(block.attn_nodes), set(block.mlp_nodes)
    need(not any(n.op_type == MATMUL_NBITS for n in (*attn_nodes, *mlp_nodes)),
         "its weights are quantized (MatMulNBits): norm gains cannot be folded into them")
    h_add = _producer(block.h, "Add", attn_nodes)
    o_mm = _producer(_other(h_add, block.x_in), "MatMul", attn_nodes)
    attention = _producer(o_mm.inputs[0], GQA, attn_nodes, MS_DOMAIN)
    need(len(attention.inputs) >= 9 and attention.inputs[1] is None and attention.inputs[2] is None,
         "GroupQueryAttention does not take packed q/k/v and rotary caches")
    need(attention.inputs[3] is block.past[0] and attention.inputs[4] is block.past[1]
         and tuple(attention.outputs[1:3]) == block.present, "GroupQueryAttention is not the block's cache")
    qkv_mm = _producer(attention.inputs[0], "MatMul", attn_nodes)
    norm1 = _producer(qkv_mm.inputs[0], NORM, attn_nodes)
    need(norm1.inputs[0] is block.x_in, "the attention norm does not read the block input")

    out_add = _producer(block.x_out, "Add", mlp_nodes)
    down_mm = _producer(_other(out_add, block.h), "MatMul", mlp_nodes)
    gate_mm, up_mm = _mlp_product(_producer(down_mm.inputs[0], "Mul", mlp_nodes), mlp_nodes)
    norm2 = _producer(gate_mm.inputs[0], NORM, mlp_nodes)
    need(up_mm.inputs[0] is norm2.outputs[0] and norm2.inputs[0] is block.h, "gate and up do not read the MLP norm")
    for norm in (norm1, norm2):
        gain = norm.inputs[1] if len(norm.inputs) > 1 else None
        need(gain is not None and gain.const_value is not None, f"{norm.name!r} has no constant gain")
    need(len(attn_nodes) == 5 and len(mlp_nodes) == 8, "the block has operators beyond the builder's form")
    return GqaBlock(_attributes(attention), tuple(attention.inputs[ATTENTION_CONTEXT]), block.present[0].type,
                    _attributes(norm1), _attributes(norm2), norm1.inputs[1], norm2.inputs[1],
                    _weight(qkv_mm, "qkv_proj"), _weight(o_mm, "o_proj"), _weight(gate_mm, "gate_proj"),
                    _weight(up_mm, "up_proj"), _weight(down_mm, "down_proj"))
