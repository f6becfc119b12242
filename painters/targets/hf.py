"""``painters deploy hf``: a block-level plan as a plain checkpoint of the same architecture, layers renumbered.

Every engine that loads the source model (transformers, vLLM, SGLang, TensorRT-LLM, llama.cpp's converter) loads
the result unchanged, with tensor parallelism. What a layer *is* beyond its weights lives in per-layer config
fields, which follow the layers: Gemma's and Qwen's ``layer_types`` (a sliding-window layer keeps its window and
rotary base wherever it moves) and Qwen's ``max_window_layers`` (which can only say "the first k layers are full").
"""

from __future__ import annotations

import logging
from pathlib import Path

from painters.plans import Plan
from painters.targets.checkpoint import copy_tokenizer, write_config, write_layers
from painters.targets.common import (
    PROVENANCE_KEY,
    DeployError,
    LayerStep,
    check_output,
    layer_steps,
    open_source,
    output_dir,
    provenance,
    resolve_plan,
)

__all__ = ["deploy_hf", "hf_config", "PER_LAYER_FIELDS"]

log = logging.getLogger(__name__)

PER_LAYER_FIELDS = ("layer_types",)  # lists with one entry per layer that move with their layer
NEMOTRON_TYPES = ("llama", "mistral")


def hf_config(config: dict, steps: list[LayerStep]) -> dict:
    """``config`` for the renumbered layers; raises :class:`DeployError` for a per-layer field it cannot keep."""
    n_src = int(config["num_hidden_layers"])
    new = dict(config, num_hidden_layers=len(steps))
    for key, value in config.items():
        if isinstance(value, list) and len(value) == n_src and key not in PER_LAYER_FIELDS and n_src > 1 \
                and key != "architectures":
            raise DeployError(f"config field {key!r} has one entry per layer and painters does not know how it "
                              f"moves with a layer; deploy with `painters deploy vllm`, or report the field")
    for key in PER_LAYER_FIELDS:
        if isinstance(config.get(key), list):
            new[key] = [config[key][s.source] for s in steps]
    if config.get("model_type") in ("qwen2", "qwen3", "qwen2_moe") and config.get("use_sliding_window"):
        kinds = new.get("layer_types") or []
        full = 0
        while full < len(kinds) and kinds[full] == "full_attention":
            full += 1
        if any(k == "full_attention" for k in kinds[full:]):
            raise DeployError("the plan puts a full-attention layer after a sliding-window one, which Qwen's "
                              "max_window_layers (the first k layers are full) cannot express; deploy with "
                              "`painters deploy vllm`")
        new["max_window_layers"] = full
    return new


def deploy_hf(source: str | Path, plan: str | Plan, out: str | Path, *, scores: str | None = None) -> Path:
    """Write ``plan`` on SRC as a checkpoint directory ``out`` of SRC's architecture; returns ``out``.

    Sublayer drops are refused (a plain checkpoint has every sublayer in every layer): Llama/Mistral sources
    deploy them with ``painters deploy nemotron-nas``, others with ``painters deploy vllm``.
    """
    out = Path(out)
    check_output(out, source)
    with open_source(source) as src:
        parsed = resolve_plan(plan, src.num_layers, src.source_hash, scores)
        steps = layer_steps(parsed, "hf")
        if not all(s.attn and s.mlp for s in steps):
            model_type = src.config.get("model_type")
            where = ("`painters deploy nemotron-nas` (or gguf)" if model_type in NEMOTRON_TYPES
                     else f"`painters deploy vllm` (Nemotron-NAS carries only Llama/Mistral, not {model_type!r})")
            raise DeployError(f"plan {parsed.name!r} drops sublayers, which a plain {model_type} checkpoint cannot "
                              f"express; deploy it with {where}")
        config = hf_config(src.config, steps)
        config[PROVENANCE_KEY] = provenance(parsed, "hf", src.source_hash)
        with output_dir(out) as target:
            size = write_layers(src, steps, target)
            write_config(config, target)
            copy_tokenizer(src, target)
    log.info("deploy hf: %s layers, %.1f MiB", len(steps), size / 2**20)
    return out
