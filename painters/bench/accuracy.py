"""Accuracy over any Runner: loglikelihood scoring with shared-context KV caches, greedy generation, evaluate.

Scoring a question's choices computes its context once: the context is prefilled at batch 1 (no padding),
its cache is repeated once per choice (``runner.repeat_kv``) and all continuations run as one right-padded
batch from that cache. Contexts of several questions go into one continuation batch by left-padding their
caches (masked out by ``attention_mask``) when the cache arrays are numpy or torch and the runner takes padded
rows (GroupQueryAttention graphs do not: their continuations run one at a time). Tokenization follows
lm-eval's ``_encode_pair`` so the scored tokens are the harness's.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from painters import __version__
from painters.bench.metrics import gsm8k_scores, mean, mean_stderr, multiple_choice_scores, perplexity
from painters.bench.tasks import Generation, Loglikelihood, MultipleChoice, Task, load_items, parse_tasks
from painters.errors import BenchError
from painters.runtime.base import KV, Runner

__all__ = ["require_tokenizer", "encode_pair", "loglikelihood", "greedy_until", "score_multiple_choice",
           "score_loglikelihood", "score_generation", "evaluate", "render_markdown", "DEFAULT_BATCH_SIZE"]

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 16  # continuation rows per forward (all choices of a question always share one batch)
GENERATION_CHUNK = 64  # tokens per runner.generate call before the decoded text is checked for stop strings

Request = tuple[Sequence[int], Sequence[int]]  # (context token ids, continuation token ids)
Progress = Callable[[int], None]


def require_tokenizer(runner: Runner) -> Any:
    if runner.tokenizer is None:
        raise BenchError(f"the {runner.name} model has no tokenizer; accuracy tasks need one (export from a source "
                         "with a tokenizer, which `painters export` saves beside the .onnx)")
    return runner.tokenizer


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's ``_encode_pair``: trailing context spaces move to the continuation; the continuation's tokens
    are the tail of encode(context + continuation) after len(encode(context)) tokens."""
    if context == "":
        prefix = getattr(tokenizer, "bos_token_id", None)
        prefix = prefix if prefix is not None else tokenizer.eos_token_id
        return [prefix], _encode(tokenizer, continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _encode(tokenizer, context + continuation)
    ctx = _encode(tokenizer, context)
    return ctx, whole[len(ctx):]


def _log_softmax_at(logits: np.ndarray, tokens: np.ndarray) -> tuple[float, bool]:
    """Sum of log p(tokens[i]) under logits[i] ([n, vocab]) and whether every token is the argmax."""
    logits = logits.astype(np.float32, copy=False)
    peak = logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(logits - peak).sum(axis=-1)) + peak[:, 0]
    picked = logits[np.arange(len(tokens)), tokens]
    greedy = bool((logits.argmax(axis=-1) == tokens).all())
    return float(np.sum((picked - lse).astype(np.float64))), greedy


def _kv_kind(kv: KV) -> str | None:
    first = kv[0][0] if kv else None
    if isinstance(first, np.ndarray):
        return "numpy"
    if type(first).__module__.startswith("torch"):
        return "torch"
    return None  # a backend-native device buffer: no generic way to pad and concatenate it


def _pad_concat_kv(kvs: list[KV], width: int, kind: str) -> KV:
    """Concatenate caches along the batch axis, left-padding each to ``width`` past positions with zeros."""
    out = []
    for slot in range(len(kvs[0])):
        pair = []
        for part in range(2):
            arrays = [kv[slot][part] for kv in kvs]
            if kind == "numpy":
                arrays = [np.pad(a, ((0, 0), (0, 0), (width - a.shape[2], 0), (0, 0))) for a in arrays]
                pair.append(np.concatenate(arrays, axis=0))
            else:
                import torch

                arrays = [torch.nn.functional.pad(a, (0, 0, width - a.shape[2], 0)) for a in arrays]
                pair.append(torch.cat(arrays, dim=0))
        out.append(tuple(pair))
    return out


