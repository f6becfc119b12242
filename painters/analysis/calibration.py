"""Calibration tokens for the analyses: a local text or JSONL file → ``samples`` × ``seq_len`` token ids.

What Matters in Transformers (He et al., 2024) computes its importance scores on 256 samples × 2048 tokens
of C4. C4 is not available offline, so painters calibrates on whatever local file it is given; the defaults
are smaller (64 × 512 tokens), which is enough for stable rankings on the models painters targets (the
scores are averages of per-token cosines over 32k tokens). The measurements in the issue notes use the
GSM8K train questions (``../shared/data/gsm8k/train.jsonl``).

File rules:

* ``*.jsonl`` / ``*.ndjson``: one JSON object per line, each a separate document. Its text is the ``text``
  field when present, else the ``question`` field (GSM8K, ARC-style files); the ``answer`` is *not* added,
  so GSM8K calibrates on the questions alone (the answers' ``<<48/2=24>>`` calculator annotations are not
  natural text). ``field=`` overrides the rule. Documents are tokenized separately and packed with the
  tokenizer's EOS token between them, the way C4 samples are packed.
* any other suffix: plain UTF-8 text, one continuous document.

The packed token stream is cut into ``samples`` consecutive sequences of ``seq_len`` tokens (no BOS is added,
no token is reused); a file with fewer than ``samples * seq_len`` tokens is an error, not a silent repeat.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from painters.errors import PaintersError
from painters.export.sources import LoadedModel, load_source
from painters.fileio import check_outputs, command_reads, file_hash

__all__ = ["CalibrationError", "calibration_documents", "calibration_ids", "check_ids", "load_calibrated",
           "DEFAULT_SAMPLES", "DEFAULT_SEQ_LEN", "JSONL_SUFFIXES"]

DEFAULT_SAMPLES = 64
DEFAULT_SEQ_LEN = 512
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_TEXT_FIELDS = ("text", "question")
_CHUNK_CHARS = 1 << 16  # plain text is tokenized in line-aligned pieces, so a huge file is never read whole
_BATCH_DOCS = 256


class CalibrationError(PaintersError):
    """A calibration file or token batch that cannot feed an analysis."""


def calibration_documents(path: str | Path, *, field: str | None = None) -> Iterator[tuple[str, bool]]:
    """Yield ``(text, ends_document)`` pieces of a calibration file, following the module's file rules."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration file {path} not found; give a local text or JSONL file with --calib")
    with open(path, encoding="utf-8", errors="replace") as f:
        if path.suffix.lower() in JSONL_SUFFIXES:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield _record_text(path, lineno, line, field), True
            return
        piece: list[str] = []
        size = 0
        for line in f:
            piece.append(line)
            size += len(line)
            if size >= _CHUNK_CHARS:
                yield "".join(piece), False
                piece, size = [], 0
        if piece:
            yield "".join(piece), True


def _record_text(path: Path, lineno: int, line: str, field: str | None) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{path}:{lineno}: not a JSON object ({exc.msg}); a .jsonl calibration file holds "
                               "one JSON object per line (rename a plain text file to .txt)") from None
    keys = (field,) if field else _TEXT_FIELDS
    if isinstance(record, dict):
        for key in keys:
            if isinstance(record.get(key), str):
                return record[key]
    found = sorted(record) if isinstance(record, dict) else type(record).__name__
    raise CalibrationError(f"{path}:{lineno}: no text field {' or '.join(repr(k) for k in keys)} "
                           f"(record has {found}); choose the field with field=")


