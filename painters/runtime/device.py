"""Device runners: the half the onnxruntime and TensorRT runners share, built on tensors they are handed.

A device runner allocates its inputs and outputs as torch tensors on its device (CPU or GPU) and runs the model
on them (IO binding, TensorRT tensor addresses), so the cache it returns never leaves the device; on a GPU it
decodes with the static loop of :mod:`painters.runtime.decode` (fixed shapes, CUDA graphs).
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from painters.decoder_io import (
    ATTENTION_MASK,
    INPUT_IDS,
    KINDS,
    LOGITS,
    LOGITS_TO_KEEP,
    POSITION_IDS,
    is_past,
    past_name,
    present_name,
)
from painters.runtime.base import KV, Runner
from painters.runtime.decode import ForwardLoop, GreedyLoop, StaticBuffers, StaticLoop, allocate_static
from painters.runtime.tokens import positions_from_mask

__all__ = ["DeviceRunner"]


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
    kv_in_place: bool = False  # static decoding binds each slot's buffer as its past and present (decode.py)
    keeps_logits: bool = False  # the graph takes logits_to_keep (compiled graphs): a prefill may skip the head

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

    def bound_io(self, input_ids, attention_mask, position_ids, past: KV,
                 logits_to_keep: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
        """Device tensors for one run: the inputs (ids, mask, positions, cache) and empty outputs to fill.

        ``logits_to_keep`` k > 0: logits of the last k positions only, where the graph can skip the others'
        head (:attr:`keeps_logits`); otherwise every position's.
        """
        import torch

        batch, seq = np.shape(input_ids)
        inputs = {name: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(self.device)
                  for name, a in ((INPUT_IDS, input_ids), (ATTENTION_MASK, attention_mask),
                                  (POSITION_IDS, position_ids))}
        kept = seq
        if logits_to_keep > 0 and self.keeps_logits:
            kept = min(int(logits_to_keep), seq)
            inputs[LOGITS_TO_KEEP] = torch.tensor(kept, dtype=torch.int64)  # host: a shape input of the slice
        outputs = {LOGITS: torch.empty((batch, kept, self.info.vocab_size), dtype=self.logits_dtype,
                                         device=self.device)}
        for slot, pair in enumerate(past):
            for kind, t in zip(KINDS, pair):
                t = t if isinstance(t, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(t))
                inputs[past_name(slot, kind)] = t.to(self.device, self.kv_dtype).contiguous()
                outputs[present_name(slot, kind)] = torch.empty((batch, t.shape[1], t.shape[2] + seq, t.shape[3]),
                                                                dtype=self.kv_dtype, device=self.device)
        return inputs, outputs

    def forward(self, input_ids, attention_mask, position_ids, past: KV | None = None, logits_to_keep: int = 0):
        """:meth:`Runner.forward`; ``logits_to_keep`` k > 0 may return the last k positions' logits only."""
        if self.stream is not None:  # caches may come from torch ops on the default stream (bench pads them)
            import torch

            self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with self.stream_context():
            past = past if past is not None else self.empty_kv(np.shape(input_ids)[0])
            inputs, outputs = self.bound_io(input_ids, attention_mask, position_ids, past, logits_to_keep)
            self.run_bound(inputs, outputs)
            logits = outputs[LOGITS].float().cpu().numpy()  # waits for the stream, so `present` is ready too
        return logits, [tuple(outputs[present_name(s, kind)] for kind in KINDS) for s in range(len(past))]

    def prefill(self, input_ids, attention_mask, logits_to_keep: int = 0):
        """:meth:`Runner.prefill`, passing ``logits_to_keep`` to the graph (the head then runs on those only)."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        attention_mask = np.asarray(attention_mask, dtype=np.int64)
        positions = positions_from_mask(attention_mask, input_ids.shape[1])
        return self.forward(input_ids, attention_mask, positions, self.empty_kv(input_ids.shape[0]), logits_to_keep)

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
        """The static loop on a GPU (CUDA graphs) or where the cache updates in place, else the forward loop,
        unless ``static`` says otherwise."""
        if static is None:  # GroupQueryAttention places a row's new token after its filled positions: no padding
            padded_in_place = self.kv_in_place and not np.asarray(attention_mask).all()
            static = (self.device.type == "cuda" or self.kv_in_place) and not padded_in_place
        if static:
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
                                                     self.logits_dtype, self.kv_in_place)
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
