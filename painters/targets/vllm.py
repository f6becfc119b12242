"""`painters deploy vllm`: a checkpoint directory that vLLM serves with the painters plugin running its plan.

The directory is the source's Hugging Face checkpoint with one change: ``config.json`` names the plugin's
architecture (:data:`ARCHITECTURE`) and carries the plan as data under ``"painters"`` (the lead's convention:
plan, target, source hash, version). The weights are the source's, stored once: a checkpoint directory's
safetensors are hard-linked (copied only across file systems), never loaded, so a repeated block costs nothing
on disk; a GGUF or built-in source is de-quantized once into plain safetensors (as ONNX Runtime GenAI's builder
input is, :func:`painters.export.genai_export.save_hf_dir`). The plugin
(:mod:`painters.integrations.vllm`) reads the plan back with :mod:`painters.plans` alone.

What vLLM cannot run exactly is refused here, by name, before anything is written: a family other than Llama
and Mistral (Qwen2's q/k/v-only biases are not in vLLM's Llama layers), a sliding window, and ``:kvmean`` (each
member attends over the shared cache *plus its own* new keys while the cache stores their mean: vLLM's
attention writes a key once and reads what it wrote).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from painters import __version__
from painters.errors import ExportError
from painters.fileio import atomic_dir_outputs, file_hash
from painters.integrations.vllm import ARCHITECTURE  # registered by its register()
from painters.plans import Plan, load_scores, parse_plan

__all__ = ["deploy_vllm", "ARCHITECTURE", "FAMILIES", "check_vllm_plan", "painters_config"]

log = logging.getLogger(__name__)

FAMILIES = ("llama", "mistral")
TARGET = "vllm"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                    "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json")


def check_vllm_plan(plan: Plan) -> Plan:
    """``plan`` if the plugin runs it exactly; a one-line :class:`ExportError` naming what it cannot run."""
    if plan.kv == "mean" and any(stage.shared_kv for stage in plan.stages()):
        raise ExportError(f"plan {plan.name!r} uses :kvmean, which vLLM cannot run exactly (each member attends over "
                          "the shared cache plus its own new keys, while the cache keeps their mean); deploy it "
                          "without :kvmean (per-member caches)")
    return plan


def _check_family(config: dict, where: object) -> None:
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise ExportError(f"{where}: model_type {model_type!r} has no vLLM plugin model; painters deploys "
                          f"{', '.join(FAMILIES)} to vLLM (use `painters deploy hf` or an ONNX export for others)")
    if config.get("sliding_window") is not None:
        raise ExportError(f"{where}: sliding_window={config['sliding_window']} is not run by the painters vLLM "
                          "plugin; deploy a checkpoint without a sliding window")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise ExportError(f"{where}: {key}=true is not run by the painters vLLM plugin")


def painters_config(config: dict, plan: Plan, source_hash: str) -> dict:
    """``config`` with the plugin's architecture and the ``"painters"`` provenance key."""
    out = dict(config)
    out["architectures"] = [ARCHITECTURE]
    out.pop("quantization_config", None)
    out["painters"] = {"plan": plan.to_json(), "target": TARGET, "source_hash": source_hash,
                       "version": __version__}
    return out


def _link(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (the weights stored once); copy where the file systems differ."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _from_checkpoint(src: Path, scores: str | None, tmp: Path, plan_text: str) -> None:
    config = json.loads((src / "config.json").read_text())
    _check_family(config, src / "config.json")
    weights = sorted(src.glob("*.safetensors"))
    if not weights:
        raise ExportError(f"{src}: no *.safetensors beside config.json; vLLM's plugin reads safetensors weights "
                          "(convert .bin checkpoints with transformers' save_pretrained)")
    earlier = config.get("painters")  # a painters deployment keeps the hash of the source it was made from
    if isinstance(earlier, dict) and earlier.get("source_hash"):
        source_hash = str(earlier["source_hash"])
    else:
        digest = hashlib.sha256()
        for w in weights:
            digest.update(file_hash(w).encode())
        source_hash = digest.hexdigest()
    plan = check_vllm_plan(_parse(plan_text, int(config["num_hidden_layers"]), scores, source_hash))
    for w in [*weights, *src.glob("*.safetensors.index.json")]:
        _link(w, tmp / w.name)
    for name in _TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    (tmp / "config.json").write_text(json.dumps(painters_config(config, plan, source_hash), indent=2))


def _from_loaded(source: str, scores: str | None, tmp: Path, plan_text: str) -> None:
    """A GGUF or built-in source: loaded once and written as plain safetensors (GGUF weights are quantized)."""
    from painters.export.genai_export import save_hf_dir
    from painters.export.sources import load_source

    loaded = load_source(source, dtype="fp32")
    config = loaded.config.to_dict()
    _check_family(config, source)
    plan = check_vllm_plan(_parse(plan_text, loaded.num_layers, scores, loaded.hash))
    if loaded.tokenizer is not None:
        save_hf_dir(loaded, tmp)
    else:
        loaded.model.save_pretrained(tmp)
    config = json.loads((tmp / "config.json").read_text())
    (tmp / "config.json").write_text(json.dumps(painters_config(config, plan, loaded.hash), indent=2))


def _parse(plan_text: str, layers: int, scores: str | None, source_hash: str) -> Plan:
    table = load_scores(scores, model_hash=source_hash) if scores else None
    return parse_plan(plan_text, layers, scores=table)


def deploy_vllm(source: str | os.PathLike, plan: str, out: str | os.PathLike, *, scores: str | None = None) -> Path:
    """Write a vLLM checkpoint directory ``out`` running ``plan`` on ``source``; returns ``out``.

    Args:
        source: a Hugging Face checkpoint directory (safetensors), a ``.gguf``, or a built-in name.
        plan: a plan name or plan file (see ``painters plans list``).
        out: the directory to write (replaced as a whole by rename; never the source itself).
        scores: importance scores for ``drop_*_kN`` plans.
    """
    out = Path(out)
    src = Path(str(source))
    if src.is_dir():
        if not (src / "config.json").is_file():
            raise ExportError(f"{src}: no config.json; give a Hugging Face checkpoint directory, a .gguf or a "
                              "built-in name")
        if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
            raise ExportError(f"-o {out} is inside the source {src}; write the deployment to another directory")
    with atomic_dir_outputs(out) as tmp:
        target = tmp / out.name
        target.mkdir()
        if src.is_dir():
            _from_checkpoint(src, scores, target, plan)
        else:
            _from_loaded(str(source), scores, target, plan)
    log.info("vLLM checkpoint %s written", out)
    return out