def _pack(groups: list[tuple[tuple[int, ...], list[int]]], batch_size: int) -> list[list[int]]:
    """Indices of groups per batch: at most ``batch_size`` continuation rows, a group never split."""
    batches: list[list[int]] = []
    rows = 0
    for g, (_, members) in enumerate(groups):
        if batches and rows + len(members) <= batch_size:
            batches[-1].append(g)
            rows += len(members)
        else:
            batches.append([g])
            rows = len(members)
    return batches


def loglikelihood(runner: Runner, requests: Sequence[Request], batch_size: int | None = None,
                  progress: Progress | None = None) -> list[tuple[float, bool]]:
    """(loglikelihood, is_greedy) of each request's continuation after its context, in request order."""
    batch_size = max(1, batch_size or DEFAULT_BATCH_SIZE)
    by_context: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, cont) in enumerate(requests):
        if not len(ctx) or not len(cont):
            raise BenchError(f"request {i}: context and continuation need at least one token each")
        by_context.setdefault(tuple(int(t) for t in ctx), []).append(i)
    if runner.scores_prompts:  # an engine that scores prompts itself (vLLM)
        return _engine_loglikelihood(runner, requests, batch_size, progress)
    # Longest contexts first (as lm-eval): similar past lengths share a batch, and memory peaks early.
    groups = sorted(by_context.items(), key=lambda item: -len(item[0]))
    results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    conts = [np.asarray(cont, dtype=np.int64) for _, cont in requests]
    kind: str | None = None
    for batch in _pack(groups, batch_size):
        states = []
        for g in batch:
            ctx = np.asarray(groups[g][0], dtype=np.int64)[None]
            logits, kv = runner.prefill(ctx, np.ones_like(ctx))
            states.append((logits[0, -1].astype(np.float32), kv))
        kind = kind or _kv_kind(states[0][1])
        chunks = [batch] if kind is not None and runner.pads_rows else [[g] for g in batch]
        offset = 0
        for chunk in chunks:
            _score_continuations(runner, [groups[g] for g in chunk], states[offset:offset + len(chunk)],
                                 conts, results, kind)
            offset += len(chunk)
        if progress is not None:
            progress(sum(len(groups[g][1]) for g in batch))
    return results


def _engine_loglikelihood(runner: Runner, requests: Sequence[Request], batch_size: int,
                          progress: Progress | None) -> list[tuple[float, bool]]:
    """Each request scored as one prompt (context + continuation) by the engine's own prompt log-probabilities."""
    results: list[tuple[float, bool]] = []
    for start in range(0, len(requests), batch_size):
        chunk = requests[start:start + batch_size]
        scored = runner.score_tokens([[int(t) for t in ctx] + [int(t) for t in cont] for ctx, cont in chunk])
        for (_, cont), tokens in zip(chunk, scored):
            tail = tokens[-len(cont):]  # the continuation's tokens, each after everything before it
            results.append((float(sum(lp for lp, _ in tail)), all(top for _, top in tail)))
        if progress is not None:
            progress(len(chunk))
    return results


def _score_continuations(runner: Runner, groups, states, conts, results, kind: str | None) -> None:
    """One right-padded forward for all continuations of ``groups`` from their prefilled caches.

    A runner that takes no padded rows (``Runner.pads_rows``: GroupQueryAttention graphs) scores each
    continuation alone, from its context's cache.
    """
    members = [(g, i) for g, (_, idx) in enumerate(groups) for i in idx]
    if not runner.pads_rows and len(members) > 1:
        for g, i in members:
            _score_continuations(runner, [(groups[g][0], [i])], [states[g]], conts, results, kind)
        return
    width = max(len(conts[i]) for _, i in members) - 1  # the last token is predicted, never fed
    step_logits = None
    if width > 0:
        past = max(len(ctx) for ctx, _ in groups)
        rows = len(members)
        ids = np.zeros((rows, width), dtype=np.int64)
        mask = np.zeros((rows, past + width), dtype=np.int64)
        pos = np.zeros((rows, width), dtype=np.int64)
        for r, (g, i) in enumerate(members):
            n_ctx, fed = len(groups[g][0]), conts[i][:-1]
            ids[r, :len(fed)] = fed
            mask[r, past - n_ctx:past] = 1
            mask[r, past:past + len(fed)] = 1
            pos[r] = n_ctx + np.arange(width)  # padded tail positions are masked out and ignored
        kvs = [runner.repeat_kv(kv, len(idx)) if len(idx) > 1 else kv
               for (_, idx), (_, kv) in zip(groups, states)]
        kv = kvs[0] if len(kvs) == 1 else _pad_concat_kv(kvs, past, kind)
        step_logits, _ = runner.forward(ids, mask, pos, kv)
    for r, (g, i) in enumerate(members):
        cont = conts[i]
        rows = states[g][0][None] if len(cont) == 1 else np.concatenate(
            [states[g][0][None], step_logits[r, :len(cont) - 1]], axis=0)
        results[i] = _log_softmax_at(rows, cont)


