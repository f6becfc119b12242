"""Encoder block discovery: the post-LN (BERT) counterpart of :mod:`painters.compiler.blocks`.

A BERT encoder graph is a chain ``x_0 → [h_i = LN(x_i + Attn_i(x_i)); x_{i+1} = LN(h_i + FFN_i(h_i))] → head``
with no KV cache. As for decoders, discovery follows the chain semantically (no node names):

1. ``x_0`` is the embedding LayerNorm: from the ``Gather(word_embeddings, input_ids)`` through the Adds of the
   token-type and position embeddings to the one ``LayerNormalization`` they feed.
2. The residual set R is every value computed from ``x_0``; the attention mask, position and shape arithmetic
   come from the token inputs only and stay shared *context*.
3. From stream value ``x``, the residual ``Add`` reads ``x`` itself and one other value in R, and its only
   consumer is a ``LayerNormalization``: that LN's output is the block boundary (``h``, then ``x_{i+1}``).
4. Block i's attention nodes are the R-nodes reached backwards from ``h_i`` without passing ``x_i``, its FFN
   nodes those reached from ``x_{i+1}`` without passing ``h_i``.

The result is a :class:`~painters.compiler.blocks.BlockStructure` of :class:`EncoderBlock` (blocks without KV
IO); ``logits`` is the graph's output (``logits`` or ``last_hidden_state``). Wide-block fusion is
decoder-only (its matchers read pre-norm Llama blocks), so every encoder block records why none matches and
parallel groups run as clones averaged by one ``Sum · 1/k``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_ir as ir

from painters.compiler.blocks import BlockStructure, collect_nodes, residual_add, residual_set
from painters.decoder_io import INPUT_IDS
from painters.encoder_io import ENCODER_INPUTS, ENCODER_OUTPUTS, is_encoder_io
from painters.errors import CompileError

__all__ = ["EncoderBlock", "EncoderStructure", "discover_encoder_blocks", "prepare_encoder", "is_encoder_graph",
           "NO_FUSION"]

NO_FUSION = "encoder (post-LN) blocks have no wide-block matcher; parallel groups run unfused"


@dataclass
class EncoderBlock:
    """One post-LN encoder block: its stream values (each a LayerNorm output) and its two sublayers' nodes."""

    index: int
    x_in: ir.Value
    h: ir.Value  # LN_1(x_in + Attn(x_in))
    x_out: ir.Value  # LN_2(h + FFN(h))
    attn_nodes: list[ir.Node]  # in graph order, through the attention residual Add and LN_1
    mlp_nodes: list[ir.Node]  # in graph order, through the FFN residual Add and LN_2
    # no node is read by both sublayers (post-LN: each norm follows its own residual Add); kept for the
    # BlockStructure interface (tag_nodes, block_nodes, to_json) that decoder blocks fill
    shared_nodes: list[ir.Node] = field(default_factory=list)
    form: None = None  # no typed form: see NO_FUSION
    mismatch: str | None = field(default=NO_FUSION)


@dataclass
class EncoderStructure(BlockStructure):
    """Embedding output ``x0``, the encoder blocks, the last block's output ``final`` and the graph output."""

    blocks: list[EncoderBlock]  # type: ignore[assignment]  # encoder blocks: no KV IO


def is_encoder_graph(model: ir.Model) -> bool:
    """Whether the graph follows the encoder IO convention (:mod:`painters.encoder_io`)."""
    return is_encoder_io(v.name for v in model.graph.inputs)


def _fail(msg: str) -> CompileError:
    return CompileError(f"encoder block discovery: {msg} (is this a BERT-family encoder with inputs "
                        f"{', '.join(ENCODER_INPUTS)}, as `painters export` writes it?)")


def _only_consumer(value: ir.Value) -> ir.Node | None:
    uses = list(value.uses())
    return uses[0].node if len(uses) == 1 and not value.is_graph_output() else None


