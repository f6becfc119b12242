"""Greedy decoding loops: one over ``Runner.forward`` for every backend, one at fixed shapes for device runners.

A loop holds one batch's state between steps, so the same object serves ``Runner.generate`` and the latency
bench (which times ``prefill`` and ``step`` without reading tokens back).

:class:`ForwardLoop` is the portable one: logits come back to the host and the cache grows by one position per
step, so every step has new shapes. :class:`StaticLoop` is the fast one for GPU backends. Its buffers live
on the runner's device and keep their addresses and shapes for a whole bucket of past lengths:

* the cache of every KV slot is a ``[batch, heads, P, head_dim]`` buffer; step t feeds all of it, with
  ``attention_mask`` ``[batch, P + 1]`` marking the t filled positions and the new token (position P), so the
  model computes exactly what it would on the t real positions (masked scores add nothing to the softmax);
* after the model runs, the new key/value (position P of each ``present``) is written into position t of the
  buffer, the mask gains position t, position ids advance and the next token is the argmax — all on the
  device, indexed by a device-side counter, so nothing crosses to the host but the token ids a caller reads.

Same shapes and addresses every step is what CUDA graphs need: a runner replays one captured graph per
(batch, bucket). Buckets are powers of two, so a longer generation moves to a larger bucket a few times.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from painters.decoder_io import (
    ATTENTION_MASK,
    INPUT_IDS,
    KINDS,
    LOGITS,
    POSITION_IDS,
    is_past,
    is_present,
    past_name,
    present_name,
    present_to_past,
)
from painters.runtime.base import KV, Runner, positions_from_mask

__all__ = ["GreedyLoop", "ForwardLoop", "StaticLoop", "StaticBuffers", "DeviceRunner", "bucket_for", "kv_nbytes",
           "MIN_BUCKET"]

MIN_BUCKET = 64  # smallest past length a static loop allocates


def bucket_for(length: int) -> int:
    """The smallest power of two ≥ ``length`` and ≥ :data:`MIN_BUCKET`."""
    return max(MIN_BUCKET, 1 << max(0, int(length) - 1).bit_length())


def kv_nbytes(kv) -> int:
    """Bytes held by a cache (numpy arrays or torch tensors)."""
    total = 0
    for pair in kv:
        for a in pair:
            total += int(a.nbytes) if hasattr(a, "nbytes") else int(a.numel() * a.element_size())
    return total


class GreedyLoop(ABC):
    """Greedy decoding of one left-padded batch: ``prefill()`` once, then ``step()`` per token."""

    @abstractmethod
    def prefill(self) -> None:
        """Run the prompt; the first generated tokens are ready afterwards."""

    @abstractmethod
    def step(self) -> None:
        """Feed the current tokens and compute the next ones."""

    @abstractmethod
    def tokens(self) -> np.ndarray:
        """The tokens the last call produced, int64 [batch] on the host (the one copy per token)."""

    @abstractmethod
    def kv_bytes(self) -> int:
        """Bytes the KV cache holds (allocated, for a static loop)."""

    @abstractmethod
    def synchronize(self) -> None:
        """Wait for queued device work (timing)."""


class ForwardLoop(GreedyLoop):
    """The portable loop: ``Runner.prefill`` / ``Runner.decode``, logits and argmax (or ``pick``) on the host."""

    def __init__(self, runner: Runner, input_ids: np.ndarray, attention_mask: np.ndarray,
                 pick: Callable[[np.ndarray], np.ndarray] | None = None):
        self.runner = runner
        self.pick = pick or (lambda last: last.argmax(-1))  # logits [batch, vocab] → tokens (sampling: serve)
        self.ids = np.asarray(input_ids, dtype=np.int64)
        self.mask = np.asarray(attention_mask, dtype=np.int64)
        self.kv = None
        self.next: np.ndarray | None = None

    def prefill(self) -> None:
        logits, self.kv = self.runner.prefill(self.ids, self.mask)
        self.next = self.pick(logits[:, -1])

    def step(self) -> None:
        self.mask = np.concatenate([self.mask, np.ones((len(self.mask), 1), np.int64)], axis=1)
        logits, self.kv = self.runner.decode(self.next, self.mask, self.kv)
        self.next = self.pick(logits[:, -1])

    def tokens(self) -> np.ndarray:
        return np.asarray(self.next, dtype=np.int64)

    def kv_bytes(self) -> int:
        return kv_nbytes(self.kv or [])

    def synchronize(self) -> None:
        self.runner.synchronize()


@dataclass
class StaticBuffers:
    """Device tensors of one (batch, bucket) decode step; their addresses never change.

    ``past``/``present`` are views into one tensor per distinct head count (a fused parallel slot holds
    k × kv_heads heads), so advancing the cache is one copy per head count, not one per slot.
    """

    batch: int
    bucket: int
    inputs: dict[str, Any]  # input_ids [B,1], attention_mask [B,P+1], position_ids [B,1], past KV [B,H,P,D]
    outputs: dict[str, Any]  # logits [B,1,V], present KV [B,H,P+1,D]
    past_groups: list[Any]  # per head count: [2·slots, B, H, P, D]
    present_groups: list[Any]  # per head count: [2·slots, B, H, P+1, D]
    t: Any  # int64 [1]: the next buffer position to fill (device-side counter)
    next: Any  # int64 [B]: tokens just produced

    def advance(self) -> None:
        """Write the new keys/values into position t, unmask it, move positions on, pick the next tokens."""
        P = self.bucket
        for past, present in zip(self.past_groups, self.present_groups):
            past.index_copy_(3, self.t, present[:, :, :, P:P + 1])
        mask = self.inputs[ATTENTION_MASK]
        mask.index_fill_(1, self.t, 1)
        self.inputs[POSITION_IDS].add_(1)
        self.t.add_(1)
        self.next.copy_(self.outputs[LOGITS][:, -1].argmax(-1))
        self.inputs[INPUT_IDS].copy_(self.next[:, None])

    def load(self, kv: dict[str, Any], mask: Any, positions: Any, filled: Any, tokens: Any) -> None:
        """Set the state: cache positions ``0..n-1`` from ``kv`` (past-KV input name → [B, H, n, D]), the
        mask over them (``mask`` [B, n]), the new token's position ids, the fill counter and the next tokens."""
        n = mask.shape[1]
        for name, value in kv.items():
            self.inputs[name][:, :, :n].copy_(value)
        full = self.inputs[ATTENTION_MASK]
        full.zero_()
        full[:, :n].copy_(mask)
        full[:, self.bucket] = 1
        self.inputs[POSITION_IDS].copy_(positions)
        self.t.fill_(filled)
        self.next.copy_(tokens)
        self.inputs[INPUT_IDS].copy_(self.next[:, None])

    def nbytes(self) -> int:
        return sum(int(g.numel() * g.element_size()) for g in self.past_groups)


