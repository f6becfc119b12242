"""int4 parallel groups fused (:mod:`painters.compiler.forms.wide_int4`): the fused int4 graph equals the unfused
int4 graph, and its packed weights are the members' own bytes, concatenated — for both int4 sources.

The reference is the same plan compiled unfused (``fuse_parallel=False``) from the same source with the same int4
source: every member weight quantized (or converted from the GGUF) on its own. Up to the first down projection
the fused group's activations are bit-identical to the members'; what differs is float summation order: the
stacked down projection sums the members inside one MatMul and the mean is ``mean(h) + Σdown/k``.

Measured on tiny-llama, relative max difference to the unfused graph (logits over real positions, every KV slot,
one decode step), at ``accuracy_level`` 0 (fp32 activations): ≤ 1.3e-6 for all plans and both sources. At the
default level 4 (activations rounded to int8 per block) a last-bit difference can flip a rounding in the blocks
after the group: re-quantized weights ≤ 4.3e-7, GGUF Q4_1 blocks ≤ 1.5e-2 (the unfused Q4_1 graph itself is
3.6e-2 from its level-0 form there: the fusion moves less than int8 activations do).

The builder's form (:mod:`painters.compiler.forms.wide_gqa_int4`, tiny-llama with random norm gains through
ONNX Runtime GenAI's builder): level 0 ≤ 9.0e-7 for both sources; level 4 ≤ 4.3e-7 re-quantized, ≤ 2.1e-2 GGUF
Q4_1 blocks.
"""

from __future__ import annotations

import copy
import dataclasses
import logging

import numpy as np
import pytest

from painters.compiler.compile import compile_model
from painters.compiler.graph_io import load_graph
from painters.compiler.passes.quantize import with_accuracy_level
from painters.runtime.base import left_pad
from painters.runtime.ort import OrtRunner

PROMPTS = [[1, 17, 99, 3, 45, 8, 200], [1, 5, 6]]
REL_LOGITS = 1e-5  # accuracy_level 0: float summation order only (measured ≤ 1.3e-6)
REL_INT8 = 0.05  # accuracy_level 4: int8 roundings that flip on last-bit differences (measured ≤ 1.5e-2)
FUSE_LOG = "painters.compiler.layout"
GROUP = "painters.fused_int4.blocks_2_3_4_5"


def _to_gguf(model, path) -> None:
    """Write ``model``'s Linear and Embedding weights to a Q4_1 GGUF at ``path`` and put the de-quantized blocks back
    into the model (as a GGUF export's weights are)."""
    import gguf
    import torch

    writer = gguf.GGUFWriter(str(path), "llama")
    qtype = gguf.GGMLQuantizationType.Q4_1
    done = set()  # a tied head shares the embedding's parameter: one tensor
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)) and id(module.weight) not in done:
                done.add(id(module.weight))
                raw = gguf.quants.quantize(module.weight.numpy(), qtype)  # rows along K, as llama.cpp stores them
                writer.add_tensor(name, raw, raw_dtype=qtype)
                module.weight.copy_(torch.from_numpy(gguf.quants.dequantize(raw, qtype)))
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file,
                 writer.close):
        step()


@pytest.fixture(scope="module")
def tiny_gguf(tiny, tmp_path_factory):
    """tiny-llama whose weights are a Q4_1 GGUF's de-quantized blocks (as a GGUF export's are), with that GGUF."""
    from painters.export.onnx_export import export_model

    model = copy.deepcopy(tiny.model)
    folder = tmp_path_factory.mktemp("tiny_gguf")
    _to_gguf(model, folder / "tiny.gguf")
    loaded = dataclasses.replace(tiny, model=model)
    return export_model(loaded, folder / "model.onnx"), folder / "tiny.gguf"


@pytest.fixture(scope="module")
def genai_sources(tiny, tmp_path_factory) -> dict[str, tuple]:
    """The builder's fp32 graph (``--form genai``) of tiny-llama with random norm gains (its own are ones, which
    would hide a member's gain applied to another member), per int4 source: ``rtn`` (float weights, re-quantized)
    and ``gguf`` (the weights a Q4_1 GGUF's blocks, with that GGUF)."""
    pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed (extra 'genai')")
    import torch

    from painters.export.genai_export import export_genai
    from tests.byte_tokenizer import byte_tokenizer

    folder = tmp_path_factory.mktemp("genai_int4")
    model = copy.deepcopy(tiny.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=generator) * 1.5 + 0.25)
    sources = {}
    for source in ("rtn", "gguf"):
        if source == "gguf":
            _to_gguf(model, folder / "tiny.gguf")
        out = export_genai(dataclasses.replace(tiny, model=model), folder / source / "model.onnx",
                           tokenizer=byte_tokenizer())
        sources[source] = (out, folder / "tiny.gguf" if source == "gguf" else "none")
    return sources


