"""``painters deploy nemotron-nas``: sublayer drops on a Llama/Mistral source as NVIDIA's Nemotron-NAS checkpoint.

``architectures: ["DeciLMForCausalLM"]``, ``model_type: "nemotron-nas"`` and one ``block_configs`` entry per layer
are what vLLM (``model_executor/models/nemotron_nas.py``), SGLang, TensorRT-LLM and llama.cpp's converter
(``conversion/deci.py``) read; a dropped sublayer is written in both spellings those readers test
(attention ``no_op: true, n_heads_in_group: null, replace_with_linear: false``; FFN ``no_op: true,
ffn_mult: null``) and its weights (and its norm) are absent. Block-level parts of the plan renumber layers as
``deploy hf`` does. transformers has no class for it, so the configuration and a short modeling file travel with
the checkpoint through ``auto_map`` (:mod:`painters.targets.decilm`).
"""

from __future__ import annotations

import logging
import shutil
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

__all__ = ["deploy_nemotron_nas", "nemotron_config", "ffn_mult_for", "SOURCE_TYPES"]

log = logging.getLogger(__name__)

SOURCE_TYPES = ("llama", "mistral")
_CODE = Path(__file__).with_name("decilm")
_CODE_FILES = ("configuration_decilm.py", "modeling_decilm.py")


def ffn_mult_for(intermediate: int, hidden: int) -> float | None:
    """An ``ffn_mult`` whose NVIDIA rounding (``round_up(int(2·m·hidden/3), 256)``) gives ``intermediate``, or None.

    SmolLM2 (576 → 1536) is 4.0, Llama-2-7B (4096 → 11008) 4.03125; widths that are not multiples of 256 have none
    (the block then says ``intermediate_size``, which vLLM reads when ``ffn_mult`` is absent).
    """
    if intermediate % 256:
        return None
    mult = 1.5 * intermediate / hidden
    for candidate in (mult, round(mult * 32) / 32, round(mult * 1024) / 1024):
        width = int(2 * candidate * hidden / 3)
        if width + (-width) % 256 == intermediate:
            return float(candidate)
    return None


def _check_source(config: dict, steps: list[LayerStep], plan: Plan) -> None:
    model_type = config.get("model_type")
    if model_type not in SOURCE_TYPES:
        raise DeployError(f"Nemotron-NAS carries Llama-architecture models ({', '.join(SOURCE_TYPES)}), not "
                          f"{model_type!r}; deploy {plan.name!r} with `painters deploy vllm`"
                          + ("" if not all(s.attn and s.mlp for s in steps) else " or `painters deploy hf`"))
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise DeployError(f"{key}=true: Nemotron-NAS layers have no biases; deploy with `painters deploy vllm`")
    if model_type == "mistral" and config.get("sliding_window") is not None:
        raise DeployError(f"sliding_window={config['sliding_window']}: Nemotron-NAS layers attend without a "
                          "window; deploy with `painters deploy vllm` (or hf for block-level plans)")
    if not steps[0].attn:
        raise DeployError(f"plan {plan.name!r} leaves layer 0 without attention; vLLM takes the KV head count and "
                          "llama.cpp the head size from the first layer; keep layer 0's attention or deploy with "
                          "`painters deploy vllm`")


def nemotron_config(config: dict, steps: list[LayerStep]) -> dict:
    """The Nemotron-NAS ``config.json`` for ``steps`` on a Llama/Mistral ``config``."""
    heads, hidden = int(config["num_attention_heads"]), int(config["hidden_size"])
    kv = int(config.get("num_key_value_heads") or heads)
    intermediate = int(config["intermediate_size"])
    mult = ffn_mult_for(intermediate, hidden)
    blocks = []
    for s in steps:
        attention = ({"no_op": False, "n_heads_in_group": heads // kv, "replace_with_linear": False} if s.attn
                     else {"no_op": True, "n_heads_in_group": None, "replace_with_linear": False})
        if not s.mlp:
            ffn = {"no_op": True, "ffn_mult": None, "replace_with_linear": False}
        elif mult is not None:
            ffn = {"no_op": False, "ffn_mult": mult, "replace_with_linear": False}
        else:
            ffn = {"no_op": False, "intermediate_size": intermediate, "replace_with_linear": False}
        blocks.append({"attention": attention, "ffn": ffn})
    drop = ("layer_types", "sliding_window", "use_sliding_window", "max_window_layers", "auto_map")
    new = {k: v for k, v in config.items() if k not in drop}
    new.update(architectures=["DeciLMForCausalLM"], model_type="nemotron-nas", num_hidden_layers=len(steps),
               block_configs=blocks,
               auto_map={"AutoConfig": "configuration_decilm.DeciLMConfig",
                         "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM"})
    return new


def _keep(rest: str, step: LayerStep) -> bool:
    """Dropped sublayers leave out their weights and their norm."""
    if rest.startswith(("self_attn.", "input_layernorm.")):
        return step.attn
    if rest.startswith(("mlp.", "post_attention_layernorm.")):
        return step.mlp
    return True


def deploy_nemotron_nas(source: str | Path, plan: str | Plan, out: str | Path, *, scores: str | None = None) -> Path:
    """Write ``plan`` on the Llama/Mistral SRC as a Nemotron-NAS checkpoint directory ``out``; returns ``out``."""
    out = Path(out)
    check_output(out, source)
    with open_source(source) as src:
        parsed = resolve_plan(plan, src.num_layers, src.source_hash, scores)
        steps = layer_steps(parsed, "nemotron-nas")
        _check_source(src.config, steps, parsed)
        config = nemotron_config(src.config, steps)
        config[PROVENANCE_KEY] = provenance(parsed, "nemotron-nas", src.source_hash)
        with output_dir(out) as target:
            size = write_layers(src, steps, target, keep=_keep)
            write_config(config, target)
            copy_tokenizer(src, target)
            for name in _CODE_FILES:
                shutil.copyfile(_CODE / name, target / name)
    log.info("deploy nemotron-nas: %d layers, %.1f MiB", len(steps), size / 2**20)
    return out