def _stop_token_ids(runner: Runner, tokenizer: Any, until: Sequence[str]) -> set[int]:
    stops = {t for t in (runner.info.eos_token_id, getattr(tokenizer, "eos_token_id", None)) if t is not None}
    for text in until:  # a stop string that is one token ends generation early (e.g. "<|im_end|>", "\n\n")
        ids = _encode(tokenizer, text)
        if len(ids) == 1 and tokenizer.decode(ids) == text:
            stops.add(ids[0])
    return stops


def _cut(text: str, until: Sequence[str]) -> tuple[str, bool]:
    cut = text
    for term in until:
        cut = cut.split(term)[0]
    return cut, cut != text


def greedy_until(runner: Runner, prompts: Sequence[Sequence[int]], until: Sequence[str], max_new_tokens: int,
                 batch_size: int | None = None, progress: Progress | None = None) -> list[str]:
    """Greedy completions (text cut at the first stop string) through ``runner.generate``'s KV-cache loop.

    Generation runs in chunks of ``GENERATION_CHUNK`` tokens; after each, rows whose text holds a stop
    string (or that emitted a stop token) drop out, and the rest continue from prompt + tokens so far.
    """
    tokenizer = require_tokenizer(runner)
    eos_text = tokenizer.decode([runner.info.eos_token_id]) if runner.info.eos_token_id is not None else None
    until = tuple(until) + ((eos_text,) if eos_text and eos_text not in until else ())
    stops = _stop_token_ids(runner, tokenizer, until)
    batch_size = max(1, batch_size or DEFAULT_BATCH_SIZE)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        generated: dict[int, list[int]] = {i: [] for i in rows}
        active = list(rows)
        while active:
            budget = min(GENERATION_CHUNK, max_new_tokens - len(generated[active[0]]))
            outs = runner.generate([list(prompts[i]) + generated[i] for i in active], budget, stop_ids=sorted(stops))
            still = []
            for i, new in zip(active, outs):
                generated[i].extend(new)
                text, stopped = _cut(tokenizer.decode(generated[i]), until)
                texts[i] = text
                ended = stopped or (new and new[-1] in stops) or len(new) < budget
                if not ended and len(generated[i]) < max_new_tokens:
                    still.append(i)
            active = still
        if progress is not None:
            progress(len(rows))
    return texts


def score_multiple_choice(runner: Runner, items: Sequence[MultipleChoice], batch_size: int | None = None,
                          progress: Progress | None = None) -> list[list[float]]:
    """Per item, the loglikelihood of each choice."""
    tokenizer = require_tokenizer(runner)
    requests, owners = [], []
    for n, item in enumerate(items):
        for ctx, cont in zip(item.contexts, item.continuations):
            requests.append(encode_pair(tokenizer, ctx, cont))
            owners.append(n)
    scores: list[list[float]] = [[] for _ in items]
    for n, (ll, _) in zip(owners, loglikelihood(runner, requests, batch_size, progress)):
        scores[n].append(ll)
    return scores


def score_loglikelihood(runner: Runner, items: Sequence[Loglikelihood], batch_size: int | None = None,
                        progress: Progress | None = None) -> list[tuple[float, bool]]:
    """Per item, (loglikelihood, is_greedy) of the continuation."""
    tokenizer = require_tokenizer(runner)
    requests = [encode_pair(tokenizer, item.context, item.continuation) for item in items]
    return loglikelihood(runner, requests, batch_size, progress)


