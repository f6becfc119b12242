"""The per-block offset term of an int4 weight ``w = s·q + m``, kept off MatMulNBits' slow path.

ONNX Runtime's CPU ``MatMulNBits`` prepacks its weight only with uint8 zero points; a float zero point (GGUF's
Q4_1/Q5_1 minimum as ``−m/d``, HQQ's fitted ``zp``) makes it de-quantize the weight on every call with fp32
activations, many times slower. Both weight passes therefore write the offset as a second, small term:

    ``Y = MatMulNBits(A; q, s, zero_point 0) + BlockSum(A) · M``

where ``BlockSum`` adds A over each block of K and ``M [k_blocks, N]`` holds the offsets ``m`` (GGUF: the block
minimum; HQQ: ``−s·zp``). That is the same sum regrouped, and both terms run on prepacked fast kernels.

One :class:`BlockOffsets` per pass run caches the block sums per activation, so the MatMuls reading one input
(q, k and v; gate and up) share theirs, and the block-shape constants are one initializer each.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

__all__ = ["BlockOffsets"]


class BlockOffsets:
    """Builds ``y + BlockSum(a) · M`` terms in one graph, one block sum per (activation, K, block size).

    Args:
        tag: Names the nodes (``NODE/{tag}_min/...``) and shared constants (``{tag}_block_...``) this builder
            adds, so the two passes' terms are told apart in a graph.
    """

    def __init__(self, tag: str):
        self.tag = tag
        self._sums: dict[tuple[ir.Value, int, int], ir.Value] = {}

    def add(self, graph: ir.Graph, node: ir.Node, a: ir.Value, y: ir.Value, offsets: ir.Value, k: int,
            block: int) -> ir.Value:
        """``y + BlockSum(a) · offsets``, inserted before ``node`` (the MatMul being replaced) with its tags.

        Args:
            graph: The graph ``node`` is in.
            node: The float MatMul whose product ``y`` computes; its name and metadata go to the new nodes.
            a: The activation ``[..., K]``.
            y: ``MatMulNBits(a; q, s, zero_point 0)``.
            offsets: The initializer ``M [ceil(K/block), N]``; a last partial block sums only its real columns.
            k: K.
            block: The quantization block size along K.
        """
        base = f"{node.name or offsets.name}/{self.tag}_min"
        summed = self._sums.get((a, k, block))
        if summed is None:
            summed = self._block_sum(graph, node, a, k, block, base)
            self._sums[(a, k, block)] = summed
        product = ir.Node("", "MatMul", [summed, offsets], num_outputs=1, name=f"{base}/product")
        add = ir.Node("", "Add", [y, product.outputs[0]], num_outputs=1, name=f"{base}/add")
        for n in (product, add):
            n.metadata_props.update(node.metadata_props)
            graph.insert_before(node, n)
        return add.outputs[0]

    def _shared(self, graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
        """One initializer per distinct constant (block shapes, axes), shared by every offset term."""
        if name not in graph.initializers:
            value = ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(array), name=name))
            value.shape, value.dtype = value.const_value.shape, value.const_value.dtype
            graph.register_initializer(value)
        return graph.initializers[name]

    def _block_sum(self, graph: ir.Graph, node: ir.Node, a: ir.Value, k: int, block: int, base: str) -> ir.Value:
        """A summed over each block of K: Reshape + ReduceSum, or a product with a 0/1 matrix ``[K, blocks]``.

        The product serves where the reshape cannot: A's rank unknown, or K not a multiple of the block
        (SmolLM2's K = 576 at block 128).
        """
        blocks = -(-k // block)
        rank = len(a.shape) if a.shape is not None else None
        if rank is not None and k % block == 0:
            shape = self._shared(graph, f"{self.tag}_block_shape_r{rank}_b{blocks}",
                                 np.array([0] * (rank - 1) + [blocks, block], dtype=np.int64))
            axes = self._shared(graph, f"{self.tag}_block_axis", np.array([-1], dtype=np.int64))
            grouped = ir.Node("", "Reshape", [a, shape], num_outputs=1, name=f"{base}/blocks")
            summed = ir.Node("", "ReduceSum", [grouped.outputs[0], axes], attributes=[ir.AttrInt64("keepdims", 0)],
                             num_outputs=1, name=f"{base}/block_sum")
            nodes = [grouped, summed]
        else:
            dtype = a.dtype.numpy() if a.dtype is not None else np.float32
            ones = np.zeros((k, blocks), dtype=dtype)
            ones[np.arange(k), np.arange(k) // block] = 1
            table = self._shared(graph, f"{self.tag}_block_ones_k{k}_b{block}_{np.dtype(dtype).name}", ones)
            nodes = [ir.Node("", "MatMul", [a, table], num_outputs=1, name=f"{base}/block_sum")]
        for n in nodes:
            n.metadata_props.update(node.metadata_props)
            graph.insert_before(node, n)
        return nodes[-1].outputs[0]
