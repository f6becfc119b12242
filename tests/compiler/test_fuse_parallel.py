"""Wide blocks: parallel groups compiled as one wide block equal the reference executor, with fewer
nodes, no more weight bytes and one KV slot per (stage, loop); groups it cannot fuse stay correct, unfused."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import onnx_ir as ir
import pytest

from painters.compiler.compile import compile_model, prepare
from painters.compiler.graph_io import initializer_bytes, load_graph
from painters.compiler.layout import SlotLayout, slot_layout
from painters.plans import Plan, Step, parse_plan
from painters.runtime.base import left_pad
from painters.runtime.ort import OrtRunner
from painters.runtime.torch_ref import TorchRunner
from tests.compiler.parity import assert_plan_parity

PROMPTS = [[1, 17, 99, 3, 45, 8, 200], [1, 5, 6]]
KV_HEADS = 2  # tiny-llama: 4 heads, 2 KV heads, head_dim 16
FUSE_LOG = "painters.compiler.layout"


def _kv_inputs(model: ir.Model) -> list[ir.Value]:
    return [v for v in model.graph.inputs if (v.name or "").startswith("past_key_values.")]


def _slots(layout: SlotLayout) -> list[tuple[int, tuple[int, ...]]]:
    return [(s.stage, s.plan_slots) for s in layout.slots]


def test_slot_layout(tiny_onnx):
    structure = prepare(load_graph(tiny_onnx))
    plan = parse_plan("parallel_1_7_x3+dup_0_x2", 8)
    layout = slot_layout(plan, structure)
    assert layout.fused_stages == [2, 3, 4]
    assert _slots(layout) == [(0, (0,)), (1, (1,)), (2, (2, 3, 4, 5, 6, 7)), (3, (8, 9, 10, 11, 12, 13)),
                              (4, (14, 15, 16, 17, 18, 19)), (5, (20,))]
    assert layout.slot_heads == [KV_HEADS, KV_HEADS, 6 * KV_HEADS, 6 * KV_HEADS, 6 * KV_HEADS, KV_HEADS]
    assert [s.member_slots for s in layout.stages][2] == (2,) * 6
    plain = slot_layout(plan, structure, fuse_parallel=False)
    assert _slots(plain) == [(i, (s,)) for i, s in zip([0, 1, *[2] * 6, *[3] * 6, *[4] * 6, 5], range(21))]
    assert plain.fused_stages == [] and plain.slot_heads == [KV_HEADS] * 21
    mean = slot_layout(parse_plan("parallel_2_5+drop_attn_6-7:kvmean", 8), structure)
    assert _slots(mean) == [(0, (0,)), (1, (1,)), (2, (2,)), (3, (3,))] and mean.slot_heads == [KV_HEADS] * 4
    assert mean.stages[4].member_slots == (None,) and mean.kv_slots == 4


def test_slot_layout_decides_weight_sharing_before_rewriting(tiny_onnx):
    """A group whose block also runs alone is unfused in the layout itself, with the reason recorded."""
    structure = prepare(load_graph(tiny_onnx))
    steps = (Step((0,)), Step((1, 2, 3), parallel=True), Step((3,)), *(Step((b,)) for b in range(4, 8)))
    layout = slot_layout(Plan("shared", steps, 8).validate(), structure, warn=False)
    assert layout.fused_stages == []
    assert layout.stages[1].reason == "block 3 also runs outside this group; fusing would copy its weights"


@pytest.mark.parametrize("kv", ["", ":kvmean"])
@pytest.mark.parametrize("plan", ["parallel_2_6", "parallel_1_7_x3", "parallel_2_5+drop_attn_6-7"])
def test_fused_parity(tiny, tiny_onnx, tmp_path, plan, kv, caplog):
    with caplog.at_level(logging.WARNING, logger=FUSE_LOG):
        result = assert_plan_parity(tiny, tiny_onnx, plan + kv, tmp_path, PROMPTS, fuse_parallel=True)
    assert not caplog.records
    unfused = compile_model(tiny_onnx, plan + kv, tmp_path / "unfused" / "out.onnx", fuse_parallel=False)
    fused = load_graph(result.output)
    layout = result.layout
    assert result.nodes < unfused.nodes and len(fused.graph) == result.nodes
    assert initializer_bytes(fused) <= initializer_bytes(load_graph(unfused.output))
    assert (tmp_path / "out.onnx.fused.data").is_file()

    meta = fused.metadata_props
    stages = [i for i, s in enumerate(result.plan.stages()) if len(s.blocks) > 1 and s.attn and s.mlp]
    heads = [len(s.plan_slots) * KV_HEADS for s in layout.slots]
    assert SlotLayout.from_metadata(meta) == layout.recorded and layout.fused_stages == stages
    assert layout.slot_heads == heads
    assert int(meta["painters.kv_slots"]) == result.kv_slots == layout.kv_slots
    # one slot per (stage, loop) of each group: k·kv_heads heads (kv=exact) or kv_heads (kv=mean)
    k = len(result.plan.stages()[stages[0]].blocks)
    fused_heads = [heads[i] for i, s in enumerate(layout.slots) if s.stage in stages]
    assert fused_heads == [KV_HEADS * (1 if kv else k)] * len(stages)
    names = [v.name for v in _kv_inputs(fused)]
    assert names == [f"past_key_values.{i}.{kind}" for i in range(layout.kv_slots) for kind in ("key", "value")]
    assert [v.shape[1] for v in _kv_inputs(fused)][::2] == heads
    assert [v.name for v in fused.graph.outputs][1:] == [f"present.{i}.{kind}" for i in range(layout.kv_slots)
                                                          for kind in ("key", "value")]


@pytest.mark.parametrize("kv", ["", ":kvmean"])
def test_fused_cache_is_the_reference_cache_laid_out(tiny, tiny_onnx, tmp_path, kv):
    """The recorded slot layout maps the reference executor's cache onto the fused graph's, slot by slot."""
    result = compile_model(tiny_onnx, "parallel_2_6" + kv, tmp_path / "out.onnx", fuse_parallel=True)
    ids, mask = left_pad(PROMPTS)
    _, got = OrtRunner(result.output).prefill(ids, mask)
    _, want = TorchRunner(tiny.model, result.plan, device="cpu").prefill(ids, mask)
    layout = SlotLayout.from_metadata(load_graph(result.output).metadata_props).slots
    assert len(got) == len(layout)
    for compiled, slot in zip(got, layout):
        for kind in (0, 1):
            expected = np.concatenate([want[s][kind].numpy() for s in slot.plan_slots], axis=1)
            np.testing.assert_allclose(compiled[kind], expected, rtol=1e-4, atol=1e-5)


def test_inspect_and_runners_read_the_recorded_layout(tiny_onnx, tmp_path):
    """``painters inspect`` prints the slot layout compile wrote; runners take heads per slot from it and refuse
    a graph whose metadata no longer matches its inputs."""
    import json

    import onnx
    from click.testing import CliRunner

    from painters.cli import main
    from painters.errors import CompileError

    result = compile_model(tiny_onnx, "parallel_2_6", tmp_path / "p.onnx", fuse_parallel=True)
    heads = [KV_HEADS, KV_HEADS, 4 * KV_HEADS, KV_HEADS, KV_HEADS]
    assert result.layout.slot_heads == heads
    shown = CliRunner().invoke(main, ["inspect", str(result.output)])
    assert shown.exit_code == 0, shown.output
    lines = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in shown.output.splitlines()}
    assert lines["fused stages"] == "2" and lines["kv slots"] == "5 (4× 2 heads, 1× 8 heads)"
    assert lines["plan"] == "parallel_2_6" and lines["weights"].endswith(" nodes") and lines["source hash"]
    assert all(len(line) < 120 for line in shown.output.splitlines())  # a first screen, not JSON dumps
    as_json = json.loads(CliRunner().invoke(main, ["inspect", str(result.output), "--json"]).output)
    decomposed = {"in_place": False, "attention": None}  # attention concatenates past and new keys
    assert as_json["fused_stages"] == [2]
    assert as_json["slot_layout"] == [{"stage": 0, "plan_slots": [0], "heads": 2, **decomposed},
                                      {"stage": 1, "plan_slots": [1], "heads": 2, **decomposed},
                                      {"stage": 2, "plan_slots": [2, 3, 4, 5], "heads": 8, **decomposed},
                                      {"stage": 3, "plan_slots": [6], "heads": 2, **decomposed},
                                      {"stage": 4, "plan_slots": [7], "heads": 2, **decomposed}]
    assert [s["heads"] for s in as_json["slot_layout"]] == heads and "painters.slot_layout" not in as_json
    with OrtRunner(result.output) as runner:
        assert runner.slot_heads == heads and runner.artifact.record.slot_layout.slots

    model = onnx.load(result.output, load_external_data=False)  # the layout edited after compiling
    layout = json.loads(next(p.value for p in model.metadata_props if p.key == "painters.slot_layout"))
    layout["slots"][2]["heads"] = 6
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "painters.slot_layout": json.dumps(layout)})
    edited = tmp_path / "edited.onnx"
    onnx.save(model, edited)
    with pytest.raises(CompileError, match="gives KV slot 2 6 heads but its input has 8"):
        OrtRunner(edited)


def test_fallback_when_attention_dropped(tiny, tiny_onnx, tmp_path, caplog):
    plan = tmp_path / "drop.yaml"
    plan.write_text("steps:\n  - 0\n  - 1\n  - {parallel: [2, 3], attn: false}\n  - 4\n  - 5\n  - 6\n  - 7\n")
    with caplog.at_level(logging.WARNING, logger=FUSE_LOG):
        result = assert_plan_parity(tiny, tiny_onnx, str(plan), tmp_path, PROMPTS, fuse_parallel=True)
    assert [r.getMessage() for r in caplog.records] == [
        "fuse-parallel: stage 2 (parallel blocks 2,3) left unfused: its attention is dropped"]
    assert result.layout.fused_stages == [] and result.layout.stages[2].reason == "its attention is dropped"
    assert result.kv_slots == result.plan.kv_slots == 6
    assert not (tmp_path / "out.onnx.fused.data").exists()


def test_fallback_when_a_member_runs_elsewhere(tiny, tiny_onnx, tmp_path, caplog):
    """Fusing would copy block 3's weights (it also runs alone): the group stays unfused, loops warned once."""
    plan = tmp_path / "shared.yaml"
    plan.write_text("steps:\n  - 0\n  - {parallel: [1, 2, 3], loops: 2}\n  - 3\n  - 4\n  - {parallel: [5, 6]}\n  - 7\n")
    with caplog.at_level(logging.WARNING, logger=FUSE_LOG):
        result = assert_plan_parity(tiny, tiny_onnx, str(plan), tmp_path, PROMPTS, fuse_parallel=True)
    assert [r.getMessage() for r in caplog.records] == [
        "fuse-parallel: stages 1-2 (parallel blocks 1,2,3) left unfused: block 3 also runs outside this group; "
        "fusing would copy its weights"]
    assert SlotLayout.from_metadata(load_graph(result.output).metadata_props).fused_stages == (5,)


