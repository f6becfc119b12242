"""Bad input to `painters export`: one-line error, exit code 2, nothing left behind."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from painters.cli import main
from tests.conftest import SHARED

STORIES = SHARED / "models" / "stories260K" / "hf"


def run(*args):
    result = CliRunner().invoke(main, ["export", *map(str, args)])
    return result.exit_code, result.output


def assert_refused(tmp_path, args, *needles):
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, output = run(*args)
    assert code == 2, output
    assert output.startswith("error: ") and output.count("\n") == 1, output
    for needle in needles:
        assert needle in output
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_missing_source(tmp_path):
    assert_refused(tmp_path, [tmp_path / "nope", "-o", tmp_path / "m.onnx"], "not found", "smollm2-135m")


def test_partial_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    assert_refused(tmp_path, [ckpt, "-o", tmp_path / "m.onnx"], "no *.safetensors")


def test_unsupported_architecture(tmp_path):
    ckpt = tmp_path / "gpt2"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    (ckpt / "model.safetensors").write_bytes(b"\0" * 16)
    assert_refused(tmp_path, [ckpt, "-o", tmp_path / "m.onnx"], "not supported", "LlamaForCausalLM",
                   "MistralForCausalLM", "Qwen2ForCausalLM")


def test_corrupt_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x07" * 100)
    assert_refused(tmp_path, [bad, "-o", tmp_path / "m.onnx"], "bad.gguf")


def test_wrong_dtype(tmp_path):
    code, output = run("tiny-llama", "-o", tmp_path / "m.onnx", "--dtype", "fp8")
    assert code == 2 and "fp8" in output
    assert list(tmp_path.iterdir()) == []


def test_output_under_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_refused(tmp_path, ["tiny-llama", "-o", blocker / "sub" / "m.onnx"], "not a writable directory")


@pytest.mark.skipif(not STORIES.exists(), reason="stories260K fixture (../shared/models) is absent")
def test_output_over_an_input_file(tmp_path):
    ckpt = tmp_path / "stories"
    shutil.copytree(STORIES, ckpt)
    assert_refused(tmp_path, [ckpt, "-o", ckpt / "model.safetensors"], "would overwrite the input")


@pytest.mark.skipif(not STORIES.exists(), reason="stories260K fixture (../shared/models) is absent")
def test_real_checkpoint_directory_exports(tmp_path):
    """stories260K: a real pretrained Llama checkpoint directory (no tokenizer) exports and matches PyTorch."""
    from painters.export.sources import load_source
    from tests.export.test_export import check_parity

    code, output = run(STORIES, "-o", tmp_path / "out" / "m.onnx")
    assert code == 0, output
    check_parity(load_source(STORIES), tmp_path / "out" / "m.onnx", [[1, 403, 407, 261, 378], [1, 300]])
