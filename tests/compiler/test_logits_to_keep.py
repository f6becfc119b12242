"""A compiled graph's prefill runs the head on the positions it keeps only, and a plan's graph holds nothing more.

Issue 29: a plan's prefill ratio stayed far above its ideal ratio because the head (a fifth of SmolLM2-135M's
128-token prefill, half of ``skip_4_26``'s) ran over every prompt position whatever the plan removed. These tests
hold the structure that fixes it: every path from the tokens to ``logits`` crosses the ``logits_to_keep`` slice,
a dropped attention removes exactly its block's attention nodes (nothing per token is left behind), the default
keeps every position, and the runner's prefill asks for the last position only. The runner's CPU sessions do
not spin (a spinning session slowed the next plan's prefill in interleaved rounds: painters.runtime.ort).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from painters.compiler.compile import compile_model, compile_passes, prepare, run_passes
from painters.compiler.engine import graph_info
from painters.compiler.layout import slot_layout
from painters.decoder_io import INPUT_IDS, LOGITS, LOGITS_TO_KEEP, is_past
from painters.plans import parse_plan
from painters.runtime.base import left_pad
from painters.runtime.ort import OrtRunner
from tests.compiler.test_passes_toy import HEAD_DIM, HEADS, HIDDEN, toy_decoder

PROMPTS = [[1, 17, 99, 3, 45, 8, 200], [1, 5, 6]]


def _toy(layers: int = 3) -> ir.Model:
    rng = np.random.default_rng(0)
    return toy_decoder([{n: (rng.standard_normal((HIDDEN, HIDDEN)) * 0.3).astype(np.float32)
                         for n in ("k", "v", "o", "mlp")} for _ in range(layers)])


def _compiled(plan: str) -> tuple[ir.Model, int]:
    """The toy compiled to ``plan`` (the compile pipeline after discovery), and block 1's attention node count."""
    model = _toy()
    structure = prepare(model)
    layout = slot_layout(parse_plan(plan, structure.num_layers), structure, warn=False)
    run_passes(compile_passes(structure, layout), model)
    return model, len(structure.blocks[1].attn_nodes)


def _reaches_tokens_without(value: ir.Value, barrier: ir.Node) -> bool:
    """Whether ``value`` is computed from ``input_ids`` along some path that does not pass ``barrier``."""
    stack, seen = [value], set()
    while stack:
        v = stack.pop()
        if v is None or v in seen:
            continue
        seen.add(v)
        if v.name == INPUT_IDS:
            return True
        node = v.producer()
        if node is not None and node is not barrier:
            stack.extend(node.inputs)
    return False


def _run(model: ir.Model, ids: np.ndarray, keep: int | None) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(ir.serde.serialize_model(model).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    feeds = {INPUT_IDS: ids, "attention_mask": np.ones_like(ids)}
    for i in session.get_inputs():
        if is_past(i.name):
            feeds[i.name] = np.zeros((ids.shape[0], HEADS, 0, HEAD_DIM), np.float32)
    if keep is not None:
        feeds[LOGITS_TO_KEEP] = np.array(keep, np.int64)
    return session.run([LOGITS], feeds)[0]


@pytest.mark.parametrize("plan", ["baseline", "drop_attn_1", "skip_1_2"])
def test_logits_depend_on_the_tokens_only_through_the_slice(plan):
    model, _ = _compiled(plan)
    graph = model.graph
    keep = next(v for v in graph.inputs if v.name == LOGITS_TO_KEEP)
    assert keep.const_value is not None and keep.const_value.numpy() == 0  # the default keeps every position
    (slice_node,) = [u.node for u in _consumers(keep) if u.node.op_type == "Slice"]
    logits = next(v for v in graph.outputs if v.name == LOGITS)
    assert _reaches_tokens_without(logits.producer().inputs[0], None)  # the check can fail: the head reads tokens
    assert not _reaches_tokens_without(logits, slice_node)


def _consumers(value: ir.Value):
    """Uses of ``value`` and of the values computed from it (the slice reads ``-logits_to_keep``, not the input)."""
    stack, uses = [value], []
    while stack:
        for use in stack.pop().uses():
            uses.append(use)
            if use.node.op_type != "Slice":
                stack.extend(use.node.outputs)
    return uses


def test_dropped_attention_leaves_no_node_behind():
    """drop_attn_1 is baseline less exactly block 1's attention nodes: no copy, cast or cache node stays."""
    base, attn_nodes = _compiled("baseline")
    drop, _ = _compiled("drop_attn_1")
    assert len(base.graph) - len(drop.graph) == attn_nodes
    assert sorted(n.op_type for n in base.graph if "l1." not in n.name or "mlp" in n.name) == \
        sorted(n.op_type for n in drop.graph)
    assert len([v for v in drop.graph.inputs if is_past(v.name)]) == 2 * 2  # two slots left: block 1 has none


@pytest.mark.parametrize("plan", ["baseline", "skip_1_2"])
def test_kept_logits_equal_the_last_rows(plan):
    model, _ = _compiled(plan)
    ids = np.array([[1, 5, 3, 2], [2, 7, 0, 4]], np.int64)
    full = _run(model, ids, None)
    assert full.shape[1] == 4 and np.array_equal(_run(model, ids, 0), full)
    for k in (1, 3, 9):  # more than the prompt: every position
        np.testing.assert_allclose(_run(model, ids, k), full[:, -min(k, 4):], rtol=0, atol=1e-6)


@pytest.mark.parametrize("plan", ["drop_attn_1,3-4", "skip_2_6"])
def test_runner_prefill_keeps_the_last_position(tiny_onnx, tmp_path, plan):
    path = compile_model(tiny_onnx, plan, tmp_path / "m.onnx").output
    runner = OrtRunner(path)
    # what an engine profile or a Triton config lists: the inputs a caller must feed, not one with a default
    assert LOGITS_TO_KEEP not in [name for name, _, _ in graph_info(path).inputs]
    plain = OrtRunner(tiny_onnx)  # the export: no logits_to_keep input, every position comes back
    assert runner.keeps_logits and not plain.keeps_logits
    ids, mask = left_pad(PROMPTS)
    full, _ = runner.prefill(ids, mask)
    last, kv = runner.prefill(ids, mask, logits_to_keep=1)
    assert full.shape[1] == ids.shape[1] and last.shape[1] == 1
    assert plain.prefill(ids, mask, logits_to_keep=1)[0].shape[1] == ids.shape[1]
    np.testing.assert_allclose(last[:, 0], full[:, -1], rtol=0, atol=1e-5)
    assert runner.generate(PROMPTS, 6, static=False) == runner.generate(PROMPTS, 6, static=True)


def test_cpu_sessions_do_not_spin(tiny_onnx):
    from painters.runtime.ort import SPINNING

    options = OrtRunner(tiny_onnx).session.get_session_options()
    assert options.get_session_config_entry(SPINNING) == "0"
