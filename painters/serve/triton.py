"""`painters deploy triton`: a Triton Inference Server model repository for a graph or an engine.

Triton's onnxruntime backend loads ``NAME/1/model.onnx`` (its external data beside it) and its tensorrt backend
``NAME/1/model.plan``. ``max_batch_size: 0`` because the graph has its own batch dimension (the KV cache's
batch axis is not the first one Triton would add). Dims come from the graph, -1 where dynamic. The client owns
the cache: it feeds the past-KV inputs (past length 0 on the first call) and reads back the present-KV outputs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from painters.decoder_io import past_name, past_slots, present_name
from painters.errors import PaintersError

__all__ = ["deploy_triton", "config_pbtxt"]

_ONNX_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
               "int64": "TYPE_INT64", "int32": "TYPE_INT32", "bool": "TYPE_BOOL", "int8": "TYPE_INT8",
               "uint8": "TYPE_UINT8"}
_TRT_TYPES = {"float": "TYPE_FP32", "half": "TYPE_FP16", "bf16": "TYPE_BF16", "int64": "TYPE_INT64",
              "int32": "TYPE_INT32", "bool": "TYPE_BOOL", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8"}
_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")

Tensor = tuple[str, str, tuple[int, ...]]  # (name, Triton data type, dims)


def _onnx_io(path: Path) -> tuple[list[Tensor], list[Tensor], list[str]]:
    from painters.compiler.engine import graph_info

    graph = graph_info(path)

    def convert(values) -> list[Tensor]:
        out = []
        for name, dtype, dims in values:
            if dtype not in _ONNX_TYPES:
                raise PaintersError(f"{path}: tensor {name} has dtype {dtype}, which Triton cannot carry")
            out.append((name, _ONNX_TYPES[dtype], tuple(d if isinstance(d, int) else -1 for d in dims)))
        return out

    return convert(graph.inputs), convert(graph.outputs), [name for name, _ in graph.external]


def _engine_io(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    from painters.compiler.engine import sidecar_path

    sidecar = sidecar_path(path)
    try:
        record = json.loads(sidecar.read_text())
        io = record["io"]
    except (OSError, ValueError, KeyError) as exc:
        raise PaintersError(f"{path}: its sidecar {sidecar.name} (with the engine's IO) is missing or unreadable "
                            f"({type(exc).__name__}); rebuild it with `painters engine build MODEL.onnx -o {path}`"
                            ) from exc
    if record.get("inputs", {}).get("backend") == "tensorrt-rtx":
        raise PaintersError(f"{path} is a TensorRT-RTX engine; Triton's tensorrt backend runs TensorRT engines: "
                            "build one with `painters engine build MODEL.onnx --backend tensorrt`, or deploy the "
                            ".onnx for the onnxruntime backend")
    tensors: dict[str, list[Tensor]] = {"input": [], "output": []}
    for name, mode, dtype, dims in io:
        tensors[mode].append((name, _TRT_TYPES.get(dtype, "TYPE_FP32"), tuple(int(d) for d in dims)))
    return tensors["input"], tensors["output"]


def config_pbtxt(name: str, platform: str, inputs: list[Tensor], outputs: list[Tensor]) -> str:
    """The model configuration in protobuf text format (``inference.ModelConfig``)."""
    slots = past_slots(n for n, _, _ in inputs)
    lines = [f"# Written by painters deploy triton. KV cache: {len(slots)} slots; feed {past_name('<i>', 'key')}/value",
             f"# [batch, kv_heads, past, head_dim] (past 0 on the first call) and read "
             f"{present_name('<i>', 'key')}/value",
             "# [batch, kv_heads, past+seq, head_dim] back; attention_mask covers past+seq (1 = real token).",
             f'name: "{name}"', f'platform: "{platform}"', "max_batch_size: 0"]
    for key, tensors in (("input", inputs), ("output", outputs)):
        lines.append(f"{key} [")
        body = [f'  {{ name: "{n}" data_type: {t} dims: [ {", ".join(map(str, d))} ] }}' for n, t, d in tensors]
        lines.append(",\n".join(body))
        lines.append("]")
    lines.append(f'parameters {{ key: "painters.kv_slots" value {{ string_value: "{len(slots)}" }} }}')
    return "\n".join(lines) + "\n"


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def deploy_triton(model: str | Path, repo: str | Path, name: str | None = None) -> Path:
    """Write ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.onnx`` (+ external data) or ``model.plan``.

    Files are hard-linked (copied across file systems), never moved; the model directory appears by one
    rename once complete, and an existing ``REPO/NAME`` is refused rather than replaced.
    """
    model, repo = Path(model), Path(repo)
    if not model.is_file():
        raise PaintersError(f"model {model} not found")
    if model.suffix not in (".onnx", ".engine"):
        raise PaintersError(f"{model}: deploy triton takes an .onnx graph or a TensorRT .engine")
    name = name or model.stem.replace(".", "-")
    if not _NAME.match(name):
        raise PaintersError(f"model name {name!r} may hold only letters, digits, '_', '-' and '.'; pass --name")
    target = repo / name
    if target.exists():
        raise PaintersError(f"{target} already exists; choose another --name or -o, or remove it first")
    if model.resolve().is_relative_to(repo.resolve()):
        raise PaintersError(f"the repository {repo} holds the input {model}; choose another -o")
    if model.suffix == ".onnx":
        inputs, outputs, external = _onnx_io(model)
        platform, files = "onnxruntime_onnx", [(model, "model.onnx")] + [(model.parent / e, e) for e in external]
    else:
        (inputs, outputs), external = _engine_io(model), []
        platform, files = "tensorrt_plan", [(model, "model.plan")]
    if any("/" in dst or dst == "config.pbtxt" for _, dst in files[1:]):
        raise PaintersError(f"{model}: external data must sit beside the graph for Triton; found {external}")
    repo.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
    try:
        (tmp / "1").mkdir()
        for src, dst in files:
            _link(src, tmp / "1" / dst)
        (tmp / "config.pbtxt").write_text(config_pbtxt(name, platform, inputs, outputs))
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
