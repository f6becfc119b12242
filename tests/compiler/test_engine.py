"""Engine builds (TensorRT-RTX builds without a GPU), profiles, precision checks, the engine cache and the CLI."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from painters.cache import cache_dir
from painters.compiler import engine as eng
from painters.compiler.engine import builder as engine_builder
from painters.errors import BuildError

VOCAB, HIDDEN, KV_HEADS, HEAD_DIM, SLOTS = 32, 16, 2, 8, 2
_ONNX_DTYPE = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}

try:
    import tensorrt_rtx  # noqa: F401

    HAVE_RTX = True
except ImportError:
    HAVE_RTX = False
needs_rtx = pytest.mark.skipif(not HAVE_RTX, reason="tensorrt-rtx is not installed (pip install painters[test])")


def make_decoder(path: Path, dtype: str = "float32", *, extra_node: onnx.NodeProto | None = None) -> Path:
    """A decoder-shaped graph with the Optimum IO convention, weights as external data beside it.

    Embedding + position embedding, scaled by the attention mask's length, projected to logits; each KV
    slot concatenates its past with a projected key/value, so present = past + seq along axis 2.
    """
    rng = np.random.default_rng(0)
    ft, npd = _ONNX_DTYPE[dtype], np.dtype(dtype)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(npd), name)

    inits = [weight("emb", VOCAB, HIDDEN), weight("pos_emb", 64, HIDDEN), weight("lm_head", HIDDEN, VOCAB),
             numpy_helper.from_array(np.array([0, 0, KV_HEADS, HEAD_DIM], np.int64), "kv_shape"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2")]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["tok"]),
             helper.make_node("Gather", ["pos_emb", "position_ids"], ["pos"]),
             helper.make_node("Add", ["tok", "pos"], ["h"]),
             helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=ft),
             helper.make_node("ReduceSum", ["mask_f", "axis1"], ["mask_len"], keepdims=1),
             helper.make_node("Unsqueeze", ["mask_len", "axis2"], ["mask_len3"]),
             helper.make_node("Div", ["h", "mask_len3"], ["h_scaled"]),
             helper.make_node("MatMul", ["h_scaled", "lm_head"], ["logits"])]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "past + seq"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"])]
    outputs = [helper.make_tensor_value_info("logits", ft, ["batch", "seq", VOCAB])]
    for i in range(SLOTS):
        for kind in ("key", "value"):
            w = f"w_{kind}_{i}"
            inits.append(weight(w, HIDDEN, KV_HEADS * HEAD_DIM))
            nodes += [helper.make_node("MatMul", ["h", w], [f"{w}_proj"]),
                      helper.make_node("Reshape", [f"{w}_proj", "kv_shape"], [f"{w}_heads"]),
                      helper.make_node("Transpose", [f"{w}_heads"], [f"{w}_t"], perm=[0, 2, 1, 3]),
                      helper.make_node("Concat", [f"past_key_values.{i}.{kind}", f"{w}_t"], [f"present.{i}.{kind}"],
                                       axis=2)]
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", ft,
                                                        ["batch", KV_HEADS, "past", HEAD_DIM]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", ft,
                                                         ["batch", KV_HEADS, "past + seq", HEAD_DIM]))
    if extra_node is not None:
        nodes.append(extra_node)
    model = helper.make_model(helper.make_graph(nodes, "toy_decoder", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(model, {"painters.plan": "baseline", "painters.source_hash": "toy"})
    path.parent.mkdir(parents=True, exist_ok=True)
    # Shape constants stay inline (parsers need them at build time); weights go to the data file.
    onnx.save(model, path, save_as_external_data=True, location=path.name + ".data", size_threshold=256)
    return path


@pytest.fixture(scope="module")
def toy_fp32(tmp_path_factory) -> Path:
    return make_decoder(tmp_path_factory.mktemp("toy32") / "model.onnx", "float32")


@pytest.fixture(scope="module")
def toy_fp16(tmp_path_factory) -> Path:
    return make_decoder(tmp_path_factory.mktemp("toy16") / "model.onnx", "float16")


@pytest.fixture
def engine_cache(tmp_path, monkeypatch) -> Path:
    """A private $PAINTERS_CACHE, and a counter of real builds behind cached_engine."""
    monkeypatch.setenv("PAINTERS_CACHE", str(tmp_path / "cache"))
    builds = []
    real = engine_builder.build_engine

    def counting(*args, **kwargs):
        builds.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_builder, "build_engine", counting)
    return builds


# ---- profiles ---------------------------------------------------------------------------------------------------

def test_profile_defaults_and_overrides():
    assert {k: str(v) for k, v in eng.parse_profile(None).items()} == {"batch": "1:1:8", "seq": "1:128:512",
                                                                      "past": "0:128:512"}
    dims = eng.parse_profile("batch=1:8:32, seq=1:128:2048,past=0:512:4096")
    assert dims["batch"] == eng.DimRange(1, 8, 32) and dims["past"] == eng.DimRange(0, 512, 4096)
    assert eng.parse_profile("batch=4")["batch"] == eng.DimRange(4, 4, 4)
    assert eng.parse_profile("seq=1:16:64")["past"] == eng.DimRange(0, 128, 512)  # others keep their defaults


@pytest.mark.parametrize("spec, message", [
    ("batch=4:2:8", "needs min ≤ opt ≤ max; write batch=2:4:8"),
    ("seq=1:512:128", "write seq=1:128:512"),
    ("seq=0:1:2", "seq starts at 1 or more; write seq=1:1:2"),
    ("past=-1:0:4", "past starts at 0 or more"),
    ("heads=1:2:4", "NAME one of batch, seq, past"),
    ("seq=1:2", "expected three integers"),
    ("seq=a:b:c", "expected three integers"),
    ("batch=1,batch=2", "names batch twice"),
])
def test_profile_errors_name_the_fix(spec, message):
    with pytest.raises(BuildError, match="profile") as err:
        eng.parse_profile(spec)
    assert message in str(err.value)


def test_two_profiles_prefill_and_decode(toy_fp32):
    graph = eng.graph_info(toy_fp32)
    prefill, decode = eng.profile_shapes(graph, eng.parse_profile("batch=1:2:4,seq=1:16:64,past=0:32:128"))
    assert prefill["input_ids"] == ((1, 1), (2, 16), (4, 64))
    assert prefill["attention_mask"] == ((1, 1), (2, 48), (4, 192))  # past + seq
    assert prefill["past_key_values.1.value"] == ((1, KV_HEADS, 0, HEAD_DIM), (2, KV_HEADS, 32, HEAD_DIM),
                                                  (4, KV_HEADS, 128, HEAD_DIM))
    assert decode["position_ids"] == ((1, 1), (2, 1), (4, 1))
    assert decode["attention_mask"] == ((1, 1), (2, 33), (4, 129))
    assert set(prefill) == set(decode) == {name for name, _, _ in graph.inputs}


def test_profile_refuses_unknown_dynamic_input(toy_fp32):
    graph = eng.graph_info(toy_fp32)
    graph.inputs.append(("cache_position", "int64", ("seq",)))
    with pytest.raises(BuildError, match="cache_position.*not part of the decoder IO convention"):
        eng.profile_shapes(graph, eng.parse_profile(None))
    graph.inputs[-1] = ("past_key_values.9.key", "float32", ("batch", "heads", "past", HEAD_DIM))
    with pytest.raises(BuildError, match="kv_heads and head_dim must be static"):
        eng.profile_shapes(graph, eng.parse_profile(None))


# ---- graph reading and precision ----------------------------------------------------------------------------------

def test_graph_info_reads_dtype_metadata_and_external_data(toy_fp16):
    info = eng.graph_info(toy_fp16)
    assert info.dtype == "float16"
    assert info.metadata == {"painters.plan": "baseline", "painters.source_hash": "toy"}
    assert [name for name, _ in info.external] == ["model.onnx.data"]
    assert ("past_key_values.0.key", "float16", ("batch", KV_HEADS, "past", HEAD_DIM)) in info.inputs


def test_precision_must_match_the_graph(toy_fp16, tmp_path):
    with pytest.raises(BuildError, match=r"computes in float16 but precision fp32.*--dtype fp32.*or pass fp16"):
        eng.build_engine(toy_fp16, tmp_path / "x.engine", precision="fp32", compute_capability="8.9")
    with pytest.raises(BuildError, match="unknown precision 'int8'; choose one of fp32, fp16, bf16"):
        eng.build_engine(toy_fp16, tmp_path / "x.engine", precision="int8", compute_capability="8.9")
    assert not (tmp_path / "x.engine").exists()


# ---- builds -------------------------------------------------------------------------------------------------------

@needs_rtx
@pytest.mark.parametrize("fixture, dtype", [("toy_fp32", "float"), ("toy_fp16", "half")])
def test_rtx_engine_builds_without_gpu(fixture, dtype, request, tmp_path):
    onnx_path = request.getfixturevalue(fixture)
    out = eng.build_engine(onnx_path, tmp_path / "engines" / "toy.engine", profile="batch=1:2:4,seq=1:8:32,past=0:8:32",
                           compute_capability="8.9")
    assert out.is_file() and out.stat().st_size > 10_000
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    record = json.loads(eng.sidecar_path(out).read_text())
    assert record["inputs"]["target"] == "SM89" and record["inputs"]["profile"].startswith("batch=1:2:4,seq=1:8:32")
    assert record["engine_bytes"] == out.stat().st_size

    # The parsed network's IO is the ONNX graph's: same names, order, directions, dtypes and static dims.
    model = onnx.load(onnx_path, load_external_data=False)
    io = {name: (mode, dt, tuple(shape)) for name, mode, dt, shape in record["io"]}
    assert [n for n, (m, _, _) in io.items() if m == "input"] == [i.name for i in model.graph.input]
    assert [n for n, (m, _, _) in io.items() if m == "output"] == [o.name for o in model.graph.output]
    assert io["input_ids"] == ("input", "int64", (-1, -1))
    assert io["past_key_values.1.key"] == ("input", dtype, (-1, KV_HEADS, -1, HEAD_DIM))
    assert io["logits"] == ("output", dtype, (-1, -1, VOCAB))


@needs_rtx
def test_loader_is_lazy_and_reports_io(toy_fp32):
    build = eng.EngineFromOnnx(toy_fp32, compute_capability="8.6")
    assert build.network_io == []  # nothing happens before the call
    data = build()
    assert data.nbytes > 10_000 and build.key_inputs["target"] == "SM86" and len(build.key) == 64
    assert [n for n, mode, _, _ in build.network_io if mode == "output"][:2] == ["logits", "present.0.key"]


@needs_rtx
def test_parser_errors_are_listed(tmp_path):
    bad = make_decoder(tmp_path / "bad.onnx", extra_node=helper.make_node("NoSuchOp", ["logits"], ["junk"],
                                                                          domain="com.example"))
    with pytest.raises(BuildError, match=r"cannot parse .*bad\.onnx:\n  .*NoSuchOp"):
        eng.build_engine(bad, tmp_path / "bad.engine", compute_capability="8.9")


@needs_rtx
def test_compute_capability_is_checked(toy_fp32, tmp_path):
    with pytest.raises(BuildError, match=r"'9\.0' is not a TensorRT-RTX .* target; choose one of 7\.5, 8\.0.*8\.9"):
        eng.build_engine(toy_fp32, tmp_path / "x.engine", compute_capability="9.0")


def test_missing_tensorrt_points_to_both_installs(monkeypatch, toy_fp32, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now raises ImportError
    with pytest.raises(BuildError) as err:
        eng.build_engine(toy_fp32, tmp_path / "x.engine", backend="tensorrt")
    message = str(err.value)
    assert "pip install painters[trt]" in message
    assert "pip install tensorrt-rtx-cu13 tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings" in message
    with pytest.raises(BuildError, match="unknown backend 'onnx'"):
        eng.import_trt("onnx")


def test_missing_or_foreign_input_graph(tmp_path):
    with pytest.raises(BuildError, match="no such ONNX file"):
        eng.build_engine(tmp_path / "absent.onnx", tmp_path / "x.engine")
    moved = make_decoder(tmp_path / "a" / "model.onnx")
    (moved.parent / "model.onnx.data").unlink()
    with pytest.raises(BuildError, match="external data file .* is missing"):
        eng.build_engine(moved, tmp_path / "x.engine", compute_capability="8.9")


# ---- the engine cache ---------------------------------------------------------------------------------------------

@needs_rtx
def test_cache_hit_skips_rebuild(toy_fp32, engine_cache):
    first = eng.cached_engine(toy_fp32, compute_capability="8.9")
    mtime = first.stat().st_mtime_ns
    again = eng.cached_engine(toy_fp32, precision="fp32", compute_capability="8.9")  # same engine: same key
    assert again == first and len(engine_cache) == 1 and first.stat().st_mtime_ns == mtime
    other = eng.cached_engine(toy_fp32, profile="batch=1:1:2", compute_capability="8.9")
    assert other != first and len(engine_cache) == 2
    assert first.parent == Path(cache_dir("engines")) and first.name.startswith("model-tensorrt-rtx-")


def _truncate(engine: Path) -> None:
    engine.write_bytes(engine.read_bytes()[: engine.stat().st_size // 2])


def _flip_bytes(engine: Path) -> None:
    data = bytearray(engine.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = bytes(16)
    engine.write_bytes(bytes(data))


def _other_key(engine: Path) -> None:
    sidecar = eng.sidecar_path(engine)
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "key": "0" * 64}))


@needs_rtx
@pytest.mark.parametrize("damage, reason", [
    (_truncate, "truncated"), (_flip_bytes, "corrupt"), (_other_key, "disagrees"),
    (lambda engine: eng.sidecar_path(engine).unlink(), "missing or unreadable"),
    (lambda engine: eng.sidecar_path(engine).write_text("{"), "missing or unreadable"),
])
def test_damaged_cached_engine_is_rebuilt(toy_fp32, engine_cache, caplog, damage, reason):
    engine = eng.cached_engine(toy_fp32, compute_capability="8.9")
    good = engine.read_bytes()
    damage(engine)
    with caplog.at_level(logging.WARNING, logger="painters.compiler.engine"):
        rebuilt = eng.cached_engine(toy_fp32, compute_capability="8.9")
    assert rebuilt == engine and len(engine_cache) == 2
    assert any(reason in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    assert len(rebuilt.read_bytes()) == len(good)
    assert eng.cached_engine(toy_fp32, compute_capability="8.9") == engine and len(engine_cache) == 2


@needs_rtx
def test_key_covers_what_changes_the_engine(toy_fp32, tmp_path):
    base, inputs = eng.engine_key(toy_fp32, compute_capability="8.9")
    assert inputs["backend"] == "tensorrt-rtx" and inputs["precision"] == "float32" and inputs["trt_version"]
    assert eng.engine_key(toy_fp32, precision="fp32", compute_capability="8.9")[0] == base
    assert eng.engine_key(toy_fp32, compute_capability="8.6")[0] != base
    assert eng.engine_key(toy_fp32, profile="past=0:64:512", compute_capability="8.9")[0] != base
    copy = make_decoder(tmp_path / "copy" / "model.onnx")  # same bytes elsewhere: same engine
    assert eng.engine_key(copy, compute_capability="8.9")[0] == base
    model = onnx.load(copy, load_external_data=False)
    helper.set_model_props(model, {"painters.plan": "skip:1"})
    onnx.save(model, copy)
    assert eng.engine_key(copy, compute_capability="8.9")[0] != base


# ---- CLI ----------------------------------------------------------------------------------------------------------

@needs_rtx
def test_cli_engine_build(toy_fp16, tmp_path):
    from painters.cli import main

    out = tmp_path / "toy.engine"
    result = CliRunner().invoke(main, ["engine", "build", str(toy_fp16), "-o", str(out), "--precision", "fp16",
                                       "--profile", "batch=1:1:2,seq=1:4:8,past=0:4:8", "--compute-capability", "8.9"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and f"{out}: tensorrt-rtx engine" in result.output
    result = CliRunner().invoke(main, ["engine", "build", str(toy_fp16), "-o", str(out), "--profile", "seq=9:1:1"])
    assert result.exit_code == 2 and "write seq=1:1:9" in result.output


# ---- runner (needs a CUDA GPU that TensorRT-RTX supports) ---------------------------------------------------------

def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


needs_gpu = pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_gpu
@needs_rtx
def test_trt_runner_matches_onnxruntime(toy_fp32, tmp_path):
    from painters.runtime.ort import OrtRunner
    from painters.runtime.trt import TrtRunner

    try:
        engine = eng.build_engine(toy_fp32, tmp_path / "toy.engine", profile="batch=1:2:4,seq=1:8:16,past=0:8:32")
    except BuildError as exc:
        pytest.skip(f"TensorRT-RTX cannot target this GPU: {exc}")
    ids, mask = np.array([[0, 3, 5, 7], [1, 2, 3, 4]]), np.array([[0, 1, 1, 1], [1, 1, 1, 1]])
    with TrtRunner(engine) as trt_runner, OrtRunner(toy_fp32) as ort_runner:
        assert trt_runner.info.num_slots == SLOTS and trt_runner.info.plan == "baseline"
        logits, kv = trt_runner.prefill(ids, mask)
        ref, ref_kv = ort_runner.prefill(ids, mask)
        np.testing.assert_allclose(logits, ref, atol=1e-3)
        mask = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
        logits, kv = trt_runner.decode(np.array([9, 10]), mask, kv)  # decode profile
        ref, _ = ort_runner.decode(np.array([9, 10]), mask, ref_kv)
        np.testing.assert_allclose(logits, ref, atol=1e-3)
        assert kv[0][0].is_cuda and tuple(kv[0][0].shape) == (2, KV_HEADS, 5, HEAD_DIM)
        assert tuple(trt_runner.repeat_kv(trt_runner.empty_kv(1), 3)[1][1].shape) == (3, KV_HEADS, 0, HEAD_DIM)


@pytest.mark.gpu
@needs_gpu
@needs_rtx
def test_trt_runner_refuses_engine_for_another_gpu(toy_fp32, tmp_path):
    import torch

    from painters.runtime.trt import TrtRunner

    major, minor = torch.cuda.get_device_capability()
    other = "7.5" if (major, minor) != (7, 5) else "8.9"
    engine = eng.build_engine(toy_fp32, tmp_path / "foreign.engine", compute_capability=other)
    with pytest.raises(BuildError, match="cannot load this engine .*Rebuild it here"):
        TrtRunner(engine)


# ---- a real export (slow: exports the tiny Llama once per session) -----------------------------------------------

@pytest.mark.slow
@needs_rtx
def test_exported_tiny_llama_builds(tiny_onnx, tmp_path):
    out = eng.build_engine(tiny_onnx, tmp_path / "tiny.engine", profile="batch=1:2:4,seq=1:16:64,past=0:16:64",
                           compute_capability="8.9")
    record = json.loads(eng.sidecar_path(out).read_text())
    assert record["inputs"]["metadata"]["painters.plan"] == "baseline"
    assert {n for n, mode, _, _ in record["io"] if mode == "input"} >= {"input_ids", "attention_mask", "position_ids",
                                                                         "past_key_values.0.key"}
