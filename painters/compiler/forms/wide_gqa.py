"""The wide block of ONNX Runtime GenAI graphs: a parallel group of k builder blocks with ONE GroupQueryAttention.

The same computation as :mod:`painters.compiler.forms.wide_block` (``out = mean_m(h_m + MLP_m(h_m))``,
``h_m = x + Attn_m(x)``), built from the builder's operators:

1. x is normalized once (``SimplifiedLayerNormalization`` with a gain of ones);
2. one MatMul projects q, k and v of every member, packed as GroupQueryAttention reads them:
   ``[q_1 … q_k | k_1 … k_k | v_1 … v_k]``, each member's columns scaled by its own norm gain g_m;
3. one ``GroupQueryAttention`` with ``num_heads = k·H`` and ``kv_num_heads = k·KV``: member-major heads, so query
   head m·H + j reads kv head m·KV + j // (H / KV) — each member keeps its own grouping — over the stage's one KV
   slot of k·KV heads, with the members' rotary caches, ``seqlens_k`` and total length (they agree);
4. o_proj, the second norm (gain folded into gate and up) and the MLP run as MatMuls batched over a leading member
   axis, ``[k, B, S, ·] @ [k, 1, ·, ·]``; each member's MLP reads its own ``h_m``;
5. ``out = mean over members of (h_m + down_m)``.

The slot is written by one GroupQueryAttention, so it decodes in place like the builder's own slots. Only
``kv=exact`` groups of unquantized blocks fuse (:mod:`painters.compiler.layout` says why others do not).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from painters.compiler.forms.base import GroupDims, const, need
from painters.compiler.forms.gqa_match import GqaBlock
from painters.compiler.forms.wide_block import CHUNK_BYTES, WideBlock, check_weights, register_chunked
from painters.ort_ops import GQA, MS_DOMAIN, NORM

__all__ = ["gqa_group_dims", "gqa_fused_weights", "norm_ones", "WideGqaBlock"]


def gqa_group_dims(members: list[GqaBlock]) -> GroupDims:
    """The group's shared shapes; raises :class:`Mismatch` naming the first member that differs."""
    first = members[0]
    heads, kv = first.attention.get("num_heads"), first.attention.get("kv_num_heads")
    hidden, packed = first.qkv.shape
    need(heads and kv and packed % (heads + 2 * kv) == 0, f"packed q/k/v width {packed} does not split into "
                                                          f"{heads} + 2·{kv} heads")
    D, inter = packed // (heads + 2 * kv), first.gate.shape[1]
    expect = {"qkv": (hidden, packed), "o": (heads * D, hidden), "gate": (hidden, inter), "up": (hidden, inter),
              "down": (inter, hidden)}
    check_weights(members, expect)
    for m, member in enumerate(members):
        need(member.attention == first.attention, f"member {m}: GroupQueryAttention's attributes differ from "
                                                  "member 0's")
        need(member.context == first.context,
             f"member {m}: attention context (sequence lengths, rotary caches) differs from member 0's")
        need(member.norm1 == first.norm1 and member.norm2 == first.norm2,
             f"member {m}: a norm's attributes differ from member 0's")
        for gain in (member.gain1, member.gain2):
            need(const(gain).shape == (hidden,), f"member {m}: a norm gain is not of size {hidden}")
    return GroupDims(k=len(members), heads=heads, kv_heads=kv, head_dim=D, hidden=hidden, inter=inter)


def norm_ones(graph: ir.Graph, prefix: str, hidden: int, dtype: ir.DataType) -> ir.Value:
    """``PREFIX.norm_ones``, the ``[hidden]`` gain of ones a wide block's shared norm takes (registered)."""
    name = f"{prefix}.norm_ones"
    value = ir.Value(name=name, shape=ir.Shape([hidden]), type=ir.TensorType(dtype),
                     const_value=ir.tensor(np.ones(hidden, dtype=dtype.numpy()), name=name))
    graph.register_initializer(value)
    return value


