"""The papers' code path as a backend (``--backend hf``): Hugging Face eager PyTorch, timed beside ours.

Both papers run their plans by calling the model's layers from Python. This runner does the same, so a
latency table can show that path next to the compiled graphs, measured in the same run:

* ``baseline`` runs the model's own ``forward`` with a ``DynamicCache``, exactly the step Hugging Face's
  ``generate`` takes for every token (greedy, no sampling);
* any other plan runs the blocks eagerly in the plan's order through the reference executor
  (:mod:`painters.runtime.torch_ref`), parallel members one after another, as the papers' code does.
"""

from __future__ import annotations

import numpy as np
import torch

from painters.runtime.decode import GreedyLoop, kv_nbytes
from painters.runtime.torch_ref import TorchRunner, cache_kwarg

__all__ = ["HfRunner", "HfLoop"]


class HfRunner(TorchRunner):
    """The reference executor, with Hugging Face's own forward for ``baseline`` greedy loops."""

    name = "hf"

    def greedy_loop(self, input_ids, attention_mask, max_new_tokens: int, static: bool | None = None) -> GreedyLoop:
        if self.plan.name == "baseline":
            return HfLoop(self, input_ids, attention_mask)
        return super().greedy_loop(input_ids, attention_mask, max_new_tokens, static)


class HfLoop(GreedyLoop):
    """Greedy decoding through ``model(...)`` with a ``DynamicCache``; tokens stay on the device."""

    def __init__(self, runner: HfRunner, input_ids: np.ndarray, attention_mask: np.ndarray):
        self.runner = runner
        self.ids = torch.as_tensor(np.asarray(input_ids, dtype=np.int64), device=runner.device)
        self.mask = torch.as_tensor(np.asarray(attention_mask, dtype=np.int64), device=runner.device)
        self.cache = None
        self.next: torch.Tensor | None = None

    @torch.no_grad()
    def _run(self, ids: torch.Tensor) -> None:
        # positions from the mask, as generate() computes them for left-padded batches
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
        cache = {cache_kwarg(self.runner.model): self.cache}  # the cache grows in place
        out = self.runner.model(input_ids=ids, attention_mask=self.mask, position_ids=positions, use_cache=True,
                                **cache)
        self.next = out.logits[:, -1].argmax(-1)

    def prefill(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.runner.model.config)
        self._run(self.ids)

    def step(self) -> None:
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.mask), 1))], dim=1)
        self._run(self.next[:, None])

    def tokens(self) -> np.ndarray:
        return self.next.cpu().numpy()

    def kv_bytes(self) -> int:
        return kv_nbytes((layer.keys, layer.values) for layer in self.cache.layers)

    def synchronize(self) -> None:
        self.runner.synchronize()
