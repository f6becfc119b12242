"""ONNX Runtime GenAI's model builder, run in-process on a Hugging Face directory (for the genai tests).

In-process because the builder's import of torch and transformers costs more than building a tiny model;
it is the same ``create_model`` that ``python -m onnxruntime_genai.models.builder`` calls.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path


def save_hf_dir(loaded, out: Path) -> Path:
    """A plain Hugging Face directory of ``loaded`` (tiny-llama: with the byte-level test tokenizer)."""
    from tests.byte_tokenizer import byte_tokenizer

    loaded.model.save_pretrained(out)
    (loaded.tokenizer or byte_tokenizer()).save_pretrained(out)
    return out


def build_genai(hf_dir: Path, out: Path, precision: str, cache: Path) -> Path:
    """``python -m onnxruntime_genai.models.builder -i HF -o OUT -p PRECISION -e cpu -c CACHE``; returns OUT."""
    from onnxruntime_genai.models import builder

    options = builder.parse_extra_options(None, str(hf_dir), str(out), precision, "cpu", str(cache), None)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        builder.create_model(None, str(hf_dir), str(out), precision, "cpu", str(cache), **options)
    return out
