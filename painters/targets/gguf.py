"""``painters deploy gguf``: a plan as a GGUF llama.cpp runs; from a GGUF source, the quantized bytes are kept.

Block-level plans keep the source's architecture with ``blk.N`` renumbered. Sublayer drops use llama.cpp's ``deci``
architecture (Nemotron-NAS), whose per-layer ``head_count``, ``head_count_kv`` and ``feed_forward_length`` arrays
say 0 where a layer has no attention or no FFN (``src/models/deci.cpp``); the dropped tensors are left out.
From a GGUF source every kept tensor is copied byte for byte (no re-quantization: the plan costs nothing in
accuracy beyond itself). A Hugging Face source goes through llama.cpp's own converter
(:mod:`painters.targets.llamacpp_convert`) after ``deploy hf`` / ``deploy nemotron-nas``.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from painters.errors import ExportError
from painters.fileio import atomic_dir_outputs, file_hash
from painters.plans import Plan
from painters.targets.common import (
    DeployError,
    LayerStep,
    check_output,
    layer_steps,
    open_source,
    provenance,
    resolve_plan,
)
from painters.targets.gguf_io import TensorCopy, field_value, write_gguf

__all__ = ["deploy_gguf", "gguf_from_gguf", "ffn_stubs", "ATTN_TENSORS", "FFN_TENSORS", "FFN_STUB"]

log = logging.getLogger(__name__)

_BLK = re.compile(r"\Ablk\.(\d+)\.(.+)\Z")
ATTN_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_qkv")
FFN_TENSORS = ("ffn_norm", "ffn_gate", "ffn_up", "ffn_down")
DECI_SOURCES = ("llama",)
# llama.cpp 0.3.36's deci graph (src/models/deci.cpp) ends an FFN-free layer with `continue` before the attention's
# residual Add, so a layer with attention and feed_forward_length 0 computes as if the whole block were dropped
# (measured: equal to drop_block's logits). Such a layer gets an FFN of this width whose weights are zero instead:
# its output is exactly 0, and the attention's residual survives.
FFN_STUB = 32  # GGUF architectures whose layers deci.cpp computes (Llama layout, RMSNorm, SwiGLU)


def _source_gguf(source: str | Path) -> Path | None:
    """SRC as a GGUF path (a ``.gguf`` or the built-in ``smollm2-135m``), or None for a Hugging Face source."""
    if str(source) == "smollm2-135m":
        from painters.export.sources import smollm2_path

        return smollm2_path()
    path = Path(str(source))
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ExportError(f"GGUF {path} not found")
        return path
    return None


def deploy_gguf(source: str | Path, plan: str | Plan, out: str | Path, *, scores: str | None = None) -> Path:
    """Write ``plan`` on SRC as the GGUF file ``out`` (see the module docstring); returns ``out``."""
    out = Path(out)
    if out.suffix != ".gguf":
        raise DeployError(f"output {out} must end in .gguf (llama.cpp loads files, not directories)")
    check_output(out, source)
    if out.is_dir():
        raise DeployError(f"output {out} is a directory; give a file path such as {out / 'model.gguf'}")
    gguf_path = _source_gguf(source)
    if gguf_path is None:
        return _gguf_from_checkpoint(source, plan, out, scores)
    gguf_from_gguf(gguf_path, plan, out, scores=scores)
    return out


def _gguf_from_checkpoint(source: str | Path, plan: str | Plan, out: Path, scores: str | None) -> Path:
    """A Hugging Face SRC: llama.cpp's converter on the hf / nemotron-nas deploy, then painters' keys added."""
    from painters.targets.llamacpp_convert import converted_checkpoint

    with open_source(source) as src:
        parsed = resolve_plan(plan, src.num_layers, src.source_hash, scores)
        source_hash = src.source_hash
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.is_dir() else None) as tmp:
        converted = converted_checkpoint(source, parsed, Path(tmp))
        return gguf_from_gguf(converted, None, out, source_hash=source_hash, recorded=parsed)


def _fields(reader: Any) -> dict[str, Any]:
    return {key: field_value(f) for key, f in reader.fields.items() if not key.startswith("GGUF.")}


def gguf_from_gguf(path: Path, plan: str | Plan | None, out: Path, *, scores: str | None = None,
                   target: str = "gguf", source_hash: str | None = None, recorded: Plan | None = None) -> Path:
    """GGUF → GGUF: layers renumbered by ``plan``, sublayer drops as ``deci``; every kept tensor's bytes copied.

    ``plan=None`` copies the file as it is and records ``recorded`` (the plan a converter already applied).
    """
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # gguf-py raises assorted types on truncated or foreign files
        raise ExportError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    values = _fields(reader)
    arch = values.get("general.architecture")
    n = int(values.get(f"{arch}.block_count", 0))
    source_hash = source_hash or file_hash(path)
    if plan is None:
        record = provenance(recorded, target, source_hash)
        extra = _painters_keys(record, target, source_hash)
        tensors = [TensorCopy(t.name, t) for t in reader.tensors]
        if arch == "deci":
            extra.update(_stub_keys(values, arch, tensors))
        with atomic_dir_outputs(out) as tmp:
            write_gguf(reader, tmp / out.name, arch, tensors, lambda key, field: (key, field), extra)
        return out
    parsed = resolve_plan(plan, n, source_hash, scores)
    steps = layer_steps(parsed, "gguf")
    sublayer = not all(s.attn and s.mlp for s in steps)
    for key, value in values.items():
        if key.startswith(f"{arch}.") and isinstance(value, list) and len(value) == n and n > 1:
            raise DeployError(f"{path}: metadata {key!r} has one entry per layer, which painters does not move "
                              "with its layer; deploy with `painters deploy vllm`")
    new_arch = arch
    if sublayer:
        if arch not in DECI_SOURCES:
            raise DeployError(f"plan {parsed.name!r} drops sublayers; llama.cpp's deci architecture expresses that "
                              f"for {', '.join(DECI_SOURCES)} GGUFs, not {arch!r}; deploy it with "
                              "`painters deploy vllm`")
        if not steps[0].attn:
            raise DeployError(f"plan {parsed.name!r} leaves layer 0 without attention; llama.cpp (and vLLM) read the "
                              "head size from layer 0; keep layer 0's attention or deploy with `painters deploy vllm`")
        new_arch = "deci"
    extra = _layer_keys(values, arch, new_arch, steps) if sublayer else {}
    extra[f"{new_arch}.block_count"] = (len(steps), gguf.GGUFValueType.UINT32, None)
    extra.update(_painters_keys(provenance(parsed, target, source_hash), target, source_hash))

    def metadata(key: str, field: Any):
        if key.startswith(f"{arch}."):
            return f"{new_arch}.{key[len(arch) + 1:]}", field
        return key, field

    tensors = _tensor_plan(reader, steps)
    if sublayer:
        renamed = {f"{new_arch}.{k[len(arch) + 1:]}" if k.startswith(f"{arch}.") else k: v for k, v in values.items()}
        merged = {**renamed, **{k: v[0] for k, v in extra.items()}}
        extra.update(_stub_keys(merged, new_arch, tensors))
    with atomic_dir_outputs(out) as tmp:
        write_gguf(reader, tmp / out.name, new_arch, tensors, metadata, extra)
    log.info("deploy gguf: %s (%s), %d layers, %d tensors copied", out, new_arch, len(steps), len(tensors))
    return out


def ffn_stubs(heads: list[int], ff: list[int], n_embd: int) -> tuple[list[int], list[TensorCopy]]:
    """Zero FFNs of width :data:`FFN_STUB` for layers with attention and no FFN (see there); new lengths, tensors."""
    lengths, stubs = list(ff), []
    for i, (h, f) in enumerate(zip(heads, ff)):
        if h and not f:
            lengths[i] = FFN_STUB
            stubs += [TensorCopy(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32)),
                      TensorCopy(f"blk.{i}.ffn_gate.weight", np.zeros((FFN_STUB, n_embd), np.float32)),
                      TensorCopy(f"blk.{i}.ffn_up.weight", np.zeros((FFN_STUB, n_embd), np.float32)),
                      TensorCopy(f"blk.{i}.ffn_down.weight", np.zeros((n_embd, FFN_STUB), np.float32))]
    return lengths, stubs


def _stub_keys(values: dict, arch: str, tensors: list[TensorCopy]) -> dict:
    """Add the zero FFNs to ``tensors``; return the ``feed_forward_length`` key that counts them."""
    import gguf

    n = int(values[f"{arch}.block_count"])
    heads, ff = values[f"{arch}.attention.head_count"], values[f"{arch}.feed_forward_length"]
    heads = heads if isinstance(heads, list) else [heads] * n
    ff = ff if isinstance(ff, list) else [ff] * n
    lengths, stubs = ffn_stubs([int(h) for h in heads], [int(f) for f in ff], int(values[f"{arch}.embedding_length"]))
    tensors += stubs
    if not stubs:
        return {}
    return {f"{arch}.feed_forward_length": (lengths, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT32)}


def _painters_keys(record: dict, target: str, source_hash: str) -> dict:
    """The provenance record as GGUF string keys.

    The keys are ``painters.plan`` (JSON text), ``.target``, ``.source_hash``, ``.version``.
    """
    import gguf

    values = (("plan", json.dumps(record["plan"], separators=(",", ":"))), ("target", target),
              ("source_hash", source_hash), ("version", record["version"]))
    return {f"painters.{key}": (value, gguf.GGUFValueType.STRING, None) for key, value in values}


def _layer_keys(values: dict, arch: str, new_arch: str, steps: list[LayerStep]) -> dict:
    """Deci's per-layer arrays: 0 heads where attention is dropped, FFN length 0 where the MLP is."""
    import gguf

    heads = int(values[f"{arch}.attention.head_count"])
    kv = int(values.get(f"{arch}.attention.head_count_kv", heads))
    ff = int(values[f"{arch}.feed_forward_length"])
    head_dim = int(values.get(f"{arch}.attention.key_length", int(values[f"{arch}.embedding_length"]) // heads))
    u32, arr = gguf.GGUFValueType.UINT32, gguf.GGUFValueType.ARRAY
    return {
        f"{new_arch}.attention.head_count": ([heads if s.attn else 0 for s in steps], arr, u32),
        f"{new_arch}.attention.head_count_kv": ([kv if s.attn else 0 for s in steps], arr, u32),
        f"{new_arch}.feed_forward_length": ([ff if s.mlp else 0 for s in steps], arr, u32),
        f"{new_arch}.attention.key_length": (head_dim, u32, None),
        f"{new_arch}.attention.value_length": (head_dim, u32, None),
    }


def _tensor_plan(reader: Any, steps: list[LayerStep]) -> list[TensorCopy]:
    """Non-layer tensors once (a tied embedding stays one tensor), then each output layer's kept tensors."""
    by_layer: dict[int, list[tuple[str, Any]]] = {}
    copies: list[TensorCopy] = []
    for t in reader.tensors:
        m = _BLK.match(t.name)
        if m is None:
            copies.append(TensorCopy(t.name, t))
        else:
            by_layer.setdefault(int(m[1]), []).append((m[2], t))
    for i, step in enumerate(steps):
        for rest, t in by_layer.get(step.source, []):
            kind = rest.split(".")[0]
            if (not step.attn and kind in ATTN_TENSORS) or (not step.mlp and kind in FFN_TENSORS):
                continue
            copies.append(TensorCopy(f"blk.{i}.{rest}", t))
    return copies


