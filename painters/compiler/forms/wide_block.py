"""The wide block: a parallel group of k Llama blocks built as one block k times as wide.

A parallel stage of k blocks computes ``out = mean_m(h_m + MLP_m(h_m))`` with ``h_m = x + Attn_m(x)``. The
wide block computes the same with one set of wide operators:

1. x is normalized once (RMSNorm without gain);
2. three MatMuls project q, k and v of every member: ``[diag(g_m)·Wq_m·s …]``, ``[diag(g_m)·Wk_m …]``,
   ``[diag(g_m)·Wv_m …]`` (each member's norm gain g_m and the attention scale s folded into the weights);
3. attention over k × heads, member-major, each member keeping its GQA grouping (query head j of member m
   reads kv head m·kv_heads + j // rep); the repeat is a broadcast over a 5-D MatMul, nothing is copied;
4. o_proj, the second norm (gain folded into gate and up), gate, up and down run as batched MatMuls over a
   member axis, e.g. ``[k, B·S, H] @ [k, H, I]``; each member's MLP reads its own ``h_m``;
5. ``out = mean over members of (h_m + down_m)``.

KV cache: ``kv=exact`` → one slot with k × kv_heads heads per stage; ``kv=mean`` → one slot of kv_heads heads
holding ``past ++ mean_m(new_m)``, while member m attends over ``[past, new_m]``. Which stages fuse and which
slot each one fills is decided before any node is built (:mod:`painters.compiler.layout`); this module only
checks the members agree (:func:`group_dims`) and builds (:class:`WideBlock`).

The fused weights are new initializers (:class:`painters.compiler.graph_io.ChunkedTensor`: computed and written
row block by row block when the graph is saved, so a 7B group never sits in memory) that replace the members'
weights, which then fall out of the graph.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from painters.compiler.forms.base import GroupDims, const, need
from painters.compiler.forms.llama_match import LlamaBlock, Norm
from painters.compiler.graph_io import ChunkedTensor
from painters.decoder_io import KINDS

__all__ = ["group_dims", "check_weights", "fused_weights", "register_chunked", "WideBlock", "CHUNK_BYTES"]


def group_dims(members: list[LlamaBlock]) -> GroupDims:
    """The shared shapes of the group; every member must have them, and read the same context.

    Raises :class:`~painters.compiler.forms.llama_match.Mismatch` naming the first member that differs.
    """
    first = members[0]
    past = first.past[0]
    kv_heads, D = past.shape[1], past.shape[3]
    H, qd = first.q.shape
    I = first.gate.shape[1]
    need(qd % D == 0 and D % 2 == 0, f"q_proj width {qd} is not a multiple of the head dim {D}")
    heads = qd // D
    need(heads % kv_heads == 0, f"{heads} heads are not a multiple of {kv_heads} kv heads")
    expect = {"q": (H, heads * D), "k": (H, kv_heads * D), "v": (H, kv_heads * D), "o": (heads * D, H),
              "gate": (H, I), "up": (H, I), "down": (I, H)}
    check_weights(members, expect)
    for m, member in enumerate(members):
        for norm, norm0 in ((member.norm1, first.norm1), (member.norm2, first.norm2)):
            need(const(norm.gain).shape == (H,), f"member {m}: a norm gain is not of size {H}")
            need(np.array_equal(const(norm.eps), const(norm0.eps)) and (norm.cast_in, norm.cast_out) ==
                 (norm0.cast_in, norm0.cast_out), f"member {m}: norms differ from member 0's")
        need(all(tuple(p.shape) == tuple(past.shape) and p.type == past.type for p in member.past),
             f"member {m}: its KV cache is {list(member.past[0].shape)}, member 0's is {list(past.shape)}")
        need(all(getattr(member, n) is getattr(first, n) for n in ("cos", "sin", "mask")),
             f"member {m} reads another rotary table or mask than member 0")
        need(np.isclose(member.scale, first.scale, rtol=1e-6), f"member {m}: attention scale differs")
    return GroupDims(k=len(members), heads=heads, kv_heads=kv_heads, head_dim=D, hidden=H, inter=I)


def check_weights(members: list, expect: dict[str, tuple[int, ...]]) -> None:
    """Every member's weight ``name`` (an attribute of its form) has ``expect[name]``'s shape and member 0's dtype."""
    dtype = getattr(members[0], next(iter(expect))).const_value.dtype
    for m, member in enumerate(members):
        for name, shape in expect.items():
            w = getattr(member, name)
            need(tuple(w.shape) == shape and w.const_value.dtype == dtype,
                 f"member {m}: {name}_proj is {tuple(w.shape)} {w.const_value.dtype}, member 0 has {shape} {dtype}")


