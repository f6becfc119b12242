"""Write a Hugging Face checkpoint directory in small shards: the streaming half of the hf and nemotron-nas targets.

safetensors writes a whole file from tensors in memory, so a checkpoint is written as shards of at most
:data:`SHARD_BYTES` (a larger single tensor gets its own) with the ``model.safetensors.index.json`` every loader
reads: peak memory is one shard, not the model. A layer that occurs twice in a plan is written twice (safetensors
has no aliasing).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from painters.targets.common import LayerStep, TensorSource, layer_key

__all__ = ["write_layers", "copy_tokenizer", "write_config", "TOKENIZER_FILES", "SHARD_BYTES"]

SHARD_BYTES = 256 << 20

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "generation_config.json", "chat_template.jinja")

# (source tensor name) → keep it in this output layer?  Sublayer drops leave out their weights.
Keep = Callable[[str, LayerStep], bool]


def write_layers(source: TensorSource, steps: list[LayerStep], out: Path, keep: Keep | None = None) -> int:
    """Write every tensor of ``source`` with layers renumbered by ``steps``; returns the bytes written."""
    from safetensors.torch import save_file

    by_layer: dict[int, list[tuple[str, str]]] = {}
    outside: list[str] = []
    for name in source.names:
        parsed = layer_key(name)
        if parsed is None:
            outside.append(name)
        else:
            by_layer.setdefault(parsed[1], []).append((parsed[0], parsed[2]))
    weight_map: dict[str, str] = {}
    pending: dict = {}
    total = 0

    def flush() -> None:
        nonlocal total, pending
        if pending:
            file = f"model-{len(set(weight_map.values())) + 1:05d}.safetensors"
            save_file(pending, str(out / file), metadata={"format": "pt"})
            total += sum(t.numel() * t.element_size() for t in pending.values())
            weight_map.update(dict.fromkeys(pending, file))
            pending = {}

    def add(name: str, tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if pending and sum(t.numel() * t.element_size() for t in pending.values()) + size > SHARD_BYTES:
            flush()
        pending[name] = tensor

    for name in outside:
        add(name, source.get(name))
    for i, step in enumerate(steps):
        for prefix, rest in by_layer.get(step.source, []):
            if keep is None or keep(rest, step):
                add(f"{prefix}{i}.{rest}", source.get(f"{prefix}{step.source}.{rest}"))
    flush()
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    return total


def copy_tokenizer(source: TensorSource, out: Path) -> None:
    """The source's tokenizer and generation config beside the weights (engines load them from the same folder)."""
    if source.tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (source.tokenizer_dir / name).is_file():
                shutil.copyfile(source.tokenizer_dir / name, out / name)
    elif source.loaded is not None and source.loaded.tokenizer is not None:
        source.loaded.tokenizer.save_pretrained(out)


def write_config(config: dict, out: Path) -> None:
    """Write ``config`` as ``out/config.json`` (indented, keys sorted)."""
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
