"""``painters bench glue``: a fine-tuned encoder graph (any plan) scored on a GLUE dev split with GLUE's metrics.

The graph runs in ONNX Runtime on CPU; the tokenizer is the one export saved beside it. Batches are padded to
their longest example, which the encoder's attention mask makes exact, and are cut from the dev split sorted by
length (logits go back to file order before scoring), so little is spent on padding. :func:`render_table` puts several
results (plans × tasks) into one Markdown table with each task's score and their unnormalized average.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from painters.artifact import Record
from painters.errors import BenchError
from painters.glue.data import GLUE_TASKS, GlueTask, get_task, read_split
from painters.glue.metrics import (
    accuracy,
    f1_binary,
    glue_average,
    matthews_corr,
    pearson,
    spearman,
    task_score,
)

__all__ = ["score", "evaluate_glue", "dev_logits", "render_table", "load_results", "plan_order", "METRICS"]

METRICS = {"accuracy": accuracy, "f1": f1_binary, "matthews": matthews_corr, "pearson": pearson,
           "spearman": spearman}


def score(task: GlueTask, logits: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """The task's metrics from the model's logits (argmax; the single output for STS-B's regression)."""
    pred = logits[:, 0] if task.labels is None else logits.argmax(-1)
    return {name: METRICS[name](pred, gold) for name in task.metrics}


def _check_task(path: Path, task: GlueTask, meta: dict) -> None:
    """Refuse a graph fine-tuned on another task: its recorded task, else its head's label names, must fit.

    Why: an RTE head (entailment, not_entailment) has SST-2's width; scoring it on SST-2 gave a number.
    """
    try:
        config = json.loads(meta["painters.config"])
    except (KeyError, ValueError, TypeError):
        return
    if not isinstance(config, dict):
        return
    trained = config.get("finetuning_task")
    if isinstance(trained, str) and trained and trained.lower() != task.name:
        raise BenchError(f"{path} was fine-tuned on GLUE {trained}, not {task.name}; pass --task {trained.lower()} "
                         f"or fine-tune on {task.name} (`painters finetune glue --task {task.name}`)")
    id2label = config.get("id2label")
    if task.labels is not None and isinstance(id2label, dict) and len(id2label) == len(task.labels):
        names = [str(id2label.get(str(i))) for i in range(len(task.labels))]
        generic = all(n == f"LABEL_{i}" for i, n in enumerate(names))
        if not generic and names != list(task.labels):
            raise BenchError(f"{path}: its head's labels {names} are not GLUE {task.name}'s {list(task.labels)}; "
                             "was it fine-tuned on another task? Pass that task with --task")


def _check_graph(path: Path, task: GlueTask, session) -> None:
    from painters.decoder_io import LOGITS
    from painters.encoder_io import ENCODER_INPUTS

    outputs = [o.name for o in session.get_outputs()]
    inputs = {i.name for i in session.get_inputs()}
    if not set(ENCODER_INPUTS) <= inputs:
        raise BenchError(f"{path}: inputs {sorted(inputs)} are not an encoder's ({', '.join(ENCODER_INPUTS)}); "
                         "bench glue scores graphs exported from a fine-tuned BERT checkpoint")
    if outputs != [LOGITS]:
        raise BenchError(f"{path}: output {outputs} is not a task head's logits; fine-tune the encoder first "
                         f"(`painters finetune glue --task {task.name} SRC -o CKPT`) and export CKPT")
    _check_task(path, task, session.get_modelmeta().custom_metadata_map)
    width = session.get_outputs()[0].shape[-1]
    if isinstance(width, int) and width != task.num_labels:
        raise BenchError(f"{path}: the head has {width} outputs but GLUE {task.name} needs {task.num_labels}; "
                         f"was it fine-tuned on another task?")


def evaluate_glue(model: str | Path, task: str, *, limit: int | None = None, batch_size: int = 32,
                  max_length: int = 128, data_dir: str | Path | None = None, threads: int | None = None) -> dict:
    """Score ``model`` (an encoder .onnx with a task head) on ``task``'s dev split."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    glue = get_task(task)
    path = Path(model)
    if not path.is_file():
        raise BenchError(f"{path}: no such ONNX file")
    dev = read_split(glue, "dev", data_dir=data_dir, limit=limit)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    _check_graph(path, glue, session)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent)
    except Exception as exc:
        raise BenchError(f"{path.parent}: no tokenizer beside the graph ({type(exc).__name__}); export saves it "
                         "there — re-export the checkpoint") from None
    record = Record.from_props(session.get_modelmeta().custom_metadata_map, str(path))
    try:  # positions beyond the model's table would fail inside the graph
        max_length = min(max_length, int(json.loads(record.extra["config"])["max_position_embeddings"]))
    except (KeyError, ValueError, TypeError):
        pass
    start = time.perf_counter()
    metrics = score(glue, dev_logits(session, tokenizer, dev, batch_size, max_length), dev.labels)
    return {"model": str(path), "task": glue.name, "plan": record.plan_name,
            "source_hash": record.source_hash or None, "examples": len(dev), "metrics": metrics,
            "score": task_score(metrics), "seconds": round(time.perf_counter() - start, 2)}


def dev_logits(session, tokenizer, dev, batch_size: int, max_length: int, *, by_length: bool = True) -> np.ndarray:
    """The graph's logits for every example of ``dev``, in file order.

    ``by_length`` batches the examples in order of token count (the same logits up to float noise, fewer padded
    tokens); ``False`` batches them in file order.
    """
    from painters.glue.finetune import tokenize

    order = np.arange(len(dev))
    if by_length:
        lengths = tokenize(tokenizer, dev, slice(None), max_length)["attention_mask"].sum(1)
        order = np.argsort(lengths, kind="stable")
    out = []
    for k in range(0, len(dev), batch_size):
        feed = tokenize(tokenizer, dev, order[k:k + batch_size], max_length)
        out.append(session.run(None, {name: np.asarray(v, dtype=np.int64) for name, v in feed.items()})[0])
    logits = np.empty_like(np.concatenate(out))
    logits[order] = np.concatenate(out)
    return logits


def _cell_stats(rows: list[dict]) -> tuple[dict[str, float], float, float | None]:
    """Mean of each metric, mean task score and its sample standard deviation (None for one run)."""
    metrics = {m: float(np.mean([r["metrics"][m] for r in rows])) for m in rows[0]["metrics"]}
    scores = [r["score"] for r in rows]
    return metrics, float(np.mean(scores)), float(np.std(scores, ddof=1)) if len(scores) > 1 else None


_FAMILIES = ("baseline", "skip", "drop", "repeat", "dup", "reverse", "shuffle", "swap", "parallel")


def plan_order(plan: str) -> tuple:
    """Rows in a readable order whatever order the result files came in: baseline, then plan kinds, then name."""
    family = plan.split("_")[0]
    return (_FAMILIES.index(family) if family in _FAMILIES else len(_FAMILIES), "_x" in plan, plan)


def render_table(results: list[dict]) -> str:
    """Markdown: one row per plan, one column per task (metrics in percent) and the average of the task scores.

    Several results for one plan and task (fine-tuned with different seeds) show the mean of each metric and
    ``±`` the sample standard deviation of the task score over them; the average is the mean of the task
    means, ``±`` the standard deviation of the per-seed averages when every task has a result for each seed
    (results carry ``seed`` once merged with their fine-tuning records). Tasks are in GLUE's order.
    """
    order = list(GLUE_TASKS)
    tasks = sorted(dict.fromkeys(r["task"] for r in results), key=order.index)
    plans = sorted(dict.fromkeys(r["plan"] for r in results), key=plan_order)
    by: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        by.setdefault((r["plan"], r["task"]), []).append(r)
    cells = [f"{t} ({'/'.join(get_task(t).metrics)})" for t in tasks]
    lines = ["| plan | " + " | ".join(cells) + " | average |", "|---" * (len(tasks) + 2) + "|"]
    for p in plans:
        row, means = [], {}
        for t in tasks:
            rows = by.get((p, t))
            if not rows:
                row.append("–")
                continue
            metrics, means[t], sd = _cell_stats(rows)
            row.append("/".join(f"{100 * metrics[m]:.1f}" for m in get_task(t).metrics)
                       + ("" if sd is None else f" ±{sd:.1f}"))
        avg = "–"
        if len(means) == len(tasks):
            avg = f"{glue_average(means):.1f}" + _average_spread([r for t in tasks for r in by[(p, t)]], tasks)
        lines.append(f"| {p} | " + " | ".join(row) + f" | {avg} |")
    return "\n".join(lines)


def _average_spread(rows: list[dict], tasks: list[str]) -> str:
    """`` ±sd`` of the per-seed GLUE averages, when at least two seeds have a result for every task."""
    seeds: dict[int, dict[str, float]] = {}
    for r in rows:
        if r.get("seed") is None:
            return ""
        seeds.setdefault(r["seed"], {})[r["task"]] = r["score"]
    averages = [glue_average(s) for s in seeds.values() if len(s) == len(tasks)]
    return f" ±{float(np.std(averages, ddof=1)):.1f}" if len(averages) > 1 else ""


def load_results(paths: list[str | Path]) -> tuple[list[dict], list[dict]]:
    """Results written by ``painters bench glue --json`` and fine-tuning records (``CKPT/finetune.json``).

    A file merged by ``bench glue-table --json`` gives back both lists. Each result gets the ``seed`` of the
    record whose fine-tuned weights it was exported from (its ``source_hash``), when that record is given.
    """
    results, records = [], []
    seen: dict[tuple[int, int], str | Path] = {}
    for p in paths:
        try:  # one file given twice (or a link to it) would count as two seeds
            st = Path(p).stat()
            if (st.st_dev, st.st_ino) in seen:
                raise BenchError(f"{p} is given twice (also as {seen[st.st_dev, st.st_ino]}); give each result "
                                 "file once")
            seen[st.st_dev, st.st_ino] = p
        except OSError:
            pass  # read below, which names the file it cannot read
        try:
            data = json.loads(Path(p).read_text())
            if isinstance(data, dict) and {"results", "finetune"} <= set(data):
                results += data["results"]
                records += data["finetune"]
            elif isinstance(data, dict) and {"task", "plan", "metrics", "score"} <= set(data):
                results.append(data)
            elif isinstance(data, dict) and {"task", "seed", "weights_hash"} <= set(data):
                records.append(data)
            else:
                raise ValueError("neither a result nor a fine-tuning record")
        except (OSError, ValueError) as exc:
            raise BenchError(f"{p}: not a `painters bench glue --json` result, a finetune.json record or a merged "
                             f"`bench glue-table --json` file ({exc})") from None
    seed_of = {r["weights_hash"]: r["seed"] for r in records}
    for r in results:
        if r.get("source_hash") in seed_of:
            r["seed"] = seed_of[r["source_hash"]]
    return results, records