def _pair(source, gguf, plan, tmp_path, block_size=None):
    kwargs = dict(weights="int4", gguf=gguf, block_size=block_size)
    fused = compile_model(source, plan, tmp_path / "fused" / "m.onnx", **kwargs)
    unfused = compile_model(source, plan, tmp_path / "unfused" / "m.onnx", fuse_parallel=False, **kwargs)
    return fused, unfused


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def _differences(fused, unfused, level: int, prompts=PROMPTS) -> dict[str, float]:
    """Relative max differences of fused vs unfused: prefill logits, every KV slot, one decode step's logits."""
    ids, mask = left_pad(prompts)
    real = mask.astype(bool)
    runners = OrtRunner(with_accuracy_level(fused.output, level)), OrtRunner(with_accuracy_level(unfused.output, level))
    (got, got_kv), (want, want_kv) = (r.prefill(ids, mask) for r in runners)
    diffs = {"prefill": _rel(got[real], want[real]), "kv": 0.0}
    by_plan_slot = {s.plan_slots[0]: i for i, s in enumerate(unfused.layout.slots)}
    for compiled, slot in zip(got_kv, fused.layout.slots):  # a fused slot holds its members' heads side by side
        for kind in (0, 1):
            expected = np.concatenate([want_kv[by_plan_slot[p]][kind] for p in slot.plan_slots], axis=1)
            diffs["kv"] = max(diffs["kv"], _rel(compiled[kind], expected))
    step = np.array([[7], [9]])
    step_mask = np.concatenate([mask, np.ones((2, 1), dtype=mask.dtype)], axis=1)
    got, _ = runners[0].decode(step, step_mask, got_kv)
    want, _ = runners[1].decode(step, step_mask, want_kv)
    diffs["decode"] = _rel(got, want)
    return diffs


@pytest.mark.parametrize("source", ["rtn", "gguf"])
@pytest.mark.parametrize("plan", ["parallel_2_6", "parallel_1_7_x2", "parallel_2_6:kvmean"])
def test_fused_int4_equals_unfused_int4(tiny_onnx, tiny_gguf, tmp_path, source, plan, caplog):
    onnx_path, gguf = (tiny_onnx, "none") if source == "rtn" else tiny_gguf
    with caplog.at_level(logging.WARNING, logger=FUSE_LOG):
        fused, unfused = _pair(onnx_path, gguf, plan, tmp_path)
    _check_fused(fused, unfused, caplog)
    assert fused.nodes < unfused.nodes


def _check_fused(fused, unfused, caplog, prompts=PROMPTS) -> None:
    assert not caplog.records, [r.message for r in caplog.records]
    assert fused.layout.fused_stages and not unfused.layout.fused_stages
    exact = _differences(fused, unfused, 0, prompts)
    int8 = _differences(fused, unfused, 4, prompts)
    assert max(exact.values()) <= REL_LOGITS, exact
    assert max(int8.values()) <= REL_INT8, int8


@pytest.mark.parametrize("source", ["rtn", "gguf"])
@pytest.mark.parametrize("plan", ["parallel_2_6", "parallel_1_7_x2"])
def test_fused_int4_genai_equals_unfused(genai_sources, tmp_path, source, plan, caplog):
    """The builder's form: one GroupQueryAttention over k × the heads, each member's own int4 blocks around it,
    decoded in place; equal prompt lengths (GroupQueryAttention takes right-padded batches)."""
    from painters.compiler.graph_io import load_graph

    onnx_path, gguf = genai_sources[source]
    with caplog.at_level(logging.WARNING, logger=FUSE_LOG):
        fused, unfused = _pair(onnx_path, gguf, plan, tmp_path)
    _check_fused(fused, unfused, caplog, prompts=[[1, 17, 99, 3, 45, 8, 200], [1, 5, 6, 77, 120, 9, 31]])
    stages = {str(s.index): len(s.stage.blocks) for s in fused.layout.stages if s.fused}
    heads = [(n.attributes["num_heads"].value, stages[n.metadata_props["painters.stage"]])
             for n in load_graph(fused.output).graph
             if n.op_type == "GroupQueryAttention" and n.metadata_props.get("painters.stage") in stages]
    assert heads and all(h == 4 * k for h, k in heads)  # tiny-llama: 4 query heads per block
    assert all(fused.layout.slots[s.member_slots[0]].in_place for s in fused.layout.stages if s.fused)
    ones = 4 * 64 * len(stages)  # per group, the shared norm's gain of ones ([H] floats): nothing else grows
    assert fused.output_bytes <= unfused.output_bytes + ones


