"""The int4 wide block: a parallel group of k Llama blocks fused around weights that stay each member's own blocks.

The float wide block (:mod:`painters.compiler.forms.wide_block`) folds each member's norm gain and the attention
scale into its weights and batches the MLP over a member axis. Neither survives int4: a quantized block cannot
absorb a gain without being quantized again (which would lose the GGUF's exact blocks), and ``MatMulNBits`` takes
one 2-D weight, no member axis. So this form keeps every weight column and every K-block of a member exactly as
the member has it, and fuses only along the axes quantization leaves alone:

1. x is normalized once (RMSNorm without gain); member m's input is ``x̂·g_m`` (one Mul each — the members'
   gains differ, so no single input serves every member's projections);
2. one MatMul per member with ``[Wq_m | Wk_m | Wv_m]`` concatenated along N (one input, so the same columns);
   the members' outputs are concatenated on a member axis and split into q, k and v; q is scaled by the
   members' attention scale; attention is the float wide block's, over k × heads;
3. o_proj per member (member m's ``h_m = x + o_m`` is its own MLP's input);
4. the second norm batched over the member axis, its gains one ``[k, 1, H]`` Mul; one MatMul per member with
   ``[Wgate_m | Wup_m]`` along N; SiLU·up for all members at once, laid member-major along the last axis;
5. ONE down MatMul with the members' down weights stacked along K (``[k·I, H]``): it sums the members, and its
   K-blocks are the members' blocks when I is a multiple of the block size (:func:`int4_why_not`);
   ``out = mean_m(h_m) + (1/k)·Σ_m down_m``.

The weights are written here in float, as 2-D initializers the int4 passes then convert like any other
(:mod:`painters.compiler.passes.quantize`, :mod:`painters.compiler.passes.gguf_weights`): both quantize column by
column and K-block by K-block, so the packed bytes, scales and minima are the members' own, concatenated. The
stacked down weight carries :data:`K_SEGMENTS` in its ``meta`` so the GGUF pass finds each member's rows.

Every projection's input is given its rank (:meth:`WideInt4Block.ranked`): the GGUF pass sums a Q4_1 block's
activations by Reshape + ReduceSum where the rank is known, as it does for the members' own MatMuls, and the
same summation order keeps the activations bit-identical to the unfused graph's up to the down projection —
which matters at ``accuracy_level`` 4, where a last-bit difference can flip an int8 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from painters.compiler.forms.base import GroupDims, const
from painters.compiler.forms.llama_match import LlamaBlock
from painters.compiler.forms.wide_block import CHUNK_BYTES, WideBlock, register_chunked

__all__ = ["K_SEGMENTS", "Int4Parts", "int4_prefix", "llama_parts", "int4_why_not", "int4_fused_weights",
           "WideInt4Block"]

K_SEGMENTS = "painters.k_segments"  # Value.meta key: a weight stacked along K from this many equal member parts


def int4_why_not(dims: GroupDims, block_size: int) -> str | None:
    """Why a group of these shapes has no int4 wide form at ``block_size`` (None: it has)."""
    if dims.inter % block_size:
        return (f"intermediate size {dims.inter} is not a multiple of the int4 block size {block_size}: the "
                "stacked down projection's blocks would straddle members (try --block-size 32)")
    return None


@dataclass(frozen=True)
class Int4Parts:
    """One member's weights, whatever its form.

    The q/k/v columns (one packed weight or three), the other projections and the two norm gains.
    """

    qkv: list[ir.Value]
    o: ir.Value
    gate: ir.Value
    up: ir.Value
    down: ir.Value
    gain1: ir.Value
    gain2: ir.Value


def int4_prefix(blocks: tuple[int, ...]) -> str:
    """The name prefix of an int4 wide block's initializers."""
    return "painters.fused_int4.blocks_" + "_".join(map(str, blocks))


def llama_parts(member: LlamaBlock) -> Int4Parts:
    """A decomposed Llama block's weights as the int4 wide block reads them."""
    return Int4Parts([member.q, member.k, member.v], member.o, member.gate, member.up, member.down,
                     member.norm1.gain, member.norm2.gain)