def gqa_fused_weights(graph: ir.Graph, blocks: tuple[int, ...], members: list[GqaBlock],
                      d: GroupDims) -> dict[str, ir.Value]:
    """The wide weights, computed row block by row block when the graph is saved (:func:`register_chunked`)."""
    k, H, I = d.k, d.hidden, d.inter
    heads, kv, D = d.heads, d.kv_heads, d.head_dim
    dtype = members[0].qkv.const_value.dtype
    prefix = "painters.fused.blocks_" + "_".join(map(str, blocks))
    parts = [(0, heads * D), (heads * D, (heads + kv) * D), ((heads + kv) * D, (heads + 2 * kv) * D)]

    def rows_of(w: ir.Value, gain: ir.Value | None, r: int, rows: int, cols=slice(None)) -> np.ndarray:
        block = np.asarray(const(w)[r:r + rows, cols], dtype=np.float32)
        return block if gain is None else np.asarray(const(gain)[r:r + rows], dtype=np.float32)[:, None] * block

    def packed():  # [H, k·(heads + 2·kv)·D]: all members' q, then all k, then all v
        rows = max(1, CHUNK_BYTES // (4 * k * members[0].qkv.shape[1]))
        for r in range(0, H, rows):
            yield np.concatenate([rows_of(m.qkv, m.gain1, r, rows, slice(a, b))
                                  for a, b in parts for m in members], axis=1)

    def stacked(proj: str, gain: str | None):  # [k, 1, in, out]: member matrices one after another
        def chunks():
            for m in members:
                w = getattr(m, proj)
                rows = max(1, CHUNK_BYTES // (4 * w.shape[1]))
                for r in range(0, w.shape[0], rows):
                    yield rows_of(w, getattr(m, gain) if gain else None, r, rows)
        return chunks

    recipes = {
        "qkv_proj": ((H, k * (heads + 2 * kv) * D), packed),
        "o_proj": ((k, 1, heads * D, H), stacked("o", None)),
        "gate_proj": ((k, 1, H, I), stacked("gate", "gain2")),
        "up_proj": ((k, 1, H, I), stacked("up", "gain2")),
        "down_proj": ((k, 1, I, H), stacked("down", None)),
    }
    values = register_chunked(graph, prefix, recipes, dtype)
    values["ones"] = norm_ones(graph, prefix, H, dtype)  # the gains live in the weights; the norms scale by one
    return values


class WideGqaBlock(WideBlock):
    """Builds one fused stage of builder blocks (see the module docstring); same arguments as :class:`WideBlock`."""

    def norm(self, x: ir.Value, norm: dict, name: str) -> ir.Value:  # type: ignore[override]
        """The members' norm with a gain of ones (their gains are folded into the next projection)."""
        return self.op(NORM, [x, self.w["ones"]], name, **norm)

    def build(self, x: ir.Value, past: tuple[ir.Value, ir.Value]) -> tuple[ir.Value, tuple[ir.Value, ir.Value]]:
        """The stage's output (the next residual stream) and its present (key, value), from ``x`` and ``past``."""
        d, m0 = self.dims, self.members[0]
        k, heads, kv, D = d.k, d.heads, d.kv_heads, d.head_dim
        need(not self.shared, "kv=mean groups have no wide GroupQueryAttention form")

        self.meta["painters.sublayer"] = "attn"
        qkv = self.op("MatMul", [self.norm(x, m0.norm1, "attn_norm"), self.w["qkv_proj"]], "qkv_proj")
        attrs = {**m0.attention, "num_heads": k * heads, "kv_num_heads": k * kv}
        attn, present_k, present_v = self.op(GQA, [qkv, None, None, *past, *m0.context],
                                             "attention", 3, domain=MS_DOMAIN, **attrs)
        for out in (present_k, present_v):
            out.type, out.shape = m0.kv_type, ir.Shape([None, k * kv, None, D])
        members = self.op("Reshape", [attn, self.ints([0, 0, k, heads * D], "attn/shape")], "attn/members")
        members = self.op("Transpose", [members], "attn/member_major", perm=[2, 0, 1, 3])  # [k, B, S, heads·D]
        h = self.op("Add", [x, self.op("MatMul", [members, self.w["o_proj"]], "o_proj")], "h")  # [k, B, S, H]

        out = self.mlp_mean(h, m0.norm2)
        out.type, out.shape = x.type, x.shape
        return out, (present_k, present_v)
