"""GGUF → GGUF with gguf-py: metadata and tensors' raw bytes copied, renumbered and renamed, one tensor at a time.

The reader memory-maps the source; the writer writes the header, the metadata and the tensor table first, then
each tensor's bytes straight from the map (``write_tensor_data``), so no tensor is decoded or re-quantized and
peak memory stays near one tensor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_painters_metadata", "field_value", "TensorCopy", "write_gguf", "PAINTERS_KEYS"]

PAINTERS_KEYS = ("painters.plan", "painters.target", "painters.source_hash", "painters.version")
_HEADER = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")  # the reader's view of the header, not metadata


def field_value(field: Any) -> Any:
    """A reader field's value (a scalar, a string, or a list)."""
    return field.contents()


def read_painters_metadata(path: str | Path) -> dict | None:
    """The provenance record of a GGUF painters deployed (:func:`painters.targets.common.provenance`), or None."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    if "painters.plan" not in reader.fields:
        return None
    record = {key.removeprefix("painters."): field_value(reader.fields[key]) for key in PAINTERS_KEYS
              if key in reader.fields}
    record["plan"] = json.loads(record["plan"])
    return record


@dataclass
class TensorCopy:
    """One output tensor: its new name and the source tensor whose bytes it copies."""

    name: str
    source: Any  # gguf.ReaderTensor, or a small numpy array painters adds (see gguf.ffn_stub)


def write_gguf(reader: Any, out: Path, arch: str, tensors: list[TensorCopy],
               metadata: Callable[[str, Any], tuple[str, Any] | None],
               extra: dict[str, tuple[Any, Any, Any]]) -> None:
    """Write ``out`` with ``tensors`` copied byte for byte from ``reader``.

    ``metadata(key, field)`` maps every source key to (new key, field) or None (dropped); ``extra`` adds keys as
    ``key → (value, GGUFValueType, sub_type)`` (written after the copied ones, replacing any of the same name).
    """
    import gguf

    writer = gguf.GGUFWriter(str(out), arch)
    for key, field in reader.fields.items():
        if key in _HEADER or key == "general.architecture" or key in extra:
            continue
        mapped = metadata(key, field)
        if mapped is None:
            continue
        new_key, field = mapped
        if new_key in extra:
            continue
        sub = field.types[1] if len(field.types) > 1 else None
        writer.add_key_value(new_key, field_value(field), field.types[0], sub_type=sub)
    for key, (value, vtype, sub) in extra.items():
        writer.add_key_value(key, value, vtype, sub_type=sub)

    def data(t: TensorCopy) -> Any:
        return t.source if isinstance(t.source, np.ndarray) else t.source.data

    for t in tensors:
        if isinstance(t.source, np.ndarray):
            writer.add_tensor_info(t.name, t.source.shape, t.source.dtype, t.source.nbytes)
        else:
            writer.add_tensor_info(t.name, data(t).shape, data(t).dtype, int(t.source.n_bytes),
                                   raw_dtype=t.source.tensor_type)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in tensors:
            writer.write_tensor_data(data(t))
    finally:
        writer.close()
