"""Contracts of the compiler core that need no model: the IO convention has one owner, plans round-trip
through JSON and compare by schedule, profile numbers are bounded, and a pass reports ``modified`` truthfully."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

import painters
from painters.compiler.engine import parse_profile
from painters.compiler.passes.noops import RemoveNoOpsPass
from painters.decoder_io import parse_past, parse_present, past_name, present_name, present_to_past
from painters.errors import BuildError, PlanError
from painters.plans import Plan, parse_plan

PACKAGE = Path(painters.__file__).parent


def test_io_convention_names_live_in_one_module():
    pattern = re.compile(r"past_key_values|present\.\{|present\.\d|[\"']present\.")
    owners = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if pattern.search(p.read_text()))
    assert owners == ["decoder_io.py"]


def test_io_names_round_trip():
    assert parse_past(past_name(3, "value")) == (3, "value") and parse_present(present_name(0, "key")) == (0, "key")
    assert present_to_past(present_name(7, "key")) == past_name(7, "key")
    assert parse_past("past_key_values.x.key") is None and parse_present("logits") is None


def test_plan_json_round_trip_and_schedule_equality():
    plan = parse_plan("parallel_2_5+drop_attn_6-7:kvmean", 8)
    assert Plan.from_json(plan.to_json_text()) == plan and Plan.from_json(plan.to_json()).name == plan.name
    assert parse_plan("drop_attn_1,2", 8) == parse_plan("drop_attn_1-2", 8)
    assert parse_plan("drop_attn_1,2", 8) != parse_plan("drop_attn_1-3", 8)
    assert len({parse_plan("drop_attn_1,2", 8), parse_plan("drop_attn_1-2", 8)}) == 1
    broken = {**plan.to_json(), "kv_slots": 99}
    with pytest.raises(PlanError, match="kv_slots is 99"):
        Plan.from_json(broken)
    with pytest.raises(PlanError, match="not a painters schedule"):
        Plan.from_json({"plan": "x"})


def test_profile_refuses_numbers_beyond_int32():
    with pytest.raises(BuildError, match="at most 2147483647"):
        parse_profile("batch=1:8:99999999999999999999")


def _toy(cast_to: ir.DataType) -> ir.Model:
    """x → Cast(to) → Relu → y: three values, two nodes."""
    x = ir.Value(name="x", shape=ir.Shape([2]), type=ir.TensorType(ir.DataType.FLOAT))
    cast = ir.node("Cast", [x], attributes={"to": cast_to.value}, name="cast")
    cast.outputs[0].dtype = cast_to
    relu = ir.node("Relu", cast.outputs, name="relu")
    graph = ir.Graph([x], relu.outputs, nodes=[cast, relu], opset_imports={"": 18}, name="toy")
    return ir.Model(graph, ir_version=10)


def test_remove_noops_reports_modified_truthfully():
    model = _toy(ir.DataType.FLOAT)  # a float→float Cast is a no-op
    result = RemoveNoOpsPass()(model)
    assert result.modified and [n.op_type for n in model.graph] == ["Relu"]
    assert next(iter(model.graph)).inputs[0] is model.graph.inputs[0]
    again = RemoveNoOpsPass()(model)
    assert not again.modified
    kept = _toy(ir.DataType.FLOAT16)  # a real conversion stays
    assert not RemoveNoOpsPass()(kept).modified and [n.op_type for n in kept.graph] == ["Cast", "Relu"]
    assert np.dtype(kept.graph.outputs[0].producer().inputs[0].dtype.numpy()) == np.float16


def test_engine_key_follows_data_content(tiny_onnx, tmp_path, monkeypatch):
    """An in-place edit of one byte of the external data, same size and mtime restored, changes the key."""
    import os
    import shutil

    from painters.compiler.engine import engine_key

    pytest.importorskip("tensorrt_rtx")
    monkeypatch.setenv("PAINTERS_CACHE", str(tmp_path / "cache"))
    for name in ("model.onnx", "model.onnx.data"):
        shutil.copyfile(tiny_onnx.parent / name, tmp_path / name)
    before, _ = engine_key(tmp_path / "model.onnx", compute_capability="8.9")
    data = tmp_path / "model.onnx.data"
    st = data.stat()
    size = st.st_size
    with open(data, "r+b") as f:  # a byte in the middle, in place
        f.seek(size // 2 + 123)
        byte = f.read(1)
        f.seek(size // 2 + 123)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert data.stat().st_size == size and data.stat().st_mtime_ns == st.st_mtime_ns
    after, _ = engine_key(tmp_path / "model.onnx", compute_capability="8.9")
    assert after != before
    assert engine_key(tmp_path / "model.onnx", compute_capability="8.9")[0] == after  # memo: same bytes, same key


def test_engine_files_get_the_ordinary_mode(tmp_path):
    import os

    from painters.fileio import atomic_write

    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "e.engine", b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "e.engine").stat().st_mode & 0o777 == 0o644


def test_engine_refuses_a_graph_that_is_not_a_decoder(tmp_path):
    from painters.compiler.engine import graph_info

    path = tmp_path / "toy.onnx"
    ir.save(_toy(ir.DataType.FLOAT16), path)
    with pytest.raises(BuildError, match="not a painters decoder graph"):
        graph_info(path)
