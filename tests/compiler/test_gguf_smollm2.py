"""SmolLM2 (the built-in Q4_1 GGUF): ``--weights int4`` keeps the file's own blocks, exactly.

Measured on this machine (prompts of 64 and 17 random ids, logits over real positions, relative to the fp32
graph's largest logit): the exact graph at ``accuracy_level`` 0 differs from the fp32 graph by 1.1e-5 (fp32
summation order), at the default level 4 (int8 activations) by 0.16; the re-quantized graph (``--gguf none``)
by 0.70 at level 4 and 0.74 at level 0 — the re-quantization itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from painters.compiler.compile import compile_model
from painters.compiler.graph_io import load_graph
from painters.compiler.passes.quantize import with_accuracy_level

REL_EXACT_LEVEL0 = 1e-4  # measured 1.1e-5
REL_REQUANTIZED_MIN = 0.3  # measured 0.74: the re-quantized graph is not the GGUF's weights


def _logits(path, ids, mask, level=4):
    from painters.runtime.ort import OrtRunner

    return OrtRunner(with_accuracy_level(path, level)).prefill(ids, mask)[0]


@pytest.fixture(scope="module")
def exact(smollm2_onnx, tmp_path_factory):
    """SmolLM2 compiled with ``--weights int4`` from the built-in GGUF (its own blocks), shared by the tests."""
    return compile_model(smollm2_onnx, "baseline", tmp_path_factory.mktemp("exact") / "model.onnx", weights="int4")


@pytest.mark.slow
def test_smollm2_int4_is_the_ggufs_own_blocks(smollm2_onnx, exact, tmp_path):
    from painters.runtime.base import left_pad

    requant = compile_model(smollm2_onnx, "baseline", tmp_path / "rtn" / "model.onnx", weights="int4", gguf="none",
                             quantizer="rtn")
    meta = load_graph(exact.output).metadata_props
    assert meta["painters.weights"] == "int4/block32/gguf:SmolLM2-135M-Instruct.Q4_1.gguf/level4"
    graph = load_graph(exact.output).graph
    bits = sorted({n.attributes["bits"].as_int() for n in graph if n.op_type == "MatMulNBits"})
    assert bits == [4, 8]  # Q4_1 layers, the Q8_0 tied head
    rng = np.random.default_rng(0)
    ids, mask = left_pad([list(rng.integers(1, 49000, 64)), list(rng.integers(1, 49000, 17))])
    real = mask.astype(bool)
    want = _logits(smollm2_onnx, ids, mask)[real]
    scale = np.abs(want).max()
    diffs = {}
    for name, path in (("exact", exact.output), ("requantized", requant.output)):
        got = _logits(path, ids, mask, level=0)[real]
        diffs[name] = np.abs(got - want).max() / scale
    assert diffs["exact"] <= REL_EXACT_LEVEL0, diffs
    assert diffs["requantized"] >= REL_REQUANTIZED_MIN, diffs
    default = _logits(exact.output, ids, mask)[real]  # accuracy_level 4: int8 activations
    assert np.abs(default - want).max() / scale < diffs["requantized"]


@pytest.mark.slow
def test_smollm2_int4_lookup_is_the_heads_blocks_and_plans_compile_on_it(smollm2_onnx, exact, tmp_path):
    """The Q8_0 lookup tied to the head reads the head's own MatMulNBits blocks (one copy of the 49152 × 576
    table), and a plan compiled on the exact int4 graph (its lookup now ends in a Reshape) equals the same plan
    compiled from the fp32 graph with ``--weights int4``, logit for logit."""
    from painters.runtime.base import left_pad
    from painters.runtime.ort import OrtRunner

    graph = load_graph(exact.output).graph
    (lookup,) = [n for n in graph if n.op_type == "GatherBlockQuantized"]
    (head,) = [n for n in graph if n.op_type == "MatMulNBits" and n.attributes["bits"].as_int() == 8]
    assert lookup.inputs[0] is head.inputs[1]
    on_int4 = compile_model(exact.output, "skip_4_26", tmp_path / "skip_on_int4" / "skip.onnx")
    from_fp32 = compile_model(smollm2_onnx, "skip_4_26", tmp_path / "skip_from_fp32" / "model.onnx", weights="int4")
    ids, mask = left_pad([[1, 504, 3000, 17, 9], [1, 77, 2]])
    got, want = (OrtRunner(p.output).prefill(ids, mask)[0] for p in (on_int4, from_fp32))
    np.testing.assert_array_equal(got[mask.astype(bool)], want[mask.astype(bool)])