class StaticLoop(GreedyLoop):
    """Fixed-shape decoding on a device runner (see the module docstring); buffers are reused across calls.

    The runner is a :class:`DeviceRunner`: it may capture ``run_step`` once per ``StaticBuffers`` as a
    CUDA graph and replay it, because a ``StaticBuffers`` object's tensors are its own for life.
    """

    def __init__(self, runner: DeviceRunner, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int):
        self.runner = runner
        self.ids = np.asarray(input_ids, dtype=np.int64)
        self.mask = np.asarray(attention_mask, dtype=np.int64)
        self.max_new_tokens = max(1, int(max_new_tokens))
        self.buffers: StaticBuffers | None = None
        self.filled = 0  # host copy of buffers.t

    def prefill(self) -> None:
        with self.runner.stream_context():
            self._prefill()

    def _prefill(self) -> None:
        runner = self.runner
        batch, seq = self.ids.shape
        positions = positions_from_mask(self.mask, seq)
        inputs, outputs = runner.bound_io(self.ids, self.mask, positions, runner.empty_kv(batch))
        runner.run_bound(inputs, outputs)
        buf = runner.static_buffers(batch, bucket_for(seq + self.max_new_tokens))
        kv = {present_to_past(name): value for name, value in outputs.items() if is_present(name)}
        buf.load(kv, inputs[ATTENTION_MASK], inputs[POSITION_IDS][:, -1:] + 1, seq,
                 outputs[LOGITS][:, -1].argmax(-1))
        self.buffers, self.filled = buf, seq

    def step(self) -> None:
        with self.runner.stream_context():
            buf = self.buffers
            if self.filled >= buf.bucket:  # the bucket is full: continue in one twice as long
                self.buffers = buf = self.runner.grow_static(buf, 2 * buf.bucket)
            self.runner.run_step(buf, buf.advance)
        self.filled += 1

    def tokens(self) -> np.ndarray:
        with self.runner.stream_context():  # the copy waits for the runner's stream
            return self.buffers.next.cpu().numpy()

    def kv_bytes(self) -> int:
        return self.buffers.nbytes() if self.buffers is not None else 0

    def synchronize(self) -> None:
        self.runner.synchronize()


