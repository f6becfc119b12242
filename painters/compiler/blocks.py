"""Block discovery: the one place that finds decoder blocks in an ONNX graph.

A Llama-family decoder graph is a residual chain ``x_0 → [h_i = x_i + Attn_i(x_i); x_{i+1} = h_i + MLP_i(h_i)]
→ norm → lm_head``. Discovery follows that chain semantically, so it needs no node names: it works on graphs
from ``painters export`` and on graphs from other exporters (Optimum / TorchScript ``/model/layers.{i}/…``
names) that share the decoder IO convention of :mod:`painters.decoder_io` (past-KV inputs → present outputs).

1. ``x_0`` is the output of the embedding ``Gather(weight, input_ids)`` (or ``GatherBlockQuantized``, int4),
   after its scaling (a Mul or Cast that is the Gather's only data consumer: Gemma, Granite).
2. The *residual set* R is every value computed from ``x_0`` or a past-KV input (plain dataflow; a
   ``Shape`` of ``x_0`` carries no data and stays context). Shape reads of past-KV inputs outside their
   block are first re-anchored on ``input_ids`` / ``attention_mask`` (:mod:`painters.compiler.passes.anchor_shapes`).
3. From stream value ``x``, the residual ``Add`` is the one Add that reads ``x`` itself and a value in R;
   two of them make a block (attention, then MLP). The chain ends where no such Add exists.
4. Block i's nodes are the R-nodes reached backwards from ``x_{i+1}`` and its present outputs without
   passing ``x_i`` or the past inputs; its attention nodes are those reached from ``h_i`` and the presents.
   Nodes both sublayers need (the one pre-norm of a parallel-residual block, StableLM's ``ln1``, or GPT-NeoX's
   two norms when the exporter merged them) are the block's *shared* nodes, kept whenever either sublayer is.
   Everything outside R (rotary tables, the mask, shape arithmetic) is shared *context*.

Each failed expectation raises :class:`CompileError` naming the block and what was missing. Then every
registered block form (:mod:`painters.compiler.forms.registry`) is tried on each block; the first typed
description that fits is the block's ``form`` (what a wide block is built from) and the form that made it its
``block_form``, and otherwise ``mismatch`` says why none fits. A new graph form or architecture is a new
:class:`~painters.compiler.forms.base.BlockForm` and a registry line, not a new pass. The result is recorded
by ``painters export`` in the model metadata ``painters.blocks`` (residual tensor names per block) and on every
node as ``painters.block`` / ``painters.sublayer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnx_ir as ir

from painters.compiler.forms import registry
from painters.compiler.forms.base import BlockForm, Mismatch
from painters.decoder_io import INPUT_IDS, LOGITS, parse_past, past_name, present_name
from painters.errors import CompileError
from painters.ort_ops import GATHER_BLOCK_QUANTIZED, GQA, MHA, MS_DOMAIN

__all__ = ["Block", "BlockStructure", "BlockForm", "discover_blocks", "residual_add",
           "residual_set", "collect_nodes"]

# The embedding lookup x_0 = op(weight, input_ids): a Gather, or ONNX Runtime's int4 one (GenAI's int4 graphs)
FUSED_ATTENTION_OPS = (GQA, MHA)  # com.microsoft: ONNX Runtime GenAI's attention forms
EMBEDDING_OPS = {("", "Gather"), ("ai.onnx", "Gather"), (MS_DOMAIN, GATHER_BLOCK_QUANTIZED)}


@dataclass
class Block:
    """One decoder block: its residual values, KV IO and nodes (attention and MLP sublayers)."""

    index: int
    x_in: ir.Value
    h: ir.Value  # after the attention residual Add
    x_out: ir.Value
    past: tuple[ir.Value, ir.Value]
    present: tuple[ir.Value, ir.Value]
    attn_nodes: list[ir.Node]  # in graph order, including the attention residual Add
    mlp_nodes: list[ir.Node]  # in graph order, including the MLP residual Add
    shared_nodes: list[ir.Node]  # in graph order: read by both sublayers (a parallel-residual block's one norm)
    form: Any = None  # the first registered form's typed description that fits (its matcher's result)
    block_form: BlockForm | None = None  # the form that made it: layout and instantiation ask it, not isinstance
    mismatch: str | None = None  # why no form fits (None when one does)

    @property
    def kv_heads(self) -> int | str | None:
        """Heads of the block's past-KV input (static in every graph painters can size a cache for)."""
        shape = self.past[0].shape
        return shape[1] if shape is not None and len(shape) == 4 else None

    @property
    def fused_attention(self) -> str | None:
        """The ``com.microsoft`` attention operator of the block (ONNX Runtime GenAI's graphs), None if decomposed."""
        return next((n.op_type for n in self.attn_nodes
                     if n.domain == MS_DOMAIN and n.op_type in FUSED_ATTENTION_OPS), None)

    @property
    def kv_in_place(self) -> bool:
        """One ``GroupQueryAttention`` reads this block's past KV and writes its present KV directly.

        ONNX Runtime's GQA then takes one buffer bound as both past and present and writes the new positions
        into it (its ``past_present_share_buffer`` mode): the cache never moves, which is how ONNX Runtime
        GenAI decodes the builder's graphs. Every other attention form concatenates past and new.
        """
        writer = self.present[0].producer()
        return (writer is not None and writer.domain == MS_DOMAIN and writer.op_type == GQA
                and writer is self.present[1].producer() and len(writer.inputs) > 4
                and writer.inputs[3] is self.past[0] and writer.inputs[4] is self.past[1])


