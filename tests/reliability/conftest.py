"""Fixtures of the reliability suite: private copies of the exported tiny model, so a bad refusal hurts no one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def model_dir(tiny_onnx, tmp_path) -> Path:
    """A private copy of the tiny exported model folder; returns the path of its ``model.onnx``."""
    dst = tmp_path / "m"
    shutil.copytree(Path(tiny_onnx).parent, dst)
    return dst / Path(tiny_onnx).name
