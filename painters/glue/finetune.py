"""``painters finetune glue``: the standard fine-tuning step of the Painters GLUE protocol, on CPU.

The whole pretrained encoder plus a new classification head (one regression output for STS-B) is trained on
the task's train split — as the Painters BERT code does with run_glue's ``do_train`` — before any plan is
applied. Everything random is seeded (head init, shuffling, dropout), and the exact run is recorded beside
the checkpoint in ``finetune.json``. Defaults follow run_glue (AdamW, linear decay, lr 2e-5 … 5e-5,
batch 32, max length 128), with warm-up of 6 % of the steps.

Every batch is padded to its own longest example (the attention mask makes padding exact), so the cost of a step
follows the batch's longest example. ``group_by_length`` (run_glue's ``--group_by_length``) additionally puts
examples of similar length into the same batch, which halves the padded tokens on CPU: each epoch is still a
seeded permutation of the whole split, cut into chunks of 50 batches sorted by length, with the batch order then
shuffled again. It changes which examples share a batch, so it is recorded and off by default.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from painters.errors import PaintersError
from painters.fileio import write_json
from painters.glue.data import GlueSplit, get_task, read_split

__all__ = ["FinetuneResult", "finetune_glue", "tokenize", "epoch_batches", "RECORD"]

log = logging.getLogger(__name__)

RECORD = "finetune.json"


@dataclass
class FinetuneResult:
    """What was run, recorded in ``CKPT/finetune.json``."""

    output: str
    task: str
    source: str
    source_hash: str  # the source's weights
    weights_hash: str  # the fine-tuned weights: what an export of the checkpoint records as its source hash
    seed: int
    examples: int
    epochs: int
    steps: int
    batch_size: int
    lr: float
    max_length: int
    final_loss: float
    seconds: float
    group_by_length: bool = False


def tokenize(tokenizer, split: GlueSplit, index: np.ndarray | slice, max_length: int) -> dict:
    """Token ids of the examples at ``index`` (pairs as [CLS] a [SEP] b [SEP]), padded to the longest."""
    a = [split.text_a[i] for i in np.arange(len(split))[index]]
    b = [split.text_b[i] for i in np.arange(len(split))[index]] if split.text_b is not None else None
    return dict(tokenizer(a, b, truncation=True, max_length=max_length, padding=True, return_tensors="np"))


def epoch_batches(rng: np.random.Generator, lengths: np.ndarray | None, n: int, batch_size: int,
                  mega: int = 50) -> list[np.ndarray]:
    """One epoch's batches of example indices: a seeded permutation of ``range(n)`` cut into batches.

    With ``lengths`` (token counts), each chunk of ``mega`` batches of the permutation is sorted by length
    (longest first, ties in permutation order) before it is cut, and the batches are then shuffled, so a batch
    holds examples of similar length while the epoch still visits every example once in a seeded order.
    """
    order = rng.permutation(n)
    if lengths is not None:
        span = mega * batch_size
        order = np.concatenate([c[np.argsort(-lengths[c], kind="stable")]
                                for c in np.split(order, range(span, n, span))])
    batches = [order[k:k + batch_size] for k in range(0, n, batch_size)]
    if lengths is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _check_out(out: Path, src: Path | None) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PaintersError(f"output {out} already exists and is not an empty directory; refusing to replace it; "
                            "choose a new directory with -o")
    if src is not None and src.exists() and (out.resolve() == src.resolve() or out.resolve().is_relative_to(
            src.resolve())):
        raise PaintersError(f"output {out} is inside the source checkpoint {src}; choose another directory with -o")


def finetune_glue(src: str | Path, task: str, out: str | Path, *, epochs: int = 3, max_steps: int | None = None,
                  lr: float = 5e-5, batch_size: int = 32, max_length: int = 128, seed: int = 0,
                  limit: int | None = None, data_dir: str | Path | None = None, threads: int | None = None,
                  group_by_length: bool = False) -> FinetuneResult:
    """Fine-tune encoder SRC (``minilm-l6`` or a BERT checkpoint) on GLUE ``task``; write a checkpoint to ``out``.

    Args:
        epochs: passes over the (limited) train split; ``max_steps`` stops earlier when given.
        limit: train on the first ``limit`` examples only (subsets keep CPU runs short).
        seed: seeds torch and the shuffling; the same arguments give the same weights.
        group_by_length: batch examples of similar length together (see the module docstring).
    """
    import torch
    import transformers

    from painters.export.encoder_sources import ENCODER_SOURCES, load_encoder

    glue = get_task(task)
    out = Path(out)
    _check_out(out, None if str(src) in ENCODER_SOURCES else Path(src))
    train = read_split(glue, "train", data_dir=data_dir, limit=limit)
    if len(train) == 0:
        raise PaintersError(f"GLUE {glue.name} train split is empty")
    loaded = load_encoder(src)  # checks the architecture; its weights seed the classifier below
    if loaded.tokenizer is None:
        raise PaintersError(f"{src}: no tokenizer files beside the checkpoint; fine-tuning needs one")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cfg = loaded.config
    max_length = min(max_length, cfg.max_position_embeddings)
    labels = glue.labels or ("score",)
    cfg.num_labels = glue.num_labels
    cfg.problem_type = "regression" if glue.labels is None else "single_label_classification"
    cfg.id2label, cfg.label2id = dict(enumerate(labels)), {name: i for i, name in enumerate(labels)}
    cfg.architectures = ["BertForSequenceClassification"]
    cfg.finetuning_task = glue.name  # exported into the graph: bench glue refuses another task
    model = transformers.BertForSequenceClassification(cfg)
    missing = model.bert.load_state_dict(loaded.model.bert.state_dict() if hasattr(loaded.model, "bert")
                                         else loaded.model.state_dict(), strict=False)
    if missing.unexpected_keys or any(not k.startswith("pooler.") for k in missing.missing_keys):
        raise PaintersError(f"{src}: encoder weights do not fit a BERT of its config ({missing})")
    tokenizer, source_hash = loaded.tokenizer, loaded.hash
    del loaded
    model.train()

    rng = np.random.default_rng(seed)
    lengths = None
    if group_by_length:
        lengths = np.asarray(tokenize(tokenizer, train, slice(None), max_length)["attention_mask"].sum(1))
    per_epoch = math.ceil(len(train) / batch_size)
    total = per_epoch * epochs if max_steps is None else min(max_steps, per_epoch * epochs)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, round(0.06 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    start, step, loss_avg = time.perf_counter(), 0, float("nan")
    while step < total:
        for index in epoch_batches(rng, lengths, len(train), batch_size):
            if step >= total:
                break
            batch = {n: torch.as_tensor(v) for n, v in tokenize(tokenizer, train, index, max_length).items()}
            target = torch.as_tensor(train.labels[index])
            loss = model(**batch, labels=target).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
            loss_avg = loss.item() if step == 0 else 0.9 * loss_avg + 0.1 * loss.item()
            step += 1
            if step % 20 == 0 or step == total:
                log.info("%s step %d/%d loss %.4f (%.0f s)", glue.name, step, total, loss_avg,
                         time.perf_counter() - start)
    seconds = time.perf_counter() - start
    result = FinetuneResult(str(out), glue.name, str(src), source_hash, "", seed, len(train),
                            math.ceil(step / per_epoch), step, batch_size, lr, max_length, round(loss_avg, 6),
                            round(seconds, 1), group_by_length)
    _save(model.eval(), tokenizer, out, result)
    return result


def _save(model, tokenizer, out: Path, result: FinetuneResult) -> None:
    """Write the checkpoint into a temp directory beside ``out``, then rename it into place."""
    from painters.export.encoder_sources import weights_hash

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        result.weights_hash = weights_hash(sorted(tmp.glob("*.safetensors")))
        write_json(tmp / RECORD, asdict(result))
        if out.exists():
            out.rmdir()  # checked empty above
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