def _inits(path) -> dict[str, np.ndarray]:
    graph = load_graph(path).graph
    return {name: v.const_value.numpy() for name, v in graph.initializers.items() if "proj" in name or "fused" in name}


def _nibbles(packed: np.ndarray, blocks: int) -> np.ndarray:
    """4-bit zero points, two to a byte per row, unpacked to ``[N, blocks]``."""
    return np.stack([packed & 0x0F, packed >> 4], -1).reshape(packed.shape[0], -1)[:, :blocks]


@pytest.mark.parametrize("source", ["rtn", "gguf"])
def test_fused_int4_weights_are_the_members_bytes(tiny_onnx, tiny_gguf, tmp_path, source):
    """No re-quantization: q|k|v and gate|up are the members' blocks side by side along N, down along K."""
    onnx_path, gguf = (tiny_onnx, "none") if source == "rtn" else tiny_gguf
    fused, unfused = _pair(onnx_path, gguf, "parallel_2_6", tmp_path)
    got, want = _inits(fused.output), _inits(unfused.output)
    parts = ["_Q4", "_scales"] + (["_zp", "_min"] if source == "gguf" else [])
    assert not [n for n in got if "painters.fused_int4" in n and n.endswith(".weight")], "a float weight was left"
    for m, block in enumerate(range(2, 6)):
        layer = next(n.split(".layers.")[0] for n in want) + f".layers.{block}"
        for wide, projs in ((f"qkv_{m}", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
                            (f"gate_up_{m}", ["mlp.gate_proj", "mlp.up_proj"])):
            for part in parts:
                members = [want[f"{layer}.{p}.weight{part}"] for p in projs]
                expected = np.concatenate(members, axis=1 if part == "_min" else 0)  # minima are [K/32, N]
                np.testing.assert_array_equal(got[f"{GROUP}.{wide}.weight{part}"], expected, err_msg=wide + part)
        o = f"{layer}.self_attn.o_proj.weight_Q4"
        assert o in got and np.array_equal(got[o], want[o])  # o_proj stays the member's own weight
    members = [f"{next(n.split('.layers.')[0] for n in want)}.layers.{b}.mlp.down_proj.weight" for b in range(2, 6)]
    for part, axis in (("_Q4", 1), ("_scales", 1), ("_min", 0)):
        if part in parts:
            expected = np.concatenate([want[m + part] for m in members], axis=axis)
            np.testing.assert_array_equal(got[f"{GROUP}.down.weight{part}"], expected, err_msg="down" + part)
    if source == "gguf":  # 5 blocks per member row: odd, so the zero points are re-packed across members
        blocks = want[members[0] + "_scales"].shape[1]
        expected = np.concatenate([_nibbles(want[m + "_zp"], blocks) for m in members], axis=1)
        np.testing.assert_array_equal(_nibbles(got[f"{GROUP}.down.weight_zp"], 4 * blocks), expected)


def test_int4_group_left_unfused_says_why(tiny_onnx, tmp_path, caplog):
    """Block size 128 would split tiny-llama's 160-wide down projections across members: unfused, with the reason."""
    with caplog.at_level(logging.WARNING, logger=FUSE_LOG):
        fused, unfused = _pair(tiny_onnx, "none", "parallel_2_6", tmp_path, block_size=128)
    assert not fused.layout.fused_stages and fused.nodes == unfused.nodes
    reason = fused.layout.stages[2].reason
    assert reason.startswith("intermediate size 160 is not a multiple of the int4 block size 128")
    assert any(reason in r.message for r in caplog.records)
