"""The Llama block matcher: match one discovered block node for node, and name the weights and context it reads.

Discovery (:func:`painters.compiler.blocks.discover_blocks`) runs each registered form's matcher on every block and
records the first typed description that fits (:class:`LlamaBlock`); :mod:`painters.compiler.forms.wide_block`
rebuilds a parallel group as one wide block from these parts. A block is accepted only when *every* node of it
is explained by this template (read backwards from the block output ``x_out``)::

    x_out = h + down(silu(gate(b)) · up(b))          b = RMSNorm₂(h)      (SiLU as Mul(g, Sigmoid(g)))
    h     = x + o_proj(merge(softmax(q·s_q @ (Kᵀ·s_k) + mask) @ V))
    K, V  = repeat_kv(Concat(past, k_rot | v, axis=-2))  (Unsqueeze(2) → Expand → Reshape, or none)
    q_rot, k_rot = rope(heads(q_proj(a))), rope(heads(k_proj(a)))    a = RMSNorm₁(x)
    rope(t) = t·cos + Concat(−t[..., D/2:], t[..., :D/2])·sin
    RMSNorm(x) = g · [Cast]((Cast(x) · 1/√(mean(Cast(x)², −1) + eps)))   (Casts optional, as in fp16 exports)

Kᵀ is ``Transpose(perm=(0,1,3,2))`` or the exporter's Reshape → Transpose(0,2,1) → Reshape, whose shape
arithmetic is checked symbolically. Anything else (a projection bias, another norm, a fused attention op)
raises :class:`Mismatch` with the reason, and a group with that block stays unfused. Another graph form
(a fused attention operator, quantized MatMuls) or architecture is another matcher: a function from a
:class:`~painters.compiler.forms.base.Region` to a typed description, raising :class:`Mismatch`, wrapped as a
:class:`~painters.compiler.forms.base.BlockForm` (:mod:`painters.compiler.forms.llama` is this one's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from painters.compiler.forms.base import Mismatch, Region, const, need

__all__ = ["Mismatch", "Norm", "LlamaBlock", "match_member", "match_llama", "const", "need"]


@dataclass
class Norm:
    """An RMSNorm: gain, the Pow exponent and eps values (reused by the wide block), optional Casts."""

    gain: ir.Value
    exponent: ir.Value
    eps: ir.Value
    cast_in: int | None  # Cast(x, to=…) before the statistics (fp16 exports compute them in fp32)
    cast_out: int | None  # Cast back before the gain


@dataclass
class LlamaBlock:
    """A Llama-family block's weights, norms and context values: the parts the wide block needs."""

    x: ir.Value
    cos: ir.Value
    sin: ir.Value
    mask: ir.Value
    past: tuple[ir.Value, ir.Value]
    norm1: Norm
    norm2: Norm
    q: ir.Value
    k: ir.Value
    v: ir.Value
    o: ir.Value
    gate: ir.Value
    up: ir.Value
    down: ir.Value
    scale: float  # product of the scalar factors on q and Kᵀ


