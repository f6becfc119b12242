"""Offline datasets for painters' lm-eval task YAMLs: the JSON files of the painters data directory.

The data directory is resolved when a task loads: ``$PAINTERS_DATA`` if set, else ``../shared/data`` beside
the repository (``painters.bench.tasks.resolve_data_dir``). Prompts and metrics are lm-eval's own
(its hellaswag ``process_docs`` and winogrande functions are imported, not copied).
"""

from __future__ import annotations

import os

import datasets
from lm_eval.tasks.hellaswag.utils import process_docs as hellaswag_process_docs  # noqa: F401  (YAML uses it)
from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_choice as winogrande_doc_to_choice  # noqa: F401
from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_target as winogrande_doc_to_target  # noqa: F401
from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_text as winogrande_doc_to_text  # noqa: F401

import painters.integrations.lm_eval  # noqa: F401  (registers --model painters; see below)
from painters.bench.tasks import resolve_data_dir

# lm-eval 0.4.13's CLI loads task YAMLs given by path (``--tasks DIR/painters_arc_easy.yaml`` or ``--tasks DIR``)
# with their ``!function``s resolved -- importing this file -- before it looks the model up
# (lm_eval/_cli/run.py: ``cfg.process_tasks`` precedes ``simple_evaluate``; config/evaluate_config.py
# ``load_yaml(..., resolve_func=True)``). So the plain ``lm_eval --model painters`` command works with the tasks
# passed as paths; tasks named through ``--include_path`` are loaded only after the model lookup, too late.


def _load(**splits: str) -> datasets.DatasetDict:
    root = resolve_data_dir(os.environ.get("PAINTERS_DATA") or None)
    return datasets.load_dataset("json", data_files={k: str(root / v) for k, v in splits.items()})


def arc_easy(**_) -> datasets.DatasetDict:
    """ARC-Easy test and train (AI2 schema)."""
    return _load(test="arc/ARC-Easy-Test.jsonl", train="arc/ARC-Easy-Train.jsonl")


def arc_challenge(**_) -> datasets.DatasetDict:
    """ARC-Challenge test and train (AI2 schema)."""
    return _load(test="arc/ARC-Challenge-Test.jsonl", train="arc/ARC-Challenge-Train.jsonl")


def hellaswag(**_) -> datasets.DatasetDict:
    """HellaSwag validation (rowanz schema, the rows of the Hugging Face split)."""
    return _load(validation="hellaswag/hellaswag_val.jsonl")


def winogrande(**_) -> datasets.DatasetDict:
    """WinoGrande xl validation and the xs train pool."""
    return _load(validation="winogrande/dev.jsonl", train="winogrande/train_xs.jsonl")


def lambada(**_) -> datasets.DatasetDict:
    """OpenAI's LAMBADA test file (lm-eval's lambada_openai)."""
    return _load(test="lambada/lambada_test.jsonl")


def arc_process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """AI2 rows → the Hugging Face ai2_arc schema lm-eval's arc YAML reads (question, choices, answerKey)."""
    def flat(doc: dict) -> dict:
        q = doc["question"]
        return {"question": q["stem"], "answerKey": str(doc["answerKey"]).strip(),
                "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]}}

    return dataset.map(flat, remove_columns=dataset.column_names)
