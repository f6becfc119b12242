"""ONNX Runtime GenAI folders given to `painters compile` (= painters-compile) with a missing, malformed or
contradictory ``genai_config.json`` or missing data files: each refused with exit 2, one line naming the file or
field, the folder unchanged and no output folder left behind. Also two compiles racing for one output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.checks import assert_refused, tree_state

PLAN = "skip_2_5"


def _set(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()
D = "model.decoder"
EDITS = {  # name: (dotted field, new value, needle in the error)
    "head_size_missing": (f"{D}.head_size", _DELETE, "head_size"),
    "head_size_zero": (f"{D}.head_size", 0, "head_size"),
    "head_size_string": (f"{D}.head_size", "64", "head_size"),
    "head_size_negative": (f"{D}.head_size", -8, "head_size"),
    "layers_string": (f"{D}.num_hidden_layers", "8", "num_hidden_layers"),
    "layers_zero": (f"{D}.num_hidden_layers", 0, "num_hidden_layers"),
    "layers_missing": (f"{D}.num_hidden_layers", _DELETE, "num_hidden_layers"),
    "kv_heads_zero": (f"{D}.num_key_value_heads", 0, "num_key_value_heads"),
    "heads_null": (f"{D}.num_attention_heads", None, "num_attention_heads"),
    "hidden_size_wrong": (f"{D}.hidden_size", 7, "hidden_size"),
    "vocab_size_wrong": ("model.vocab_size", 1, "vocab_size"),
    "context_length_zero": ("model.context_length", 0, "context_length"),
    "context_length_negative": ("model.context_length", -1, "context_length"),
    "context_length_string": ("model.context_length", "big", "context_length"),
    "context_length_missing": ("model.context_length", _DELETE, "context_length"),
    "type_whisper": ("model.type", "whisper", "whisper"),
    "type_vision": ("model.type", "phi3v", "phi3v"),
    "type_missing": ("model.type", _DELETE, "model.type"),
    "type_number": ("model.type", 3, "model.type"),
    "filename_other": (f"{D}.filename", "other.onnx", "filename"),
    "filename_missing": (f"{D}.filename", _DELETE, "filename"),
    "input_ids_renamed": (f"{D}.inputs.input_ids", "ids", "input_ids"),
    "past_pattern_number": (f"{D}.inputs.past_key_names", 5, "past_key_names"),
    "past_pattern_two_slots": (f"{D}.inputs.past_key_names", "past_key_values.%d.key.%d", "past_key_names"),
    "past_pattern_no_slot": (f"{D}.inputs.past_value_names", "past_key_values.value", "past_value_names"),
    "present_pattern_list": (f"{D}.outputs.present_key_names", ["present.0.key"], "present_key_names"),
    "outputs_missing": (f"{D}.outputs", _DELETE, "outputs"),
    "inputs_string": (f"{D}.inputs", "input_ids", "inputs"),
    "decoder_string": (D, "model.onnx", "decoder"),
    "max_length_past_context": ("search.max_length", 10 ** 6, "max_length"),
    "max_length_zero": ("search.max_length", 0, "max_length"),
}
RAW = {  # name: (bytes of genai_config.json, needle)
    "not_json": (b"{not json", "genai_config.json"),
    "array": (b"[]", "genai_config.json"),
    "empty_object": (b"{}", "genai_config.json"),
    "empty_file": (b"", "genai_config.json"),
    "not_utf8": (b"\xff\xfe{}", "genai_config.json"),
    "model_is_list": (b'{"model": []}', "genai_config.json"),
}


def _folder(src: Path, dst: Path, *, data: bool = True) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name == "model.onnx.data" and not data:
            continue
        if f.is_file():
            (dst / f.name).hardlink_to(f)
    return dst / "model.onnx"


def _write_config(folder: Path, content: bytes) -> None:
    (folder / "genai_config.json").unlink()  # a new file: never write through the hard link into the source
    (folder / "genai_config.json").write_bytes(content)


@pytest.mark.parametrize("case", sorted(EDITS))
def test_contradictory_config_is_refused(genai_dirs, tmp_path, case):
    field, value, needle = EDITS[case]
    model = _folder(genai_dirs["fp32"], tmp_path / "src")
    config = json.loads((model.parent / "genai_config.json").read_text())
    _set(config, field, value)
    _write_config(model.parent, json.dumps(config).encode())
    assert_refused(["compile", model, "--plan", PLAN], [tmp_path], needle)


@pytest.mark.parametrize("case", sorted(RAW))
def test_malformed_config_is_refused(genai_dirs, tmp_path, case):
    content, needle = RAW[case]
    model = _folder(genai_dirs["fp32"], tmp_path / "src")
    _write_config(model.parent, content)
    assert_refused(["compile", model, "--plan", PLAN], [tmp_path], needle)


def test_config_that_is_a_directory(genai_dirs, tmp_path):
    model = _folder(genai_dirs["fp32"], tmp_path / "src")
    (model.parent / "genai_config.json").unlink()
    (model.parent / "genai_config.json").mkdir()
    assert_refused(["compile", model, "--plan", PLAN], [tmp_path], "genai_config.json")


def test_missing_config(genai_dirs, tmp_path):
    model = _folder(genai_dirs["fp32"], tmp_path / "src")
    (model.parent / "genai_config.json").unlink()
    assert_refused(["compile", model, "--plan", PLAN], [tmp_path], "genai_config.json")


def test_missing_data_file(genai_dirs, tmp_path):
    model = _folder(genai_dirs["fp32"], tmp_path / "src", data=False)
    assert_refused(["compile", model, "--plan", PLAN], [tmp_path], "model.onnx.data")


def test_truncated_data_file(genai_dirs, tmp_path):
    model = _folder(genai_dirs["fp32"], tmp_path / "src", data=False)
    data = (genai_dirs["fp32"] / "model.onnx.data").read_bytes()
    (model.parent / "model.onnx.data").write_bytes(data[: len(data) // 3])
    assert_refused(["compile", model, "--plan", PLAN], [tmp_path], "model.onnx.data")


def test_empty_graph_file(genai_dirs, tmp_path):
    model = _folder(genai_dirs["fp32"], tmp_path / "src")
    model.unlink()
    model.write_bytes(b"")
    assert_refused(["compile", model, "--plan", PLAN], [tmp_path], "model.onnx")


def test_two_compiles_into_one_output(genai_dirs, tmp_path):
    """Two painters-compile processes writing one output folder at once: both succeed or one is refused with one
    line; the survivor is a complete folder whose config names its graph, and no temp entry is left."""
    model = _folder(genai_dirs["fp32"], tmp_path / "src")
    out = tmp_path / "out" / "model.onnx"
    before = tree_state(model.parent)
    cmd = [sys.executable, "-m", "painters", "compile", str(model), "--plan", PLAN, "-o", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    assert any(code == 0 for code, _, _ in results), results
    for code, _, err in results:
        assert code in (0, 2), err
        assert "Traceback" not in err, err
        if code == 2:
            assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 1, err
    assert tree_state(model.parent) == before
    config = json.loads((out.parent / "genai_config.json").read_text())
    assert config["model"]["decoder"]["filename"] == out.name
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []
    import onnxruntime as ort

    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])  # the survivor's graph and data load
    shutil.rmtree(out.parent)
