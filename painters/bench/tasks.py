"""Accuracy tasks (ARC, HellaSwag, WinoGrande, LAMBADA, GSM8K) built the way lm-evaluation-harness builds them.

Prompts, continuations, preprocessing and metrics follow the harness's task configs (``arc_easy.yaml``,
``hellaswag/utils.py``, ``winogrande/preprocess_winogrande.py``, ``lambada_openai.yaml``, ``gsm8k.yaml`` v3),
so numbers are comparable with published lm-eval results. One deliberate difference: few-shot exemplars are
the first K items of the pool file (deterministic), where the harness samples them with a seed.

Data layout (read-only; the default DIR is ``../shared/data`` beside the repository, else ``$PAINTERS_DATA``,
or ``--data DIR``)::

    DIR/arc/ARC-Easy-Test.jsonl         AI2 schema: id, question.stem, question.choices[{text, label}], answerKey
    DIR/arc/ARC-Easy-Train.jsonl        few-shot pool (same schema)
    DIR/arc/ARC-Challenge-Test.jsonl    same schema; some labels are "1".."4"
    DIR/arc/ARC-Challenge-Train.jsonl   few-shot pool
    DIR/hellaswag/hellaswag_val.jsonl   rowanz schema: activity_label, ctx_a, ctx_b, endings[4], label
    DIR/winogrande/dev.jsonl            sentence (with "_"), option1, option2, answer ("1"/"2")
    DIR/winogrande/train_xs.jsonl       few-shot pool
    DIR/lambada/lambada_test.jsonl      {"text": ...}: OpenAI's LAMBADA test file (lambada_openai)
    DIR/gsm8k/test.jsonl                question, answer (reasoning, then "#### N")
    DIR/gsm8k/train.jsonl               few-shot exemplars
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from painters.errors import BenchError

__all__ = ["MultipleChoice", "Loglikelihood", "Generation", "Task", "TASKS", "get_task", "parse_tasks",
           "resolve_data_dir", "load_items", "hellaswag_preprocess", "arc_item", "hellaswag_item",
           "winogrande_item", "lambada_item", "gsm8k_item", "GSM8K_UNTIL"]

_LAYOUT_HINT = "expected layout: DIR/{arc,hellaswag,winogrande,lambada,gsm8k}/... (see painters/bench/tasks.py)"
GSM8K_UNTIL = ("Question:", "</s>", "<|im_end|>", "\n\n")


@dataclass(frozen=True)
class MultipleChoice:
    """One question scored as loglikelihood(contexts[i] → continuations[i]) for each choice ``i``.

    Ordinary tasks share one context across choices; WinoGrande (partial scoring) has one context per
    option and a shared continuation. ``norm_lengths`` are the lengths (characters) acc_norm divides by,
    or None where the task has no acc_norm.
    """

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    gold: int
    norm_lengths: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # A gold index outside the choices would score every answer wrong and pass silently.
        if len(self.contexts) != len(self.continuations) or not self.continuations:
            raise ValueError(f"{len(self.contexts)} contexts for {len(self.continuations)} choices")
        if isinstance(self.gold, bool) or not 0 <= self.gold < len(self.continuations):
            raise ValueError(f"gold label {self.gold!r} is not one of the {len(self.continuations)} choices "
                             f"0..{len(self.continuations) - 1}")


@dataclass(frozen=True)
class Loglikelihood:
    """One continuation scored after a context (lambada: is it greedy, and its loglikelihood)."""

    context: str
    continuation: str


@dataclass(frozen=True)
class Generation:
    """A prompt to continue greedily until one of ``until``; ``target`` is the reference answer text."""

    prompt: str
    target: str
    until: tuple[str, ...] = GSM8K_UNTIL
    max_new_tokens: int = 256


Item = MultipleChoice | Loglikelihood | Generation


@dataclass(frozen=True)
class Task:
    """A named evaluation: where its data lives, how a document becomes an item, what it reports."""

    name: str
    kind: str  # "multiple_choice" | "loglikelihood" | "generate"
    path: str  # relative to the data directory
    build: Callable[[dict, list[dict]], Item]  # (document, few-shot documents) -> item
    metrics: tuple[str, ...]
    main_metric: str
    fewshot_path: str | None = None
    default_fewshot: int = 0


def _arc_doc(doc: dict) -> tuple[str, list[str], int]:
    q = doc["question"]
    labels = [c["label"] for c in q["choices"]]
    texts = [c["text"] for c in q["choices"]]
    key = str(doc["answerKey"]).strip()
    if key not in labels:
        raise BenchError(f"ARC item {doc.get('id')}: answerKey {key!r} is not one of the labels {labels}")
    return f"Question: {q['stem']}\nAnswer:", texts, labels.index(key)


def _shots_prefix(shots: list[str]) -> str:
    # lm-eval: exemplars joined by fewshot_delimiter "\n\n", then the delimiter, then the query.
    return "".join(s + "\n\n" for s in shots)


def arc_item(doc: dict, fewshot: list[dict]) -> MultipleChoice:
    """ARC: "Question: {stem}\\nAnswer:" + " {choice}"; acc and acc_norm (by the choice's characters)."""
    shots = []
    for shot in fewshot:
        text, choices, gold = _arc_doc(shot)
        shots.append(f"{text} {choices[gold]}")
    text, choices, gold = _arc_doc(doc)
    context = _shots_prefix(shots) + text
    return MultipleChoice((context,) * len(choices), tuple(" " + c for c in choices), gold,
                          tuple(len(c) for c in choices))


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's ``preprocess``: strip, " [title]" → ". ", drop WikiHow "[...]" brackets, collapse double spaces."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def hellaswag_item(doc: dict, fewshot: list[dict]) -> MultipleChoice:
    """HellaSwag: query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())."""
    if fewshot:
        raise BenchError("hellaswag has no few-shot pool here (the harness uses its train split); use --num-fewshot 0")
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    query = hellaswag_preprocess(doc["activity_label"] + ": " + ctx)
    if not isinstance(doc["endings"], list):
        raise TypeError(f"endings must be a list of strings, got {type(doc['endings']).__name__}")
    endings = [hellaswag_preprocess(e) for e in doc["endings"]]
    return MultipleChoice((query,) * len(endings), tuple(" " + e for e in endings), int(doc["label"]),
                          tuple(len(e) for e in endings))


def _winogrande_parts(doc: dict) -> tuple[list[str], str, int]:
    sentence = doc["sentence"]
    blank = sentence.index("_")
    contexts = [sentence[:blank] + opt for opt in (doc["option1"], doc["option2"])]
    return contexts, sentence[blank + 1:].strip(), {"1": 0, "2": 1}[str(doc["answer"])]


def winogrande_item(doc: dict, fewshot: list[dict]) -> MultipleChoice:
    """WinoGrande partial scoring: context = sentence up to "_" with the option; continuation = " " + rest."""
    prefix = ""
    for shot in fewshot:
        contexts, rest, gold = _winogrande_parts(shot)
        prefix += f"{contexts[gold]} {rest}\n\n"
    contexts, rest, gold = _winogrande_parts(doc)
    return MultipleChoice(tuple(prefix + c for c in contexts), (" " + rest,) * 2, gold, None)


def lambada_item(doc: dict, fewshot: list[dict]) -> Loglikelihood:
    """lambada_openai: context = text without its last space-separated word; continuation = " " + that word."""
    if fewshot:
        raise BenchError("lambada is zero-shot; use --num-fewshot 0")
    words = doc["text"].split(" ")
    return Loglikelihood(" ".join(words[:-1]), " " + words[-1])


def gsm8k_item(doc: dict, fewshot: list[dict]) -> Generation:
    """GSM8K: K exemplars "Question: {q}\\nAnswer: {a}\\n\\n", then "Question: {q}\\nAnswer:"."""
    shots = [f"Question: {s['question']}\nAnswer: {s['answer']}" for s in fewshot]
    return Generation(_shots_prefix(shots) + f"Question: {doc['question']}\nAnswer:", doc["answer"])


TASKS: dict[str, Task] = {
    "arc_easy": Task("arc_easy", "multiple_choice", "arc/ARC-Easy-Test.jsonl", arc_item, ("acc", "acc_norm"),
                     "acc_norm", "arc/ARC-Easy-Train.jsonl"),
    "arc_challenge": Task("arc_challenge", "multiple_choice", "arc/ARC-Challenge-Test.jsonl", arc_item,
                          ("acc", "acc_norm"), "acc_norm", "arc/ARC-Challenge-Train.jsonl"),
    "hellaswag": Task("hellaswag", "multiple_choice", "hellaswag/hellaswag_val.jsonl", hellaswag_item,
                      ("acc", "acc_norm"), "acc_norm"),
    "winogrande": Task("winogrande", "multiple_choice", "winogrande/dev.jsonl", winogrande_item, ("acc",), "acc",
                       "winogrande/train_xs.jsonl"),
    "lambada": Task("lambada", "loglikelihood", "lambada/lambada_test.jsonl", lambada_item, ("acc", "perplexity"),
                    "acc"),
    "gsm8k": Task("gsm8k", "generate", "gsm8k/test.jsonl", gsm8k_item,
                  ("exact_match,strict-match", "exact_match,flexible-extract"), "exact_match,strict-match",
                  "gsm8k/train.jsonl", default_fewshot=5),
}
_ALIASES = {"lambada_openai": "lambada"}


def get_task(name: str) -> Task:
    """The task called ``name`` (``lambada_openai`` is an alias of ``lambada``)."""
    key = _ALIASES.get(name.strip(), name.strip())
    if key not in TASKS:
        raise BenchError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[key]


def parse_tasks(tasks: str | list[str] | tuple[str, ...]) -> list[Task]:
    """Tasks from a comma-separated string or a list of names, in order, without duplicates."""
    names = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    out: list[Task] = []
    for name in names:
        if name.strip() and (task := get_task(name)) not in out:
            out.append(task)
    if not out:
        raise BenchError("no tasks given; e.g. --tasks arc_easy,hellaswag")
    return out


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``../shared/data`` beside the repository if it exists, else ``$PAINTERS_DATA``."""
    if data_dir is not None:
        path = Path(data_dir)
    else:
        shared = Path(__file__).resolve().parents[2].parent / "shared" / "data"
        env = os.environ.get("PAINTERS_DATA")
        if shared.is_dir():
            path = shared
        elif env:
            path = Path(env)
        else:
            raise BenchError(f"no evaluation data: {shared} does not exist; pass --data DIR or set PAINTERS_DATA "
                             f"({_LAYOUT_HINT})")
    if not path.is_dir():
        raise BenchError(f"data directory {path} does not exist; {_LAYOUT_HINT}")
    return path


def _read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    if not path.is_file():
        raise BenchError(f"task data file {path} is missing; {_LAYOUT_HINT}")
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BenchError(f"{path}:{lineno}: not a JSON line ({exc})") from exc
    return rows


def load_items(task: Task, data_dir: str | os.PathLike | None = None, limit: int | None = None,
               num_fewshot: int | None = None) -> list[Item]:
    """The task's first ``limit`` documents as items, with ``num_fewshot`` exemplars (None: the task's default)."""
    root = resolve_data_dir(data_dir)
    k = task.default_fewshot if num_fewshot is None else int(num_fewshot)
    if k < 0:
        raise BenchError(f"--num-fewshot must be >= 0, got {k}")
    shots: list[dict] = []
    if k:
        if task.fewshot_path is None:
            raise BenchError(f"{task.name} has no few-shot pool in the data directory; use --num-fewshot 0")
        shots = _read_jsonl(root / task.fewshot_path, k)
        if len(shots) < k:
            raise BenchError(f"{root / task.fewshot_path} has only {len(shots)} items; asked for {k} exemplars")
    path = root / task.path
    docs = _read_jsonl(path, limit)
    if not docs:
        raise BenchError(f"{path} holds no items; point --data at a directory with the task's data "
                         f"({_LAYOUT_HINT})")
    items: list[Item] = []
    for index, doc in enumerate(docs, 1):
        try:
            items.append(task.build(doc, shots))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise BenchError(f"{path}: item {index}: unexpected item format ({type(exc).__name__}: {exc}); "
                             f"{_LAYOUT_HINT}") from exc
    return items