@dataclass
class BlockStructure:
    """Prologue (context), the blocks, and the epilogue's input (``x_L``, read by the final norm)."""

    blocks: list[Block]
    x0: ir.Value
    final: ir.Value
    logits: ir.Value

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def block_nodes(self) -> set[ir.Node]:
        return {n for b in self.blocks for n in (*b.shared_nodes, *b.attn_nodes, *b.mlp_nodes)}

    def tag_nodes(self) -> None:
        """Record on every block node which block and sublayer it belongs to (node metadata)."""
        for b in self.blocks:
            for sub, nodes in (("shared", b.shared_nodes), ("attn", b.attn_nodes), ("mlp", b.mlp_nodes)):
                for node in nodes:
                    node.metadata_props.update({"painters.block": str(b.index), "painters.sublayer": sub})

    def to_json(self) -> list[dict]:
        return [{"index": b.index, "input": b.x_in.name, "attention_residual": b.h.name, "output": b.x_out.name,
                 "attn_nodes": len(b.attn_nodes), "mlp_nodes": len(b.mlp_nodes),
                 "shared_nodes": len(b.shared_nodes)} for b in self.blocks]


def _fail(msg: str) -> CompileError:
    return CompileError(f"block discovery: {msg} (is this a Llama-family decoder exported with the "
                        f"{past_name('{i}', 'key/value')} → {present_name('{i}', 'key/value')} convention?)")


def _find_embedding(graph: ir.Graph) -> ir.Value:
    ids = next((v for v in graph.inputs if v.name == INPUT_IDS), None)
    if ids is None:
        raise _fail(f"no graph input named {INPUT_IDS!r}")
    gathers = [u.node for u in ids.uses() if (u.node.domain, u.node.op_type) in EMBEDDING_OPS and u.idx == 1]
    if len(gathers) != 1:
        raise _fail(f"expected one embedding Gather reading input_ids, found {len(gathers)}")
    x = gathers[0].outputs[0]
    # A scaled embedding (Gemma's √d, Granite's embedding_multiplier) is one elementwise Mul/Cast whose only
    # data consumer it is: the residual stream starts after it. (A Llama x_0 also feeds the first norm.) So is
    # the Reshape of a lookup over a tied head's [N, K/32, 32] blocks (painters.compiler.passes.gguf_weights).
    while True:
        uses = [u.node for u in x.uses() if u.node.op_type != "Shape"]
        if len(uses) != 1 or uses[0].op_type not in ("Mul", "Div", "Cast", "Reshape") or len(uses[0].outputs) != 1:
            return x
        x = uses[0].outputs[0]


def _kv_io(graph: ir.Graph) -> tuple[dict[int, tuple[ir.Value, ir.Value]], dict[int, tuple[ir.Value, ir.Value]]]:
    past: dict[int, dict[str, ir.Value]] = {}
    for v in graph.inputs:
        parsed = parse_past(v.name)
        if parsed:
            past.setdefault(parsed[0], {})[parsed[1]] = v
    outputs = {v.name: v for v in graph.outputs}
    pasts, presents = {}, {}
    for i, kv in sorted(past.items()):
        if set(kv) != {"key", "value"}:
            raise _fail(f"layer {i}: past key and value inputs must come in pairs")
        pk, pv = outputs.get(present_name(i, "key")), outputs.get(present_name(i, "value"))
        if pk is None or pv is None:
            raise _fail(f"layer {i}: input {past_name(i, 'key')} has no matching output {present_name(i, 'key')}")
        pasts[i], presents[i] = (kv["key"], kv["value"]), (pk, pv)
    return pasts, presents


def residual_set(graph: ir.Graph, x0: ir.Value, pasts: Sequence[ir.Value] = ()) -> set[ir.Value]:
    """Values computed (transitively) from ``x0`` or a past input: the residual stream and what it feeds.

    Encoders (no cache) pass no ``pasts``.

    ``Shape(x0)`` is data-free (every stream value has x0's shape), so context such as the mask may read it.
    """
    seen: set[ir.Value] = {x0, *pasts}
    for node in graph:  # graph order is topological
        if node.op_type == "Shape" and node.inputs[0] is x0:
            continue
        if any(v in seen for v in node.inputs if v is not None):
            seen.update(node.outputs)
    return seen


