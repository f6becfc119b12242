"""The int4 wide block of builder graphs: one GroupQueryAttention, the members' own int4 blocks around it.

A parallel group of k ONNX Runtime GenAI builder blocks, fused for ``--weights int4``.

The int4 wide block of the decomposed form (:mod:`painters.compiler.forms.wide_int4`) around the builder's
attention operator (:mod:`painters.compiler.forms.wide_gqa`): nothing is folded into a weight, so the int4 passes
convert every member column and K-block exactly as the unfused graph's (a GGUF's own blocks stay bit for bit).

1. x is normalized once (``SimplifiedLayerNormalization`` with a gain of ones); member m's input is ``x̂·g_m``;
2. one MatMul per member with its packed ``[q | k | v]`` weight; the members' outputs are split into q, k and v,
   each laid member-major (``[B, S, k·n·D]``) and passed to one ``GroupQueryAttention`` as separate q, k and v
   with ``num_heads = k·H`` and ``kv_num_heads = k·KV`` (member m's query heads read member m's kv heads, as in
   the float wide block), over the stage's one KV slot, decoded in place;
3. o_proj per member, the second norm, gate|up per member and ONE down MatMul over the members' K-stacked
   weights, as the decomposed int4 wide block does (:class:`~painters.compiler.forms.wide_int4.WideInt4Block`).
"""

from __future__ import annotations

import onnx_ir as ir

from painters.compiler.forms.base import GroupDims, need
from painters.compiler.forms.gqa_match import GqaBlock
from painters.compiler.forms.wide_gqa import norm_ones
from painters.compiler.forms.wide_int4 import Int4Parts, WideInt4Block, int4_fused_weights, int4_prefix
from painters.ort_ops import GQA, MS_DOMAIN, NORM

__all__ = ["gqa_parts", "gqa_int4_fused_weights", "WideGqaInt4Block"]


def gqa_parts(member: GqaBlock) -> Int4Parts:
    """A builder block's weights as the int4 wide block reads them (q, k and v are one packed weight)."""
    return Int4Parts([member.qkv], member.o, member.gate, member.up, member.down, member.gain1, member.gain2)


def gqa_int4_fused_weights(graph: ir.Graph, blocks: tuple[int, ...], members: list[GqaBlock],
                           d: GroupDims) -> dict[str, ir.Value]:
    """:func:`~painters.compiler.forms.wide_int4.int4_fused_weights`, plus the gain of ones the shared norm takes."""
    values = int4_fused_weights(graph, blocks, [gqa_parts(m) for m in members], d)
    values["ones"] = norm_ones(graph, int4_prefix(blocks), d.hidden, members[0].o.const_value.dtype)
    return values


class WideGqaInt4Block(WideInt4Block):
    """Builds one fused stage of int4 builder blocks (see the module docstring)."""

    def norm(self, x: ir.Value, norm: dict, name: str) -> ir.Value:  # type: ignore[override]
        """The members' norm with a gain of ones (each member's gain is one Mul after it)."""
        return self.op(NORM, [x, self.w["ones"]], name, **norm)

    def stream_type(self) -> ir.TypeProtocol:
        """A matched builder block keeps no input value; its stream has its weights' float type."""
        return ir.TensorType(self.members[0].o.const_value.dtype)

    def build(self, x: ir.Value, past: tuple[ir.Value, ir.Value]) -> tuple[ir.Value, tuple[ir.Value, ir.Value]]:
        """The stage's output (the next residual stream) and its present (key, value), from ``x`` and ``past``."""
        d, m0 = self.dims, self.members[0]
        k, nh, nkv, D = d.k, d.heads, d.kv_heads, d.head_dim
        need(not self.shared, "kv=mean groups have no wide GroupQueryAttention form")

        self.meta["painters.sublayer"] = "attn"
        normed = self.norm(x, m0.norm1, "attn_norm")
        per = [self.op("MatMul", [self.ranked(self.op("Mul", [normed, self.w[f"gain1_{i}"]], f"m{i}/attn_gain"), 3),
                                  self.w[f"qkv_{i}"]], f"m{i}/qkv_proj") for i in range(k)]
        packed = self.op("Reshape", [self.op("Concat", per, "qkv", axis=-1),
                                     self.ints([0, 0, k, (nh + 2 * nkv) * D], "qkv/shape")], "qkv/members")
        parts = self.op("Split", [packed, self.ints([nh * D, nkv * D, nkv * D], "qkv/sizes")], "qkv/split", 3,
                        axis=-1)
        flat = self.ints([0, 0, -1], "qkv/flat")  # [B, S, k, n·D] → [B, S, k·n·D]: member-major heads
        q, key, value = (self.op("Reshape", [t, flat], f"{n}/heads") for t, n in zip(parts, "qkv"))
        attrs = {**m0.attention, "num_heads": k * nh, "kv_num_heads": k * nkv}
        attn, present_k, present_v = self.op(GQA, [q, key, value, *past, *m0.context], "attention", 3,
                                             domain=MS_DOMAIN, **attrs)
        for out in (present_k, present_v):
            out.type, out.shape = m0.kv_type, ir.Shape([None, k * nkv, None, D])

        ctx = self.op("Reshape", [attn, self.ints([0, 0, k, nh * D], "attn/shape")], "attn/members")
        ctx = self.op("Transpose", [ctx], "attn/member_major", perm=[2, 0, 1, 3])  # [k, B, S, nh·D]
        ctx = self.op("Reshape", [ctx, self.ints([k, -1, nh * D], "context/rows_shape")], "context/rows")
        return self.from_context(ctx, x), (present_k, present_v)
