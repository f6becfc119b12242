"""Issue 15 items 2 and 3: export never replaces a file another graph or the checkpoint itself reads.

Export checks its outputs before it loads anything, so each refusal here costs no trace.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import SHARED
from tests.reliability.checks import assert_refused, run_cli

STORIES = SHARED / "models" / "stories260K" / "hf"
needs_stories = pytest.mark.skipif(not STORIES.exists(), reason="stories260K fixture (../shared/models) is absent")


@pytest.fixture
def shared_data_dir(model_dir) -> Path:
    """The tiny model's folder with a compiled graph in it that reads the folder's ``model.onnx.data``."""
    code, output = run_cli(["compile", "--plan", "skip_1_3", model_dir])
    assert code == 0, output
    return model_dir.parent


@pytest.mark.parametrize("name", ["model.onnx", "model"])
def test_export_refuses_a_data_file_other_graphs_use(shared_data_dir, name):
    """OUT.data = the folder's model.onnx.data, read by model.skip_1_3.onnx: replacing it would break that graph."""
    out = shared_data_dir / name
    if name == "model":  # OUT is new, but OUT.data is not: the neighbour whose own name is free
        (shared_data_dir / "model.data").hardlink_to(shared_data_dir / "model.onnx.data")
        graph = shared_data_dir / "other.onnx"
        _relocate_data(shared_data_dir / "model.skip_1_3.onnx", graph, "model.data")
    assert_refused(["export", "tiny-llama", "-o", out], [shared_data_dir], "is the weights file of",
                   "choose another output directory")


def _relocate_data(src: Path, dst: Path, location: str) -> None:
    import onnx

    model = onnx.load(src, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, dst)


@needs_stories
@pytest.mark.parametrize("out", ["model.onnx", "generation_config.json", "config.json", "model.safetensors"])
def test_export_into_the_checkpoint_never_rewrites_its_files(tmp_path, out):
    """`export CKPT -o CKPT/model.onnx` would write CKPT/generation_config.json: refused, CKPT byte-identical."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(STORIES, ckpt)
    assert_refused(["export", ckpt, "-o", ckpt / out], [tmp_path], "would overwrite the input")


@needs_stories
def test_export_beside_a_checkpoint_file_through_a_symlinked_folder(tmp_path):
    """The same checkpoint reached through a symlinked folder is still the input."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(STORIES, ckpt)
    (tmp_path / "alias").symlink_to(ckpt, target_is_directory=True)
    assert_refused(["export", ckpt, "-o", tmp_path / "alias" / "model.onnx"], [tmp_path], "would overwrite the input")


@needs_stories
def test_string_architectures_in_a_checkpoint_is_named_whole(tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(STORIES, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").chmod(0o644)
    # the family is chosen by model_type (as transformers does); a string `architectures` must not be shown
    # letter by letter, nor mislead the guard
    (ckpt / "config.json").write_text(json.dumps({**config, "architectures": "GPT2LMHeadModel",
                                                  "model_type": "gpt2"}))
    message = assert_refused(["export", ckpt, "-o", tmp_path / "out" / "m.onnx"], [tmp_path], "gpt2",
                             "not supported")
    assert "'G', 'P'" not in message
