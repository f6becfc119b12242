"""No command writes over a file it reads or over a non-regular file: exit 2, inputs byte-identical."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

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
