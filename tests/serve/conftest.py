"""A served copy of tiny-llama: its graph linked into a directory with a byte-level tokenizer (ids = bytes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.byte_tokenizer import CHAT_TEMPLATE, byte_tokenizer  # noqa: F401


def link_with_tokenizer(onnx: Path, out_dir: Path) -> Path:
    """Hard-link ``onnx`` and its data files into ``out_dir`` and save the byte tokenizer beside them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in onnx.parent.iterdir():
        if f.name.startswith(onnx.name) or f.suffix == ".data":
            os.link(f, out_dir / f.name)
    byte_tokenizer().save_pretrained(out_dir)
    return out_dir / onnx.name


@pytest.fixture(scope="session")
def served_tiny(tiny_onnx, tmp_path_factory) -> Path:
    return link_with_tokenizer(tiny_onnx, tmp_path_factory.mktemp("served") / "baseline")


@pytest.fixture(scope="session")
def served_tiny_plan(tiny_onnx, tmp_path_factory) -> Path:
    from painters.compiler.compile import compile_model

    out = tmp_path_factory.mktemp("plan") / "model.skip_3_5.onnx"
    compile_model(tiny_onnx, plan="skip_3_5", out=out)
    return link_with_tokenizer(out, tmp_path_factory.mktemp("served") / "skip")