def int4_fused_weights(graph: ir.Graph, blocks: tuple[int, ...], members: list[Int4Parts],
                       d: GroupDims) -> dict[str, ir.Value]:
    """The members' raw weights concatenated (no gain or scale folded in), as float initializers to quantize.

    Returns ``qkv_M`` and ``gate_up_M`` per member m, ``o_M`` (the member's own o_proj value), ``down``
    (stacked along K, tagged with :data:`K_SEGMENTS`) and the norm gains ``gain1_M`` ([H]) and ``gain2`` ([k, 1, H]).
    """
    k, H, I = d.k, d.hidden, d.inter
    dtype = members[0].o.const_value.dtype
    prefix = int4_prefix(blocks)

    def side_by_side(ws: list[ir.Value]):  # [H, Σn]: the weights' columns one after another
        def chunks():
            rows = max(1, CHUNK_BYTES // (4 * sum(w.shape[1] for w in ws)))
            for r in range(0, H, rows):
                yield np.concatenate([np.asarray(const(w)[r:r + rows]) for w in ws], axis=1)
        return chunks

    def stacked():  # [k·I, H]: member down matrices one after another along K
        for m in members:
            rows = max(1, CHUNK_BYTES // (4 * H))
            for r in range(0, I, rows):
                yield np.asarray(const(m.down)[r:r + rows])

    recipes = {}
    for i, m in enumerate(members):
        recipes[f"qkv_{i}"] = ((H, sum(w.shape[1] for w in m.qkv)), side_by_side(m.qkv))
        recipes[f"gate_up_{i}"] = ((H, 2 * I), side_by_side([m.gate, m.up]))
    recipes["down"] = ((k * I, H), stacked)
    values = register_chunked(graph, prefix, recipes, dtype)
    values["down"].meta[K_SEGMENTS] = k
    gains = {f"gain1_{i}": np.asarray(const(m.gain1)) for i, m in enumerate(members)}
    gains["gain2"] = np.stack([np.asarray(const(m.gain2)) for m in members])[:, None, :]
    for name, array in gains.items():
        full = f"{prefix}.{name}"
        values[name] = ir.Value(name=full, shape=ir.Shape(array.shape), type=ir.TensorType(dtype),
                                const_value=ir.tensor(array.astype(dtype.numpy()), name=full))
        graph.register_initializer(values[name])
    for i, m in enumerate(members):
        values[f"o_{i}"] = m.o
    return values


class WideInt4Block(WideBlock):
    """Builds one fused stage whose weights quantize to the members' own blocks (see the module docstring)."""

    def stream_type(self) -> ir.TypeProtocol:
        """The residual stream's type: the members' input's."""
        return self.members[0].x.type

    def ranked(self, value: ir.Value, rank: int) -> ir.Value:
        """``value`` with a shape of ``rank`` unknown dims and the stream's type, where it had none."""
        if value.shape is None:
            value.shape, value.type = ir.Shape([None] * rank), self.stream_type()
        return value

    def qkv(self, x: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
        """The q (scaled), k and v of every member, ``[B, S, k, n·D]``: member-major heads after a reshape."""
        d, m0 = self.dims, self.members[0]
        k, nh, nkv, D = d.k, d.heads, d.kv_heads, d.head_dim
        normed = self.norm(x, m0.norm1, "attn_norm")
        per = [self.op("MatMul", [self.ranked(self.op("Mul", [normed, self.w[f"gain1_{i}"]], f"m{i}/attn_gain"), 3),
                                  self.w[f"qkv_{i}"]], f"m{i}/qkv_proj") for i in range(k)]
        packed = self.op("Reshape", [self.op("Concat", per, "qkv", axis=-1),
                                     self.ints([0, 0, k, (nh + 2 * nkv) * D], "qkv/shape")], "qkv/members")
        q, key, value = self.op("Split", [packed, self.ints([nh * D, nkv * D, nkv * D], "qkv/sizes")],
                                "qkv/split", 3, axis=-1)
        scale = ir.tensor(np.array(m0.scale, dtype=m0.q.const_value.dtype.numpy()))
        return self.op("Mul", [q, self.op("Constant", [], "q/scale", value=scale)], "q/scaled"), key, value

    def o_proj(self, ctx: ir.Value, x_rows: ir.Value) -> ir.Value:
        """``h [k, B·S, H]``: each member's context through its own o_proj, plus the stream."""
        k = self.dims.k
        parts = self.op("Split", [ctx, self.ints([1] * k, "context/sizes")], "context/split", k, axis=0)
        outs = [self.op("MatMul", [self.ranked(p, 3), self.w[f"o_{i}"]], f"m{i}/o_proj") for i, p in enumerate(parts)]
        return self.op("Add", [x_rows, self.op("Concat", outs, "o_proj", axis=0)], "h")

    def mlp_mean(self, h: ir.Value, norm) -> ir.Value:
        """``mean_m(h_m) + (1/k)·Σ_m down_m``: one down MatMul over the members' K-stacked weights."""
        d = self.dims
        k, I = d.k, d.inter
        self.meta["painters.sublayer"] = "mlp"
        gained = self.op("Mul", [self.norm(h, norm, "mlp_norm"), self.w["gain2"]], "mlp_gain")
        parts = self.op("Split", [gained, self.ints([1] * k, "mlp/sizes")], "mlp/split", k, axis=0)
        per = [self.op("MatMul", [self.ranked(p, 3), self.w[f"gate_up_{i}"]], f"m{i}/gate_up_proj")
               for i, p in enumerate(parts)]
        packed = self.op("Reshape", [self.op("Concat", per, "gate_up", axis=-1),
                                     self.ints([-1, k, 2, I], "gate_up/shape")], "gate_up/members")
        gate, up = self.op("Split", [packed, self.ints([1, 1], "gate_up/sizes")], "gate_up/split", 2, axis=2)
        silu = self.op("Mul", [gate, self.op("Sigmoid", [gate], "sigmoid")], "silu")
        act = self.op("Reshape", [self.op("Mul", [silu, up], "act"), self.ints([-1, k * I], "act/shape")],
                      "act/members")  # [B·S, k·I], member-major: the K order of the stacked down weight
        down = self.op("MatMul", [self.ranked(act, 2), self.w["down"]], "down_proj")
        inv = ir.tensor(np.array(1.0 / k, dtype=self.members[0].down.const_value.dtype.numpy()))
        down = self.op("Mul", [down, self.op("Constant", [], "down/inv_k", value=inv)], "down/mean")
        return self.op("Add", [self.reduce_mean(h, [0], "h/mean", 0), down], "mean")
