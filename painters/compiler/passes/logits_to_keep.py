"""Let a prefill compute the head on its last positions only: a ``logits_to_keep`` input slicing the stream.

Why: a decoder graph computes ``logits`` [batch, seq, vocab] for every prompt position, and the head is the one
part of a prefill that no plan shortens. On SmolLM2-135M (49,152 × 576 tied head) it is a fifth of a 128-token
prefill of the full model and half of one of ``skip_4_26``, so a plan's prefill ratio could not come near its
ideal ratio (measured, ``painters bench latency``). Greedy decoding reads only the last position's logits, so
the compiled graph takes an optional scalar input ``logits_to_keep`` (Hugging Face's name for the same thing):

    final_kept = Slice(final, starts=[-logits_to_keep], ends=[INT64_MAX], axes=[1])

on the residual stream after the last block, before the final norm, so the norm and the head run on the kept
positions only (where the final norm is ONNX Runtime's one ``SimplifiedLayerNormalization`` op, as in the
builder's graphs, on its output instead: the norm then stays fused with the last residual Add, and normalising
every row costs next to nothing). Its default is 0 (an initializer of the same name): ``-0`` starts the slice
at 0 and every position is kept, so a caller that does not feed it (``bench accuracy``, ONNX Runtime GenAI, an
engine build) gets the graph's usual output. ``logits`` then has a dim of its own, ``logits_length``.

Run it before :class:`~painters.compiler.passes.instantiate.InstantiateStagesPass`: the slice is then the
epilogue's first node, the stages are inserted before it and the final stream value it reads is rewired to
the last stage's output with every other reader of the stream.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from painters.compiler.blocks import BlockStructure
from painters.decoder_io import LOGITS, LOGITS_TO_KEEP
from painters.ort_ops import NORM, SKIP_NORM

__all__ = ["LogitsToKeepPass", "LOGITS_TO_KEEP", "LOGITS_LENGTH"]

LOGITS_LENGTH = "logits_length"  # the symbolic dim 1 of ``logits`` once the graph keeps fewer positions


def _constant(graph: ir.Graph, before: ir.Node, name: str, array: np.ndarray) -> ir.Value:
    node = ir.node("Constant", [], attributes={"value": ir.tensor(array, name=name)}, name=name)
    graph.insert_before(before, node)
    out = node.outputs[0]
    out.name, out.shape, out.type = name, ir.Shape(array.shape), ir.TensorType(ir.DataType.INT64)
    return out


def _norm_output(final: ir.Value) -> ir.Value:
    """Where to slice: the final norm's output, or the stream itself.

    The output when the norm is one ONNX Runtime op and the stream's only reader (the builder's form): the
    slice then leaves the residual Add for :class:`~painters.compiler.passes.skip_norms.FuseSkipNormsPass`
    to fold into the norm, as the builder's graph has it.
    """
    readers = {use.node for use in final.uses()}
    if len(readers) == 1:
        (norm,) = readers
        if norm.op_type in (NORM, SKIP_NORM) and norm.inputs[0] is final and len(norm.outputs) == 1 \
                and norm.outputs[0].uses():
            return norm.outputs[0]
    return final


class LogitsToKeepPass(ir.passes.InPlacePass):
    """Insert the ``logits_to_keep`` slice on the final stream value (see the module docstring)."""

    def __init__(self, structure: BlockStructure):
        super().__init__()
        self.structure = structure

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Add the input and the slice once (a graph that has the input already is left as it is)."""
        graph = model.graph
        if any(v.name == LOGITS_TO_KEEP for v in graph.inputs):
            return ir.passes.PassResult(model, modified=False)
        final = _norm_output(self.structure.final)
        readers = [(use.node, use.idx) for use in final.uses()]
        first = next((n for n in graph if any(n is node for node, _ in readers)), None)
        if first is None:  # the stream is itself a graph output: nothing computes logits from it here
            return ir.passes.PassResult(model, modified=False)
        keep = ir.Value(name=LOGITS_TO_KEEP, shape=ir.Shape([]), type=ir.TensorType(ir.DataType.INT64),
                        const_value=ir.tensor(np.array(0, dtype=np.int64), name=LOGITS_TO_KEEP))
        graph.inputs.append(keep)
        graph.register_initializer(keep)  # an overridable default: 0 keeps every position
        prefix = f"/{LOGITS_TO_KEEP}"
        neg = ir.node("Neg", [keep], name=f"{prefix}/Neg")
        graph.insert_before(first, neg)
        neg.outputs[0].name = f"{prefix}/neg"
        one = _constant(graph, first, f"{prefix}/one", np.array([1], dtype=np.int64))
        start = ir.node("Reshape", [neg.outputs[0], one], name=f"{prefix}/Reshape")  # [] → [1], any opset
        graph.insert_before(first, start)
        start.outputs[0].name = f"{prefix}/start"
        end = _constant(graph, first, f"{prefix}/end", np.array([np.iinfo(np.int64).max], dtype=np.int64))
        sliced = ir.node("Slice", [final, start.outputs[0], end, one], name=f"{prefix}/Slice")
        graph.insert_before(first, sliced)
        kept = sliced.outputs[0]
        kept.name, kept.type = f"{final.name}/kept", final.type
        if final.shape is not None:
            dims = list(final.shape)
            dims[1] = LOGITS_LENGTH
            kept.shape = ir.Shape(dims)
        for node, idx in readers:
            node.replace_input_with(idx, kept)
        for value in graph.outputs:
            if value.name == LOGITS and value.shape is not None and len(value.shape) == 3:
                value.shape = ir.Shape([value.shape[0], LOGITS_LENGTH, value.shape[2]])
        return ir.passes.PassResult(model, modified=True)