class _Matcher:
    def __init__(self, nodes: set[ir.Node], head_dim: int):
        self.nodes = nodes
        self.used: set[ir.Node] = set()
        self.D = head_dim

    def inner(self, v: ir.Value | None) -> bool:
        return v is not None and v.producer() in self.nodes

    def is_op(self, v: ir.Value | None, op: str) -> bool:
        return self.inner(v) and v.producer().op_type == op

    def node(self, v: ir.Value, op: str, arity: int | None = None) -> ir.Node:
        node = v.producer() if v is not None else None
        found = node.op_type if node is not None and node in self.nodes else "a value from outside the block"
        need(found == op, f"expected {op} producing {getattr(v, 'name', None)!r}, found {found}")
        need(arity is None or len(node.inputs) == arity, f"{op} {node.name!r} has {len(node.inputs)} inputs")
        self.used.add(node)
        return node

    def operands(self, node: ir.Node, pred) -> tuple[ir.Value, ir.Value]:
        """The two inputs of a commutative op, the one satisfying ``pred`` first."""
        need(len(node.inputs) == 2, f"{node.op_type} {node.name!r} has {len(node.inputs)} inputs")
        a, b = node.inputs
        if pred(a) and not pred(b):
            return a, b
        need(pred(b) and not pred(a), f"{node.op_type} {node.name!r}: operands are not as expected")
        return b, a

    def weight(self, v: ir.Value, what: str) -> ir.Value:
        need(v is not None and v.is_initializer() and v.const_value is not None and len(v.shape) == 2,
             f"{what} is not a 2-D initializer")
        return v

    def ints(self, v: ir.Value | None, what: str) -> list[int]:
        c = const(v)
        need(c is not None, f"{what} is not a constant")
        return [int(i) for i in np.ravel(c)]

    def scalar(self, v: ir.Value, what: str) -> float:
        c = const(v)
        need(c is not None and c.size == 1, f"{what} is not a constant scalar")
        return float(np.ravel(c)[0])

    def axis(self, node: ir.Node, name: str, rank: int, default: int | None = None) -> int:
        attr = node.attributes.get(name)
        value = attr.as_int() if attr is not None else default
        need(value is not None, f"{node.op_type} {node.name!r} has no {name}")
        return value % rank

    def perm(self, node: ir.Node) -> tuple[int, ...]:
        attr = node.attributes.get("perm")
        need(attr is not None, f"Transpose {node.name!r} has no perm")
        return tuple(attr.as_ints())

    # ---- sublayers ------------------------------------------------------------------------------------

    def rmsnorm(self, a: ir.Value) -> tuple[ir.Value, Norm]:
        mul_g = self.node(a, "Mul")
        gain, n = self.operands(mul_g, lambda v: not self.inner(v))
        c = const(gain)
        need(c is not None and c.ndim == 1, "the norm gain is not a 1-D constant")
        cast_out = None
        if self.is_op(n, "Cast"):
            cast = self.node(n, "Cast", 1)
            cast_out, n = cast.attributes["to"].as_int(), cast.inputs[0]
        mul_n = self.node(n, "Mul")
        r, xc = self.operands(mul_n, lambda v: self.is_op(v, "Reciprocal"))
        sq = self.node(self.node(r, "Reciprocal", 1).inputs[0], "Sqrt", 1)
        mean, eps = self.operands(self.node(sq.inputs[0], "Add"), self.inner)
        self.scalar(eps, "the norm eps")
        rm = self.node(mean, "ReduceMean")
        if len(rm.inputs) > 1:
            axes = self.ints(rm.inputs[1], "ReduceMean axes")
        else:
            axes = list(rm.attributes["axes"].as_ints()) if "axes" in rm.attributes else None
        need(axes in ([-1], [2]) and rm.attributes.get_int("keepdims", 1) == 1,
             "the norm does not reduce the last axis")
        pw = self.node(rm.inputs[0], "Pow", 2)
        need(pw.inputs[0] is xc and self.scalar(pw.inputs[1], "the norm exponent") == 2.0, "the norm is not RMS")
        cast_in, x = None, xc
        if self.is_op(xc, "Cast"):
            cast = self.node(xc, "Cast", 1)
            cast_in, x = cast.attributes["to"].as_int(), cast.inputs[0]
        return x, Norm(gain, pw.inputs[1], eps, cast_in, cast_out)

    def mlp(self, x_out: ir.Value) -> tuple[ir.Value, Norm, ir.Value, ir.Value, ir.Value]:
        d, h = self.operands(self.node(x_out, "Add"), lambda v: self.is_op(v, "MatMul"))
        u, down = self.node(d, "MatMul", 2).inputs
        act, up = self.operands(self.node(u, "Mul"), lambda v: self.is_op(v, "Mul"))
        sig, g = self.operands(self.node(act, "Mul"), lambda v: self.is_op(v, "Sigmoid"))
        need(self.node(sig, "Sigmoid", 1).inputs[0] is g, "the MLP activation is not SiLU")
        b, gate = self.node(g, "MatMul", 2).inputs
        b2, upw = self.node(up, "MatMul", 2).inputs
        need(b is b2, "gate and up projections read different values")
        h2, norm = self.rmsnorm(b)
        need(h2 is h, "the MLP norm does not read the attention residual")
        return h, norm, self.weight(gate, "gate_proj"), self.weight(upw, "up_proj"), self.weight(down, "down_proj")

    def heads(self, t: ir.Value, what: str) -> tuple[ir.Value, ir.Value]:
        """``Transpose(Reshape(MatMul(a, W)), (0,2,1,3))`` → (a, W)."""
        tr = self.node(t, "Transpose", 1)
        need(self.perm(tr) == (0, 2, 1, 3), f"{what}: unexpected head transpose")
        rs = self.node(tr.inputs[0], "Reshape")
        dims = rs.outputs[0].shape
        need(dims is None or not isinstance(dims[-1], int) or dims[-1] == self.D, f"{what}: head dim is not {self.D}")
        need(not self.is_op(rs.inputs[0], "Add"), f"{what}: projection biases are not fused")
        a, w = self.node(rs.inputs[0], "MatMul", 2).inputs
        return a, self.weight(w, what)

    def rope(self, r: ir.Value, what: str) -> tuple[ir.Value, ir.Value, ir.Value]:
        def rotated(v):
            return self.is_op(v, "Mul") and any(self.is_op(i, "Concat") for i in v.producer().inputs)

        m_rot, m_t = self.operands(self.node(r, "Add"), rotated)
        t, cos = self.operands(self.node(m_t, "Mul"), self.inner)
        cat_v, sin = self.operands(self.node(m_rot, "Mul"), self.inner)
        cat = self.node(cat_v, "Concat", 2)
        need(self.axis(cat, "axis", 4) == 3, f"{what}: rotary Concat is not on the last axis")
        hi = self.node(self.node(cat.inputs[0], "Neg", 1).inputs[0], "Slice")
        lo = self.node(cat.inputs[1], "Slice")
        half = self.D // 2
        for sl, (start, end_min, end_max) in ((lo, (0, half, half)), (hi, (half, self.D, 2**63))):
            need(sl.inputs[0] is t, f"{what}: rotary slices read another value")
            s, e = self.ints(sl.inputs[1], "slice start")[0], self.ints(sl.inputs[2], "slice end")[0]
            ax = self.ints(sl.inputs[3], "slice axes") if len(sl.inputs) > 3 and sl.inputs[3] is not None else [0]
            st = self.ints(sl.inputs[4], "slice steps") if len(sl.inputs) > 4 and sl.inputs[4] is not None else [1]
            need(ax[0] % 4 == 3 and st == [1] and s == start and end_min <= e <= end_max,
                 f"{what}: rotary halves are not [0, D/2) and [D/2, D)")
        return t, cos, sin

    def scaled(self, v: ir.Value) -> tuple[ir.Value, float]:
        if self.is_op(v, "Mul"):
            node = v.producer()
            consts = [i for i in node.inputs if const(i) is not None and const(i).size == 1]
            if len(consts) == 1:
                self.used.add(node)
                other = node.inputs[1] if node.inputs[0] is consts[0] else node.inputs[0]
                return other, self.scalar(consts[0], "attention scale")
        return v, 1.0

    def repeat_kv(self, v: ir.Value) -> ir.Value:
        if not self.is_op(v, "Reshape"):
            return v
        ex = self.node(self.node(v, "Reshape").inputs[0], "Expand")
        un = self.node(ex.inputs[0], "Unsqueeze")
        need(self.ints(un.inputs[1], "Unsqueeze axes") == [2], "GQA: kv heads are not repeated on axis 2")
        return un.inputs[0]

    def transposed(self, v: ir.Value) -> ir.Value:
        """Kᵀ → K, for Transpose(0,1,3,2) or Reshape([-1,T,D]) → Transpose(0,2,1) → Reshape([B,H,D,T])."""
        if self.is_op(v, "Transpose"):
            tr = self.node(v, "Transpose", 1)
            need(self.perm(tr) == (0, 1, 3, 2), "Kᵀ: unexpected transpose")
            return tr.inputs[0]
        outer = self.node(v, "Reshape")
        tr = self.node(outer.inputs[0], "Transpose", 1)
        need(self.perm(tr) == (0, 2, 1), "Kᵀ: unexpected transpose")
        inner = self.node(tr.inputs[0], "Reshape")
        k = inner.inputs[0]
        need(self.symbolic(inner.inputs[1], k) == [-1, "d2", "d3"], "Kᵀ: unexpected first reshape")
        need(self.symbolic(outer.inputs[1], k) == ["d0", "d1", "d3", "d2"], "Kᵀ: unexpected second reshape")
        return k

    def symbolic(self, v: ir.Value, source: ir.Value) -> list:
        """A 1-D shape tensor as a list of ints and ``"dI"`` (dim I of ``source``): Shape/Slice/Concat/consts."""
        c = const(v)
        if c is not None:
            return [int(i) for i in np.ravel(c)]
        node = v.producer()
        need(self.inner(v) and node.op_type in ("Shape", "Slice", "Concat"), "Kᵀ: unsupported shape arithmetic")
        self.used.add(node)
        if node.op_type == "Shape":
            need(node.inputs[0] is source, "Kᵀ: shape of another value")
            dims = [f"d{i}" for i in range(4)]
            return dims[node.attributes.get_int("start", 0):node.attributes.get_int("end", 4)]
        if node.op_type == "Concat":
            return [d for i in node.inputs for d in self.symbolic(i, source)]
        data = self.symbolic(node.inputs[0], source)
        starts, ends = self.ints(node.inputs[1], "slice start"), self.ints(node.inputs[2], "slice end")
        need(len(node.inputs) < 4 or self.ints(node.inputs[3], "slice axes") == [0], "Kᵀ: unexpected slice axes")
        need(len(node.inputs) < 5 or self.ints(node.inputs[4], "slice steps") == [1], "Kᵀ: unexpected slice steps")
        return data[starts[0]:ends[0]]

    def present(self, v: ir.Value, what: str) -> tuple[ir.Value, ir.Value]:
        cat = self.node(v, "Concat", 2)
        need(self.axis(cat, "axis", 4) == 2, f"{what}: the cache is not concatenated on the sequence axis")
        past, new = cat.inputs
        need(not self.inner(past) and self.inner(new), f"{what}: the cache does not read a past input")
        return past, new

    def attention(self, h: ir.Value):
        o, x = self.operands(self.node(h, "Add"), lambda v: self.is_op(v, "MatMul"))
        z, wo = self.node(o, "MatMul", 2).inputs
        tr = self.node(self.node(z, "Reshape").inputs[0], "Transpose", 1)
        need(self.perm(tr) == (0, 2, 1, 3), "attention output: unexpected transpose")
        probs, v_exp = self.node(tr.inputs[0], "MatMul", 2).inputs
        sm = self.node(probs, "Softmax", 1)
        need(self.axis(sm, "axis", 4, default=-1) == 3, "softmax is not over keys")
        scores, mask = self.operands(self.node(sm.inputs[0], "Add"), self.inner)
        qs, kts = self.node(scores, "MatMul", 2).inputs
        q_rot, s_q = self.scaled(qs)
        k_t, s_k = self.scaled(kts)
        past_k, k_rot = self.present(self.repeat_kv(self.transposed(k_t)), "key")
        past_v, v_t = self.present(self.repeat_kv(v_exp), "value")
        q_t, cos, sin = self.rope(q_rot, "q")
        k_heads, cos2, sin2 = self.rope(k_rot, "k")
        need(cos is cos2 and sin is sin2, "q and k use different rotary tables")
        (aq, wq), (ak, wk), (av, wv) = (self.heads(q_t, "q_proj"), self.heads(k_heads, "k_proj"),
                                        self.heads(v_t, "v_proj"))
        need(aq is ak is av, "q, k and v projections read different values")
        x2, norm = self.rmsnorm(aq)
        need(x2 is x, "the attention norm does not read the block input")
        return dict(x=x, cos=cos, sin=sin, mask=mask, past=(past_k, past_v), norm1=norm, q=wq, k=wk, v=wv,
                    o=self.weight(wo, "o_proj"), scale=s_q * s_k)