class DeviceRunner(Runner):
    """The half the onnxruntime and TensorRT runners share: the model reads and writes tensors it is handed.

    ``forward`` allocates its inputs and outputs as torch tensors on the runner's device and hands them to
    :meth:`run_bound` (IO binding, TensorRT addresses), so the returned cache never leaves the device; greedy
    decoding uses the static loop there (:class:`StaticLoop`, one set of buffers per (batch, bucket)).
    Subclasses set ``device`` (a torch device), ``stream`` (their CUDA stream, or None on the CPU),
    ``slot_heads``, ``kv_dtype``, ``logits_dtype`` and ``info``, and implement :meth:`run_bound`;
    :meth:`run_step` may be overridden to replay a captured graph.
    """

    device: Any
    stream: Any = None
    slot_heads: list[int]
    kv_dtype: Any
    logits_dtype: Any

    def stream_context(self) -> contextlib.AbstractContextManager:
        """Where torch ops on the runner's tensors run: its CUDA stream, so they are ordered with its kernels."""
        if self.stream is None:
            return contextlib.nullcontext()
        import torch

        return torch.cuda.stream(self.stream)

    @abstractmethod
    def run_bound(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        """Run the model once, reading ``inputs`` and writing ``outputs`` (tensors named as the graph's IO)."""

    def run_step(self, buffers: StaticBuffers, advance: Callable[[], None]) -> None:
        """One decode step of ``buffers``, then ``advance()`` (both queued on the device)."""
        self.run_bound(buffers.inputs, buffers.outputs)
        advance()

    def bound_io(self, input_ids, attention_mask, position_ids, past: KV) -> tuple[dict[str, Any], dict[str, Any]]:
        """Device tensors for one run: the inputs (ids, mask, positions, cache) and empty outputs to fill."""
        import torch

        batch, seq = np.shape(input_ids)
        inputs = {name: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(self.device)
                  for name, a in ((INPUT_IDS, input_ids), (ATTENTION_MASK, attention_mask),
                                  (POSITION_IDS, position_ids))}
        outputs = {LOGITS: torch.empty((batch, seq, self.info.vocab_size), dtype=self.logits_dtype,
                                         device=self.device)}
        for slot, pair in enumerate(past):
            for kind, t in zip(KINDS, pair):
                t = t if isinstance(t, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(t))
                inputs[past_name(slot, kind)] = t.to(self.device, self.kv_dtype).contiguous()
                outputs[present_name(slot, kind)] = torch.empty((batch, t.shape[1], t.shape[2] + seq, t.shape[3]),
                                                                dtype=self.kv_dtype, device=self.device)
        return inputs, outputs

    def forward(self, input_ids, attention_mask, position_ids, past: KV | None = None):
        if self.stream is not None:  # caches may come from torch ops on the default stream (bench pads them)
            import torch

            self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with self.stream_context():
            past = past if past is not None else self.empty_kv(np.shape(input_ids)[0])
            inputs, outputs = self.bound_io(input_ids, attention_mask, position_ids, past)
            self.run_bound(inputs, outputs)
            logits = outputs[LOGITS].float().cpu().numpy()  # waits for the stream, so `present` is ready too
        return logits, [tuple(outputs[present_name(s, kind)] for kind in KINDS) for s in range(len(past))]

    def empty_kv(self, batch: int) -> KV:
        import torch

        kv = []
        for heads in self.slot_heads:
            empty = torch.zeros((batch, heads, 0, self.info.head_dim), dtype=self.kv_dtype, device=self.device)
            kv.append((empty, empty))
        return kv

    def repeat_kv(self, kv: KV, n: int) -> KV:
        with self.stream_context():
            return [(k.repeat(n, 1, 1, 1), v.repeat(n, 1, 1, 1)) for k, v in kv]

    def greedy_loop(self, input_ids, attention_mask, max_new_tokens: int, static: bool | None = None) -> GreedyLoop:
        """The static loop on a GPU (CUDA graphs), the forward loop on the CPU, unless ``static`` says otherwise."""
        if static if static is not None else self.device.type == "cuda":
            return StaticLoop(self, input_ids, attention_mask, max_new_tokens)
        return ForwardLoop(self, input_ids, attention_mask)

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    def static_buffers(self, batch: int, bucket: int) -> StaticBuffers:
        """The (cached) buffers of one (batch, bucket): allocated once, reused by every later generation.

        Reuse is what keeps a captured graph valid; it also means one live loop per (batch, bucket) at a time,
        which is how ``generate`` and the bench use them (one loop after another).
        """
        import torch

        cache = self.__dict__.setdefault("_static", {})
        if (batch, bucket) not in cache:
            cache[(batch, bucket)] = allocate_static(torch, self.device, batch, bucket, self.slot_heads,
                                                     self.info.head_dim, self.info.vocab_size, self.kv_dtype,
                                                     self.logits_dtype)
        return cache[(batch, bucket)]

    def grow_static(self, old: StaticBuffers, bucket: int) -> StaticBuffers:
        """Move a full bucket's state into the buffers of a larger one."""
        new = self.static_buffers(old.batch, bucket)
        kv = {name: value for name, value in old.inputs.items() if is_past(name)}
        new.load(kv, old.inputs[ATTENTION_MASK][:, :old.bucket], old.inputs[POSITION_IDS], old.t[0], old.next)
        return new

    def release_static(self) -> None:
        """Free the decode buffers (and whatever a subclass captured for them)."""
        self.__dict__.pop("_static", None)


def allocate_static(torch, device, batch: int, bucket: int, slot_heads: list[int], head_dim: int, vocab: int,
                    kv_dtype, logits_dtype) -> StaticBuffers:
    """Buffers for one (batch, bucket); slots with the same head count share one tensor."""
    P = bucket
    inputs: dict[str, Any] = {
        INPUT_IDS: torch.zeros((batch, 1), dtype=torch.int64, device=device),
        ATTENTION_MASK: torch.zeros((batch, P + 1), dtype=torch.int64, device=device),
        POSITION_IDS: torch.zeros((batch, 1), dtype=torch.int64, device=device),
    }
    outputs: dict[str, Any] = {LOGITS: torch.empty((batch, 1, vocab), dtype=logits_dtype, device=device)}
    past_groups, present_groups = [], []
    for heads in sorted(set(slot_heads)):
        slots = [s for s, h in enumerate(slot_heads) if h == heads]
        past = torch.zeros((2 * len(slots), batch, heads, P, head_dim), dtype=kv_dtype, device=device)
        present = torch.zeros((2 * len(slots), batch, heads, P + 1, head_dim), dtype=kv_dtype, device=device)
        for j, slot in enumerate(slots):
            for k, kind in enumerate(KINDS):
                inputs[past_name(slot, kind)] = past[2 * j + k]
                outputs[present_name(slot, kind)] = present[2 * j + k]
        past_groups.append(past)
        present_groups.append(present)
    t = torch.zeros(1, dtype=torch.int64, device=device)
    nxt = torch.zeros(batch, dtype=torch.int64, device=device)
    return StaticBuffers(batch, P, inputs, outputs, past_groups, present_groups, t, nxt)