def _find_x0(graph: ir.Graph) -> ir.Value:
    ids = next((v for v in graph.inputs if v.name == INPUT_IDS), None)
    if ids is None:
        raise _fail(f"no graph input named {INPUT_IDS!r}")
    gathers = [u.node for u in ids.uses() if u.node.op_type == "Gather" and u.idx == 1]
    if len(gathers) != 1:
        raise _fail(f"expected one embedding Gather reading {INPUT_IDS}, found {len(gathers)}")
    value = gathers[0].outputs[0]
    while (node := _only_consumer(value)) is not None and node.op_type == "Add":
        value = node.outputs[0]
    if node is None or node.op_type != "LayerNormalization":
        raise _fail("the word embedding does not flow through Adds into one LayerNormalization")
    return node.outputs[0]


def _post_ln_step(x: ir.Value, R: set[ir.Value]) -> ir.Value | None:
    """LN(x + f(x)): the LayerNorm output after the one residual Add reading ``x``, or None at the chain's end."""
    add = residual_add(x, R)
    if add is None:
        return None
    norm = _only_consumer(add.outputs[0])
    return norm.outputs[0] if norm is not None and norm.op_type == "LayerNormalization" else None


def discover_encoder_blocks(model: ir.Model) -> EncoderStructure:
    """Find the post-LN encoder blocks of ``model`` (see the module docstring for the rules)."""
    graph = model.graph
    if not is_encoder_graph(model):
        raise _fail(f"the graph inputs {[v.name for v in graph.inputs]} are not the encoder convention")
    out = next((v for v in graph.outputs if v.name in ENCODER_OUTPUTS), None)
    if out is None or len(graph.outputs) != 1:
        raise _fail(f"expected one output named {' or '.join(ENCODER_OUTPUTS)}, found "
                    f"{[v.name for v in graph.outputs]}")
    x0 = _find_x0(graph)
    R = residual_set(graph, x0)
    order = {node: k for k, node in enumerate(graph)}
    stream, hs = [x0], []
    while (h := _post_ln_step(stream[-1], R)) is not None:
        x_out = _post_ln_step(h, R)
        if x_out is None:
            raise CompileError(f"encoder block discovery: block {len(hs)}: no residual Add + LayerNorm after the "
                               f"attention (value {h.name!r})")
        hs.append(h)
        stream.append(x_out)
    if not hs:
        raise _fail("no residual Add + LayerNorm reads the embedding output")
    blocks: list[EncoderBlock] = []
    owner: dict[ir.Node, int] = {}
    for i, h in enumerate(hs):
        x_in, x_out = stream[i], stream[i + 1]
        attn = collect_nodes([h], {x_in}, R, order)
        mlp = collect_nodes([x_out], {x_in, h}, R, order)
        members = set(attn) | set(mlp)
        for node in (*attn, *mlp):
            if node in owner:
                raise CompileError(f"encoder block discovery: block {i}: node {node.name!r} is shared with block "
                                   f"{owner[node]}; blocks must not share computed values")
            owner[node] = i
            for v in node.inputs:
                if v is not None and v in R and v not in (x_in, h) and v.producer() not in members:
                    raise CompileError(f"encoder block discovery: block {i}: node {node.name!r} reads {v.name!r}, "
                                       "which is computed outside the block from the residual stream")
        blocks.append(EncoderBlock(i, x_in, h, x_out, attn, mlp))
    return EncoderStructure(blocks, x0, stream[-1], out)


def prepare_encoder(model: ir.Model) -> EncoderStructure:
    """Normalize (drop no-op nodes) and discover: the encoder twin of :func:`painters.compiler.compile.prepare`."""
    from painters.compiler.passes.noops import RemoveNoOpsPass
    from painters.compiler.pipeline import run_passes

    run_passes([RemoveNoOpsPass()], model)
    return discover_encoder_blocks(model)