def test_fallback_on_projection_bias(tiny_onnx, tmp_path, caplog):
    """A pattern the template does not know (a q_proj bias in block 3) leaves the group unfused and correct."""
    for name in ("model.onnx", "model.onnx.data"):  # a private copy to modify
        shutil.copyfile(tiny_onnx.parent / name, tmp_path / name)
    model = ir.load(tmp_path / "model.onnx")
    matmul = next(n for n in model.graph
                  if n.op_type == "MatMul" and n.inputs[1].name.endswith("layers.3.self_attn.q_proj.weight"))
    q = matmul.outputs[0]
    bias = ir.Value(name="q_bias_3", shape=ir.Shape([64]), type=ir.TensorType(ir.DataType.FLOAT),
                    const_value=ir.tensor(np.linspace(-0.5, 0.5, 64, dtype=np.float32), name="q_bias_3"))
    model.graph.register_initializer(bias)
    add = ir.node("Add", [q, bias], name="q_bias_add_3", metadata_props=dict(matmul.metadata_props))
    for use in [u for u in q.uses() if u.node is not add]:
        use.node.replace_input_with(use.idx, add.outputs[0])
    model.graph.insert_after(matmul, add)
    src = tmp_path / "biased.onnx"
    ir.save(model, src)

    with caplog.at_level(logging.WARNING, logger=FUSE_LOG):
        fused = compile_model(src, "parallel_2_6", tmp_path / "fused" / "out.onnx", fuse_parallel=True)
    assert len(caplog.records) == 1 and "stage 2" in caplog.text and "bias" in caplog.text
    plain = compile_model(src, "parallel_2_6", tmp_path / "plain" / "out.onnx", fuse_parallel=False)
    ids, mask = left_pad(PROMPTS)
    got, _ = OrtRunner(fused.output).prefill(ids, mask)
    want, _ = OrtRunner(plain.output).prefill(ids, mask)
    np.testing.assert_array_equal(got, want)
    assert fused.kv_slots == plain.kv_slots == 8


@pytest.mark.slow
@pytest.mark.parametrize("kv", ["", ":kvmean"])
@pytest.mark.parametrize("plan", ["parallel_4_26", "parallel_11_19_x2"])
def test_smollm2_fused_and_unfused_parity(smollm2, smollm2_onnx, tmp_path, plan, kv):
    """Fused is the default (test_compile_parity covers it for every plan); here both, with the fused stages."""
    tok = smollm2.tokenizer
    prompts = [tok.encode("The capital of France is"), tok.encode("Q: What is 2 + 3?\nA:")]
    fused = compile_model(smollm2_onnx, plan + kv, tmp_path / "fused.onnx")
    stages = [i for i, s in enumerate(fused.plan.stages()) if len(s.blocks) > 1]
    assert list(SlotLayout.from_metadata(load_graph(fused.output).metadata_props).fused_stages) == stages
    assert_plan_parity(smollm2, smollm2_onnx, plan + kv, tmp_path, prompts, fuse_parallel=False)
