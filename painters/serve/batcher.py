"""One thread owns the runner; requests queue up and whatever is waiting runs as one left-padded batch.

Why a thread and not the event loop: runners are synchronous and not thread-safe (a device runner's static
buffers are one live loop per (batch, bucket)), so exactly one thread may call them, and the HTTP loop must stay
free to accept requests meanwhile. A batch is every request queued when the previous batch finished (up to
``max_batch``); all-greedy batches use the runner's own greedy loop (the static, CUDA-graph loop on a GPU), a
batch with sampled rows the forward loop with :func:`painters.runtime.sampling.pick_tokens`.

Requests arrive validated (:mod:`painters.serve.checks`); should a batch still fail, each of its requests is run
again alone, so only the request that fails by itself gets the error. A request whose client hung up is
``cancel``-ed: it leaves its batch at the next token and is never started if still queued.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from painters.runtime.base import Runner, left_pad
from painters.runtime.decode import ForwardLoop
from painters.runtime.sampling import pick_tokens
from painters.runtime.tokens import rows_by_length

__all__ = ["GenRequest", "Batcher"]

log = logging.getLogger(__name__)


@dataclass
class GenRequest:
    """One prompt to continue; ``on_update(delta, finish_reason, error)`` is called from the worker thread."""

    prompt: list[int]
    max_tokens: int
    on_update: Callable[[str, str | None, str | None], None]
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    tokens: list[int] = field(default_factory=list)  # generated ids, without a final end-of-sequence token
    text: str = ""
    finish_reason: str | None = None
    _sent: int = 0  # characters of text already handed to on_update
    cancelled: bool = False  # set from the event loop when the client hung up; read by the worker

    def cancel(self) -> None:
        """Stop generating for this request (its client is gone); nothing more is sent to ``on_update``."""
        self.cancelled = True

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.cancelled

    def restart(self) -> None:
        """Forget the generated tokens (text already sent stays sent: a greedy rerun repeats it exactly)."""
        self.tokens, self.text, self.finish_reason = [], "", None

    def _release(self, text: str, final: bool) -> None:
        """Hand out new text; while generating, hold back what could still become a stop string or a split char."""
        safe = text
        if not final:
            hold = max((len(s) - 1 for s in self.stop), default=0)
            safe = text[:len(text) - hold] if hold else text
            safe = safe.rstrip("\ufffd")
        if len(safe) > self._sent or final:
            delta, self._sent = safe[self._sent:], max(self._sent, len(safe))
            self.on_update(delta, self.finish_reason if final else None, None)


class Batcher:
    """The worker: ``submit`` from any thread, ``start``/``stop`` around serving."""

    def __init__(self, runner: Runner, tokenizer, *, max_batch: int = 8, pad_id: int | None = None):
        self.runner, self.tokenizer, self.max_batch = runner, tokenizer, max_batch
        self.eos = {int(t) for t in _as_list(getattr(tokenizer, "eos_token_id", None))}
        if runner.info.eos_token_id is not None:
            self.eos.add(int(runner.info.eos_token_id))
        self.pad_id = pad_id if pad_id is not None else (getattr(tokenizer, "pad_token_id", None) or 0)
        self._queue: queue.Queue[GenRequest] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name="painters-batcher", daemon=True)
        self.batches = 0  # batches run (the tests read it to see that requests were batched)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the running batch, then end the thread (queued requests are failed)."""
        self._stopping.set()
        self._thread.join(timeout)
        while not self._queue.empty():
            self._queue.get_nowait().on_update("", None, "the server is shutting down")

    def submit(self, request: GenRequest) -> None:
        self._queue.put(request)

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                batch = [self._queue.get(timeout=0.1)]
            except queue.Empty:
                continue
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batch = [r for r in batch if not r.cancelled]
            for group in self._groups(batch) if batch else []:
                self._run_isolated(group)

    def _run_isolated(self, group: list[GenRequest]) -> None:
        """Run ``group``; if it fails, run each unfinished request alone, so a failure stays with its request."""
        try:
            self.run(group)
        except Exception as exc:  # a bug or a runner failure fails its request, not its batch or the server
            if len(group) > 1:
                log.warning("a batch of %d failed (%s: %s); running its requests one by one", len(group),
                            type(exc).__name__, exc)
                for request in group:
                    if not request.done:
                        request.restart()
                        self._run_isolated([request])
                return
            log.exception("generation failed")
            if not group[0].done:
                group[0].on_update("", None, f"generation failed: {type(exc).__name__}: {exc}")

    def _groups(self, requests: list[GenRequest]) -> list[list[GenRequest]]:
        """The gathered requests as one batch, or one per prompt length for a runner that takes no padded rows
        (``Runner.pads_rows``: GroupQueryAttention graphs)."""
        if self.runner.pads_rows:
            return [requests]
        return [[requests[i] for i in rows] for rows in rows_by_length([r.prompt for r in requests])]

    def run(self, batch: list[GenRequest]) -> None:
        """Generate for ``batch`` (left-padded together) until every request has finished."""
        self.batches += 1
        ids, mask = left_pad([r.prompt for r in batch], self.pad_id)
        budget = max(r.max_tokens for r in batch)
        if all(r.temperature <= 0 for r in batch):
            loop = self.runner.greedy_loop(ids, mask, budget)
        else:
            rngs = [np.random.default_rng(r.seed) if r.temperature > 0 else None for r in batch]
            temps, top_p = [r.temperature for r in batch], [r.top_p for r in batch]
            loop = ForwardLoop(self.runner, ids, mask, pick=lambda logits: pick_tokens(logits, temps, top_p, rngs))
        loop.prefill()
        while True:
            for request, token in zip(batch, loop.tokens()):
                if not request.done:
                    self._advance(request, int(token))
            if all(r.done for r in batch):
                return
            loop.step()

    def _advance(self, request: GenRequest, token: int) -> None:
        if token in self.eos:
            request.finish_reason = "stop"
        else:
            request.tokens.append(token)
            text = self.tokenizer.decode(request.tokens, skip_special_tokens=True)
            cut = min((i for i in (text.find(s) for s in request.stop if s) if i >= 0), default=-1)
            if cut >= 0:
                text, request.finish_reason = text[:cut], "stop"
            elif len(request.tokens) >= request.max_tokens:
                request.finish_reason = "length"
            request.text = text
        request._release(request.text, final=request.finish_reason is not None)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, set)) else [value]
