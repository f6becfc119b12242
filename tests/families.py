"""Tiny random checkpoints of every supported decoder family, and their exports shared by every test file.

Each family is saved with ``save_pretrained`` and exported through :func:`export_onnx` (the CLI's path: model_type
guard, weight check, export self-check). An export takes 15-40 s on a shared core, and the export, engine and
bench tests all want the same graphs, so :func:`FamilyExports` exports each family once per test run: under
``pytest -n 2 --dist loadfile`` the files land on different workers, so the exports live in the run's shared
base temp directory behind a file lock (pytest-xdist's recipe for session fixtures executed once).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["COMMON", "FAMILIES", "CORE", "PROMPTS", "tiny_checkpoint", "family_params", "FamilyExport",
           "FamilyExports"]

COMMON = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.2, tie_word_embeddings=False,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)

# name → (model_type, config overrides). Windows of 4 are shorter than every prompt below.
FAMILIES = {
    "mistral-window4": ("mistral", dict(sliding_window=4)),
    "qwen2-window4": ("qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=2)),
    "qwen3": ("qwen3", dict(head_dim=8)),
    "granite": ("granite", dict(embedding_multiplier=3.0, residual_multiplier=0.5, attention_multiplier=0.4,
                                logits_scaling=2.0)),
    "olmo": ("olmo", dict(clip_qkv=0.5)),
    "phi3": ("phi3", dict(partial_rotary_factor=0.5)),
    "stablelm": ("stablelm", dict(use_parallel_residual=True, qk_layernorm=True, partial_rotary_factor=0.5)),
    "gpt_neox": ("gpt_neox", dict(num_key_value_heads=None, rotary_pct=0.25, use_parallel_residual=True)),
    "gemma": ("gemma", dict(head_dim=8)),
    "gemma2": ("gemma2", dict(head_dim=8, sliding_window=4, final_logit_softcapping=3.0, attn_logit_softcapping=2.0)),
    "gemma3": ("gemma3_text", dict(head_dim=8, sliding_window=4, final_logit_softcapping=3.0,
                                   layer_types=["sliding_attention", "full_attention"] * 2)),
}

# Exported in every run: the sliding window (Mistral), the multipliers and a scaled embedding (Granite), and
# interleaved local/global layers with their own rotary bases, post-norms and soft-capping (Gemma 3). The other
# families export in about half a minute each and carry the ``slow`` mark (the hooked oracle in
# tests/runtime/test_families_oracle.py covers every family's block plans without an export).
CORE = ("mistral-window4", "granite", "gemma3")

PROMPTS = [[1, 17, 99, 3, 45, 8, 100, 7, 9, 12], [1, 5, 6, 77, 23, 4]]


def tiny_checkpoint(name: str, root: Path) -> Path:
    """Save family ``name``'s tiny random model (seed 0) under ``root / name``; returns that directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, overrides = FAMILIES[name]
    kwargs = {k: v for k, v in {**COMMON, **overrides}.items() if v is not None}  # None: a field it lacks
    config = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    path = root / name
    model.save_pretrained(path)
    return path


def family_params(names=None) -> list:
    """``names`` (default: every family) as pytest params, the non-core ones marked ``slow``."""
    return [n if n in CORE else pytest.param(n, marks=pytest.mark.slow) for n in (names or FAMILIES)]


@dataclass
class FamilyExport:
    name: str
    checkpoint: Path
    onnx: Path

    def load(self):
        """The checkpoint as a LoadedModel (the Hugging Face model the export came from)."""
        from painters.export.sources import load_source

        return load_source(self.checkpoint)


class FamilyExports:
    """Family name → :class:`FamilyExport`, exported at most once per test run (all xdist workers together)."""

    def __init__(self, root: Path):
        self.root = root
        self._loaded: dict[str, object] = {}

    def __call__(self, name: str) -> FamilyExport:
        from filelock import FileLock

        from painters.export.onnx_export import export_onnx

        base = self.root / name
        base.mkdir(parents=True, exist_ok=True)
        done = base / "exported"  # written last: a crashed export is redone, never half-reused
        with FileLock(str(base) + ".lock"):
            if not done.is_file():
                ckpt = tiny_checkpoint(name, base)
                export_onnx(ckpt, base / "onnx" / "model.onnx")
                done.write_text("ok\n")
        return FamilyExport(name, base / name, base / "onnx" / "model.onnx")

    def loaded(self, name: str):
        """(FamilyExport, LoadedModel) with the model loaded once per worker."""
        export = self(name)
        if name not in self._loaded:
            self._loaded[name] = export.load()
        return export, self._loaded[name]
