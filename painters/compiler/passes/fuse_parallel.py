"""Fuse each parallel group into one wide block (``painters-compile --fuse-parallel``).

A parallel stage of k blocks computes ``out = mean_m(h_m + MLP_m(h_m))`` with ``h_m = x + Attn_m(x)``. The
rewrite clones k blocks side by side; this pass replaces them with one block k times as wide:

1. x is normalized once (RMSNorm without gain);
2. three MatMuls project q, k and v of every member: ``[diag(g_m)·Wq_m·s …]``, ``[diag(g_m)·Wk_m …]``,
   ``[diag(g_m)·Wv_m …]`` (each member's norm gain g_m and the attention scale s folded into the weights);
3. attention over k × heads, member-major, each member keeping its GQA grouping (query head j of member m
   reads kv head m·kv_heads + j // rep); the repeat is a broadcast over a 5-D MatMul, nothing is copied;
4. o_proj, the second norm (gain folded into gate and up), gate, up and down run as batched MatMuls over a
   member axis, e.g. ``[k, B·S, H] @ [k, H, I]``; each member's MLP reads its own ``h_m``;
5. ``out = mean over members of (h_m + down_m)``.

KV cache: ``kv=exact`` → one slot with k × kv_heads heads per stage; ``kv=mean`` → one slot of kv_heads heads
holding ``past ++ mean_m(new_m)``, while member m attends over ``[past, new_m]``. All KV IO is renumbered
0..n−1 in execution order as :func:`painters.plans.schedule.fused_slot_layout` describes, and the metadata
records ``painters.fused_stages``, ``painters.slot_heads`` and ``painters.kv_slots``.

The fused weights are new initializers (:class:`painters.compiler.graph_io.ChunkedTensor`: computed and written
row block by row block when the graph is saved, so a 7B group never sits in memory) that
replace the members' weights, which then fall out of the graph. A group whose blocks also run elsewhere, or
that does not match the template of :mod:`painters.compiler.passes.llama_match`, stays unfused, with one
warning line naming the stage and the reason.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from painters.compiler.blocks import _KV_RE, past_name, present_name
from painters.compiler.graph_io import ChunkedTensor
from painters.compiler.passes.llama_match import MemberMatch, Mismatch, Norm, const, match_member, need
from painters.plans import Plan, Stage
from painters.plans.schedule import fused_slot_layout

__all__ = ["FuseParallelPass"]

log = logging.getLogger(__name__)

KINDS = ("key", "value")


@dataclass
class _Group:
    """A matched parallel stage: its members, the rewrite's nodes to replace, and the wide shapes."""

    index: int
    stage: Stage
    members: list[MemberMatch]
    mean: ir.Value  # the rewrite's stage output, Sum(x_out_m) · 1/k
    first: ir.Node  # new nodes go before the Sum
    old_nodes: set[ir.Node]
    dims: dict[str, int] = field(default_factory=dict)  # k, heads, kv_heads, head_dim, hidden, inter


