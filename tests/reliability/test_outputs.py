"""No command writes over a file it reads or over a non-regular file: exit 2, inputs byte-identical."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from painters.cli import main


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _refused(args: list[str], folder: Path, message: str) -> None:
    before = _hashes(folder)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert _hashes(folder) == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


@pytest.mark.parametrize("side", ["data", "generation_config.json"])
def test_compile_refuses_output_onto_its_own_input_files(model_dir, side):
    target = model_dir.with_name(model_dir.name + ".data") if side == "data" else model_dir.parent / side
    if not target.exists():
        pytest.skip(f"{target.name} not exported for tiny-llama")
    _refused(["compile", "--plan", "skip_1_3", str(model_dir), "-o", str(target)], model_dir.parent,
             "would overwrite the input")


def test_compile_refuses_hard_link_to_input(model_dir, tmp_path):
    link = tmp_path / "alias.onnx"
    os.link(model_dir.with_name(model_dir.name + ".data"), link)
    _refused(["compile", "--plan", "skip_1_3", str(model_dir), "-o", str(link)], model_dir.parent,
             "would overwrite the input")


def test_compile_refuses_non_regular_output(model_dir, tmp_path):
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    _refused(["compile", "--plan", "skip_1_3", str(model_dir), "-o", str(fifo)], model_dir.parent,
             "not a regular file")
    assert fifo.exists() and not fifo.is_file()


def test_compile_refuses_overlong_output_name(model_dir, tmp_path):
    _refused(["compile", "--plan", "skip_1_3", str(model_dir), "-o", str(tmp_path / ("x" * 300 + ".onnx"))],
             model_dir.parent, "file systems allow 255")


# property: any output path drawn from the input's own folder is refused (exit 2) or written, never an input ------

_SEGMENTS = ["model.onnx", "model.onnx.data", "generation_config.json", "link.onnx", "hard.onnx", "pipe.onnx",
             "sub", "self", ".", "..", "new.onnx", "model.onnx.fused.data", "x" * 300]
_INPUTS = ("model.onnx", "model.onnx.data", "generation_config.json")


def _hostile_folder(model_dir: Path, root: Path) -> Path:
    """A fresh copy of the model folder with links into it: a symlink and a hard link to inputs, a FIFO, a
    subfolder and a symlink to the folder itself."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(dir=root)) / "m"
    shutil.copytree(model_dir.parent, folder)
    (folder / "link.onnx").symlink_to("model.onnx.data")
    os.link(folder / "model.onnx", folder / "hard.onnx")
    os.mkfifo(folder / "pipe.onnx")
    (folder / "sub").mkdir()
    (folder / "self").symlink_to(".", target_is_directory=True)
    return folder


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=3))
def test_output_paths_from_the_inputs_folder_are_refused_or_written_never_over_an_input(model_dir, tmp_path,
                                                                                          segments):
    folder = _hostile_folder(model_dir, tmp_path)
    inputs = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in _INPUTS}
    out = folder.joinpath(*segments)
    result = CliRunner().invoke(main, ["compile", "--plan", "skip_1_3", str(folder / "model.onnx"), "-o", str(out)])
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:  # painters' one-line error, or click's usage error for a directory
        errors = [line for line in result.output.splitlines() if line.startswith(("error: ", "Error: "))]
        assert len(errors) == 1, result.output
    else:
        assert out.is_file() and not out.is_symlink()
    assert {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in _INPUTS} == inputs
    assert (folder / "link.onnx").is_symlink() and not (folder / "pipe.onnx").is_file()
    assert not [p for p in folder.parent.rglob(".*") if ".painters-" in p.name]  # no temp folder left


def test_compile_output_named_like_the_data_it_links_is_refused(model_dir, tmp_path):
    """Found by the property above: `-o OTHER/model.onnx.data` linked the input's data into the temp folder
    under that name and then wrote the graph through the hard link, rewriting the input's weights."""
    _refused(["compile", "--plan", "skip_1_3", str(model_dir), "-o", str(tmp_path / "model.onnx.data")],
             model_dir.parent, "is the name of a file the graph needs beside it")
    assert not (tmp_path / "model.onnx.data").exists()


def test_compile_refuses_an_overlong_folder_name(model_dir, tmp_path):
    """Found by the property above: a 300-byte folder name on the way crashed with OSError (exit 1)."""
    _refused(["compile", "--plan", "skip_1_3", str(model_dir), "-o", str(tmp_path / ("d" * 300) / "x.onnx")],
             model_dir.parent, "file systems allow 255")


def test_export_output_named_like_a_side_file_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["export", "tiny-llama", "-o", str(tmp_path / "generation_config.json")])
    assert result.exit_code == 2 and "is the name of a file export writes beside the graph" in result.output
    assert list(tmp_path.iterdir()) == []
