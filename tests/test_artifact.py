"""The artifact record: decided by content (not suffix), read and written in one module, carried by runners."""

from __future__ import annotations

import json
import shutil

import pytest

from painters.artifact import (
    Checkpoint,
    DeployedGguf,
    Engine,
    Graph,
    Record,
    RecordedLayout,
    Slot,
    Source,
    read_artifact,
)
from painters.compiler import compile_model
from painters.errors import CompileError, PaintersError
from painters.plans import parse_plan


def test_record_round_trips_through_props():
    plan = parse_plan("parallel_1_3", 4)
    layout = RecordedLayout((1,), (Slot(0, (0,), 2), Slot(1, (1, 2), 4, True, "GroupQueryAttention")))
    record = Record(plan.name, plan, layout, "abc", "genai", "int4", "cpu", "0.1.0", {"kv_slots": "2"})
    props = record.to_props()
    assert all(k.startswith("painters.") for k in props)
    assert Record.from_props({**props, "other": "x"}) == record
    assert record.ideal_ratio() == plan.ideal_cost_ratio() and not record.is_baseline
    assert Record().is_baseline and Record(plan_name="baseline", plan=parse_plan("baseline", 4)).is_baseline


def test_malformed_record_names_its_key():
    with pytest.raises(CompileError, match="painters.slot_layout .*malformed"):
        Record.from_props({"painters.slot_layout": json.dumps({"slots": []})})
    with pytest.raises(CompileError, match="painters.schedule .*not valid JSON"):
        Record.from_props({"painters.schedule": "{"})


def test_kind_by_content_not_suffix(tiny_onnx, tmp_path):
    renamed = tmp_path / "model.bin"  # an ONNX graph under another suffix is still a graph
    shutil.copy(tiny_onnx, renamed)
    graph = read_artifact(renamed)
    assert isinstance(graph, Graph) and graph.routes_as == "graph" and graph.record.plan is None
    assert graph.record.source_hash  # the exporter's provenance, read back typed

    compiled = compile_model(tiny_onnx, "skip_1_2", tmp_path / "skip.onnx").output
    record = read_artifact(compiled).record
    assert record.plan == parse_plan("skip_1_2", record.plan.num_layers)
    assert isinstance(record.slot_layout, RecordedLayout) and len(record.slot_layout.slots) >= 1

    fake = tmp_path / "fake.onnx"  # a .onnx suffix on something that is not ONNX is refused, not trusted
    fake.write_bytes(b"not a graph at all")
    with pytest.raises(PaintersError, match="not an ONNX graph"):
        read_artifact(fake)
    assert isinstance(read_artifact("tiny-llama"), Source)


def test_engine_by_its_sidecar(tmp_path):
    engine = tmp_path / "plan.trt"  # any name: the sidecar says what it is
    engine.write_bytes(b"\x00engine bytes")
    meta = {"painters.plan": "baseline", "painters.source_hash": "toy"}
    sidecar = {"onnx": str(tmp_path / "m.onnx"), "inputs": {"metadata": meta}}
    (tmp_path / "plan.trt.json").write_text(json.dumps(sidecar))
    found = read_artifact(engine)
    assert isinstance(found, Engine) and found.record.source_hash == "toy" and found.onnx == tmp_path / "m.onnx"


def test_deployed_checkpoint_and_gguf(tmp_path):
    plan = parse_plan("skip_1_2", 4)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "llama", "painters": {
        "plan": plan.to_json(), "target": "hf", "source_hash": "h", "version": "0.1.0"}}))
    found = read_artifact(ckpt)
    assert isinstance(found, Checkpoint) and found.routes_as == "source"
    assert found.record.plan == plan and found.record.target == "hf" and found.record.source_hash == "h"

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert isinstance(read_artifact(plain), Checkpoint) and read_artifact(plain).record is None

    import gguf

    path = tmp_path / "model.weights"  # no .gguf suffix: the magic bytes decide
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("painters.plan", plan.to_json_text())
    writer.add_string("painters.target", "gguf")
    writer.add_string("painters.source_hash", "h")
    writer.add_string("painters.version", "0.1.0")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    found = read_artifact(path)
    assert isinstance(found, DeployedGguf)
    assert found.record.plan == plan and found.record.target == "gguf" and found.record.plan_name == plan.name

    plain_gguf = tmp_path / "plain.gguf"  # no painters keys: baseline without a schedule, its block count read once
    writer = gguf.GGUFWriter(str(plain_gguf), "llama")
    writer.add_block_count(4)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    record = read_artifact(plain_gguf).record
    assert record.plan is None and record.is_baseline and record.ideal_ratio() == 1.0
    assert record.extra["blocks"] == "4"


def test_runners_carry_the_record(tiny_onnx, tmp_path):
    from painters.bench.latency import benchmark
    from painters.routing import ideal_ratio, open_runners

    with open_runners(str(tiny_onnx), ["skip_1_2", "baseline"]) as runners:
        records = {name: r.artifact.record for name, r in runners.items()}
        assert records["skip_1_2"].plan.name == "skip_1_2" and records["baseline"].is_baseline
        assert ideal_ratio(runners["skip_1_2"]) == records["skip_1_2"].ideal_ratio() < 1
        renamed = {"first": runners["skip_1_2"], "reference": runners["baseline"]}  # rows named anyhow
        rows = benchmark(renamed, gen=2, iters=1, warmup=0, prompts=(4,))
        assert {r.plan: r.decode_ratio for r in rows}["reference"] == 1.0  # baseline found by its plan