class FuseParallelPass(ir.passes.InPlacePass):
    """Replace each parallel group of a rewritten graph with one wide block; see the module docstring."""

    def __init__(self, plan: Plan):
        super().__init__()
        self.plan = plan
        self.fused_stages: list[int] = []
        self.kv_slots = plan.kv_slots

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, stages = model.graph, self.plan.stages()
        opset = model.opset_imports.get("", 0)
        groups: dict[int, _Group] = {}
        reasons: dict[int, str] = {}
        for index, stage in enumerate(stages):
            if len(stage.blocks) < 2:
                continue
            if not (stage.attn and stage.mlp):
                reasons[index] = f"its {'attention' if not stage.attn else 'MLP'} is dropped"
                continue
            try:
                need(opset >= 13, f"opset {opset} < 13")
                groups[index] = self._match(graph, index, stage)
            except Mismatch as exc:
                reasons[index] = str(exc)
        self._keep_weight_bytes(stages, groups, reasons)
        self._warn(stages, reasons)
        if not groups:
            return ir.passes.PassResult(model, modified=False)

        weights: dict[tuple[int, ...], dict[str, ir.Value]] = {}
        new_io: dict[int, tuple[tuple[ir.Value, ...], tuple[ir.Value, ...]]] = {}
        replaced: dict[ir.Value, ir.Value] = {}  # a fused stage's old output → new (the next stage's input)
        for index, group in sorted(groups.items()):
            if group.stage.blocks not in weights:
                weights[group.stage.blocks] = _fused_weights(graph, group)
            new_io[index] = _WideBlock(graph, group, weights[group.stage.blocks], opset).build(replaced)
        self.fused_stages = sorted(groups)
        self._renumber_kv(graph, new_io)
        graph.remove([n for g in groups.values() for n in g.old_nodes], safe=True)
        model.metadata_props.update({"painters.fused_stages": json.dumps(self.fused_stages),
                                     "painters.slot_heads": json.dumps([v.shape[1] for v in graph.inputs
                                                                        if _KV_RE.match(v.name or "")][::2]),
                                     "painters.kv_slots": str(self.kv_slots)})
        return ir.passes.PassResult(model, modified=True)

    # ---- matching ---------------------------------------------------------------------------------------

    def _match(self, graph: ir.Graph, index: int, stage: Stage) -> _Group:
        mean = next((v for n in graph for v in n.outputs if v.name == f"stage{index}/mean"), None)
        need(mean is not None and mean.producer().op_type == "Mul", "the rewrite's stage mean was not found")
        mul = mean.producer()
        total = next((v for v in mul.inputs if v.producer() is not None and v.producer().op_type == "Sum"), None)
        need(total is not None and len(total.producer().inputs) == len(stage.blocks), "the stage mean is not a Sum")
        scale = [const(v) for v in mul.inputs if v is not total]
        # 1/k rounded to the graph's dtype, as the rewrite wrote it (1/22 is not exact in fp16 or bf16)
        need(scale[0] is not None and scale[0].size == 1
             and np.ravel(scale[0])[0] == np.asarray(1 / len(stage.blocks), dtype=scale[0].dtype),
             "the stage mean is not Sum · 1/k")
        tag = str(index)
        in_stage = {n for n in graph if n.metadata_props.get("painters.stage") == tag}
        inputs, outputs = set(graph.inputs), {v.name: v for v in graph.outputs}
        members, old = [], {mul, total.producer(), *(v.producer() for v in mul.inputs if v is not total)}
        for m, (out, slot) in enumerate(zip(total.producer().inputs, stage.slots)):
            nodes = _upstream(out, in_stage)
            need(not nodes & old, f"member {m} shares nodes with another member")
            old |= nodes
            past_k = next((v for v in inputs if v.name == past_name(slot, "key")), None)
            need(past_k is not None and isinstance(past_k.shape[1], int) and isinstance(past_k.shape[3], int),
                 f"slot {slot}: no past input with static kv heads and head dim")
            member = match_member(nodes, out, past_k.shape[3])
            need(member.past[0] is past_k and member.past[1].name == past_name(slot, "value"),
                 f"member {m} does not read the KV slot {slot}")
            members.append(member)
        need(in_stage <= old, "the stage has nodes outside its members")
        for slot in sorted(set(stage.slots)):
            for kind in KINDS:
                present = outputs.get(present_name(slot, kind))
                need(present is not None, f"no output {present_name(slot, kind)}")
                if stage.shared_kv:  # kv=mean: the rewrite's Sum · 1/k of the members' presents
                    mean_mul = present.producer()
                    old |= {mean_mul, *(v.producer() for v in mean_mul.inputs)}
        group = _Group(index, stage, members, mean, total.producer(), old)
        group.dims = _check_members(members, members[0].past[0])
        return group

    def _keep_weight_bytes(self, stages: list[Stage], groups: dict[int, _Group], reasons: dict[int, str]) -> None:
        """Fused weights replace the members' weights only when no other stage still needs those.

        Stages with the same members (the loops of one group) share one set of fused weights, so they are
        kept or dropped together; dropping them can make another group's blocks needed elsewhere: repeat.
        """
        changed = True
        while changed:
            changed = False
            for index in sorted(groups):
                if index not in groups:
                    continue
                blocks = stages[index].blocks
                others = {b for j, s in enumerate(stages) if j not in groups or s.blocks != blocks for b in s.blocks}
                shared = sorted(set(blocks) & others)
                if shared:
                    for twin in [j for j in groups if stages[j].blocks == blocks]:
                        reasons[twin] = f"block {shared[0]} also runs outside this group; fusing would copy its weights"
                        del groups[twin]
                    changed = True

    def _warn(self, stages: list[Stage], reasons: dict[int, str]) -> None:
        """One line per run of consecutive stages (the loops of one group) failing for the same reason."""
        runs: list[list[int]] = []
        for index in sorted(reasons):
            last = runs[-1][-1] if runs else None
            if last == index - 1 and stages[last].blocks == stages[index].blocks and reasons[last] == reasons[index]:
                runs[-1].append(index)
            else:
                runs.append([index])
        for run in runs:
            where = f"stage {run[0]}" if len(run) == 1 else f"stages {run[0]}-{run[-1]}"
            blocks = ",".join(map(str, stages[run[0]].blocks))
            log.warning("fuse-parallel: %s (parallel blocks %s) left unfused: %s", where, blocks, reasons[run[0]])

    # ---- KV IO -----------------------------------------------------------------------------------------

    def _renumber_kv(self, graph: ir.Graph, new_io: dict) -> None:
        layout = fused_slot_layout(self.plan, self.fused_stages)
        pasts = {v.name: v for v in graph.inputs}
        presents = {v.name: v for v in graph.outputs}
        kv_in: list[ir.Value] = []
        kv_out: list[ir.Value] = []
        for stage, slots in layout:
            if stage in new_io:
                ins, outs = new_io[stage]
            else:
                ins = tuple(pasts[past_name(slots[0], kind)] for kind in KINDS)
                outs = tuple(presents[present_name(slots[0], kind)] for kind in KINDS)
            kv_in.extend(ins)
            kv_out.extend(outs)
        other_in = [v for v in graph.inputs if not _KV_RE.match(v.name or "")]
        other_out = [v for v in graph.outputs if not (v.name or "").startswith("present.")]
        for value in (*kv_in, *kv_out):  # two steps: old and new numbers overlap
            value.name = f"{value.name}.renumbering"
        for slot in range(len(layout)):
            for k, kind in enumerate(KINDS):
                kv_in[2 * slot + k].name = past_name(slot, kind)
                kv_out[2 * slot + k].name = present_name(slot, kind)
        graph.inputs.clear()
        graph.inputs.extend([*other_in, *kv_in])
        graph.outputs.clear()
        graph.outputs.extend([*other_out, *kv_out])
        self.kv_slots = len(layout)


