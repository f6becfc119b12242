"""The decoder IO convention: the one module that spells its names, parses them and names its dims and dtypes.

painters graphs follow the Hugging Face Optimum / ONNX Runtime GenAI convention: inputs ``input_ids``
[batch, seq], ``attention_mask`` [batch, past+seq], ``position_ids`` [batch, seq] and per KV slot i
``past_key_values.{i}.key`` / ``.value`` [batch, kv_heads, past, head_dim]; outputs ``logits`` [batch, seq,
vocab] and ``present.{i}.key`` / ``.value`` [batch, kv_heads, past+seq, head_dim]. A compiled graph also takes
the optional scalar ``logits_to_keep`` (default 0: every position; k: ``logits`` of the last k positions only,
all a prefill that goes on decoding reads). Export writes these names, the compiler reads and renumbers them,
engines size profiles by their dims and runners bind them; all of them go through this module, so a change of
convention is a change here only. It imports nothing heavy (no torch, onnx or tensorrt), so every layer of
painters may import it without a cycle.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["INPUT_IDS", "ATTENTION_MASK", "POSITION_IDS", "LOGITS", "LOGITS_TO_KEEP", "TOKEN_INPUTS", "KINDS",
           "HF_CACHE_ARG", "past_name", "present_name", "parse_past", "parse_present", "is_past", "is_present",
           "is_io_input", "present_to_past", "past_slots", "dim_roles", "KV_DIMS", "PRECISIONS", "precision_of",
           "ONNX_DTYPES", "ORT_DTYPES", "TRT_DTYPES", "dtype_name"]

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"
LOGITS = "logits"
LOGITS_TO_KEEP = "logits_to_keep"  # optional (an initializer is its default): how many last positions get logits
TOKEN_INPUTS = (INPUT_IDS, ATTENTION_MASK, POSITION_IDS)
KINDS = ("key", "value")
# Hugging Face's keyword for the cache argument of a decoder's forward (the convention's names come from it)
HF_CACHE_ARG = "past_key_values"

_PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)\Z")
_PRESENT = re.compile(r"present\.(\d+)\.(key|value)\Z")


def past_name(slot: int, kind: str) -> str:
    """``past_key_values.{slot}.{kind}``: the cache input of a KV slot (``kind`` is key or value)."""
    return f"{HF_CACHE_ARG}.{slot}.{kind}"


def present_name(slot: int, kind: str) -> str:
    """``present.{slot}.{kind}``: the grown cache a step returns for a KV slot."""
    return f"present.{slot}.{kind}"


def parse_past(name: str | None) -> tuple[int, str] | None:
    """(slot, kind) of a past-KV input name, or None for any other name."""
    m = _PAST.match(name or "")
    return (int(m[1]), m[2]) if m else None


def parse_present(name: str | None) -> tuple[int, str] | None:
    """(slot, kind) of a present-KV output name, or None for any other name."""
    m = _PRESENT.match(name or "")
    return (int(m[1]), m[2]) if m else None


def is_past(name: str | None) -> bool:
    return parse_past(name) is not None


def is_present(name: str | None) -> bool:
    return parse_present(name) is not None


def is_io_input(name: str | None) -> bool:
    """Whether ``name`` is an input of the convention (token inputs or a past-KV input)."""
    return name in TOKEN_INPUTS or is_past(name)


def present_to_past(name: str) -> str:
    """The past input a present output feeds on the next step (same slot and kind)."""
    parsed = parse_present(name)
    if parsed is None:
        raise ValueError(f"{name!r} is not a present-KV output name")
    return past_name(*parsed)


def past_slots(names: Iterable[str | None]) -> list[int]:
    """Sorted slot numbers of the past-KV *key* inputs among ``names``."""
    return sorted(slot for slot, kind in filter(None, map(parse_past, names)) if kind == "key")


# Named role of each dim of the inputs; None = must be static in the graph (kv_heads, head_dim).
_TOKEN_DIMS: dict[str, tuple[str, ...]] = {INPUT_IDS: ("batch", "seq"), POSITION_IDS: ("batch", "seq"),
                                           ATTENTION_MASK: ("batch", "past+seq")}
KV_DIMS: tuple[str | None, ...] = ("batch", None, "past", None)


def dim_roles(name: str) -> tuple[str | None, ...] | None:
    """The named role of each dim of input ``name`` (batch, seq, past, past+seq; None = static), or None."""
    return KV_DIMS if is_past(name) else _TOKEN_DIMS.get(name)


# ---- dtype names: one canonical spelling (numpy's) and the tables from each library's spelling ----------

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # --dtype / --precision → dtype name
ONNX_DTYPES = {"FLOAT": "float32", "FLOAT16": "float16", "BFLOAT16": "bfloat16", "DOUBLE": "float64",
               "INT64": "int64", "INT32": "int32", "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}  # ir.DataType
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16",
              "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(bool)": "bool"}  # onnxruntime NodeArg.type
TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT64": "int64", "INT32": "int32",
              "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}  # tensorrt.DataType.name


def precision_of(dtype: str | None) -> str | None:
    """The short precision name (fp32, fp16, bf16) of a float dtype name, or None."""
    return {v: k for k, v in PRECISIONS.items()}.get(dtype or "")


def dtype_name(table: dict[str, str], key: str | None, default: str = "unknown") -> str:
    """``table[key]``, else the key lower-cased (an unlisted dtype keeps a readable name), else ``default``."""
    if key is None:
        return default
    return table.get(key, key.lower())
