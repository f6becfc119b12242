"""A checkpoint that carries its own modeling code (``trust_remote_code``), e.g. a deployed Nemotron-NAS directory.

Such a model is the plan already (its layers are the plan's), so the runner calls its ``forward`` as it is. The
modeling file painters writes has no KV cache (it is a reference, not a server), so the "cache" here is the token
ids so far and every step recomputes the sequence: right for accuracy and parity, not a speed to report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from painters.errors import BenchError
from painters.plans import Plan
from painters.runtime.base import KV, ModelInfo, Runner
from painters.runtime.decode import ForwardLoop, GreedyLoop
from painters.runtime.tokens import positions_from_mask

__all__ = ["RemoteCodeRunner", "is_remote_code"]


def is_remote_code(path: str | Path) -> bool:
    """A checkpoint directory whose ``config.json`` names its own classes in ``auto_map``."""
    config = Path(path) / "config.json"
    try:
        return Path(path).is_dir() and "auto_map" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


class RemoteCodeRunner(Runner):
    """transformers with ``trust_remote_code=True`` on a deployed directory (backend name ``hf``)."""

    name = "hf"

    def __init__(self, path: str | Path, *, threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.path = Path(path)
        try:
            self.model = AutoModelForCausalLM.from_pretrained(self.path, trust_remote_code=True).eval()
        except Exception as exc:  # remote code raises whatever its author raises
            raise BenchError(f"{self.path}: transformers could not load it ({type(exc).__name__}: {exc})") from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        except Exception:
            self.tokenizer = None
        config = json.loads((self.path / "config.json").read_text())
        record = config.get("painters") or {}
        self.plan = None
        if "plan" in record:

            self.plan = Plan.from_json(record["plan"])
        self.info = ModelInfo(0, 0, 0, int(config["vocab_size"]), "float32",
                              self.plan.name if self.plan else "baseline", record.get("source_hash", ""),
                              config.get("eos_token_id"))

    def forward(self, input_ids, attention_mask, position_ids, past: KV | None = None):
        """Recompute the whole sequence (cached ids + new), return the new positions' logits; the cache is the ids."""
        import torch

        ids = np.asarray(input_ids, dtype=np.int64)
        full = ids if not past else np.concatenate([past[0][0], ids], axis=1)
        mask = np.asarray(attention_mask, dtype=np.int64)
        pos = positions_from_mask(mask, full.shape[1])
        with torch.no_grad():
            logits = self.model(input_ids=torch.as_tensor(full), attention_mask=torch.as_tensor(mask),
                                position_ids=torch.as_tensor(pos)).logits
        return logits[:, -ids.shape[1]:].float().numpy(), [(full, None)]

    def empty_kv(self, batch: int) -> KV:
        """No token ids yet for each of ``batch`` rows."""
        return [(np.zeros((batch, 0), np.int64), None)]

    def repeat_kv(self, kv: KV, n: int) -> KV:
        """The row's token ids, ``n`` times."""
        return [(np.repeat(kv[0][0], n, axis=0), None)]

    def greedy_loop(self, input_ids, attention_mask, max_new_tokens: int, static: bool | None = None) -> GreedyLoop:
        """The portable loop over ``forward``, reporting no cache bytes (every step recomputes the sequence)."""
        return _NoCacheLoop(self, input_ids, attention_mask)


class _NoCacheLoop(ForwardLoop):
    def kv_bytes(self) -> int:
        return 0  # no cache: every step recomputes the sequence