def _upstream(out: ir.Value, allowed: set[ir.Node]) -> set[ir.Node]:
    """Nodes of ``allowed`` reached backwards from ``out``."""
    found: set[ir.Node] = set()
    stack = [out]
    while stack:
        node = stack.pop().producer()
        if node is not None and node in allowed and node not in found:
            found.add(node)
            stack.extend(v for v in node.inputs if v is not None)
    return found


def _check_members(members: list[MemberMatch], past: ir.Value) -> dict[str, int]:
    """The shared shapes of the group; every member must have them, and read the same context."""
    first = members[0]
    kv_heads, D = past.shape[1], past.shape[3]
    H, qd = first.q.shape
    I = first.gate.shape[1]
    need(qd % D == 0 and D % 2 == 0, f"q_proj width {qd} is not a multiple of the head dim {D}")
    heads = qd // D
    need(heads % kv_heads == 0, f"{heads} heads are not a multiple of {kv_heads} kv heads")
    expect = {"q": (H, heads * D), "k": (H, kv_heads * D), "v": (H, kv_heads * D), "o": (heads * D, H),
              "gate": (H, I), "up": (H, I), "down": (I, H)}
    dtype = first.q.const_value.dtype
    for m, member in enumerate(members):
        for name, shape in expect.items():
            w = getattr(member, name)
            need(tuple(w.shape) == shape and w.const_value.dtype == dtype,
                 f"member {m}: {name}_proj is {tuple(w.shape)} {w.const_value.dtype}, member 0 has {shape} {dtype}")
        for norm, norm0 in ((member.norm1, first.norm1), (member.norm2, first.norm2)):
            need(const(norm.gain).shape == (H,), f"member {m}: a norm gain is not of size {H}")
            need(np.array_equal(const(norm.eps), const(norm0.eps)) and (norm.cast_in, norm.cast_out) ==
                 (norm0.cast_in, norm0.cast_out), f"member {m}: norms differ from member 0's")
        need(all(getattr(member, n) is getattr(first, n) for n in ("x", "cos", "sin", "mask")),
             f"member {m} reads another input, rotary table or mask than member 0")
        need(np.isclose(member.scale, first.scale, rtol=1e-6), f"member {m}: attention scale differs")
    return {"k": len(members), "heads": heads, "kv_heads": kv_heads, "head_dim": D, "hidden": H, "inter": I}


CHUNK_BYTES = 16 << 20  # float32 bytes of fused weights computed at a time: a 7B group never sits in memory


def _fused_weights(graph: ir.Graph, group: _Group) -> dict[str, ir.Value]:
    """Register the wide weights as :class:`ChunkedTensor` s: computed when the graph is saved, row block by
    row block, from memory-mapped member weights, so no fused tensor is ever whole in memory."""
    members, d = group.members, group.dims
    k, H, I = d["k"], d["hidden"], d["inter"]
    dtype = members[0].q.const_value.dtype
    prefix = "painters.fused.blocks_" + "_".join(map(str, group.stage.blocks))

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

    heads, kv, D = d["heads"], d["kv_heads"], d["head_dim"]
    recipes = {
        "q_proj": ((H, k * heads * D), side_by_side("q")),
        "k_proj": ((H, k * kv * D), side_by_side("k")),
        "v_proj": ((H, k * kv * D), side_by_side("v")),
        "o_proj": ((k, heads * D, H), stacked("o", None)),
        "gate_proj": ((k, H, I), stacked("gate", "norm2")),
        "up_proj": ((k, H, I), stacked("up", "norm2")),
        "down_proj": ((k, I, H), stacked("down", None)),
    }
    values = {}
    for name, (shape, chunks) in recipes.items():
        full = f"{prefix}.{name}.weight"
        tensor = ChunkedTensor(chunks, dtype=dtype, shape=ir.Shape(shape), name=full)
        values[name] = ir.Value(name=full, shape=ir.Shape(shape), type=ir.TensorType(dtype), const_value=tensor)
        graph.register_initializer(values[name])
    return values


