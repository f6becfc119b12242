"""GLUE tasks as painters reads them: the TSV files of ``DATA/glue/<Task>/`` (GLUE's own distribution).

MNLI and QQP are not in the data folder; QNLI has only its dev split (it can be *evaluated*, not fine-tuned
here). The test splits' labels are hidden by GLUE, so evaluation uses ``dev.tsv``, as the papers do.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from painters.bench.tasks import resolve_data_dir
from painters.errors import BenchError

__all__ = ["GlueTask", "GLUE_TASKS", "GlueSplit", "get_task", "read_split", "ABSENT_TASKS"]

ABSENT_TASKS = ("mnli", "qqp")  # not in the shared data: no train or dev split to read


@dataclass(frozen=True)
class GlueTask:
    """Where a task's files are and how its columns read (names for headed files, indices for CoLA)."""

    name: str
    folder: str
    text_a: str | int
    text_b: str | int | None
    label: str | int
    labels: tuple[str, ...] | None  # label strings in id order; None: regression (STS-B)
    metrics: tuple[str, ...]
    train_file: str = "train.tsv"
    header: bool = True

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


_BIN = ("0", "1")
_NLI = ("entailment", "not_entailment")
GLUE_TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("cola", "CoLA", 3, None, 1, _BIN, ("matthews",), "train_raw.tsv", header=False),
    GlueTask("sst2", "SST-2", "sentence", None, "label", _BIN, ("accuracy",)),
    GlueTask("mrpc", "MRPC", "#1 String", "#2 String", "Quality", _BIN, ("f1", "accuracy")),
    GlueTask("stsb", "STS-B", "sentence1", "sentence2", "score", None, ("pearson", "spearman")),
    GlueTask("qnli", "QNLI", "question", "sentence", "label", _NLI, ("accuracy",)),
    GlueTask("rte", "RTE", "sentence1", "sentence2", "label", _NLI, ("accuracy",)),
    GlueTask("wnli", "WNLI", "sentence1", "sentence2", "label", _BIN, ("accuracy",)),
)}


@dataclass
class GlueSplit:
    """One split's examples: sentence (pairs) and labels (class ids, or floats for regression)."""

    task: GlueTask
    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.text_a)


def get_task(name: str) -> GlueTask:
    """The task called ``name`` (case-insensitive; ``sst-2``/``sts-b`` spellings accepted)."""
    key = name.lower().replace("-", "")
    if key in ABSENT_TASKS:
        raise BenchError(f"GLUE task {name!r} is not available: MNLI and QQP are absent from the data folder; "
                         f"available: {', '.join(GLUE_TASKS)}")
    if key not in GLUE_TASKS:
        raise BenchError(f"unknown GLUE task {name!r}; choose one of {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def _column(row: list[str], header: list[str] | None, col: str | int, path: Path, lineno: int) -> str:
    index = col if isinstance(col, int) else header.index(col)
    if index >= len(row):
        raise BenchError(f"{path}:{lineno}: expected at least {index + 1} tab-separated columns, found {len(row)}")
    return row[index]


def read_split(task: GlueTask, split: str, *, data_dir: str | Path | None = None,
               limit: int | None = None) -> GlueSplit:
    """Read ``train`` or ``dev`` of ``task`` (the first ``limit`` examples when given)."""
    folder = resolve_data_dir(data_dir) / "glue" / task.folder
    path = folder / (task.train_file if split == "train" else "dev.tsv")
    if not path.is_file():
        what = "only its dev split is available here, so it cannot be fine-tuned" if task.name == "qnli" else \
            "the file is missing"
        raise BenchError(f"GLUE {task.name} {split}: {path} not found ({what}); GLUE data lives in DATA/glue/<Task>/")
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not any(any(row) for row in rows[1 if task.header else 0:]):  # an IndexError or a 0/0 score later
        raise BenchError(f"GLUE {task.name} {split}: {path} holds no examples (empty or header only); restore the "
                         "file from the GLUE data (DATA/glue/<Task>/)")
    header = rows.pop(0) if task.header else None
    for col in (task.text_a, task.text_b, task.label):
        if isinstance(col, str) and col not in header:
            raise BenchError(f"{path}: no column {col!r} in the header {header}")
    text_a, text_b, labels = [], [], []
    for lineno, row in enumerate(rows, 2 if task.header else 1):
        if limit is not None and len(text_a) >= limit:
            break
        if not any(row):
            continue
        text_a.append(_column(row, header, task.text_a, path, lineno))
        if task.text_b is not None:
            text_b.append(_column(row, header, task.text_b, path, lineno))
        raw = _column(row, header, task.label, path, lineno).strip()
        if task.labels is None:
            try:
                labels.append(float(raw))
            except ValueError:
                raise BenchError(f"{path}:{lineno}: score {raw!r} is not a number") from None
        elif raw not in task.labels:
            raise BenchError(f"{path}:{lineno}: label {raw!r} is not one of {task.labels}")
        else:
            labels.append(task.labels.index(raw))
    dtype = np.float32 if task.labels is None else np.int64
    return GlueSplit(task, text_a, text_b if task.text_b is not None else None, np.asarray(labels, dtype=dtype))