def calibration_ids(path: str | Path, tokenizer: Any, *, samples: int | None = None, seq_len: int | None = None,
                    field: str | None = None, model_name: str = "the model",
                    fewer: str = "lower --samples / --seq-len") -> torch.Tensor:
    """Token ids ``[samples, seq_len]`` (int64) packed from the calibration file at ``path``.

    Args:
        path: Local text or JSONL file (see the module docstring for which text is used).
        tokenizer: A Hugging Face tokenizer; ``None`` (a model without tokenizer files) is an error.
        samples: Number of sequences (default 64).
        seq_len: Tokens per sequence (default 512).
        field: JSONL field to read instead of ``text``/``question``.
        model_name: Used in the error message when ``tokenizer`` is ``None``.
        fewer: How the caller's command asks for fewer tokens (the hint of a too-short file's error).
    """
    samples = DEFAULT_SAMPLES if samples is None else int(samples)
    seq_len = DEFAULT_SEQ_LEN if seq_len is None else int(seq_len)
    if samples < 1 or seq_len < 2:
        raise CalibrationError(f"need samples ≥ 1 and seq_len ≥ 2, got {samples} × {seq_len}")
    if tokenizer is None:
        raise CalibrationError(f"{model_name} has no tokenizer, so it cannot read calibration text; pass token ids "
                               "(importance_scores(model, ids)) or use a checkpoint that ships tokenizer files")
    need = samples * seq_len
    eos = getattr(tokenizer, "eos_token_id", None)
    tokens: list[int] = []
    pending: list[tuple[str, bool]] = []
    chars = 0

    def flush() -> None:
        encoded = tokenizer([text for text, _ in pending], add_special_tokens=False)["input_ids"]
        for ids, (_, ends) in zip(encoded, pending):
            tokens.extend(ids)
            if ends and eos is not None:
                tokens.append(int(eos))
        pending.clear()

    for text, ends in calibration_documents(path, field=field):
        chars += len(text.strip())
        pending.append((text, ends))
        if len(pending) >= _BATCH_DOCS or not ends:
            flush()
            if len(tokens) >= need:
                break
    if pending:
        flush()
    if chars == 0:
        raise CalibrationError(f"calibration file {path} is empty (no text); give a text or JSONL file with at "
                               f"least {need} tokens ({samples} × {seq_len})")
    if len(tokens) < need:
        raise CalibrationError(f"calibration file {path} has {len(tokens)} tokens; {samples} × {seq_len} = {need} "
                               f"are needed; give a longer file or {fewer}")
    return torch.tensor(tokens[:need], dtype=torch.long).view(samples, seq_len)


def check_ids(model: Any, ids: Any) -> torch.Tensor:
    """Validate pre-tokenized calibration ids ``[samples, seq_len]`` for ``model``; return them as int64."""
    ids = torch.as_tensor(ids)
    if ids.dim() != 2 or ids.shape[0] < 1 or ids.shape[1] < 2:
        raise CalibrationError(f"calibration ids must be a [samples, seq_len] tensor with seq_len ≥ 2, "
                               f"got shape {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise CalibrationError(f"calibration ids must be integers, got {ids.dtype}")
    vocab = int(model.config.vocab_size)
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise CalibrationError(f"calibration ids span {int(ids.min())}..{int(ids.max())}; "
                               f"the model's vocabulary is 0..{vocab - 1}")
    return ids.long()


def load_calibrated(src: str | Path | LoadedModel, calib: str | Path, *, samples: int | None = None,
                    seq_len: int | None = None, field: str | None = None,
                    outputs: tuple[str | Path | None, ...] = ()) -> tuple[LoadedModel, torch.Tensor, dict]:
    """Load SRC (or take a LoadedModel) and its calibration ids; also return the provenance for output files.

    ``outputs`` are checked before any work, so a bad output path fails in seconds, not after the analysis.
    """
    check_outputs(outputs, command_reads(calib, models=[] if isinstance(src, LoadedModel) else [src]))
    loaded = src if isinstance(src, LoadedModel) else load_source(src)
    ids = calibration_ids(calib, loaded.tokenizer, samples=samples, seq_len=seq_len, field=field,
                          model_name=f"model {loaded.name!r}")
    meta = {"model": loaded.name, "calibration": str(calib), "calibration_sha256": file_hash(calib),
            "samples": int(ids.shape[0]), "seq_len": int(ids.shape[1])}
    if field:
        meta["calibration_field"] = field
    return loaded, ids, meta