class _WideBlock:
    """Builds one fused stage before the rewrite's stage mean, then takes over its output and KV slot."""

    def __init__(self, graph: ir.Graph, group: _Group, weights: dict[str, ir.Value], opset: int):
        self.graph, self.group, self.w, self.opset = graph, group, weights, opset
        self.prefix = f"stage{group.index}/fused"
        self.meta = {"painters.block": ",".join(map(str, group.stage.blocks)), "painters.stage": str(group.index)}

    def op(self, op_type: str, inputs: list, name: str, num_outputs: int = 1, **attrs):
        node = ir.node(op_type, inputs, attributes=attrs or None, num_outputs=num_outputs,
                       name=f"{self.prefix}/{name}", metadata_props=dict(self.meta))
        for i, out in enumerate(node.outputs):
            out.name = f"{self.prefix}/{name}" + (f".{i}" if num_outputs > 1 else "")
        self.graph.insert_before(self.group.first, node)
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
        half = self.group.dims["head_dim"] // 2
        lo, hi = self.op("Split", [t, self.ints([half, half], f"{name}/halves")], f"{name}/split", 2, axis=-1)
        rot = self.op("Concat", [self.op("Neg", [hi], f"{name}/neg"), lo], f"{name}/rotate", axis=-1)
        return self.op("Add", [self.op("Mul", [t, cos], f"{name}/cos"), self.op("Mul", [rot, sin], f"{name}/sin")],
                       name)

    def build(self, replaced: dict[ir.Value, ir.Value]) -> tuple[tuple[ir.Value, ir.Value], tuple[ir.Value, ir.Value]]:
        g, d, m0 = self.group, self.group.dims, self.group.members[0]
        x = replaced.get(m0.x, m0.x)
        k, nh, nkv, D, H = d["k"], d["heads"], d["kv_heads"], d["head_dim"], d["hidden"]
        rep, shared = nh // nkv, g.stage.shared_kv
        past = tuple(ir.Value(name=f"{self.prefix}/past.{kind}", type=old.type,
                              shape=ir.Shape([old.shape[0], nkv if shared else k * nkv, old.shape[2], D]))
                     for kind, old in zip(KINDS, m0.past))

        self.meta["painters.sublayer"] = "attn"
        # q, k and v as three MatMuls on the shared normed input: a concatenated one would need a Split (a copy)
        normed = self.norm(x, m0.norm1, "attn_norm")
        q, key, value = (self.op("MatMul", [normed, self.w[f"{n}_proj"]], f"{n}_proj") for n in ("q", "k", "v"))

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
                present.append(self.op("Concat", [p, new_mean], f"present.{kind}", axis=2))
                tiled = self.op("Tile", [p, tiles], f"{kind}/past_tiled")
                attend.append(self.op("Concat", [tiled, new], f"{kind}/attend", axis=2))
        else:
            present = [self.op("Concat", [p, new], f"present.{kind}", axis=2)
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
        x_rows = self.op("Reshape", [x, self.ints([1, -1, H], "x/rows_shape")], "x/rows")
        h = self.op("Add", [x_rows, self.op("MatMul", [ctx, self.w["o_proj"]], "o_proj")], "h")  # [k, B·S, H]

        self.meta["painters.sublayer"] = "mlp"
        # gate and up as two batched MatMuls: one concatenated MatMul would need a Split, a copy of both halves
        normed = self.norm(h, m0.norm2, "mlp_norm")
        gate = self.op("MatMul", [normed, self.w["gate_proj"]], "gate_proj")
        up = self.op("MatMul", [normed, self.w["up_proj"]], "up_proj")
        silu = self.op("Mul", [gate, self.op("Sigmoid", [gate], "sigmoid")], "silu")
        down = self.op("MatMul", [self.op("Mul", [silu, up], "act"), self.w["down_proj"]], "down_proj")
        outs = self.op("Add", [h, down], "x_out")
        mean = self.reduce_mean(outs, [0], "mean", 0)
        out = self.op("Reshape", [mean, self.op("Shape", [x], "x/shape")], "out")
        out.type, out.shape = g.mean.type, g.mean.shape
        g.mean.replace_all_uses_with(out)
        replaced[g.mean] = out
        return past, tuple(present)
