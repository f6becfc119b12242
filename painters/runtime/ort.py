"""ONNX Runtime backend: CPU EP, or the CUDA EP with IO binding when onnxruntime-gpu is installed."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from painters.errors import PaintersError
from painters.runtime.base import KV, ModelInfo, Runner

__all__ = ["OrtRunner", "load_tokenizer"]

log = logging.getLogger(__name__)

_PAST = re.compile(r"past_key_values\.(\d+)\.key\Z")
_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def load_tokenizer(model_dir: Path):
    """The tokenizer saved beside an exported model, or None (bench then needs token ids)."""
    if not (model_dir / "tokenizer_config.json").is_file() and not (model_dir / "tokenizer.json").is_file():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


class OrtRunner(Runner):
    """An exported or compiled graph in an ``onnxruntime.InferenceSession``."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        path = Path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = providers or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            raise PaintersError(f"{path}: onnxruntime cannot load the graph ({exc})") from exc
        self.path = path
        inputs = {i.name: i for i in self.session.get_inputs()}
        slots = sorted(int(m[1]) for n in inputs if (m := _PAST.match(n)))
        meta = self.session.get_modelmeta().custom_metadata_map
        logits = self.session.get_outputs()[0]
        first = inputs.get("past_key_values.0.key")
        kv_type = first.type if first is not None else "tensor(float)"
        kv_heads, head_dim = (first.shape[1], first.shape[3]) if first is not None else (0, 0)
        self._np_dtype = _NP.get(kv_type, np.float32)
        self.info = ModelInfo(len(slots), kv_heads, head_dim, int(logits.shape[-1]), np.dtype(self._np_dtype).name,
                              meta.get("painters.plan", "baseline"), meta.get("painters.source_hash", ""))
        self.tokenizer = load_tokenizer(path.parent)
        if self.tokenizer is not None:
            self.info.eos_token_id = self.tokenizer.eos_token_id
        self._outputs = [o.name for o in self.session.get_outputs()]
        # heads per slot: a fused parallel group's slot holds k × kv_heads heads
        self._slot_heads = [int(inputs[f"past_key_values.{s}.key"].shape[1]) for s in slots]

    def forward(self, input_ids, attention_mask, position_ids, past: KV | None = None):
        feed = {"input_ids": np.asarray(input_ids, np.int64), "attention_mask": np.asarray(attention_mask, np.int64),
                "position_ids": np.asarray(position_ids, np.int64)}
        past = past if past is not None else self.empty_kv(feed["input_ids"].shape[0])
        for slot, (k, v) in enumerate(past):
            feed[f"past_key_values.{slot}.key"] = k
            feed[f"past_key_values.{slot}.value"] = v
        outs = self.session.run(self._outputs, feed)
        present = [(outs[1 + 2 * s], outs[2 + 2 * s]) for s in range(self.info.num_slots)]
        return outs[0].astype(np.float32, copy=False), present

    def empty_kv(self, batch: int) -> KV:
        kv = []
        for heads in self._slot_heads:
            empty = np.zeros((batch, heads, 0, self.info.head_dim), dtype=self._np_dtype)
            kv.append((empty, empty))
        return kv

    def repeat_kv(self, kv: KV, n: int) -> KV:
        return [(np.repeat(k, n, axis=0), np.repeat(v, n, axis=0)) for k, v in kv]
