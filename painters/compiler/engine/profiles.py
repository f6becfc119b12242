"""Optimization profiles: the shape ranges an engine accepts, from a ``batch=…,seq=…,past=…`` spec.

Every engine gets two profiles over the named dims batch, seq and past: prefill (seq as given) and decode
(seq = 1), because one profile stretched over both makes the decode kernels pay for prefill-sized tactics.
Which input dim plays which role comes from the IO convention (:func:`painters.decoder_io.dim_roles`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from painters.decoder_io import dim_roles, is_past, past_name
from painters.errors import BuildError


class GraphInputs(Protocol):
    """What a profile reads of a graph: its inputs as (name, dtype, shape) — ``request.GraphInfo`` is one (a
    protocol, so this module does not import the request module that imports it)."""

    inputs: Sequence[tuple[str, Any, Any]]


__all__ = ["DimRange", "DEFAULT_PROFILE", "DIMS", "parse_profile", "profile_spec", "profile_shapes", "GraphInputs"]

DEFAULT_PROFILE = "batch=1:1:8,seq=1:128:512,past=0:128:512"
DIMS = ("batch", "seq", "past")
_MAX_DIM = 2**31 - 1  # TensorRT shapes are int32


@dataclass(frozen=True)
class DimRange:
    """min ≤ opt ≤ max of one named dim; TensorRT tunes for opt and accepts anything in range."""

    min: int
    opt: int
    max: int

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


def parse_profile(spec: str | None) -> dict[str, DimRange]:
    """Parse ``batch=1:8:32,seq=1:128:2048,past=0:512:4096``; dims left out keep their defaults.

    A single number (``batch=4``) fixes a dim. batch and seq start at 1; past may be 0 (empty cache).
    """
    dims = _parse_items(DEFAULT_PROFILE)
    dims.update(_parse_items(spec or ""))
    return dims


def _parse_items(spec: str) -> dict[str, DimRange]:
    dims: dict[str, DimRange] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, values = (s.strip() for s in item.partition("="))
        if not sep or name not in DIMS:
            raise BuildError(f"profile item {item!r}: expected NAME=MIN:OPT:MAX with NAME one of {', '.join(DIMS)}, "
                             f"e.g. {DEFAULT_PROFILE}")
        if name in dims:
            raise BuildError(f"profile names {name} twice; give each of {', '.join(DIMS)} at most once")
        parts = values.split(":") if ":" in values else [values] * 3
        try:
            lo, opt, hi = (int(p) for p in parts)
        except ValueError:
            raise BuildError(f"profile {item!r}: expected three integers MIN:OPT:MAX (or one, to fix the size), "
                             f"e.g. {name}=1:128:512") from None
        if max(lo, opt, hi) > _MAX_DIM:
            raise BuildError(f"profile {item!r}: {name} must be at most {_MAX_DIM} (TensorRT dims are 32-bit); "
                             f"e.g. {name}=1:128:512")
        floor = 0 if name == "past" else 1
        if lo < floor:
            raise BuildError(f"profile {item!r}: {name} starts at {floor} or more; write {name}={floor}:{opt}:{hi}")
        if not lo <= opt <= hi:
            fix = ":".join(str(v) for v in sorted((lo, opt, hi)))
            raise BuildError(f"profile {item!r}: needs min ≤ opt ≤ max; write {name}={fix}")
        dims[name] = DimRange(lo, opt, hi)
    return dims


def profile_spec(dims: dict[str, DimRange]) -> str:
    """The canonical spec of parsed dims (what the engine cache key records)."""
    return ",".join(f"{name}={dims[name]}" for name in DIMS)


def profile_shapes(graph: GraphInputs, dims: dict[str, DimRange]) -> list[dict[str, tuple[tuple[int, ...], ...]]]:
    """Per input (min, opt, max) shapes of the two profiles: prefill (index 0) and decode (index 1, seq = 1).

    Static dims of the graph win over the spec, so a graph exported with a fixed batch still builds.
    """
    has_kv = any(is_past(name) for name, _, _ in graph.inputs)
    dims = dims if has_kv else {**dims, "past": DimRange(0, 0, 0)}  # no cache: the mask covers seq only
    profiles = []
    for seq in (dims["seq"], DimRange(1, 1, 1)):
        ranges = {**dims, "seq": seq}
        ranges["past+seq"] = DimRange(*(getattr(dims["past"], a) + getattr(seq, a) for a in ("min", "opt", "max")))
        profiles.append({name: _input_shapes(name, shape, ranges) for name, _, shape in graph.inputs
                         if not all(isinstance(d, int) for d in shape)})
    return profiles


def _input_shapes(name: str, shape: tuple[int | str, ...], ranges: dict[str, DimRange]):
    roles = dim_roles(name)
    if roles is None or len(roles) != len(shape):
        raise BuildError(f"input {name} {list(shape)} has symbolic dims but is not part of the decoder IO "
                         f"convention (input_ids, attention_mask, position_ids, {past_name('N', 'key/value')} with "
                         "the usual ranks); "
                         "painters cannot choose its shape range — export it with static dims or remove it")
    lows, opts, highs = [], [], []
    for axis, (dim, role) in enumerate(zip(shape, roles)):
        if isinstance(dim, int):
            r = DimRange(dim, dim, dim)
        elif role is None:
            raise BuildError(f"input {name}: dim {axis} ({dim!r}) is symbolic, but kv_heads and head_dim must be "
                             "static for painters to size the cache; re-export the model with static head dims")
        else:
            r = ranges[role]
        lows.append(r.min), opts.append(r.opt), highs.append(r.max)
    return tuple(lows), tuple(opts), tuple(highs)
