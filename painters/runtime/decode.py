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
from typing import TYPE_CHECKING, Any

import numpy as np

from painters.runtime.base import positions_from_mask

if TYPE_CHECKING:
    from painters.runtime.base import Runner

__all__ = ["GreedyLoop", "ForwardLoop", "StaticLoop", "StaticBuffers", "StaticDecoding", "bucket_for", "kv_nbytes",
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
    """The portable loop: ``Runner.prefill`` / ``Runner.decode``, logits and argmax on the host."""

    def __init__(self, runner: Runner, input_ids: np.ndarray, attention_mask: np.ndarray):
        self.runner = runner
        self.ids = np.asarray(input_ids, dtype=np.int64)
        self.mask = np.asarray(attention_mask, dtype=np.int64)
        self.kv = None
        self.next: np.ndarray | None = None

    def prefill(self) -> None:
        logits, self.kv = self.runner.prefill(self.ids, self.mask)
        self.next = logits[:, -1].argmax(-1)

    def step(self) -> None:
        self.mask = np.concatenate([self.mask, np.ones((len(self.mask), 1), np.int64)], axis=1)
        logits, self.kv = self.runner.decode(self.next, self.mask, self.kv)
        self.next = logits[:, -1].argmax(-1)

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
    inputs: dict[str, Any]  # input_ids [B,1], attention_mask [B,P+1], position_ids [B,1], past_key_values.*
    outputs: dict[str, Any]  # logits [B,1,V], present.* [B,H,P+1,D]
    past_groups: list[Any]  # per head count: [2·slots, B, H, P, D]
    present_groups: list[Any]  # per head count: [2·slots, B, H, P+1, D]
    t: Any  # int64 [1]: the next buffer position to fill (device-side counter)
    next: Any  # int64 [B]: tokens just produced

    def advance(self) -> None:
        """Write the new keys/values into position t, unmask it, move positions on, pick the next tokens."""
        P = self.bucket
        for past, present in zip(self.past_groups, self.present_groups):
            past.index_copy_(3, self.t, present[:, :, :, P:P + 1])
        mask = self.inputs["attention_mask"]
        mask.index_fill_(1, self.t, 1)
        self.inputs["position_ids"].add_(1)
        self.t.add_(1)
        self.next.copy_(self.outputs["logits"][:, -1].argmax(-1))
        self.inputs["input_ids"].copy_(self.next[:, None])

    def nbytes(self) -> int:
        return sum(int(g.numel() * g.element_size()) for g in self.past_groups)


class StaticLoop(GreedyLoop):
    """Fixed-shape decoding on a device runner (see the module docstring); buffers are reused across calls.

    The runner is a :class:`StaticDecoding`: it may capture ``run_step`` once per ``StaticBuffers`` as a
    CUDA graph and replay it, because a ``StaticBuffers`` object's tensors are its own for life.
    """

    def __init__(self, runner: StaticDecoding, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int):
        import torch

        self.torch = torch
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
        torch, runner = self.torch, self.runner
        batch, seq = self.ids.shape
        dev = runner.device
        ids = torch.from_numpy(self.ids).to(dev)
        mask = torch.from_numpy(self.mask).to(dev)
        positions = torch.from_numpy(positions_from_mask(self.mask, seq)).to(dev)
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        outputs = {"logits": torch.empty((batch, seq, runner.info.vocab_size), dtype=runner.logits_dtype, device=dev)}
        for slot, heads in enumerate(runner.slot_heads):
            for kind in ("key", "value"):
                inputs[f"past_key_values.{slot}.{kind}"] = torch.empty((batch, heads, 0, runner.info.head_dim),
                                                                      dtype=runner.kv_dtype, device=dev)
                outputs[f"present.{slot}.{kind}"] = torch.empty((batch, heads, seq, runner.info.head_dim),
                                                                dtype=runner.kv_dtype, device=dev)
        runner.run_bound(inputs, outputs)
        buf = runner.static_buffers(batch, bucket_for(seq + self.max_new_tokens))
        P = buf.bucket
        for name, value in outputs.items():
            if name.startswith("present."):
                past = buf.inputs["past_key_values." + name.removeprefix("present.")]
                past[:, :, :seq].copy_(value)
        buf.inputs["attention_mask"].zero_()
        buf.inputs["attention_mask"][:, :seq].copy_(mask)
        buf.inputs["attention_mask"][:, P] = 1
        buf.inputs["position_ids"].copy_(positions[:, -1:] + 1)
        buf.t.fill_(seq)
        buf.next.copy_(outputs["logits"][:, -1].argmax(-1))
        buf.inputs["input_ids"].copy_(buf.next[:, None])
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


class StaticDecoding:
    """Mixin for runners that run the model on tensors they are handed (IO binding, TensorRT addresses).

    Subclasses set ``device`` (a torch device), ``slot_heads``, ``kv_dtype``, ``logits_dtype`` and ``info``,
    and implement :meth:`run_bound` and ``synchronize``; :meth:`run_step` may be overridden to replay a captured
    graph, :meth:`stream_context` to run on a stream of the runner's own.
    """

    device: Any
    slot_heads: list[int]
    kv_dtype: Any
    logits_dtype: Any

    def stream_context(self) -> contextlib.AbstractContextManager:
        """Where the loop's torch ops run: the runner's CUDA stream, so they are ordered with its kernels."""
        return contextlib.nullcontext()

    def run_bound(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        """Run the model once, reading ``inputs`` and writing ``outputs`` (tensors named as the graph's IO)."""
        raise NotImplementedError

    def run_step(self, buffers: StaticBuffers, advance: Callable[[], None]) -> None:
        """One decode step of ``buffers``, then ``advance()`` (both queued on the device)."""
        self.run_bound(buffers.inputs, buffers.outputs)
        advance()

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
        P, Q = old.bucket, new.bucket
        for name, value in old.inputs.items():
            if name.startswith("past_key_values."):
                new.inputs[name][:, :, :P].copy_(value)
        mask = new.inputs["attention_mask"]
        mask.zero_()
        mask[:, :P].copy_(old.inputs["attention_mask"][:, :P])
        mask[:, Q] = 1
        for name in ("input_ids", "position_ids"):
            new.inputs[name].copy_(old.inputs[name])
        new.t.copy_(old.t)
        new.next.copy_(old.next)
        return new

    def release_static(self) -> None:
        """Free the decode buffers (and whatever a subclass captured for them)."""
        self.__dict__.pop("_static", None)


def allocate_static(torch, device, batch: int, bucket: int, slot_heads: list[int], head_dim: int, vocab: int,
                    kv_dtype, logits_dtype) -> StaticBuffers:
    """Buffers for one (batch, bucket); slots with the same head count share one tensor."""
    P = bucket
    inputs: dict[str, Any] = {
        "input_ids": torch.zeros((batch, 1), dtype=torch.int64, device=device),
        "attention_mask": torch.zeros((batch, P + 1), dtype=torch.int64, device=device),
        "position_ids": torch.zeros((batch, 1), dtype=torch.int64, device=device),
    }
    outputs: dict[str, Any] = {"logits": torch.empty((batch, 1, vocab), dtype=logits_dtype, device=device)}
    past_groups, present_groups = [], []
    for heads in sorted(set(slot_heads)):
        slots = [s for s, h in enumerate(slot_heads) if h == heads]
        past = torch.zeros((2 * len(slots), batch, heads, P, head_dim), dtype=kv_dtype, device=device)
        present = torch.zeros((2 * len(slots), batch, heads, P + 1, head_dim), dtype=kv_dtype, device=device)
        for j, slot in enumerate(slots):
            for k, kind in enumerate(("key", "value")):
                inputs[f"past_key_values.{slot}.{kind}"] = past[2 * j + k]
                outputs[f"present.{slot}.{kind}"] = present[2 * j + k]
        past_groups.append(past)
        present_groups.append(present)
    t = torch.zeros(1, dtype=torch.int64, device=device)
    nxt = torch.zeros(batch, dtype=torch.int64, device=device)
    return StaticBuffers(batch, P, inputs, outputs, past_groups, present_groups, t, nxt)