def residual_add(x: ir.Value, R: set[ir.Value]) -> ir.Node | None:
    """The one residual ``Add`` reading stream value ``x`` and another value of R, or None (none or several).

    Shared with encoder discovery (:mod:`painters.compiler.encoder_blocks`): pre- and post-LN blocks find
    their residual Adds the same way.
    """
    adds = [u.node for u in x.uses() if u.node.op_type == "Add"
            and all(v in R for v in u.node.inputs) and len(u.node.inputs) == 2]
    return adds[0] if len(adds) == 1 else None


def collect_nodes(
    targets: list[ir.Value], stops: set[ir.Value], R: set[ir.Value], order: dict[ir.Node, int]
) -> list[ir.Node]:
    """R-nodes reached backwards from ``targets`` without crossing ``stops``, in graph order.

    A sublayer's nodes, for decoder and encoder discovery alike.
    """
    found: set[ir.Node] = set()
    stack = [v for v in targets]
    visited: set[ir.Value] = set()
    while stack:
        v = stack.pop()
        if v in visited or v in stops or v not in R:
            continue
        visited.add(v)
        node = v.producer()
        if node is None or node in found:
            continue
        found.add(node)
        stack.extend(i for i in node.inputs if i is not None)
    return sorted(found, key=order.__getitem__)


def _match(block: Block, forms: Sequence[BlockForm]) -> None:
    reasons = []
    for form in forms:
        try:
            block.form = form.match(block)
            block.block_form = form
            return
        except Mismatch as exc:
            reasons.append(str(exc))
    block.mismatch = "; ".join(reasons) or "no block form is registered"


def discover_blocks(model: ir.Model, forms: Sequence[BlockForm] | None = None) -> BlockStructure:
    """Find the decoder blocks of ``model`` (see the module docstring for the rules) and match their forms."""
    graph = model.graph
    x0 = _find_embedding(graph)
    pasts, presents = _kv_io(graph)
    R = residual_set(graph, x0, [v for kv in pasts.values() for v in kv])
    order = {node: k for k, node in enumerate(graph)}
    logits = next((v for v in graph.outputs if v.name == LOGITS), None)
    if logits is None:
        raise _fail(f"no graph output named {LOGITS!r}")

    stream = [x0]
    adds: list[tuple[ir.Node, ir.Node]] = []
    while True:
        x = stream[-1]
        add_attn = residual_add(x, R)
        if add_attn is None:
            break
        i = len(adds)
        h = add_attn.outputs[0]
        add_mlp = residual_add(h, R)
        if add_mlp is None:
            raise CompileError(f"block discovery: block {i}: no residual Add found after the MLP "
                               f"(value {h.name!r} after the attention residual has no Add consumer)")
        adds.append((add_attn, add_mlp))
        stream.append(add_mlp.outputs[0])
    L = len(adds)
    if L == 0:
        raise _fail("no residual Add reads the embedding output")
    if sorted(pasts) != list(range(L)):
        raise _fail(f"found {L} residual blocks but KV inputs for layers {sorted(pasts)}")

    blocks: list[Block] = []
    owner: dict[ir.Node, int] = {}
    for i, (add_attn, add_mlp) in enumerate(adds):
        x_in, h, x_out = stream[i], add_attn.outputs[0], add_mlp.outputs[0]
        stops = {x_in, *pasts[i]}
        attn = collect_nodes([h, *presents[i]], stops, R, order)
        mlp = collect_nodes([x_out], stops | {h}, R, order)  # h stops it, so it reaches attention nodes only
        shared_set = set(attn) & set(mlp)                # where the MLP reads them directly
        shared = [n for n in attn if n in shared_set]
        attn = [n for n in attn if n not in shared_set]
        mlp = [n for n in mlp if n not in shared_set]
        attn_set = set(attn)
        members = attn_set | set(mlp) | shared_set
        for node in (*shared, *attn, *mlp):
            if node in owner:
                raise CompileError(f"block discovery: block {i}: node {node.name!r} is shared with block "
                                   f"{owner[node]}; blocks must not share computed values")
            owner[node] = i
            for v in node.inputs:
                if v is not None and v in R and v not in stops and v.producer() not in members and v is not h:
                    raise CompileError(f"block discovery: block {i}: node {node.name!r} reads {v.name!r}, which "
                                       "is computed outside the block from the residual stream")
        if add_attn not in attn_set:
            raise CompileError(f"block discovery: block {i}: the attention residual Add does not depend on "
                               "the attention output")
        for _kind, value in zip(("key", "value"), presents[i]):
            if value.producer() not in attn_set:
                raise CompileError(f"block discovery: block {i}: {value.name!r} is not computed by the block's "
                                   "attention")
        blocks.append(Block(i, x_in, h, x_out, pasts[i], presents[i], attn, mlp, shared))
        _match(blocks[-1], registry.FORMS if forms is None else forms)
    return BlockStructure(blocks, x0, stream[-1], logits)
