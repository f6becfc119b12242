"""Bytes of weights one decode step reads: the bandwidth floor that a plan's latency ratio is bounded by.

``Plan.ideal_cost_ratio`` counts sublayer evaluations, as the papers do. A small model's decode step also reads
weights that no plan touches — SmolLM2-135M's 49152 × 576 head is a fifth of its parameters — and a
bandwidth-bound CPU or GPU decode step costs about the bytes it reads. This module reads that number off the
deployed graph itself, without loading its weights (external data sizes come from the graph's own records),
so the bench can show what a plan gives on this artifact when weight reads dominate, beside what it measured.
It is not a bound where other work dominates: attention over a long cache, or per-node overheads.

Counting: every initializer input of every node, once per node (a block a plan runs twice reads its weights
twice; two nodes sharing one initializer read it twice). Not counted:

* tables read a row at a time (``ROW_READERS``): an embedding lookup reads one row per token, an attention
  operator one row of its rotary cos/sin caches per position;
* a node all of whose inputs are constant (a ``Transpose`` or ``Reshape`` of a weight): onnxruntime folds it
  once at load, and its output counts as a weight of that size where it is read;
* integer shape and index constants (``INDEX_TYPES``) and one-element constants (norm epsilons, scales): they
  are not weights.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import helper

from painters.ort_ops import GATHER_BLOCK_QUANTIZED, GQA, ROTARY

__all__ = ["weight_bytes", "ROW_READERS", "INDEX_TYPES"]

ROW_READERS = frozenset({"Gather", GATHER_BLOCK_QUANTIZED, GQA, ROTARY})
INDEX_TYPES = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.BOOL})


def _tensor_bytes(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= int(d)
    if n <= 1:
        return 0
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (n + 1) // 2
    return n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def weight_bytes(path: str | Path) -> int:
    """Initializer bytes read by one evaluation of every node of the graph at ``path`` (data not loaded)."""
    model = onnx.load(str(path), load_external_data=False)
    const = {t.name for t in model.graph.initializer}
    sizes = {t.name: _tensor_bytes(t) for t in model.graph.initializer if t.data_type not in INDEX_TYPES}
    total = 0
    for node in model.graph.node:  # graph order is topological: a folded output is known before it is read
        read = sum(sizes.get(name, 0) for name in node.input if name)
        if all(name in const for name in node.input if name):
            const.update(node.output)
            sizes.update({out: read for out in node.output})
        elif node.op_type not in ROW_READERS:
            total += read
    return total
