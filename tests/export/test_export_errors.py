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
    assert_refused(tmp_path, [ckpt, "-o", tmp_path / "m.onnx"], "model_type 'gpt2' is not supported", "llama",
                   "mistral", "qwen2", "gemma2", "gpt_neox")


def test_guard_reads_model_type_not_architectures(tmp_path):
    """transformers picks the class from model_type: a Llama label on another family is no pass."""
    ckpt = tmp_path / "bloom"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "bloom"}))
    (ckpt / "model.safetensors").write_bytes(b"\0" * 16)
    assert_refused(tmp_path, [ckpt, "-o", tmp_path / "m.onnx"], "model_type 'bloom' is not supported")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", json.dumps({"model_type": "no-such-type"})])
def test_invalid_config_json(tmp_path, text):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(text)
    (ckpt / "model.safetensors").write_bytes(b"\0" * 16)
    assert_refused(tmp_path, [ckpt, "-o", tmp_path / "m.onnx"], "config.json")


def _tiny_llama_checkpoint(path, **config):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, **config}))
    return path


@pytest.mark.parametrize(("layers", "needle"), [(3, "missing weight"), (1, "unexpected weight")])
def test_config_disagrees_with_weights(tmp_path, layers, needle):
    """A config saying 3 layers over weights of 2 would leave layer 2 random; 1 layer would drop weights."""
    ckpt = _tiny_llama_checkpoint(tmp_path / "ckpt", num_hidden_layers=layers)
    assert_refused(tmp_path, [ckpt, "-o", tmp_path / "m.onnx"], needle, "model.layers.")


@pytest.mark.parametrize(("option", "needle"), [
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}}, "rope type 'dynamic'"),
    ({"rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0] * 4,
                          "long_factor": [1.0] * 4, "original_max_position_embeddings": 64}}, "rope type 'longrope'"),
])
def test_unimplemented_option_is_named(tmp_path, option, needle):
    ckpt = _tiny_llama_checkpoint(tmp_path / "ckpt", **option)
    assert_refused(tmp_path, [ckpt, "-o", tmp_path / "m.onnx"], needle)


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