def match_member(nodes: set[ir.Node], x_out: ir.Value, head_dim: int) -> LlamaBlock:
    """Match the block whose nodes are ``nodes`` and whose output is ``x_out``; raise :class:`Mismatch`."""
    m = _Matcher(nodes, head_dim)
    h, norm2, gate, up, down = m.mlp(x_out)
    parts = m.attention(h)
    extra = sorted({n.op_type for n in nodes - m.used})
    need(not extra, f"unexpected nodes in the block ({', '.join(extra)})")
    return LlamaBlock(norm2=norm2, gate=gate, up=up, down=down, **parts)


def match_llama(block: Region) -> LlamaBlock:
    """The typed description of a discovered block, or :class:`Mismatch` saying why it is not a Llama block."""
    past_k = block.past[0]
    need(past_k.shape is not None and len(past_k.shape) == 4 and isinstance(past_k.shape[1], int)
         and isinstance(past_k.shape[3], int), "the past input has no static kv heads and head dim")
    form = match_member({*block.shared_nodes, *block.attn_nodes, *block.mlp_nodes}, block.x_out, past_k.shape[3])
    need(form.x is block.x_in, "the block's norm does not read the block input")
    need(form.past[0] is block.past[0] and form.past[1] is block.past[1], "the block does not read its own KV slot")
    return form
