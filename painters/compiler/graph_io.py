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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx_ir as ir

from painters.errors import CompileError, InternalError

__all__ = ["load_graph", "external_files", "save_graph", "initializer_bytes", "ChunkedTensor", "SIDE_FILES",
           "NEW_DATA_THRESHOLD", "graph_inputs", "allowed_dir", "inline_small_external"]

log = logging.getLogger(__name__)

# Files that travel with a model so bench can run from the .onnx alone.
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
              "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json")


def load_graph(path: str | Path) -> ir.Model:
    """Load the graph structure; weights stay on disk. Refuses unsafe or missing external data.

    Every tensor of the file that can name external data is checked (initializers, node attributes such
    as a ``Constant``'s value, sparse tensors, subgraphs, functions), not only the main graph's initializers.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise CompileError(f"{path}: no such ONNX file")
    if path.stat().st_size == 0:
        raise CompileError(f"{path} is empty (0 bytes), not an ONNX model; export one with `painters export`")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends on corrupt/truncated files
        raise CompileError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    if not proto.HasField("graph") or not proto.opset_import:
        # protobuf parses many non-ONNX byte strings as a model with no graph; say so instead of "no input_ids"
        raise CompileError(f"{path} is not an ONNX model (it has no graph or no opset); export one with "
                           "`painters export`")
    for where, tensor in _external_tensor_protos(proto):
        info = {e.key: e.value for e in tensor.external_data}
        try:
            offset, length = int(info.get("offset", 0) or 0), info.get("length")
            length = None if length in (None, "") else int(length)
        except ValueError:
            raise CompileError(f"{where}: external data offset/length {info} are not integers") from None
        _check_location(where, info.get("location", ""), path.parent, offset, length, allowed_dir(path))
    try:
        model = ir.load(path)
    except Exception as exc:
        raise CompileError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    external_files(model, path.parent, allowed=allowed_dir(path))
    return model


def allowed_dir(path: Path) -> Path:
    """Where a graph's external data may live: the folder of the real graph file, symlinks resolved.

    This is onnxruntime's rule too (it loads ``L/model.onnx → M/model.onnx`` with ``L/model.onnx.data →
    M/model.onnx.data``, and refuses data that resolves anywhere else), so what compile accepts also runs.
    """
    return Path(path).resolve().parent


def _external_tensor_protos(proto) -> Iterator[tuple[str, object]]:
    """Every TensorProto anywhere in ``proto`` stored as external data, with a description of where it is.

    Why a walk over the protobuf rather than a list of places: a new place that can hold a tensor (a node
    attribute, a sparse tensor's values, a subgraph, a function, training info) is covered without code.
    """
    import onnx
    from google.protobuf.descriptor import FieldDescriptor

    stack: list[tuple[str, object]] = [("graph", proto)]
    while stack:
        where, msg = stack.pop()
        if isinstance(msg, onnx.TensorProto):
            if msg.data_location == onnx.TensorProto.EXTERNAL:
                yield f"{where} tensor {msg.name!r}".strip(), msg
            continue
        if isinstance(msg, onnx.NodeProto):
            where = f"node {msg.name or msg.op_type!r}"
        elif isinstance(msg, onnx.AttributeProto):
            where = f"{where} attribute {msg.name!r}"
        elif isinstance(msg, onnx.FunctionProto):
            where = f"function {msg.name!r}"
        for field, value in msg.ListFields():
            if field.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            label = "initializer" if field.name in ("initializer", "sparse_initializer") else where
            items = value if field.label == FieldDescriptor.LABEL_REPEATED else [value]
            stack.extend((label, item) for item in items)


def _check_location(where: str, location: str, base: Path, offset: int | None, length: int | None,
                    allowed: Path | None = None) -> Path:
    """Refuse external data outside the model's directory, missing, not a regular file or too short.

    The location is written by whoever wrote the graph, so it must stay inside the model's directory by
    its own spelling (not absolute, no ``..``), and what it resolves to, symlinks followed, must lie in
    ``allowed`` (:func:`allowed_dir`; default ``base`` resolved): a symlink pointing to the model's own
    real data is fine, one pointing anywhere else (or a folder symlink on the way out) is not. It must end
    at a regular file — never a device or FIFO, which would hang or never end.
    """
    parts = Path(location).parts
    if not location or os.path.isabs(location) or ".." in parts or "\0" in location:
        raise CompileError(f"{where}: external data location {location!r} points outside the model's "
                           f"directory {base}; refusing it (path traversal)")
    link = base / location
    allowed = Path(allowed) if allowed is not None else Path(base).resolve()
    if not link.resolve().is_relative_to(allowed):
        raise CompileError(f"{where}: external data {link} resolves to {link.resolve()}, outside the model's "
                           f"directory {allowed}; refusing it (path traversal)")
    if not link.exists():
        raise CompileError(f"{where}: external data file {link} is missing; keep the .data file beside the "
                           ".onnx it was saved with")
    if not link.is_file():
        raise CompileError(f"{where}: external data {link} is not a regular file; refusing it")
    if offset is not None and length is not None and offset + length > link.stat().st_size:
        raise CompileError(f"{where}: external data file {link} is truncated")
    return link


def _all_tensors(model: ir.Model) -> Iterator[tuple[str, ir.TensorProtocol]]:
    """Every tensor an onnx-ir model holds: initializers and tensor attributes, in subgraphs and functions."""
    graphs: list[tuple[str, object]] = [("graph", model.graph),
                                        *((f"function {f.name!r}", f) for f in model.functions.values())]
    while graphs:
        where, graph = graphs.pop()
        for value in getattr(graph, "initializers", {}).values():
            if value.const_value is not None:
                yield f"initializer {value.name!r}", value.const_value
        for node in graph:
            for attr in node.attributes.values():
                if not isinstance(attr, ir.Attr):
                    continue  # a function's reference attribute holds no value
                at = f"node {node.name or node.op_type!r} attribute {attr.name!r}"
                if attr.type == ir.AttributeType.TENSOR:
                    yield at, attr.value
                elif attr.type == ir.AttributeType.TENSORS:
                    yield from ((at, t) for t in attr.value)
                elif attr.type == ir.AttributeType.GRAPH:
                    graphs.append((at, attr.value))
                elif attr.type == ir.AttributeType.GRAPHS:
                    graphs.extend((at, g) for g in attr.value)


def external_files(model: ir.Model, base: Path, *, allowed: Path | None = None) -> list[str]:
    """Relative locations of the external data files the model references (any tensor), after safety checks.

    ``allowed`` is where the data may resolve to (:func:`allowed_dir` of the graph's path; default ``base``).
    """
    files: set[str] = set()
    for where, tensor in _all_tensors(model):
        if isinstance(tensor, ir.ExternalTensor):
            _check_location(where, tensor.location, Path(base), tensor.offset, tensor.length, allowed)
            files.add(tensor.location)
    return sorted(files)


def graph_inputs(model: ir.Model, path: Path) -> list[Path]:
    """Every file a command reads through the graph at ``path``: itself, its external data, its side files."""
    path = Path(path)
    return [path, *(path.parent / f for f in external_files(model, path.parent, allowed=allowed_dir(path))),
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


def fed_inputs(graph: ir.Graph) -> list[ir.Value]:
    """The graph's inputs a caller must feed, in order.

    An input that is also an initializer has a default (``logits_to_keep``): it is optional, so it is neither fed
    by calibration nor sized by an engine profile (TensorRT takes it as a constant).
    """
    return [v for v in graph.inputs if v.const_value is None]


def initializer_bytes(model: ir.Model) -> int:
    """Bytes of weights the graph references (each initializer once, however many nodes share it).

    An initializer that is also a graph input is that input's default (``logits_to_keep``), not a weight.
    """
    inputs = set(model.graph.inputs)
    return sum(v.const_value.nbytes for v in model.graph.initializers.values()
               if v.const_value is not None and v not in inputs)


def _link(src: Path, dst: Path) -> None:
    src = src.resolve()  # link the real file: a link to a symlink would resolve elsewhere from the new folder
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
        if os.path.lexists(tmp / name):  # never write through a link into an input
            raise CompileError(f"{name} would be placed beside the output twice; choose another output name with -o")
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
    with open(tmp / name, "xb") as f:  # exclusive: a linked input of that name must never be written through
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
                raise InternalError(f"{value.name} wrote {offset - start} bytes, expected {tensor.nbytes}")
            value.const_value = ir.ExternalTensor(name, start, offset - start, tensor.dtype, shape=tensor.shape,
                                                  name=tensor.name or value.name, base_dir=tmp)


def save_graph(model: ir.Model, src: Path, out: Path, tmp: Path) -> None:
    """Write ``model`` to ``tmp/out.name`` with its external data and side files placed for ``out``.

    The source's external tensors keep their location (the linked data file); initializers a pass created in
    memory (lazy, chunked or not) and larger than ``NEW_DATA_THRESHOLD`` bytes are written to
    ``OUT.onnx.fused.data``.
    """
    data = external_files(model, src.parent, allowed=allowed_dir(src))
    side = [f.name for f in (src.parent / n for n in SIDE_FILES) if f.is_file()]
    link_side_files(src.parent, out.parent, tmp, [*data, *side])
    new = [v for v in model.graph.initializers.values() if v.const_value is not None
           and not isinstance(v.const_value, (ir.ExternalTensor, ir.TensorProtoTensor))
           and v.const_value.nbytes > NEW_DATA_THRESHOLD]
    if new:
        _write_new_tensors(new, tmp, f"{out.name}.fused.data")
    if os.path.lexists(tmp / out.name):  # a linked input of that name: writing would go through the link
        raise CompileError(f"output name {out.name} is the name of a file the graph needs beside it; choose "
                           "another name with -o")
    ir.save(model, tmp / out.name)
