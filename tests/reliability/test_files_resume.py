"""Issue 32, classes 2, 3 and 7: a resumed sweep or reproduction refuses a run folder of another model, tasks, limits
or options, refuses run files copied in from elsewhere, names a file it cannot read (empty, truncated) instead of
crashing, and never reuses graph/ or analysis/ made from weights that changed at the same path."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.reliability.checks import assert_refused, run_cli

pytestmark = pytest.mark.skipif(not (DATA / "arc" / "ARC-Easy-Test.jsonl").is_file()
                                or not (DATA / "gsm8k" / "train.jsonl").is_file(), reason="task data is absent")

UNREADABLE = {"empty": b"", "truncated": b'{"variant": "skip", "n": 2, "pla', "list": b"[]", "binary": b"\xff\xfe\x00",
              "number": b"3", "keys": b'{"plan": "skip_3_5"}'}


@pytest.fixture(scope="module")
def swept(tiny_onnx, tmp_path_factory) -> dict[str, Path]:
    """A finished two-run sweep (baseline, skip) of tiny-llama's graph with a byte tokenizer, on 2 ARC items."""
    from tests.byte_tokenizer import byte_tokenizer

    root = tmp_path_factory.mktemp("swept")
    model = root / "m"
    shutil.copytree(tiny_onnx.parent, model)
    byte_tokenizer().save_pretrained(model)
    data = root / "data"
    (data / "arc").mkdir(parents=True)
    with open(DATA / "arc" / "ARC-Easy-Test.jsonl") as f:
        (data / "arc" / "ARC-Easy-Test.jsonl").write_text("".join(f.readline() for _ in range(4)))
    out = root / "out"
    code, text = run_cli(_sweep_args(model / tiny_onnx.name, data, out))
    assert code == 0, text
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["baseline.json", "skip_3_5.json"]
    return {"model": model / tiny_onnx.name, "data": data, "out": out}


def _sweep_args(model: Path, data: Path, out: Path, *extra) -> list:
    options = {"--variants": "skip", "--n": "2", "--tasks": "arc_easy", "--limit": "2"}
    for key, value in zip(extra[::2], extra[1::2]):
        options[key] = value
    return ["sweep", model, *(a for kv in options.items() for a in kv), "--no-latency", "--data", data, "-o", out]


@pytest.fixture
def resumed(swept, tmp_path) -> Path:
    """A private copy of the finished sweep's folder."""
    out = tmp_path / "out"
    shutil.copytree(swept["out"], out)
    return out


# sweep ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(UNREADABLE))
@pytest.mark.parametrize("name", ["skip_3_5.json", "baseline.json", "other_1_2.json"])
def test_sweep_names_a_run_file_it_cannot_read(swept, resumed, kind, name):
    (resumed / "runs" / name).write_bytes(UNREADABLE[kind])
    assert_refused(_sweep_args(swept["model"], swept["data"], resumed), [resumed], name, "cannot be read")


@pytest.mark.parametrize(("field", "value"), [
    ("model_hash", "f" * 64), ("tasks", ["arc_challenge"]), ("tasks", ["arc_easy", "hellaswag"]), ("limit", 200),
    ("limit", None), ("latency", True), ("backend", "torch"), ("data", "/elsewhere"), (None, None),
])
@pytest.mark.parametrize("name", ["skip_3_5.json", "planted_9.json"])
def test_sweep_refuses_a_foreign_run_file(swept, resumed, field, value, name):
    record = json.loads((resumed / "runs" / "skip_3_5.json").read_text())
    if field is None:
        del record["provenance"]
    else:
        record["provenance"][field] = value
    record["tasks"]["arc_easy"]["metrics"][record["tasks"]["arc_easy"]["main_metric"]] = 0.99  # a planted score
    (resumed / "runs" / name).write_text(json.dumps(record))
    line = assert_refused(_sweep_args(swept["model"], swept["data"], resumed), [resumed], name,
                          "not a run of this sweep")
    assert (field or "no provenance") in line


@pytest.mark.parametrize("extra", [("--limit", "3"), ("--tasks", "arc_easy,arc_challenge"), ("--limit", "1")])
def test_sweep_resumed_with_other_options_is_refused(swept, resumed, extra):
    assert_refused(_sweep_args(swept["model"], swept["data"], resumed, *extra), [resumed], "not a run of this sweep")


def test_sweep_resumed_with_latency_is_refused(swept, resumed):
    args = [a for a in _sweep_args(swept["model"], swept["data"], resumed) if a != "--no-latency"]
    assert_refused(args, [resumed], "latency")


@pytest.mark.parametrize("n", ["3..1", "5..2", "", ",", "2..1"])
def test_sweep_backwards_or_empty_range_is_refused(swept, tmp_path, n):
    assert_refused(_sweep_args(swept["model"], swept["data"], tmp_path / "new", "--n", n), [tmp_path],
                   "--n", "names no values")


def test_sweep_same_options_resume_without_rerunning(swept, resumed):
    before = {p.name: p.read_bytes() for p in (resumed / "runs").iterdir()}
    code, out = run_cli(_sweep_args(swept["model"], swept["data"], resumed))
    assert code == 0, out
    assert {p.name: p.read_bytes() for p in (resumed / "runs").iterdir()} == before


