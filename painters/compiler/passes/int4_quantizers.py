"""One float weight ``[K, N]`` → ``MatMulNBits`` blocks, by each 4-bit quantizer onnxruntime ships.

``QuantizeWeightsPass`` quantizes per initializer (a weight a plan repeats is quantized once), so it cannot hand
the graph to ``MatMulNBitsQuantizer``, which rewrites node by node and would write one copy per clone. It calls
the per-weight kernels behind that class instead; this module is the table of them. Each returns the operator's
inputs: ``packed`` ``uint8 [N, k_blocks, block/2]``, ``scales`` ``[N, k_blocks]`` and ``zero_points`` (None when
symmetric: the operator's default zero point 8; ``uint8 [N, ceil(k_blocks/2)]`` packed two per byte; or float
``[N, k_blocks]``, which the operator takes in the scales' type).

* ``rtn``: round to nearest, symmetric (``DefaultWeightOnlyQuantizer``'s C++ kernel) — painters' first int4.
* ``k_quant``: asymmetric, scale and minimum searched per block to minimise a weighted squared error
  (``quant_tensor_k_quant_cpu``: llama.cpp's Q4_K block search, as ``MatMulNBitsQuantizer``'s ``k_quant``).
* ``hqq``: Half-Quadratic Quantization (``HQQWeightOnlyQuantizer.quantize_internal``): asymmetric, float zero
  points fitted by a proximal solver; needs torch, no data. The most accurate. onnxruntime's CPU kernel prepacks
  only uint8 zero points (``MatMulNBits::PrePack``): with float ones it de-quantizes B on every call, ignoring
  ``accuracy_level`` 4, and decodes over 12x slower. ``QuantizeWeightsPass`` therefore writes ``s·(q − zp)`` as
  ``s·q + m`` (zero point 0 plus ``BlockSum(A)·M``, :mod:`painters.compiler.passes.block_offsets`), the GGUF pass's
  form for Q4_1; the speed that leaves is measured in ``quantize.DEFAULT_QUANTIZER``'s comment.
* ``gptq``: GPTQ (``neural_compressor.weight_only.gptq``): quantizes row by row, compensating each row's error
  in the rows still to come through the inverse Hessian ``H = 2/n·Σ xxᵀ`` of the weight's inputs ``x``, so it
  needs calibration activations (:mod:`painters.compiler.passes.calibrate` collects them); then
  ``quant_tensor`` stores the result as ``MatMulNBitsQuantizer``'s GPTQ does.
"""

from __future__ import annotations

import numpy as np

__all__ = ["QUANTIZERS", "CALIBRATED", "quantize_weight", "dequantize"]

QUANTIZERS = ("rtn", "k_quant", "hqq", "gptq")
CALIBRATED = frozenset({"gptq"})  # quantizers that need the weight's input Hessian

Quantized = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


def quantize_weight(weight: np.ndarray, quantizer: str, block: int, hessian: np.ndarray | None = None) -> Quantized:
    """``weight`` ``[K, N]`` (fp32, as a MatMul reads it) as MatMulNBits ``(packed, scales, zero_points)``.

    ``hessian`` ``[K, K]`` is GPTQ's (required by it, ignored by the others). Scales come back fp32; the caller
    casts them (and float zero points) to the graph's float type.
    """
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    if quantizer == "rtn":
        return _rtn(weight, block)
    if quantizer == "hqq":
        return _hqq(weight, block)
    from onnxruntime.quantization.neural_compressor.weight_only import (
        gptq,
        pad_tensor,
        quant_tensor,
        quant_tensor_k_quant_cpu,
    )

    k, n = weight.shape
    k_blocks = -(-k // block)
    if quantizer == "k_quant":
        q, scales, zeros = quant_tensor_k_quant_cpu(pad_tensor(weight, block, k_blocks).T, 4, block)
    elif quantizer == "gptq":
        if hessian is None:
            raise ValueError("gptq needs the Hessian of the weight's inputs")
        # ONNX Runtime's defaults (GPTQWeightOnlyQuantConfig): asymmetric, 1 % damping, 128-row lazy batches
        fake = gptq(weight.copy(), np.array(hessian, dtype=np.float64), num_bits=4, group_size=block, scheme="asym",
                    blocksize=128, percdamp=0.01, actorder=False, mse=False, perchannel=True)
        q, scales, zeros = quant_tensor(pad_tensor(fake, block, k_blocks).T, 4, block, "asym", "uint")
    else:
        raise ValueError(f"unknown quantizer {quantizer!r}; choose one of {', '.join(QUANTIZERS)}")
    return (_pack(q.reshape(n, k_blocks * block)).reshape(n, k_blocks, block // 2),
            scales.reshape(n, k_blocks).astype(np.float32), _pack(zeros.reshape(n, k_blocks)))


def dequantize(packed: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, k: int) -> np.ndarray:
    """The ``[K, N]`` fp32 weight a MatMulNBits computes with (its contrib-op spec, for tests and checks)."""
    n, k_blocks, half = packed.shape
    q = np.stack([packed & 0x0F, packed >> 4], -1).reshape(n, k_blocks, 2 * half).astype(np.float32)
    scales = np.asarray(scales, dtype=np.float32).reshape(n, k_blocks)
    if zero_points is None:
        zeros = np.full((n, k_blocks), 8.0, dtype=np.float32)
    elif zero_points.dtype == np.uint8:
        zeros = np.stack([zero_points & 0x0F, zero_points >> 4], -1).reshape(n, -1)[:, :k_blocks].astype(np.float32)
    else:
        zeros = np.asarray(zero_points, dtype=np.float32).reshape(n, k_blocks)
    return ((q - zeros[..., None]) * scales[..., None]).reshape(n, -1)[:, :k].T


def _rtn(weight: np.ndarray, block: int) -> Quantized:
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )

    quantizer = DefaultWeightOnlyQuantizer(DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True))
    packed, scales, _ = quantizer.qbits_block_quant(weight)
    return packed, scales, None


def _hqq(weight: np.ndarray, block: int) -> Quantized:
    import torch
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, HQQWeightOnlyQuantizer

    k, n = weight.shape
    hqq = HQQWeightOnlyQuantizer(HQQWeightOnlyQuantConfig(block_size=block, bits=4))
    q, scales, zeros = hqq.quantize_internal(torch.from_numpy(weight).T, bits=4, group_size=block)
    k_blocks = -(-k // block)
    return (_pack(q.numpy().reshape(n, k_blocks * block)).reshape(n, k_blocks, block // 2),
            scales.numpy().astype(np.float32).reshape(n, k_blocks),
            zeros.numpy().astype(np.float32).reshape(n, k_blocks))


def _pack(values: np.ndarray) -> np.ndarray:
    """Rows of 4-bit integers two to a byte, low nibble first (MatMulNBits' layout); an odd row gets a pad of 8.

    ``[N, k_blocks·block]`` quantized weights → ``[N, k_blocks·block/2]`` (the caller shapes the blocks); zero points
    ``[N, k_blocks]`` → ``[N, ceil(k_blocks/2)]`` (ONNX Runtime's ``make_matmul_weight_only_node`` packs them
    across rows, which is wrong for an odd block count: K = 576 at block 128).
    """
    values = np.asarray(values).astype(np.uint8)
    if values.shape[1] % 2:
        values = np.concatenate([values, np.full((values.shape[0], 1), 8, dtype=np.uint8)], axis=1)
    return values[:, 0::2] | (values[:, 1::2] << 4)
