"""int4 weights taken from the GGUF a graph was exported from: the file's own blocks, not a re-quantization.

A graph exported from a GGUF holds the blocks de-quantized to fp32 (transformers runs gguf-py's de-quantizer).
Every MatMul weight column is therefore, bit for bit, one row of one GGUF tensor — up to the renaming,
the Q/K row permutation llama.cpp's converter applies and transformers undoes, transposition and any packing
the exporter did. Rather than re-deriving those name and layout mappings, each column is found by its values
(a hash of the fp32 row), which also proves the graph comes from this file: a column that matches no row is
refused with the weight's name. The matched rows' raw blocks are converted exactly
(:mod:`painters.compiler.passes.gguf_blocks`) and become the ``MatMulNBits`` weights.

Block types with a minimum (Q4_1, Q5_1: ``w = d·q + m``) get a second, small term for ``m``:
``Y = MatMulNBits(A; q, d, zero_point 0) + BlockSum(A) · M`` where ``BlockSum`` adds A over each 32-wide block
of K and ``M [K/32, N]`` holds the minima (:class:`~painters.compiler.passes.block_offsets.BlockOffsets`, shared
with the HQQ quantizer). That is the same sum, regrouped, and both terms run on prepacked fast kernels; a float
``zero_point = −m/d`` would not (see gguf_blocks).

A weight stacked along K from member weights (an int4 wide block's down projection, tagged
:data:`~painters.compiler.forms.wide_int4.K_SEGMENTS`) is matched part by part and its blocks concatenated
(:func:`~painters.compiler.passes.gguf_blocks.concat_k`); weights concatenated along N need nothing: their
columns are rows of the file.

A lookup of the very initializer a head was converted from (a tied embedding: SmolLM2's Q8_0 ``token_embd``)
reads the head's ``MatMulNBits`` initializers themselves — ``GatherBlockQuantized`` over the
``[N, K/32, 32·bits/8]`` blocks along their last axis, its ``[.., K/32, 32]`` rows reshaped to ``[.., K]`` — so
the file's one table stays one table.

Weights the GGUF stores unquantized (F32/F16) stay float MatMuls — that is their exact form; k-quant tensors
are refused by name. Like :class:`~painters.compiler.passes.quantize.QuantizeWeightsPass`, conversion is per
initializer, so duplicated blocks keep sharing one packed weight.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import onnx_ir as ir

from painters.compiler.forms.base import const
from painters.compiler.forms.wide_int4 import K_SEGMENTS
from painters.compiler.passes.block_offsets import BlockOffsets
from painters.compiler.passes.gguf_blocks import BLOCK, EXACT, NBitsWeight, concat_k, to_nbits
from painters.compiler.passes.quantize import own_remaining_weights, replace_node, stored_weight, weight_matmuls
from painters.errors import CompileError

__all__ = ["GgufWeightsPass", "GgufRows", "FLOAT_TYPES"]

log = logging.getLogger(__name__)

_MS = "com.microsoft"
FLOAT_TYPES = ("F32", "F16", "BF16")


def _key(row: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(row, dtype=np.float32).tobytes(), digest_size=16).digest()


@dataclass
class GgufRows:
    """Every 2-D tensor row of a GGUF, indexed by the hash of its de-quantized fp32 values."""

    path: Path
    index: dict[bytes, tuple[int, int]]
    tensors: list  # gguf ReaderTensor

    @classmethod
    def read(cls, path: str | Path) -> GgufRows:
        """Index the rows of every 2-D tensor in the GGUF at ``path`` by the hash of their de-quantized values."""
        import gguf

        path = Path(path)
        try:
            reader = gguf.GGUFReader(path)
        except Exception as exc:  # gguf-py raises many types on a bad file
            raise CompileError(f"--gguf {path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
        index: dict[bytes, tuple[int, int]] = {}
        tensors = []
        for tensor in reader.tensors:
            if len(tensor.shape) != 2:
                continue
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(tensor.data.shape[0], -1)
            t = len(tensors)
            tensors.append(tensor)
            for r in range(values.shape[0]):
                index.setdefault(_key(values[r]), (t, r))
        return cls(path, index, tensors)

    def rows_of(self, name: str, cols: np.ndarray) -> tuple[str, np.ndarray]:
        """The GGUF block type and raw block rows ``[N, bytes]`` that ``cols`` (``[N, K]`` fp32) are made of."""
        found = [self.index.get(_key(c)) for c in cols]
        missing = sum(f is None for f in found)
        if missing:
            raise CompileError(f"weight {name}: {missing} of its {len(cols)} columns are no row of {self.path.name} "
                               "(the graph was not exported from this GGUF, or not in fp32); pass the GGUF the "
                               "graph was exported from with --gguf, or --gguf none to re-quantize")
        types = {self.tensors[t].tensor_type.name for t, _ in found}
        if len(types) > 1:
            raise CompileError(f"weight {name} mixes GGUF block types {sorted(types)}; use --gguf none to re-quantize")
        kind = types.pop()
        raw = np.stack([np.asarray(self.tensors[t].data[r]) for t, r in found])
        return kind, raw


class GgufWeightsPass(ir.passes.InPlacePass):
    """Replace ``MatMul(A, W)`` by ``MatMulNBits`` over the GGUF's own blocks for W (exact)."""

    def __init__(self, gguf_path: str | Path, accuracy_level: int = 4):
        super().__init__()
        self.gguf_path = Path(gguf_path)
        self.accuracy_level = accuracy_level
        self.types: dict[str, int] = {}
        self._offsets = BlockOffsets("gguf")
        # (stored weight, read transposed) → the blocks a head converted from it: rows of the weight's other side
        self._heads: dict[tuple[ir.Value, bool], tuple[NBitsWeight, list[ir.Value]]] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Rewrite the model's MatMuls and embedding Gathers to read the GGUF's own blocks where it holds them."""
        self._offsets = BlockOffsets("gguf")
        self._heads = {}
        rows = GgufRows.read(self.gguf_path)
        graph = model.graph
        done: dict[ir.Value, tuple[NBitsWeight, list[ir.Value]] | None] = {}
        count = 0
        for node, weight, stored, transposed in weight_matmuls(graph):
            if weight not in done:
                done[weight] = self._convert(graph, rows, stored, transposed)
            if done[weight] is None:
                continue
            self._replace(graph, node, *done[weight])
            count += 1
        gathers = self._gathers(graph, rows)
        for weight, converted in done.items():
            if converted is not None and not weight.uses() and weight.is_initializer():
                graph.initializers.pop(weight.name)
        own_remaining_weights(graph)
        if count:
            model.opset_imports.setdefault(_MS, 1)
        log.info("gguf weights: %d MatMuls and %d Gathers read %s blocks of %s", count, gathers,
                 ", ".join(f"{n} {k}" for k, n in sorted(self.types.items())), self.gguf_path.name)
        return ir.passes.PassResult(model, modified=bool(count or gathers))

    def _gathers(self, graph: ir.Graph, rows: GgufRows) -> int:
        """Rewrite embedding lookups over GGUF blocks; return how many were rewritten.

        Embedding lookups (``Gather`` on axis 0 of a 2-D fp32 initializer, or of its ``Transpose``: the builder
        ties the embedding to the head's ``[H, V]`` weight that way) of a block type without a minimum become
        ``GatherBlockQuantized`` over the same bytes — the head's own initializers when a head was converted from
        the same initializer (:meth:`_shared_lookup`); Q4_1/Q5_1 and float tables stay fp32 ``Gather`` (exact
        too: the table already holds the de-quantized values), as does a table that is no GGUF tensor.
        """
        lookups: dict[ir.Value, Callable[[ir.Node], None] | None] = {}
        count = 0
        for node in [n for n in graph if n.op_type == "Gather" and n.domain in ("", "ai.onnx")]:
            table, transposed = stored_weight(node.inputs[0])
            if table is None or node.attributes.get_int("axis", 0) != 0 \
                    or table.const_value.dtype != ir.DataType.FLOAT:
                continue
            if table not in lookups:
                lookups[table] = self._lookup(graph, rows, table, transposed, _lookup_rank(node))
            if lookups[table] is None:
                continue
            transpose = node.inputs[0].producer() if transposed else None
            lookups[table](node)
            if transpose is not None and not transpose.outputs[0].uses():
                graph.remove(transpose, safe=True)
            count += 1
        for table, lookup in lookups.items():
            if lookup is not None and not table.uses() and table.is_initializer():
                graph.initializers.pop(table.name)
        return count

    def _lookup(self, graph: ir.Graph, rows: GgufRows, table: ir.Value, transposed: bool,
                rank: int | None) -> Callable[[ir.Node], None] | None:
        """How a Gather over ``table`` is rewritten (called with the node), or None to keep it."""
        head = self._heads.get((table, not transposed))  # the head's output columns are this lookup's rows
        if head is not None and rank is not None:
            return partial(self._shared_lookup, graph, *head, rank)
        array = np.asarray(const(table), dtype=np.float32)
        try:
            kind, raw = rows.rows_of(table.name, array.T if transposed else array)
        except CompileError:
            return None  # not a GGUF tensor (e.g. a position table): its Gather stays as it is
        form = EXACT.get(kind)
        if form is None or form.has_min:
            return None
        nbits = to_nbits(raw, kind)
        values = [_initializer(graph, f"{table.name}_gather_Q{nbits.bits}", nbits.packed.reshape(nbits.n, -1)),
                  _initializer(graph, f"{table.name}_gather_scales", nbits.scales)]
        if nbits.zero_points is not None:
            values.append(_initializer(graph, f"{table.name}_gather_zp", nbits.zero_points))
        return partial(self._own_lookup, graph, nbits.bits, values)

    @staticmethod
    def _own_lookup(graph: ir.Graph, bits: int, values: list[ir.Value], node: ir.Node) -> None:
        """``GatherBlockQuantized`` over the table's own ``[N, K·bits/8]`` blocks (quantized along axis 1)."""
        attrs = [ir.AttrInt64("bits", bits), ir.AttrInt64("block_size", BLOCK), ir.AttrInt64("gather_axis", 0),
                 ir.AttrInt64("quantize_axis", 1)]
        data, scales, *zp = values
        new = ir.Node(_MS, "GatherBlockQuantized", [data, node.inputs[1], scales, *zp], attributes=attrs,
                      num_outputs=1, name=f"{node.name}/gguf")
        replace_node(graph, node, new)

    def _shared_lookup(self, graph: ir.Graph, nbits: NBitsWeight, values: list[ir.Value], rank: int,
                       node: ir.Node) -> None:
        """``GatherBlockQuantized`` over a head's own ``MatMulNBits`` initializers: the file's one table stays one.

        It takes the head's 3-D blocks quantized along their last axis, with scales (and zero points) of the same
        rank: ``[N, K/32, 1]``, a Reshape of the head's ``[N, K/32]`` that ONNX Runtime folds at load. Its rows
        come out ``[.., K/32, 32]``; a Reshape by the indices' ``rank`` makes them ``[.., K]`` again. (4-bit zero
        points pack differently for the two operators; such heads are not offered, see :meth:`_convert`.)
        """
        per_block = self._shape(graph, f"gguf_lookup_scales_{nbits.n}x{nbits.k // BLOCK}",
                                [nbits.n, nbits.k // BLOCK, 1])
        extra = [ir.Node("", "Reshape", [v, per_block], num_outputs=1, name=f"{node.name}/gguf/{v.name}")
                 for v in values[1:3 if nbits.zero_points is not None else 2]]
        attrs = [ir.AttrInt64("bits", nbits.bits), ir.AttrInt64("block_size", BLOCK), ir.AttrInt64("gather_axis", 0),
                 ir.AttrInt64("quantize_axis", 2)]
        lookup = ir.Node(_MS, "GatherBlockQuantized", [values[0], node.inputs[1], *(n.outputs[0] for n in extra)],
                         attributes=attrs, num_outputs=1, name=f"{node.name}/gguf")
        for n in (*extra, lookup):
            n.metadata_props.update(node.metadata_props)
            graph.insert_before(node, n)
        rows = self._shape(graph, f"gguf_lookup_rows_r{rank}_k{nbits.k}", [0] * rank + [nbits.k])
        replace_node(graph, node, ir.Node("", "Reshape", [lookup.outputs[0], rows], num_outputs=1,
                                          name=f"{node.name}/gguf/rows"))

    @staticmethod
    def _shape(graph: ir.Graph, name: str, dims: list[int]) -> ir.Value:
        """One int64 shape initializer per name, shared by every lookup that needs it."""
        if name not in graph.initializers:
            _initializer(graph, name, np.array(dims, dtype=np.int64))
        return graph.initializers[name]

    def _convert(self, graph: ir.Graph, rows: GgufRows, stored: ir.Value,
                 transposed: bool) -> tuple[NBitsWeight, list[ir.Value]] | None:
        if stored.const_value.dtype != ir.DataType.FLOAT:
            raise CompileError(f"weight {stored.name} is {stored.const_value.dtype.name}: exact GGUF blocks need "
                               "a graph exported in fp32 (painters export SRC --dtype fp32)")
        array = np.asarray(const(stored), dtype=np.float32)
        cols = array if transposed else array.T  # [N, K]: one GGUF row per output column
        segments = 1 if transposed else stored.meta.get(K_SEGMENTS, 1)  # members stacked along K
        found = [rows.rows_of(stored.name, part) for part in np.split(cols, segments, axis=1)]
        kinds = sorted({kind for kind, _ in found})
        if len(kinds) > 1:
            raise CompileError(f"weight {stored.name} stacks members of GGUF block types {kinds}; use --gguf none "
                               "to re-quantize, or --no-fuse-parallel")
        kind = kinds[0]
        self.types[kind] = self.types.get(kind, 0) + 1
        if kind in FLOAT_TYPES:
            return None
        if kind not in EXACT:
            raise CompileError(f"weight {stored.name} is GGUF {kind} in {rows.path.name}: no exact MatMulNBits form "
                               f"(exact: {', '.join(EXACT)}); use --gguf none to re-quantize it")
        nbits = concat_k([to_nbits(raw, kind) for _, raw in found])
        name = f"{stored.name}_T" if transposed else stored.name
        values = [_initializer(graph, f"{name}_Q{nbits.bits}", nbits.packed),
                  _initializer(graph, f"{name}_scales", nbits.scales)]
        if nbits.zero_points is not None:
            values.append(_initializer(graph, f"{name}_zp", nbits.zero_points))
        if nbits.offset is not None:
            values.append(_initializer(graph, f"{name}_min", nbits.offset))
        if len(found) == 1 and nbits.offset is None and not (nbits.bits == 4 and nbits.zero_points is not None):
            self._heads[stored, transposed] = (nbits, values)  # a tied lookup of the same initializer reads them
        return nbits, values

    def _replace(self, graph: ir.Graph, node: ir.Node, nbits: NBitsWeight, values: list[ir.Value]) -> None:
        a = node.inputs[0]
        q, s = values[0], values[1]
        inputs = [a, q, s] + ([values[2]] if nbits.zero_points is not None else [])
        attrs = [ir.AttrInt64("K", nbits.k), ir.AttrInt64("N", nbits.n), ir.AttrInt64("bits", nbits.bits),
                 ir.AttrInt64("block_size", BLOCK), ir.AttrInt64("accuracy_level", self.accuracy_level)]
        new = ir.Node(_MS, "MatMulNBits", inputs, attributes=attrs, num_outputs=1, name=f"{node.name}/gguf")
        graph.insert_before(node, new)  # the minima term below reads its output before the swap
        result = new.outputs[0]
        if nbits.offset is not None:
            out = node.outputs[0]
            result.shape, result.type = out.shape, out.type
            result.name = f"{out.name}/blocks"
            result = self._offsets.add(graph, node, a, result, values[-1], nbits.k, BLOCK)
        replace_node(graph, node, new, result)


def _lookup_rank(node: ir.Node) -> int | None:
    """The rank of a Gather's indices (input_ids: 2), if known: the shared lookup reshapes its rows by it."""
    ids = node.inputs[1]
    return len(ids.shape) if ids is not None and ids.shape is not None else None


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(array), name=name))
    value.shape, value.dtype = value.const_value.shape, value.const_value.dtype
    graph.register_initializer(value)
    return value