# reproduce ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_ckpt(tiny, tmp_path_factory) -> Path:
    """tiny-llama saved as a checkpoint folder with a byte tokenizer (reproduce reads calibration text)."""
    from tests.byte_tokenizer import byte_tokenizer

    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    tiny.model.save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


def _reproduce_args(ckpt: Path, out: Path, *extra, calib: Path = DATA / "gsm8k" / "train.jsonl",
                    quick: bool = True) -> list:
    return ["reproduce", ckpt, *(["--quick"] if quick else []), "--tasks", "arc_easy", "--data", DATA,
            "--calib", calib, *extra, "-o", out]


def _meta(ckpt: Path, **change) -> dict:
    from painters.experiments.reproduce import QUICK
    from painters.export.sources import load_source

    grid = replace(QUICK, tasks="arc_easy", calib=str(DATA / "gsm8k" / "train.jsonl"))
    meta = {"model": str(ckpt), "model_hash": load_source(str(ckpt)).hash, "grid": asdict(grid), "invocations": []}
    return {**meta, **change}


@pytest.mark.parametrize("kind", ["binary", "empty", "list", "number", "truncated"])
def test_reproduce_names_an_unreadable_meta(tiny_ckpt, tmp_path, kind):
    out = tmp_path / "r"
    out.mkdir()
    (out / "meta.json").write_bytes(UNREADABLE[kind])
    assert_refused(_reproduce_args(tiny_ckpt, out), [tmp_path, tiny_ckpt], "meta.json", "cannot be read")


@pytest.mark.parametrize("kind", ["binary", "empty", "list", "number", "truncated"])
def test_reproduce_names_an_unreadable_run_file(tiny_ckpt, tmp_path, kind):
    out = tmp_path / "r"
    (out / "runs").mkdir(parents=True)
    (out / "meta.json").write_text(json.dumps(_meta(tiny_ckpt)))
    (out / "runs" / "skip_3_5.json").write_bytes(UNREADABLE[kind])
    assert_refused(_reproduce_args(tiny_ckpt, out), [tmp_path, tiny_ckpt], "skip_3_5.json", "cannot be read")


@pytest.mark.parametrize("reproduce", [None, {}, {"model_hash": "f" * 64, "tasks": "arc_easy", "limit": 20},
                                       {"model_hash": "HASH", "tasks": "lambada", "limit": 20},
                                       {"model_hash": "HASH", "tasks": "arc_easy", "limit": 200}])
@pytest.mark.parametrize("with_meta", [True, False])
def test_reproduce_refuses_a_run_file_copied_in(tiny_ckpt, tmp_path, reproduce, with_meta):
    from painters.export.sources import load_source

    out = tmp_path / "r"
    (out / "runs").mkdir(parents=True)
    if with_meta:
        (out / "meta.json").write_text(json.dumps(_meta(tiny_ckpt)))
    record = {"variant": "skip", "n": 2, "plan": "skip_3_5", "tasks": {}, "model": "elsewhere"}
    if reproduce is not None:
        record["reproduce"] = {k: (load_source(str(tiny_ckpt)).hash if v == "HASH" else v)
                               for k, v in reproduce.items()}
    (out / "runs" / "skip_3_5.json").write_text(json.dumps(record))
    assert_refused(_reproduce_args(tiny_ckpt, out), [tmp_path, tiny_ckpt], "skip_3_5.json",
                   "not a run of this reproduction")


@pytest.mark.parametrize("where", ["meta", "importance", "similarity", "graph"])
def test_reproduce_refuses_artifacts_of_other_weights(tiny_ckpt, tmp_path, tiny_onnx, where):
    """The source changed at the same path: old graph/ and analysis/ must not be reused under the new hash."""
    import onnx

    out = tmp_path / "r"
    out.mkdir()
    meta = _meta(tiny_ckpt, model_hash="f" * 64) if where == "meta" else _meta(tiny_ckpt)
    (out / "meta.json").write_text(json.dumps(meta))
    if where in ("importance", "similarity"):
        (out / "analysis").mkdir()
        (out / "analysis" / f"{where}.json").write_text(json.dumps({"model_hash": "f" * 64}))
    if where == "graph":
        shutil.copytree(tiny_onnx.parent, out / "graph")
        proto = onnx.load(out / "graph" / tiny_onnx.name, load_external_data=False)
        for prop in proto.metadata_props:
            if prop.key == "painters.source_hash":
                prop.value = "f" * 64
        onnx.save(proto, out / "graph" / "model.onnx")
    assert_refused(_reproduce_args(tiny_ckpt, out), [tmp_path, tiny_ckpt], "stale", "another -o DIR")


@pytest.mark.parametrize(("option", "value"), [("--limit", "0"), ("--limit", "-3"), ("--threads", "0"),
                                               ("--n", "3..1"), ("--k", "4..2")])
def test_reproduce_refuses_empty_limits_and_ranges(tiny_ckpt, tmp_path, option, value):
    code, out = run_cli(_reproduce_args(tiny_ckpt, tmp_path / "r", option, value))
    assert code == 2, out
    assert "Traceback" not in out and option in out
    assert not (tmp_path / "r").exists()


def test_reproduce_checks_the_calibration_before_exporting(tiny_ckpt, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("too short")
    out = tmp_path / "r"
    line = assert_refused(_reproduce_args(tiny_ckpt, out, calib=short, quick=False), [tmp_path, tiny_ckpt],
                          "short.txt")
    assert "--samples" not in line and "--quick" in line
    assert not (out / "graph").exists()
