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

Graphs whose every KV slot is written by one ``GroupQueryAttention`` (ONNX Runtime GenAI's form; the compiler
records it, :func:`painters.graph_metadata.kv_in_place`) decode **in place**: each slot's buffer is bound as
both its past input and its present output, ``attention_mask`` is ``[batch, P]`` with the t filled positions
and the new token's position t set, and the operator writes the new key/value at position t itself — no
present buffers, no copy per step (ONNX Runtime's ``past_present_share_buffer`` mode, as GenAI decodes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from painters.decoder_io import (
    ATTENTION_MASK,
    INPUT_IDS,
    KINDS,
    LOGITS,
    POSITION_IDS,
    is_present,
    past_name,
    present_name,
    present_to_past,
)
from painters.runtime.tokens import positions_from_mask


class Stepper(Protocol):
    """What :class:`ForwardLoop` drives: :class:`painters.runtime.base.Runner`'s prefill, decode and sync
    (a protocol, so this module does not import the runner classes that import it)."""

    def prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                logits_to_keep: int = 0) -> tuple[np.ndarray, Any]: ...

    def decode(self, token_ids: np.ndarray, attention_mask: np.ndarray, past: Any) -> tuple[np.ndarray, Any]: ...

    def synchronize(self) -> None: ...


class StaticStepper(Stepper, Protocol):
    """What :class:`StaticLoop` drives: a :class:`painters.runtime.device.DeviceRunner`'s bound IO and buffers."""

    def stream_context(self) -> Any: ...

    def empty_kv(self, batch: int) -> Any: ...

    def bound_io(self, input_ids: np.ndarray, attention_mask: np.ndarray, positions: np.ndarray,
                 past: Any, logits_to_keep: int = 0) -> tuple[dict, dict]: ...

    def run_bound(self, inputs: dict, outputs: dict) -> None: ...

    def static_buffers(self, batch: int, bucket: int) -> StaticBuffers: ...

    def grow_static(self, buffers: StaticBuffers, bucket: int) -> StaticBuffers: ...

    def run_step(self, buffers: StaticBuffers, advance: Any) -> None: ...

__all__ = ["GreedyLoop", "ForwardLoop", "StaticLoop", "Stepper", "StaticStepper", "StaticBuffers", "allocate_static",
           "bucket_for", "kv_nbytes", "MIN_BUCKET"]

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

    def __init__(self, runner: Stepper, input_ids: np.ndarray, attention_mask: np.ndarray,
                 pick: Callable[[np.ndarray], np.ndarray] | None = None):
        self.runner = runner
        self.pick = pick or (lambda last: last.argmax(-1))  # logits [batch, vocab] → tokens (sampling: serve)
        self.ids = np.asarray(input_ids, dtype=np.int64)
        self.mask = np.asarray(attention_mask, dtype=np.int64)
        self.kv = None
        self.next: np.ndarray | None = None

    def prefill(self) -> None:
        logits, self.kv = self.runner.prefill(self.ids, self.mask, logits_to_keep=1)  # the head on the last only
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
    inputs: dict[str, Any]  # input_ids [B,1], attention_mask [B,P+1] ([B,P] in place), position_ids [B,1], past KV
    outputs: dict[str, Any]  # logits [B,1,V], present KV [B,H,P+1,D] (in place: the past tensors themselves)
    past_groups: list[Any]  # per head count: [2·slots, B, H, P, D]
    present_groups: list[Any]  # per head count: [2·slots, B, H, P+1, D] (in place: past_groups' tensors)
    t: Any  # int64 [1]: the next buffer position to fill (device-side counter)
    next: Any  # int64 [B]: tokens just produced
    in_place: bool = False  # present outputs are the past buffers themselves (the module docstring)

    def advance(self) -> None:
        """Write the new keys/values into position t, unmask it, move positions on, pick the next tokens."""
        P = self.bucket
        mask = self.inputs[ATTENTION_MASK]
        if self.in_place:  # the model wrote position t; mark t + 1 for the next step (a full bucket grows first)
            self.t.add_(1)
            mask.index_fill_(1, self.t.clamp(max=P - 1), 1)
        else:
            for past, present in zip(self.past_groups, self.present_groups):
                past.index_copy_(3, self.t, present[:, :, :, P:P + 1])
            mask.index_fill_(1, self.t, 1)
            self.t.add_(1)
        self.inputs[POSITION_IDS].add_(1)
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
        full[:, n if self.in_place else self.bucket] = 1  # where the next token's key/value goes
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

    def __init__(self, runner: StaticStepper, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int):
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
        inputs, outputs = runner.bound_io(self.ids, self.mask, positions, runner.empty_kv(batch), logits_to_keep=1)
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


def allocate_static(torch, device, batch: int, bucket: int, slot_heads: list[int], head_dim: int, vocab: int,
                    kv_dtype, logits_dtype, in_place: bool = False) -> StaticBuffers:
    """Buffers for one (batch, bucket); slots with the same head count share one tensor.

    ``in_place``: each slot's present output is its past buffer (no present tensors; the mask is ``[B, P]``).
    """
    P = bucket
    inputs: dict[str, Any] = {
        INPUT_IDS: torch.zeros((batch, 1), dtype=torch.int64, device=device),
        ATTENTION_MASK: torch.zeros((batch, P if in_place else P + 1), dtype=torch.int64, device=device),
        POSITION_IDS: torch.zeros((batch, 1), dtype=torch.int64, device=device),
    }
    outputs: dict[str, Any] = {LOGITS: torch.empty((batch, 1, vocab), dtype=logits_dtype, device=device)}
    past_groups, present_groups = [], []
    for heads in sorted(set(slot_heads)):
        slots = [s for s, h in enumerate(slot_heads) if h == heads]
        past = torch.zeros((2 * len(slots), batch, heads, P, head_dim), dtype=kv_dtype, device=device)
        present = past if in_place else torch.zeros((2 * len(slots), batch, heads, P + 1, head_dim),
                                                    dtype=kv_dtype, device=device)
        for j, slot in enumerate(slots):
            for k, kind in enumerate(KINDS):
                inputs[past_name(slot, kind)] = past[2 * j + k]
                outputs[present_name(slot, kind)] = present[2 * j + k]
        past_groups.append(past)
        present_groups.append(present)
    t = torch.zeros(1, dtype=torch.int64, device=device)
    nxt = torch.zeros(batch, dtype=torch.int64, device=device)
    return StaticBuffers(batch, P, inputs, outputs, past_groups, present_groups, t, nxt, in_place)
