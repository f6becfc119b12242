"""GPTQ's calibration statistics: the Hessian ``H = 2/n·Σ xxᵀ`` of every weight's inputs, from the compiled graph.

The statistics come from the graph being compiled, after the plan's rewrite, so a weight a plan repeats sees the
inputs of every block that reads it: its Hessian sums over all the MatMuls that read it, and it is quantized once
(``MatMulNBitsQuantizer``'s GPTQ keys Hessians by activation, so it would quantize each clone for its own). The
graph is saved to a temporary folder with those activations as extra outputs and run by onnxruntime on the
calibration sequences, one sequence per run, with an empty cache.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir

from painters.compiler.graph_io import fed_inputs
from painters.decoder_io import ATTENTION_MASK, INPUT_IDS, POSITION_IDS, is_past
from painters.errors import CompileError

__all__ = ["calibration_feeds", "input_hessians"]


def calibration_feeds(graph: ir.Graph, ids: np.ndarray) -> list[dict[str, np.ndarray]]:
    """One prefill feed per row of ``ids`` ``[samples, seq]``: the tokens, a full mask, positions, empty caches."""
    feeds = []
    for row in np.asarray(ids, dtype=np.int64):
        seq = row[None, :]
        feed: dict[str, np.ndarray] = {}
        for value in fed_inputs(graph):  # logits_to_keep keeps its default: every position
            if value.name == INPUT_IDS:
                feed[value.name] = seq
            elif value.name == ATTENTION_MASK:
                feed[value.name] = np.ones_like(seq)
            elif value.name == POSITION_IDS:
                feed[value.name] = np.arange(seq.shape[1], dtype=np.int64)[None, :]
            elif is_past(value.name) and value.shape is not None and len(value.shape) == 4 \
                    and all(isinstance(d, int) for d in (value.shape[1], value.shape[3])):
                feed[value.name] = np.zeros((1, value.shape[1], 0, value.shape[3]), dtype=value.dtype.numpy())
            else:
                raise CompileError(f"--quantizer gptq: cannot feed the graph's input {value.name} {value.shape} "
                                   "with calibration text; choose --quantizer rtn, k_quant or hqq (no data needed)")
        feeds.append(feed)
    return feeds


def input_hessians(model: ir.Model, feeds: Sequence[Mapping[str, np.ndarray]],
                   readers: Mapping[ir.Value, Sequence[ir.Value]]) -> dict[ir.Value, np.ndarray]:
    """``weight → H [K, K]`` (float64) over every activation that ``readers[weight]`` lists, on all ``feeds``."""
    import onnxruntime as ort

    acts = list(dict.fromkeys(a for values in readers.values() for a in values))
    graph = model.graph
    outputs = list(graph.outputs)
    graph.outputs.extend(a for a in acts if a not in outputs)
    try:
        with tempfile.TemporaryDirectory(prefix="painters-gptq-") as tmp:
            path = Path(tmp) / "calibrate.onnx"
            ir.save(model, path, external_data="calibrate.onnx.data")
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    finally:
        graph.outputs.clear()
        graph.outputs.extend(outputs)
    names = [a.name for a in acts]
    sums = {a: 0.0 for a in acts}
    rows = {a: 0 for a in acts}
    for feed in feeds:
        for act, out in zip(acts, session.run(names, dict(feed))):
            x = np.asarray(out, dtype=np.float64).reshape(-1, out.shape[-1])
            sums[act] = sums[act] + x.T @ x
            rows[act] += x.shape[0]
    return {weight: 2.0 * sum(sums[a] for a in values) / sum(rows[a] for a in values)
            for weight, values in readers.items()}
