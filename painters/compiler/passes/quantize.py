"""int4 weights after the rewrite: every MatMul with a 2-D float weight becomes ONNX Runtime's ``MatMulNBits``.

A weight is an initializer or the ``Transpose`` of one: a tied LM head reads the embedding matrix transposed (the
export stores it once), and its quantized form is that of the transpose.

Quantization is per *initializer*, not per node: blocks a plan duplicates read the same weight value, so each
weight is quantized once and every clone's MatMul reads the same packed weight, scales and zero points —
duplicated blocks keep sharing their weights. (``MatMulNBitsQuantizer`` itself quantizes node by node and would
write a copy per clone.) The quantizer is one of onnxruntime's, called per weight
(:mod:`painters.compiler.passes.int4_quantizers`: ``rtn``, ``k_quant``, ``hqq``, ``gptq``); GPTQ's Hessian
sums the inputs of every MatMul that reads the weight (:mod:`painters.compiler.passes.calibrate`).
``accuracy_level`` 4 computes with int8-quantized activations on the CPU (as the ONNX Runtime GenAI builder's
int4 CPU graphs and llama.cpp's Q4×Q8 dot products do); 0 and 1 keep fp32 activations.

Everything the graph still reads from the source's data file (embedding, norm gains) is copied into the
output's own data, so the int4 folder does not carry the fp32 weights along. A parallel group is fused by the
int4 wide block (:mod:`painters.compiler.forms.wide_int4`) into 2-D weights that quantize column by column and
K-block by K-block to the members' own packed bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx_ir as ir

from painters.compiler.forms.base import const
from painters.compiler.graph_io import ChunkedTensor
from painters.compiler.passes.block_offsets import BlockOffsets
from painters.compiler.passes.calibrate import calibration_feeds, input_hessians
from painters.compiler.passes.int4_quantizers import CALIBRATED, QUANTIZERS, quantize_weight
from painters.errors import CompileError
from painters.ort_ops import MATMUL_NBITS, MS_DOMAIN

__all__ = ["QuantizeWeightsPass", "BLOCK_SIZES", "WEIGHT_FORMATS", "ACCURACY_LEVELS", "DEFAULT_QUANTIZER",
           "DEFAULT_ACCURACY_LEVEL", "replace_node", "weight_matmuls", "stored_weight", "quantizable",
           "own_remaining_weights", "with_accuracy_level"]

log = logging.getLogger(__name__)

BLOCK_SIZES = (32, 128)
WEIGHT_FORMATS = ("float", "int4")
ACCURACY_LEVELS = (0, 1, 4)  # MatMulNBits on the CPU: 0 (unset) and 1 fp32 activations, 4 int8 activations
# The defaults, measured on SmolLM2-135M (its GGUF de-quantized to fp32, then re-quantized at block 32; first 200
# items; 2-core machine, heavily loaded, ratios from interleaved runs): hqq keeps fp32's accuracy (arc_easy acc_norm
# 0.475, lambada 0.340 vs fp32 0.465 / 0.340, rtn 0.415 / 0.235). Written as zero point 0 + BlockSum(A)·M it runs on
# the prepacked int8 kernel, yet with its offset terms (a product and an Add per MatMul, a block sum per input)
# it still decodes slower than rtn (median 1.16x over seven runs, 1.08-1.55x) and prefills 1.08-1.12x slower
# (float zero points, in one of those runs: decode 13.4x, prefill 1.94x); k_quant and gptq (uint8 zero points,
# rtn's speed) score below rtn on held-out lambada perplexity. So rtn stays the default, at accuracy level 4
# (level 0 decodes 1.26x slower).
DEFAULT_QUANTIZER = "rtn"
DEFAULT_ACCURACY_LEVEL = 4


class QuantizeWeightsPass(ir.passes.InPlacePass):
    """Replace ``MatMul(A, W)`` (W a 2-D float initializer) by ``MatMulNBits``, one quantization per W.

    Args:
        block_size: Weights per quantization block along K (32 or 128).
        accuracy_level: MatMulNBits' ``accuracy_level`` (see ``ACCURACY_LEVELS``).
        quantizer: One of ``int4_quantizers.QUANTIZERS``.
        calibration: Token ids ``[samples, seq]`` for a calibrated quantizer (GPTQ), None for the others.
        float_zero_points: Write HQQ's float zero points into MatMulNBits as they are (onnxruntime's slow path,
            kept as the reference the default form is tested against) instead of zero point 0 plus the
            ``BlockSum(A) · M`` term.
    """

    def __init__(self, block_size: int = 32, accuracy_level: int = DEFAULT_ACCURACY_LEVEL,
                 quantizer: str = DEFAULT_QUANTIZER, calibration: np.ndarray | None = None,
                 float_zero_points: bool = False):
        super().__init__()
        if block_size not in BLOCK_SIZES:
            raise CompileError(f"--block-size {block_size}: choose one of {', '.join(map(str, BLOCK_SIZES))}")
        if quantizer not in QUANTIZERS:
            raise CompileError(f"--quantizer {quantizer}: choose one of {', '.join(QUANTIZERS)}")
        if accuracy_level not in ACCURACY_LEVELS:
            raise CompileError(f"--accuracy-level {accuracy_level}: choose one of "
                               f"{', '.join(map(str, ACCURACY_LEVELS))} (0/1 fp32 activations, 4 int8)")
        if (quantizer in CALIBRATED) != (calibration is not None):
            raise CompileError(f"--quantizer {quantizer}: " + ("needs calibration text (--calib FILE)"
                               if quantizer in CALIBRATED else "takes no calibration data; drop --calib"))
        self.block_size = block_size
        self.accuracy_level = accuracy_level
        self.quantizer = quantizer
        self.calibration = calibration
        self.float_zero_points = float_zero_points

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        matmuls = list(weight_matmuls(graph))
        hessians: dict[ir.Value, np.ndarray] = {}
        if self.quantizer in CALIBRATED and matmuls:
            readers: dict[ir.Value, list[ir.Value]] = {}
            for node, weight, _, _ in matmuls:
                readers.setdefault(weight, []).append(node.inputs[0])
            hessians = input_hessians(model, calibration_feeds(graph, self.calibration), readers)
        done: dict[ir.Value, list[ir.Value]] = {}
        offsets = BlockOffsets("int4")
        count = 0
        for node, weight, stored, transposed in matmuls:
            if weight not in done:
                done[weight] = self._quantized(graph, stored, transposed, hessians.get(weight))
            k, n = reversed(stored.shape) if transposed else stored.shape
            operands, minima = done[weight][:3], done[weight][3:]
            new = ir.Node(MS_DOMAIN, MATMUL_NBITS, [node.inputs[0], *operands], num_outputs=1,
                          name=f"{node.name}/int4",
                          attributes=[ir.AttrInt64("K", k), ir.AttrInt64("N", n), ir.AttrInt64("bits", 4),
                                      ir.AttrInt64("block_size", self.block_size),
                                      ir.AttrInt64("accuracy_level", self.accuracy_level)])
            result = None
            if minima:  # HQQ: w = s·q + m, the m term beside a zero-point-0 MatMulNBits (see block_offsets)
                graph.insert_before(node, new)  # the offset term reads its output before the swap
                out, old = new.outputs[0], node.outputs[0]
                out.shape, out.type, out.name = old.shape, old.type, f"{old.name}/blocks"
                result = offsets.add(graph, node, node.inputs[0], out, minima[0], k, self.block_size)
            replace_node(graph, node, new, result)
            count += 1
        for weight in done:
            if not weight.uses() and weight.is_initializer():  # a tied head's Transpose goes with unused nodes
                graph.initializers.pop(weight.name)
        own_remaining_weights(graph)
        if count:
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        log.info("int4: %d MatMuls read %d weights quantized by %s (block size %d, accuracy level %d)", count,
                 len(done), self.quantizer, self.block_size, self.accuracy_level)
        return ir.passes.PassResult(model, modified=bool(count))

    def _quantized(self, graph: ir.Graph, stored: ir.Value, transposed: bool,
                   hessian: np.ndarray | None) -> list[ir.Value]:
        """The packed weight, scales, zero points (asymmetric quantizers) and HQQ's offsets M, as initializers."""
        array = np.asarray(const(stored), dtype=np.float32)
        packed, scales, zeros = quantize_weight(array.T if transposed else array, self.quantizer, self.block_size,
                                                hessian)
        dtype = stored.const_value.dtype.numpy()
        name = f"{stored.name}_T" if transposed else stored.name
        arrays = {"Q4": packed, "scales": scales.astype(dtype)}
        if zeros is not None and zeros.dtype != np.uint8 and self.float_zero_points:
            arrays["zero_points"] = zeros.astype(dtype)
        elif zeros is not None and zeros.dtype != np.uint8:  # float zero points (HQQ): s·(q − zp) = s·q + m
            arrays["zero_points"] = np.zeros((zeros.shape[0], -(-zeros.shape[1] // 2)), dtype=np.uint8)
            arrays["min"] = np.ascontiguousarray((-scales * zeros).T).astype(dtype)  # M [k_blocks, N]
        elif zeros is not None:  # uint8 packed nibbles
            arrays["zero_points"] = zeros
        values = []
        for suffix, data in arrays.items():
            v = ir.Value(name=f"{name}_{suffix}", const_value=ir.tensor(data, name=f"{name}_{suffix}"))
            v.shape, v.dtype = v.const_value.shape, v.const_value.dtype
            graph.register_initializer(v)
            values.append(v)
        return values


def own_remaining_weights(graph: ir.Graph) -> None:
    """Make the float weights still read from the source's data file lazy copies written with the output."""
    for value in graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            value.const_value = ChunkedTensor(lambda t=tensor: [_read(t)], dtype=tensor.dtype,
                                              shape=tensor.shape, name=tensor.name or value.name)


def weight_matmuls(graph: ir.Graph) -> Iterator[tuple[ir.Node, ir.Value, ir.Value, bool]]:
    """Every MatMul whose weight is a stored matrix: (node, weight it reads, the initializer, read transposed).

    The initializer is the weight itself, or what it is the 2-D ``Transpose`` of (a tied LM head reads the
    embedding that way: one stored matrix). Both weight passes (round-to-nearest int4 and the GGUF's own blocks)
    walk this list, so they agree on which MatMuls carry weights.
    """
    for node in [n for n in graph if n.op_type == "MatMul" and n.domain in ("", "ai.onnx")]:
        weight = node.inputs[1]
        stored, transposed = stored_weight(weight)
        if stored is not None:
            yield node, weight, stored, transposed


def stored_weight(weight: ir.Value | None) -> tuple[ir.Value | None, bool]:
    """The quantizable initializer ``weight`` is, or is the 2-D ``Transpose`` of (True); (None, False) if neither."""
    if quantizable(weight):
        return weight, False
    node = weight.producer() if weight is not None else None
    if node is not None and node.op_type == "Transpose" and node.domain in ("", "ai.onnx") \
            and quantizable(node.inputs[0]):
        perm = node.attributes.get_ints("perm")
        if perm is None or list(perm) == [1, 0]:
            return node.inputs[0], True
    return None, False


def quantizable(weight: ir.Value | None) -> bool:
    """A 2-D fp32/fp16 initializer of static shape: the weights a quantizer can take."""
    if weight is None or not weight.is_initializer() or weight.const_value is None:
        return False
    shape = weight.shape
    return (shape is not None and len(shape) == 2 and all(isinstance(d, int) for d in shape)
            and weight.const_value.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16))


def replace_node(graph: ir.Graph, node: ir.Node, new: ir.Node, result: ir.Value | None = None) -> None:
    """Put ``new`` where ``node`` was: its tags, its place, its output's name, shape, type and every use.

    ``result`` is the value that takes over (``new``'s first output unless a tail follows it, e.g. the GGUF
    minima term after a ``MatMulNBits``); the output keeps its name so the graph's outputs and readers keep theirs.
    """
    new.metadata_props.update(node.metadata_props)
    if new.graph is None:  # a caller that built a tail reading ``new`` has placed it already
        graph.insert_before(node, new)
    out = node.outputs[0]
    result = result if result is not None else new.outputs[0]
    result.shape, result.type = out.shape, out.type
    out.replace_all_uses_with(result, replace_graph_outputs=True)
    graph.remove(node, safe=True)
    result.name = out.name


def _read(tensor: ir.ExternalTensor) -> np.ndarray:
    """An external tensor, memory-mapped (onnx-ir refuses hard-linked data files, which compile outputs are)."""
    if not tensor.size:
        return np.zeros(tensor.shape.numpy(), dtype=tensor.dtype.numpy())
    return np.memmap(tensor.path, dtype=tensor.dtype.numpy(), mode="r", offset=tensor.offset or 0,
                     shape=tuple(tensor.shape.numpy()))


def with_accuracy_level(path: str | Path, level: int) -> Path:
    """``path``'s int4 graph with every ``MatMulNBits`` at ``accuracy_level`` ``level``, saved beside it as
    ``levelL.onnx`` (``path`` itself when ``level`` is 4, the compile default): comparing levels on one compiled
    graph shows what int8 activations alone change, with no second compile."""
    path = Path(path)
    if level == 4:
        return path
    model = ir.load(path)
    for node in model.graph:
        if node.op_type == "MatMulNBits":
            node.attributes["accuracy_level"] = ir.AttrInt64("accuracy_level", level)
    out = path.with_name(f"level{level}.onnx")
    ir.save(model, out, external_data=out.name + ".data")
    return out
