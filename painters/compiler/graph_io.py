"""Load an ONNX graph without its weights, and save a rewritten one beside its (shared) external data.

Weights never pass through memory whole: onnx-ir keeps external tensors as references, and the output reuses
the source's data file — the same file when the output sits beside the input, a hard link (or, across
file systems, a copy) otherwise. Weights a pass computes (fused parallel groups) are written beside it in row
blocks. The source is never modified.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import onnx_ir as ir

from painters.errors import CompileError

__all__ = ["load_graph", "external_files", "save_graph", "initializer_bytes", "ChunkedTensor", "SIDE_FILES",
           "NEW_DATA_THRESHOLD", "graph_inputs",
           "inline_small_external"]

log = logging.getLogger(__name__)

# Files that travel with a model so bench can run from the .onnx alone.
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
              "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json")


def load_graph(path: str | Path) -> ir.Model:
    """Load the graph structure; weights stay on disk. Refuses unsafe or missing external data."""
    path = Path(path)
    if not path.is_file():
        raise CompileError(f"{path}: no such ONNX file")
    try:
        model = ir.load(path)
    except Exception as exc:  # protobuf raises DecodeError and friends on corrupt/truncated files
        raise CompileError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    external_files(model, path.parent)
    return model


def external_files(model: ir.Model, base: Path) -> list[str]:
    """Relative locations of the external data files the model references, after safety checks."""
    base = base.resolve()
    files: set[str] = set()
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            location = tensor.location
            target = (base / location).resolve()
            if os.path.isabs(location) or not target.is_relative_to(base):
                raise CompileError(f"initializer {value.name!r}: external data location {location!r} points "
                                   f"outside the model's directory {base}; refusing it (path traversal)")
            if not target.is_file():
                raise CompileError(f"initializer {value.name!r}: external data file {target} is missing; "
                                   "keep the .data file beside the .onnx it was saved with")
            if (tensor.offset is not None and tensor.length is not None
                    and tensor.offset + tensor.length > target.stat().st_size):
                raise CompileError(f"initializer {value.name!r}: external data file {target} is truncated")
            files.add(location)
    return sorted(files)


def graph_inputs(model: ir.Model, path: Path) -> list[Path]:
    """Every file a command reads through the graph at ``path``: itself, its external data, its side files."""
    path = Path(path)
    return [path, *(path.parent / f for f in external_files(model, path.parent)),
            *(f for f in (path.parent / n for n in SIDE_FILES) if f.is_file())]


def inline_small_external(model: ir.Model, limit: int = 1000) -> int:
    """Read external initializers smaller than ``limit`` bytes into the graph; return how many.

    Why: onnx's checker (run after every rewrite) sees the graph without its large initializers but
    resolves the external data of the small ones against the *current* directory, so a graph that keeps
    norm gains externally (ONNX Runtime GenAI's builder does) fails the check away from its folder. The
    limit is onnx-ir's own cut-off for what it hands the checker; such tensors are saved inline.
    """
    count = 0
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor) and tensor.nbytes <= limit:
            # read directly: onnx-ir refuses data files with several hard links, and compiled outputs share
            # the source's data file by hard links (external_files has already checked the location)
            array = np.fromfile(tensor.path, dtype=tensor.dtype.numpy(), count=tensor.size,
                                offset=tensor.offset or 0).reshape(tensor.shape.numpy())
            value.const_value = ir.tensor(array, name=tensor.name or value.name)
            count += 1
    return count


def initializer_bytes(model: ir.Model) -> int:
    """Bytes of weights the graph references (each initializer once, however many nodes share it)."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        log.info("cannot hard-link %s (other file system?); copying", src)
        shutil.copy2(src, dst)


def link_side_files(src_dir: Path, out_dir: Path, tmp: Path, names: list[str]) -> None:
    """Place ``names`` (relative to ``src_dir``) into ``tmp`` so they land in ``out_dir``, sharing bytes.

    A file already in ``out_dir`` that is the same file is left alone; a *different* file of that name would
    belong to another model, so it is refused rather than replaced.
    """
    for name in names:
        src, final = src_dir / name, out_dir / name
        if final.exists():
            if final.samefile(src):
                continue
            if src.suffix != ".data" and final.read_bytes() == src.read_bytes():
                continue
            raise CompileError(f"{final} already exists and is not {src}; it may belong to another model — "
                               "choose another output directory with -o")
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        _link(src, tmp / name)


# New in-memory initializers above this size (fused weights) go to ``OUT.onnx.fused.data``.
NEW_DATA_THRESHOLD = 1024
_ALIGN = 4096  # offsets of new external tensors: page-aligned, so runtimes can memory-map them


class ChunkedTensor(ir.LazyTensor):
    """A computed initializer that :func:`save_graph` writes piece by piece, never holding it whole.

    ``chunks()`` yields arrays whose flattened concatenation is the tensor in C order (row blocks, member
    matrices); as a plain ``LazyTensor`` it concatenates them, for whoever asks for the values in memory.
    """

    def __init__(self, chunks: Callable[[], Iterable[np.ndarray]], *, dtype: ir.DataType, shape: ir.Shape,
                 name: str):
        def whole() -> ir.Tensor:
            flat = np.concatenate([np.asarray(c, dtype=dtype.numpy()).reshape(-1) for c in chunks()])
            return ir.tensor(flat.reshape(shape.numpy()), name=name)

        super().__init__(whole, dtype=dtype, shape=shape, name=name)
        self.chunks = chunks


def _write_new_tensors(values: list[ir.Value], tmp: Path, name: str) -> None:
    """Append the values' tensors to ``tmp/name`` (chunk by chunk where chunked) and point them at it."""
    offset = 0
    with open(tmp / name, "wb") as f:
        for value in values:
            tensor = value.const_value
            pad = -offset % _ALIGN
            f.write(b"\0" * pad)
            start = offset = offset + pad
            if isinstance(tensor, ChunkedTensor):
                for chunk in tensor.chunks():
                    data = np.ascontiguousarray(chunk, dtype=tensor.dtype.numpy()).tobytes()
                    f.write(data)
                    offset += len(data)
            else:
                data = tensor.tobytes()
                f.write(data)
                offset += len(data)
            if offset - start != tensor.nbytes:
                raise CompileError(f"internal error: {value.name} wrote {offset - start} bytes, expected "
                                   f"{tensor.nbytes}")
            value.const_value = ir.ExternalTensor(name, start, offset - start, tensor.dtype, shape=tensor.shape,
                                                  name=tensor.name or value.name, base_dir=tmp)


def save_graph(model: ir.Model, src: Path, out: Path, tmp: Path) -> None:
    """Write ``model`` to ``tmp/out.name`` with its external data and side files placed for ``out``.

    The source's external tensors keep their location (the linked data file); initializers a pass created in
    memory (lazy, chunked or not) and larger than ``NEW_DATA_THRESHOLD`` bytes are written to
    ``OUT.onnx.fused.data``.
    """
    data = external_files(model, src.parent)
    side = [f.name for f in (src.parent / n for n in SIDE_FILES) if f.is_file()]
    link_side_files(src.parent, out.parent, tmp, [*data, *side])
    new = [v for v in model.graph.initializers.values() if v.const_value is not None
           and not isinstance(v.const_value, (ir.ExternalTensor, ir.TensorProtoTensor))
           and v.const_value.nbytes > NEW_DATA_THRESHOLD]
    if new:
        _write_new_tensors(new, tmp, f"{out.name}.fused.data")
    ir.save(model, tmp / out.name)
