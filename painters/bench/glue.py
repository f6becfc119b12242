"""``painters bench glue``: a fine-tuned encoder graph (any plan) scored on a GLUE dev split with GLUE's metrics.

The graph runs in ONNX Runtime on CPU; the tokenizer is the one export saved beside it. Batches are padded to
their longest example, which the encoder's attention mask makes exact. :func:`render_table` puts several
results (plans × tasks) into one Markdown table with each task's score and their unnormalized average.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from painters.bench.glue_data import GlueTask, get_task, read_split
from painters.bench.glue_metrics import (
    accuracy,
    f1_binary,
    glue_average,
    matthews_corr,
    pearson,
    spearman,
    task_score,
)
from painters.errors import BenchError

__all__ = ["score", "evaluate_glue", "render_table", "METRICS"]

METRICS = {"accuracy": accuracy, "f1": f1_binary, "matthews": matthews_corr, "pearson": pearson,
           "spearman": spearman}


def score(task: GlueTask, logits: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """The task's metrics from the model's logits (argmax; the single output for STS-B's regression)."""
    pred = logits[:, 0] if task.labels is None else logits.argmax(-1)
    return {name: METRICS[name](pred, gold) for name in task.metrics}


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
    width = session.get_outputs()[0].shape[-1]
    if isinstance(width, int) and width != task.num_labels:
        raise BenchError(f"{path}: the head has {width} outputs but GLUE {task.name} needs {task.num_labels}; "
                         f"was it fine-tuned on another task?")


def evaluate_glue(model: str | Path, task: str, *, limit: int | None = None, batch_size: int = 32,
                  max_length: int = 128, data_dir: str | Path | None = None, threads: int | None = None) -> dict:
    """Score ``model`` (an encoder .onnx with a task head) on ``task``'s dev split."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from painters.finetune.glue import tokenize

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
    meta = session.get_modelmeta().custom_metadata_map
    try:  # positions beyond the model's table would fail inside the graph
        max_length = min(max_length, int(json.loads(meta["painters.config"])["max_position_embeddings"]))
    except (KeyError, ValueError, TypeError):
        pass
    start = time.perf_counter()
    logits = []
    for k in range(0, len(dev), batch_size):
        feed = tokenize(tokenizer, dev, slice(k, k + batch_size), max_length)
        feed = {name: np.asarray(v, dtype=np.int64) for name, v in feed.items()}
        logits.append(session.run(None, feed)[0])
    metrics = score(glue, np.concatenate(logits), dev.labels)
    return {"model": str(path), "task": glue.name, "plan": meta.get("painters.plan", "baseline"),
            "examples": len(dev), "metrics": metrics, "score": task_score(metrics),
            "seconds": round(time.perf_counter() - start, 2)}


def render_table(results: list[dict]) -> str:
    """Markdown: one row per plan, one column per task (metrics in percent) and the average of the task scores."""
    tasks = list(dict.fromkeys(r["task"] for r in results))
    plans = list(dict.fromkeys(r["plan"] for r in results))
    by = {(r["plan"], r["task"]): r for r in results}
    cells = []
    for t in tasks:
        names = get_task(t).metrics
        cells.append(f"{t} ({'/'.join(names)})")
    lines = ["| plan | " + " | ".join(cells) + " | average |", "|---" * (len(tasks) + 2) + "|"]
    for p in plans:
        row, scores = [], {}
        for t in tasks:
            r = by.get((p, t))
            if r is None:
                row.append("–")
                continue
            row.append("/".join(f"{100 * r['metrics'][m]:.1f}" for m in get_task(t).metrics))
            scores[t] = r["score"]
        avg = f"{glue_average(scores):.1f}" if len(scores) == len(tasks) else "–"
        lines.append(f"| {p} | " + " | ".join(row) + f" | {avg} |")
    return "\n".join(lines)


def load_results(paths: list[str | Path]) -> list[dict]:
    """Results written by ``painters bench glue --json``."""
    out = []
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
            if not {"task", "plan", "metrics", "score"} <= set(data):
                raise ValueError("missing keys")
        except (OSError, ValueError) as exc:
            raise BenchError(f"{p}: not a `painters bench glue --json` result ({exc})") from None
        out.append(data)
    return out
