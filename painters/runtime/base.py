"""One interface over every backend: a forward pass with an explicit KV cache, and generation on top.

The IO convention is the exported graph's (Hugging Face Optimum / ONNX Runtime GenAI): ``input_ids``
[batch, seq], ``attention_mask`` [batch, past+seq] (1 = real token, left padding), ``position_ids``
[batch, seq], and one (key, value) pair per KV slot of shape [batch, kv_heads, past, head_dim]. A plan's
slot count is what the cache holds, so attention-drop plans really allocate less.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from painters.artifact import Artifact
from painters.runtime.decode import ForwardLoop, GreedyLoop
from painters.runtime.tokens import left_pad, positions_from_mask, rows_by_length

__all__ = ["Runner", "KV", "ModelInfo", "positions_from_mask", "left_pad"]

# Per slot (key, value): torch tensors on the runner's device (CPU or GPU), as the runner returned them.
KV = list[tuple[Any, Any]]


@dataclass
class ModelInfo:
    """What a runner serves: enough to build inputs and label results."""

    num_slots: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    dtype: str  # numpy name of the KV / activation dtype, e.g. "float32", "float16"
    plan: str = "baseline"
    model_hash: str = ""
    eos_token_id: int | None = None


class Runner(ABC):
    """A backend serving one (compiled) model. Use as a context manager to release device resources."""

    name: str = "base"
    info: ModelInfo
    # what it runs and where that came from (painters.artifact): the plan as a Plan, not a name
    artifact: Artifact | None = None
    tokenizer: Any = None
    # Rows of different lengths may share a batch (padding masked out). False for GroupQueryAttention graphs,
    # which read a row's positions from its mask's count: generate and scoring then batch equal lengths only.
    pads_rows: bool = True
    # The engine scores whole prompts itself (score_tokens) instead of exposing logits and a cache (vLLM).
    scores_prompts: bool = False

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027  (an optional hook: CPU runners hold nothing to release)
        """Release sessions and device buffers."""

    def synchronize(self) -> None:  # noqa: B027  (an optional hook: host runners finish before returning)
        """Wait until work queued on the runner's device is done (timing)."""

    @abstractmethod
    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                past: KV | None = None) -> tuple[np.ndarray, KV]:
        """One step: logits [batch, seq, vocab] as float32 numpy, and the grown cache (past+seq)."""

    @abstractmethod
    def empty_kv(self, batch: int) -> KV:
        """A cache with past length 0 for ``batch`` sequences."""

    @abstractmethod
    def repeat_kv(self, kv: KV, n: int) -> KV:
        """Repeat a batch-1 cache ``n`` times along the batch axis (shared contexts in bench)."""

    def score_tokens(self, prompts: Sequence[Sequence[int]]) -> list[list[tuple[float, bool]]]:
        """Per prompt, (log-probability, is the argmax) of each token after the first, computed by the engine.

        Only runners with ``scores_prompts`` answer: the others expose logits and a cache, and scoring reads
        those (:meth:`forward`); an engine that keeps its cache to itself (vLLM) scores here instead.
        """
        raise NotImplementedError(f"{self.name} scores through forward()")

    def prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                logits_to_keep: int = 0) -> tuple[np.ndarray, KV]:
        """Run a left-padded prompt from an empty cache.

        ``logits_to_keep`` k > 0: only the last k positions' logits are needed (greedy decoding reads the last);
        a runner whose graph can skip the head elsewhere does (:class:`painters.runtime.device.DeviceRunner`),
        the others return every position's.
        """
        input_ids = np.asarray(input_ids, dtype=np.int64)
        attention_mask = np.asarray(attention_mask, dtype=np.int64)
        positions = positions_from_mask(attention_mask, input_ids.shape[1])
        return self.forward(input_ids, attention_mask, positions, self.empty_kv(input_ids.shape[0]))

    def decode(self, token_ids: np.ndarray, attention_mask: np.ndarray, past: KV) -> tuple[np.ndarray, KV]:
        """One cached step for one new token per sequence; ``attention_mask`` already includes it."""
        token_ids = np.asarray(token_ids, dtype=np.int64).reshape(-1, 1)
        positions = positions_from_mask(attention_mask, 1)
        return self.forward(token_ids, attention_mask, positions, past)

    def greedy_loop(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int,
                    static: bool | None = None) -> GreedyLoop:
        """A greedy decoding loop over this runner (device runners return a static-shape one)."""
        return ForwardLoop(self, input_ids, attention_mask)

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 stop_ids: Sequence[int] = (), pad_id: int = 0, static: bool | None = None) -> list[list[int]]:
        """Greedy generation with the KV cache; each sequence stops at a token of ``stop_ids``."""
        out: list[list[int]] = [[] for _ in prompts]
        if not self.pads_rows and len({len(p) for p in prompts}) > 1:  # one batch per prompt length
            for rows in rows_by_length(prompts):
                batch = self.generate([prompts[i] for i in rows], max_new_tokens, stop_ids, pad_id, static)
                for i, tokens in zip(rows, batch):
                    out[i] = tokens
            return out
        ids, mask = left_pad(prompts, pad_id)
        loop = self.greedy_loop(ids, mask, max_new_tokens, static=static)
        loop.prefill()
        done = np.zeros(len(prompts), dtype=bool)
        stops = set(stop_ids)
        for step in range(max_new_tokens):
            for row, tok in enumerate(loop.tokens()):
                if not done[row]:
                    out[row].append(int(tok))
                    done[row] = int(tok) in stops
            if done.all() or step == max_new_tokens - 1:
                break
            loop.step()
        return out