def score_generation(runner: Runner, items: Sequence[Generation], batch_size: int | None = None,
                     progress: Progress | None = None) -> list[str]:
    """Per item, the greedy completion cut at the first stop string."""
    tokenizer = require_tokenizer(runner)
    if not items:
        return []
    prompts = [_encode(tokenizer, item.prompt) for item in items]
    return greedy_until(runner, prompts, items[0].until, items[0].max_new_tokens, batch_size, progress)


def _per_item_metrics(runner: Runner, task: Task, items: list, batch_size: int | None,
                      progress: Progress) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {m: [] for m in task.metrics}
    if task.kind == "multiple_choice":
        for item, lls in zip(items, score_multiple_choice(runner, items, batch_size, progress)):
            for name, value in multiple_choice_scores(lls, item.gold, item.norm_lengths).items():
                values[name].append(value)
    elif task.kind == "loglikelihood":
        for ll, greedy in score_loglikelihood(runner, items, batch_size, progress):
            values["acc"].append(float(greedy))
            values["perplexity"].append(ll)  # aggregated as exp(-mean) below
    else:
        for item, text in zip(items, score_generation(runner, items, batch_size, progress)):
            for name, value in gsm8k_scores(text, item.target).items():
                values[name].append(value)
    return values


def evaluate(runner: Runner, tasks: str | Sequence[str], limit: int | None = None, num_fewshot: int | None = None,
             batch_size: int | None = None, data_dir: str | None = None) -> dict[str, dict[str, Any]]:
    """Run ``tasks`` (names or a comma-separated string) on ``runner``; a result dict per task name."""
    from tqdm import tqdm

    require_tokenizer(runner)
    results: dict[str, dict[str, Any]] = {}
    for task in parse_tasks(tasks):
        items = load_items(task, data_dir, limit, num_fewshot)
        total = sum(len(i.contexts) for i in items) if task.kind == "multiple_choice" else len(items)
        start = time.perf_counter()
        with tqdm(total=total, desc=task.name, unit="req" if task.kind != "generate" else "item",
                  file=sys.stderr, leave=False) as bar:
            values = _per_item_metrics(runner, task, items, batch_size, bar.update)
        seconds = time.perf_counter() - start
        metrics, stderr = {}, {}
        for name, vals in values.items():
            if name == "perplexity":
                metrics[name], stderr[name] = perplexity(vals), None  # lm-eval bootstraps this one; we do not
            else:
                se = mean_stderr(vals)
                metrics[name], stderr[name] = mean(vals), (None if se != se else se)  # NaN (n < 2) → None
        results[task.name] = {
            "metrics": metrics, "stderr": stderr, "main_metric": task.main_metric, "n": len(items),
            "num_fewshot": task.default_fewshot if num_fewshot is None else int(num_fewshot),
            "backend": runner.name, "plan": runner.info.plan, "model_hash": runner.info.model_hash,
            "painters_version": __version__, "seconds": round(seconds, 3),
            "items_per_s": round(len(items) / seconds, 3) if seconds > 0 else None,
        }
        log.info("%s: %s in %.1f s", task.name, metrics, seconds)
    return results


def _fmt(value: float | None, metric: str) -> str:
    if value is None or value != value:  # None or NaN
        return "—"
    return f"{value:.3f}" if metric == "perplexity" else f"{value:.4f}"


def render_markdown(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of ``evaluate``'s results: one row per task and metric."""
    lines = ["| Task | n | Shots | Metric | Value | ± Stderr | Backend | Plan | Items/s |",
             "|---|---:|---:|---|---:|---:|---|---|---:|"]
    hashes = set()
    for name, res in results.items():
        hashes.add(res.get("model_hash") or "")
        for metric, value in res["metrics"].items():
            main = "**" if metric == res.get("main_metric") else ""
            ips = res.get("items_per_s")
            lines.append(f"| {name} | {res['n']} | {res['num_fewshot']} | {main}{metric}{main} | "
                         f"{_fmt(value, metric)} | {_fmt(res['stderr'].get(metric), metric)} | {res['backend']} | "
                         f"`{res['plan']}` | {f'{ips:.2f}' if ips else '—'} |")
    version = next(iter(results.values()))["painters_version"] if results else __version__
    model = ", ".join(sorted(h[:12] for h in hashes if h)) or "unknown"
    return "\n".join(lines) + f"\n\nmodel {model} · painters {version}"
