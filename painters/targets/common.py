"""What every deploy target shares: a plan as a list of layers, the source's tensors, provenance, safe output.

A deploy target writes a checkpoint an unmodified engine loads. Engines run layers in index order, so a plan is
carried by *renumbering* layers: :func:`layer_steps` turns a plan into one :class:`LayerStep` per output layer and
refuses, in one line naming the target that can, what no renumbering expresses (parallel groups, ``:kvmean``).
Weights stream tensor by tensor (:class:`TensorSource`), so peak memory stays near one layer, not the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from painters import __version__
from painters.errors import PaintersError
from painters.fileio import atomic_dir_outputs, file_hash
from painters.plans import Plan, load_scores, parse_plan

__all__ = ["DeployError", "LayerStep", "layer_steps", "provenance", "TensorSource", "open_source", "layer_key",
           "output_dir", "check_output", "resolve_plan", "PROVENANCE_KEY"]

PROVENANCE_KEY = "painters"
_LAYER_RE = re.compile(r"\A(?P<prefix>(?:.*\.)?layers\.)(?P<index>\d+)\.(?P<rest>.+)\Z")


class DeployError(PaintersError):
    """A plan or source a deploy target cannot carry; the message names the target that can."""


@dataclass(frozen=True)
class LayerStep:
    """One layer of the deployed model: which source block it copies and which sublayers it keeps."""

    source: int
    attn: bool = True
    mlp: bool = True


def layer_steps(plan: Plan, target: str) -> list[LayerStep]:
    """The deployed layers of ``plan`` in execution order (loops of one block unrolled into copies).

    Raises :class:`DeployError` for what a renumbered checkpoint cannot express: a parallel group (its members
    read one input and are averaged) and shared ``:kvmean`` slots need the vLLM plugin.
    """
    if plan.kv == "mean":
        raise DeployError(f"plan {plan.name!r} shares averaged KV slots (:kvmean), which no {target} checkpoint "
                          "can express; deploy it with `painters deploy vllm` (the vLLM plugin runs any plan)")
    steps = []
    for stage in plan.stages():
        if len(stage.blocks) > 1:
            raise DeployError(f"plan {plan.name!r} has a parallel group {list(stage.blocks)}, which no {target} "
                              "checkpoint can express (engines run layers one after another); deploy it with "
                              "`painters deploy vllm` (the vLLM plugin runs parallel and looped groups)")
        steps.append(LayerStep(stage.blocks[0], stage.attn, stage.mlp))
    return steps


def provenance(plan: Plan, target: str, source_hash: str) -> dict:
    """The record every deployed artifact carries (config.json key ``painters``, or GGUF ``painters.*`` keys)."""
    return {"plan": plan.to_json(), "target": target, "source_hash": source_hash, "version": __version__}


def layer_key(name: str) -> tuple[str, int, str] | None:
    """``model.layers.3.mlp.up_proj.weight`` → (``model.layers.``, 3, ``mlp.up_proj.weight``); None outside layers."""
    m = _LAYER_RE.match(name)
    return (m["prefix"], int(m["index"]), m["rest"]) if m else None


class TensorSource:
    """A Hugging Face model's tensors by name, read one at a time, and its ``config.json`` as a dict.

    A checkpoint directory is read lazily through safetensors' memory map (one tensor in memory at a time); any
    other SRC (a ``.gguf``, a built-in name) is loaded by :func:`painters.export.sources.load_source` (what
    transformers dequantizes a GGUF to), whose state dict is then read the same way.
    """

    def __init__(self, config: dict, names: list[str], getter, source_hash: str, tokenizer_dir: Path | None = None,
                 loaded: Any = None):
        self.config, self.names, self._get = config, names, getter
        self.source_hash, self.tokenizer_dir, self.loaded = source_hash, tokenizer_dir, loaded

    def get(self, name: str):
        """The tensor ``name`` (a torch tensor, contiguous)."""
        return self._get(name)

    @property
    def num_layers(self) -> int:
        """The number of decoder layers (``num_hidden_layers``)."""
        return int(self.config["num_hidden_layers"])


def _weight_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        if list(path.glob("*.bin")):
            raise DeployError(f"{path}: only PyTorch .bin weights; deploy reads safetensors (re-save the checkpoint "
                              "with `save_pretrained(..., safe_serialization=True)`)")
        raise DeployError(f"{path}: no *.safetensors weight files beside config.json")
    return files


@contextlib.contextmanager
def open_source(src: str | Path, dtype: str = "fp32") -> Iterator[TensorSource]:
    """SRC as a :class:`TensorSource` (see there); files stay open (memory-mapped) inside the ``with``."""
    path = Path(str(src))
    if path.is_dir():
        from safetensors import safe_open

        from painters.export.sources import read_config

        read_config(path)  # a one-line error for a bad config.json or an unsupported model_type
        config = json.loads((path / "config.json").read_text())
        files = _weight_files(path)
        digest = hashlib.sha256()
        for f in files:
            digest.update(file_hash(f).encode())
        where = {}
        for f in files:
            with safe_open(str(f), framework="pt") as h:
                where.update(dict.fromkeys(h.keys(), f))

        def get(name: str):
            # open per tensor: a handle kept open keeps every page read through its memory map in our RSS
            with safe_open(str(where[name]), framework="pt") as h:
                return h.get_tensor(name)

        yield TensorSource(config, list(where), get, digest.hexdigest(), tokenizer_dir=path)
        return
    from painters.export.sources import load_source

    loaded = load_source(src, dtype=dtype)
    state = loaded.model.state_dict()
    config = loaded.config.to_dict()
    if not config.get("architectures"):
        config["architectures"] = [type(loaded.model).__name__]
    names = [n for n in state if not (loaded.config.tie_word_embeddings and n == "lm_head.weight")]
    yield TensorSource(config, names, lambda name: state[name].contiguous(), loaded.hash, loaded=loaded)


def check_output(out: Path, src: str | Path) -> None:
    """Refuse an output that is the source or lies inside it, or an existing non-directory, before any work."""
    out, src_path = Path(out), Path(str(src))
    if src_path.exists():
        if out.resolve() == src_path.resolve() or out.resolve().is_relative_to(src_path.resolve()):
            raise DeployError(f"output {out} would overwrite the input {src}; choose another path with -o")
    if out.exists() and not out.is_dir():
        raise DeployError(f"output {out} exists and is not a directory; choose a new directory with -o")


@contextlib.contextmanager
def output_dir(out: Path) -> Iterator[Path]:
    """A fresh directory that appears as ``out`` (replacing an old one) only when the ``with`` body succeeds."""
    out = Path(out)
    with atomic_dir_outputs(out) as tmp:
        target = tmp / out.name
        target.mkdir()
        yield target


def resolve_plan(plan: str | Plan, num_layers: int, source_hash: str, scores: str | None = None) -> Plan:
    """Resolve ``plan`` (a name, a plan file or a :class:`Plan`) for SRC's layers.

    ``_kN`` plans read ``scores`` (checked against ``source_hash``: scores of another model would drop the wrong
    modules).
    """
    if isinstance(plan, Plan):
        if plan.num_layers != num_layers:
            raise DeployError(f"plan {plan.name!r} is for {plan.num_layers} blocks; the source has {num_layers}")
        return plan
    loaded = load_scores(scores, model_hash=source_hash) if scores else None
    return parse_plan(plan, num_layers, scores=loaded)
