"""A GGUF's own quantized blocks in ONNX Runtime's ``MatMulNBits`` layout, converted exactly (no re-quantizing).

The legacy llama.cpp block types hold 32 weights per block as ``w = d·r + m`` with an fp16 scale ``d``, an
optional fp16 minimum ``m`` (``_1`` types) and small integers ``r``. ``MatMulNBits`` computes
``w = scale·(u − zero_point)`` over blocks of the same 32 weights along K, so each block maps one to one:
``scale = d``, ``u = r + z``, ``zero_point = z`` with ``z`` the shift that makes ``u`` unsigned — and for the
``_1`` types the minimum is carried by a separate per-block offset term (see :mod:`.gguf_weights`), because a
float ``zero_point = −m/d`` would round and, worse, turns off the CPU kernel's prepacked fast paths
(``MatMulNBits::PrePack`` returns early when the zero points are not uint8: B is de-quantized on every call).

======  ==========  ====  =====  ========================
type    r           bits  z      offset
======  ==========  ====  =====  ========================
Q4_0    q − 8       4     8      —
Q4_1    q           4     0      m
Q5_0    q − 16      8     16     —
Q5_1    q           8     0      m
Q8_0    int8 q      8     128    —
======  ==========  ====  =====  ========================

(5-bit blocks go to 8-bit ``MatMulNBits``: exact, at twice the 4-bit bytes.) The k-quants (Q4_K, Q6_K, ...)
nest 6-bit sub-block scales inside 256-weight super-blocks; they are refused by name (:data:`EXACT`).

The integers are read by gguf-py itself: the blocks are de-quantized by ``gguf.quants.dequantize`` once as they
are and once with their header set to ``d = 1, m = 0``, which yields ``r``; ``d·r + m`` is then required to
reproduce gguf-py's own values bit for bit, so a layout this module misreads is refused, never converted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EXACT", "BlockForm", "NBitsWeight", "to_nbits", "concat_k", "BLOCK"]

BLOCK = 32


@dataclass(frozen=True)
class BlockForm:
    """How one GGUF block type maps onto MatMulNBits: target bits, the unsigned shift z, whether it has a min."""

    bits: int
    shift: int
    has_min: bool


EXACT: dict[str, BlockForm] = {
    "Q4_0": BlockForm(4, 8, False),
    "Q4_1": BlockForm(4, 0, True),
    "Q5_0": BlockForm(8, 16, False),
    "Q5_1": BlockForm(8, 0, True),
    "Q8_0": BlockForm(8, 128, False),
}


@dataclass
class NBitsWeight:
    """One ``[N, K]`` weight in MatMulNBits form.

    Packed ``B [N, K/32, 32·bits/8]``, ``scales [N, K/32]`` (fp32), ``zero_points`` (uint8, None when the
    operator's default 2^(bits−1) is the shift) and ``offset [K/32, N]`` (fp32 block minima, None without).
    """

    bits: int
    packed: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    offset: np.ndarray | None

    @property
    def k(self) -> int:
        """The input width K (blocks per row times the block size)."""
        return self.packed.shape[1] * BLOCK

    @property
    def n(self) -> int:
        """The output width N (one packed row per output)."""
        return self.packed.shape[0]


def to_nbits(raw: np.ndarray, type_name: str) -> NBitsWeight:
    """Convert ``raw`` (uint8 ``[N, bytes per row]``: N rows of one GGUF block type) to MatMulNBits form.

    Raises ValueError naming the type when it has no exact form, or when the reconstruction differs from
    gguf-py's de-quantized values (a layout this module does not understand).
    """
    import gguf

    form = EXACT.get(type_name)
    if form is None:
        raise ValueError(f"GGUF type {type_name} has no exact MatMulNBits form here (exact: {', '.join(EXACT)})")
    qtype = gguf.GGMLQuantizationType[type_name]
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    assert block_size == BLOCK, (type_name, block_size)
    n = raw.shape[0]
    blocks = np.ascontiguousarray(raw).reshape(-1, type_size)
    nb = blocks.shape[0] // n
    want = gguf.quants.dequantize(blocks, qtype).reshape(n * nb, BLOCK)
    header = 4 if form.has_min else 2
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # [n*nb, 1]
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32) if form.has_min else None
    unit = blocks.copy()
    unit[:, :header] = np.frombuffer(np.array([1.0, 0.0][:header // 2], dtype=np.float16).tobytes(), np.uint8)
    r = gguf.quants.dequantize(unit, qtype).reshape(n * nb, BLOCK)
    got = d * r + m if m is not None else r * d  # gguf-py's own expression order: bit-exact when read right
    if not np.array_equal(got, want, equal_nan=True):
        raise ValueError(f"GGUF {type_name} blocks: scale/min header not where expected (reconstruction differs)")
    u = r.astype(np.int32) + form.shift
    if u.min() < 0 or u.max() >= 1 << form.bits:
        raise ValueError(f"GGUF {type_name} blocks: integers outside {form.bits}-bit range after shift")
    u = u.astype(np.uint8).reshape(n, nb, BLOCK)
    packed = (u[..., 0::2] | (u[..., 1::2] << 4)) if form.bits == 4 else u
    default = 1 << (form.bits - 1)
    zp = None
    if form.shift != default:
        if form.bits == 4:  # two 4-bit zero points per byte, padded to whole bytes per row
            z = np.full((n, nb + nb % 2), form.shift, dtype=np.uint8)
            zp = z[:, 0::2] | (z[:, 1::2] << 4)
        else:
            zp = np.full((n, nb), form.shift, dtype=np.uint8)
    offset = None if m is None else np.ascontiguousarray(m.reshape(n, nb).T)
    return NBitsWeight(form.bits, np.ascontiguousarray(packed), d.reshape(n, nb), zp, offset)


def concat_k(parts: list[NBitsWeight]) -> NBitsWeight:
    """One weight whose K is the parts' K one after another (an int4 wide block's stacked down projection).

    Every part's blocks, scales, zero points and minima are kept as they are: only 4-bit zero points, two to a
    byte and padded per row, are unpacked and packed again, so a part with an odd block count still lines up.
    """
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    packed = np.concatenate([p.packed for p in parts], axis=1)
    scales = np.concatenate([p.scales for p in parts], axis=1)
    offset = None if first.offset is None else np.concatenate([p.offset for p in parts], axis=0)
    zp = None
    if first.zero_points is not None and first.bits == 4:
        z = np.concatenate([np.stack([p.zero_points & 0x0F, p.zero_points >> 4], -1).reshape(p.n, -1)
                            [:, :p.packed.shape[1]] for p in parts], axis=1)
        z = np.concatenate([z, z[:, -1:]], axis=1) if z.shape[1] % 2 else z
        zp = np.ascontiguousarray(z[:, 0::2] | (z[:, 1::2] << 4))
    elif first.zero_points is not None:
        zp = np.concatenate([p.zero_points for p in parts], axis=1)
    return NBitsWeight(first.bits, np.ascontiguousarray(packed), np.ascontiguousarray(scales), zp, offset)