CHUNK_BYTES = 16 << 20  # float32 bytes of fused weights computed at a time: a 7B group never sits in memory


def fused_weights(graph: ir.Graph, blocks: tuple[int, ...], members: list[LlamaBlock],
                  d: GroupDims) -> dict[str, ir.Value]:
    """Register the wide weights as :class:`ChunkedTensor` s: computed when the graph is saved, row block by
    row block, from memory-mapped member weights, so no fused tensor is ever whole in memory."""
    k, H, I = d.k, d.hidden, d.inter
    dtype = members[0].q.const_value.dtype
    prefix = "painters.fused.blocks_" + "_".join(map(str, blocks))

    def scaled(norm: Norm | None, w: ir.Value, r: int, rows: int, scale: float = 1.0) -> np.ndarray:
        """Rows r..r+rows of ``diag(gain)·W·scale`` in float32 (the norm gain scales W's input rows)."""
        block = np.asarray(const(w)[r:r + rows], dtype=np.float32)
        if norm is not None:
            block = np.asarray(const(norm.gain)[r:r + rows], dtype=np.float32)[:, None] * block
        return block * np.float32(scale) if scale != 1.0 else block

    def side_by_side(proj: str):  # [H, k·n]: member m's columns after member m-1's
        def chunks():
            rows = max(1, CHUNK_BYTES // (4 * k * getattr(members[0], proj).shape[1]))
            for r in range(0, H, rows):
                yield np.concatenate([scaled(m.norm1, getattr(m, proj), r, rows, m.scale if proj == "q" else 1.0)
                                      for m in members], axis=1)
        return chunks

    def stacked(proj: str, norm: str | None):  # [k, in, out]: member matrices one after another
        def chunks():
            for m in members:
                w = getattr(m, proj)
                rows = max(1, CHUNK_BYTES // (4 * w.shape[1]))
                for r in range(0, w.shape[0], rows):
                    yield scaled(getattr(m, norm) if norm else None, w, r, rows)
        return chunks

    heads, kv, D = d.heads, d.kv_heads, d.head_dim
    recipes = {
        "q_proj": ((H, k * heads * D), side_by_side("q")),
        "k_proj": ((H, k * kv * D), side_by_side("k")),
        "v_proj": ((H, k * kv * D), side_by_side("v")),
        "o_proj": ((k, heads * D, H), stacked("o", None)),
        "gate_proj": ((k, H, I), stacked("gate", "norm2")),
        "up_proj": ((k, H, I), stacked("up", "norm2")),
        "down_proj": ((k, I, H), stacked("down", None)),
    }
    return register_chunked(graph, prefix, recipes, dtype)


def register_chunked(graph: ir.Graph, prefix: str, recipes: dict, dtype: ir.DataType) -> dict[str, ir.Value]:
    """Register ``recipes`` (name → (shape, chunks)) as :class:`ChunkedTensor` initializers ``PREFIX.NAME.weight``."""
    values = {}
    for name, (shape, chunks) in recipes.items():
        full = f"{prefix}.{name}.weight"
        tensor = ChunkedTensor(chunks, dtype=dtype, shape=ir.Shape(shape), name=full)
        values[name] = ir.Value(name=full, shape=ir.Shape(shape), type=ir.TensorType(dtype), const_value=tensor)
        graph.register_initializer(values[name])
    return values


class WideBlock:
    """Builds one fused stage before ``before`` (the epilogue): reads the stream ``x`` and its KV slot's inputs.

    Args:
        graph: the graph being instantiated.
        before: the node new nodes go before (keeps the graph in topological order).
        index: the stage's index (names and ``painters.stage`` metadata).
        blocks: the member blocks, for ``painters.block`` metadata.
        members: the members' typed descriptions; they agree by :func:`group_dims`.
        dims: :func:`group_dims` of the members.
        weights: :func:`fused_weights` of the members (shared by the loops of one group).
        shared_kv: ``kv=mean``: the slot holds ``past ++ mean_m(new_m)`` with kv_heads heads.
        opset: the graph's default opset (ReduceMean takes axes as an input from 18).
    """

    def __init__(self, graph: ir.Graph, before: ir.Node, index: int, blocks: tuple[int, ...],
                 members: list[LlamaBlock], dims: GroupDims, weights: dict[str, ir.Value], shared_kv: bool,
                 opset: int):
        self.graph, self.before, self.members, self.dims, self.w = graph, before, members, dims, weights
        self.shared, self.opset = shared_kv, opset
        self.prefix = f"stage{index}/fused"
        self.meta = {"painters.block": ",".join(map(str, blocks)), "painters.stage": str(index)}

    def op(self, op_type: str, inputs: list, name: str, num_outputs: int = 1, domain: str = "", **attrs):
        node = ir.node(op_type, inputs, attributes=attrs or None, domain=domain, num_outputs=num_outputs,
                       name=f"{self.prefix}/{name}", metadata_props=dict(self.meta))
        for i, out in enumerate(node.outputs):
            out.name = f"{self.prefix}/{name}" + (f".{i}" if num_outputs > 1 else "")
        self.graph.insert_before(self.before, node)
        return node.outputs[0] if num_outputs == 1 else tuple(node.outputs)

    def ints(self, values: list[int], name: str) -> ir.Value:
        return self.op("Constant", [], name, value=ir.tensor(np.array(values, dtype=np.int64)))

    def reduce_mean(self, x: ir.Value, axes: list[int], name: str, keepdims: int) -> ir.Value:
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.ints(axes, f"{name}/axes")], name, keepdims=keepdims)
        return self.op("ReduceMean", [x], name, axes=axes, keepdims=keepdims)

    def norm(self, x: ir.Value, norm: Norm, name: str) -> ir.Value:
        """RMSNorm without its gain (folded into the next projection), Casts as in the members."""
        xc = self.op("Cast", [x], f"{name}/cast_in", to=norm.cast_in) if norm.cast_in is not None else x
        mean = self.reduce_mean(self.op("Pow", [xc, norm.exponent], f"{name}/pow"), [-1], f"{name}/mean", 1)
        rms = self.op("Sqrt", [self.op("Add", [mean, norm.eps], f"{name}/add_eps")], f"{name}/sqrt")
        out = self.op("Mul", [xc, self.op("Reciprocal", [rms], f"{name}/rsqrt")], f"{name}/scale")
        return self.op("Cast", [out], f"{name}/cast_out", to=norm.cast_out) if norm.cast_out is not None else out

    def rope(self, t: ir.Value, cos: ir.Value, sin: ir.Value, name: str) -> ir.Value:
        half = self.dims.head_dim // 2
        lo, hi = self.op("Split", [t, self.ints([half, half], f"{name}/halves")], f"{name}/split", 2, axis=-1)
        rot = self.op("Concat", [self.op("Neg", [hi], f"{name}/neg"), lo], f"{name}/rotate", axis=-1)
        return self.op("Add", [self.op("Mul", [t, cos], f"{name}/cos"), self.op("Mul", [rot, sin], f"{name}/sin")],
                       name)

    def qkv(self, x: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
        """q, k and v of every member ``[B, S, k·n·D]`` (gains and the attention scale are in the weights)."""
        # three MatMuls on the shared normed input: a concatenated one would need a Split (a copy)
        normed = self.norm(x, self.members[0].norm1, "attn_norm")
        q, key, value = (self.op("MatMul", [normed, self.w[f"{n}_proj"]], f"{n}_proj") for n in ("q", "k", "v"))
        return q, key, value

    def o_proj(self, ctx: ir.Value, x_rows: ir.Value) -> ir.Value:
        """``h = x + o_m(ctx_m)`` for every member, ``[k, B·S, H]``, from the member-major context rows."""
        return self.op("Add", [x_rows, self.op("MatMul", [ctx, self.w["o_proj"]], "o_proj")], "h")

    def mlp_mean(self, h: ir.Value, norm) -> ir.Value:
        """``mean over members of (h_m + MLP_m(h_m))`` from ``h`` with a leading member axis; ``norm`` is the
        members' second norm (its gains are folded into the gate and up weights)."""
        self.meta["painters.sublayer"] = "mlp"
        # gate and up as two batched MatMuls: one concatenated MatMul would need a Split, a copy of both halves
        normed = self.norm(h, norm, "mlp_norm")
        gate = self.op("MatMul", [normed, self.w["gate_proj"]], "gate_proj")
        up = self.op("MatMul", [normed, self.w["up_proj"]], "up_proj")
        silu = self.op("Mul", [gate, self.op("Sigmoid", [gate], "sigmoid")], "silu")
        down = self.op("MatMul", [self.op("Mul", [silu, up], "act"), self.w["down_proj"]], "down_proj")
        return self.reduce_mean(self.op("Add", [h, down], "x_out"), [0], "mean", 0)

    def build(self, x: ir.Value, past: tuple[ir.Value, ir.Value]) -> tuple[ir.Value, tuple[ir.Value, ir.Value]]:
        """The stage's output (the next residual stream) and its present (key, value), from ``x`` and ``past``.

        ``past`` are the slot's graph inputs, [batch, kv_heads (kv=mean) or k·kv_heads, past, head_dim].
        """
        d, m0 = self.dims, self.members[0]
        k, nh, nkv, D = d.k, d.heads, d.kv_heads, d.head_dim
        rep, shared = nh // nkv, self.shared

        self.meta["painters.sublayer"] = "attn"
        q, key, value = self.qkv(x)

        def heads(t, n, name):  # [B, S, n·D] → [B, n, S, D]
            t = self.op("Reshape", [t, self.ints([0, 0, n, D], f"{name}/shape")], f"{name}/reshape")
            return self.op("Transpose", [t], f"{name}/heads", perm=[0, 2, 1, 3])

        q = self.rope(heads(q, k * nh, "q"), m0.cos, m0.sin, "q_rope")
        key = self.rope(heads(key, k * nkv, "k"), m0.cos, m0.sin, "k_rope")
        value = heads(value, k * nkv, "v")
        if shared:  # each member attends over [past, its own new k/v]; the slot keeps past ++ mean_m(new_m)
            tiles = self.ints([1, k, 1, 1], "past_tiles")
            members_shape = self.ints([0, k, nkv, -1, D], "members_shape")
            present, attend = [], []
            for p, new, kind in zip(past, (key, value), KINDS):
                per_member = self.op("Reshape", [new, members_shape], f"{kind}/members")
                new_mean = self.reduce_mean(per_member, [1], f"{kind}/mean", 0)
                present.append(self.op("Concat", [p, new_mean], f"{kind}/present", axis=2))
                tiled = self.op("Tile", [p, tiles], f"{kind}/past_tiled")
                attend.append(self.op("Concat", [tiled, new], f"{kind}/attend", axis=2))
        else:
            present = [self.op("Concat", [p, new], f"{kind}/present", axis=2)
                       for p, new, kind in zip(past, (key, value), KINDS)]
            attend = present
        for out, old in zip(present, m0.past):
            out.type, out.shape = old.type, ir.Shape([old.shape[0], past[0].shape[1], None, D])

        # GQA without copies: q [B, k·nkv, rep, S, D] against K [B, k·nkv, 1, D, T]
        q5 = self.op("Reshape", [q, self.ints([0, k * nkv, rep, -1, D], "q5/shape")], "q5")
        axis2 = self.ints([2], "kv_axis")
        keys_t = self.op("Transpose", [self.op("Unsqueeze", [attend[0], axis2], "k5")], "k5t", perm=[0, 1, 2, 4, 3])
        mask = self.op("Unsqueeze", [m0.mask, self.ints([1], "mask_axis")], "mask5")
        scores = self.op("Add", [self.op("MatMul", [q5, keys_t], "scores"), mask], "masked_scores")
        probs = self.op("Softmax", [scores], "probs", axis=-1)
        ctx = self.op("MatMul", [probs, self.op("Unsqueeze", [attend[1], axis2], "v5")], "context")
        ctx = self.op("Reshape", [ctx, self.ints([0, k, nh, -1, D], "context/shape")], "context/members")
        ctx = self.op("Transpose", [ctx], "context/member_major", perm=[1, 0, 3, 2, 4])  # [k, B, S, nh, D]
        ctx = self.op("Reshape", [ctx, self.ints([k, -1, nh * D], "context/rows_shape")], "context/rows")
        return self.from_context(ctx, x), (present[0], present[1])

    def from_context(self, ctx: ir.Value, x: ir.Value) -> ir.Value:
        """The stage's output, shaped as ``x``, from the members' attention context rows ``[k, B·S, heads·D]``
        (member-major): each member's o_proj and MLP on its own ``h_m``, then the mean."""
        x_rows = self.op("Reshape", [x, self.ints([1, -1, self.dims.hidden], "x/rows_shape")], "x/rows")
        h = self.o_proj(ctx, x_rows)  # [k, B·S, H]
        mean = self.mlp_mean(h, self.members[0].norm2)
        out = self.op("Reshape", [mean, self.op("Shape", [x], "x/shape")], "out")
        out.type, out.shape = x.type, x.shape
        return out
