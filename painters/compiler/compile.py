"""``painters-compile``: exported ONNX graph + plan → rewritten ONNX graph (and optionally an engine)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass, TopologicalSortPass

from painters.artifact import BLOCKS, PLAN, PREFIX, SCHEDULE, SLOT_LAYOUT, Record
from painters.compiler import genai
from painters.compiler.blocks import BlockStructure, discover_blocks
from painters.compiler.encoder_blocks import is_encoder_graph, prepare_encoder
from painters.compiler.fused_ops import check_fused_ops
from painters.compiler.graph_io import graph_inputs, initializer_bytes, inline_small_external, load_graph, save_graph
from painters.compiler.layout import SlotLayout, slot_layout
from painters.compiler.passes.anchor_shapes import AnchorKVShapesPass
from painters.compiler.passes.check import CheckStructurePass
from painters.compiler.passes.gguf_weights import GgufWeightsPass
from painters.compiler.passes.instantiate import InstantiateStagesPass
from painters.compiler.passes.int4_quantizers import CALIBRATED
from painters.compiler.passes.logits_to_keep import LogitsToKeepPass
from painters.compiler.passes.noops import RemoveNoOpsPass
from painters.compiler.passes.quantize import (
    ACCURACY_LEVELS,
    DEFAULT_ACCURACY_LEVEL,
    DEFAULT_QUANTIZER,
    WEIGHT_FORMATS,
    QuantizeWeightsPass,
)
from painters.compiler.passes.skip_norms import FuseSkipNormsPass, SplitSkipNormsPass
from painters.compiler.pipeline import (
    CompileResult,
    default_output,
    resolve_plan,
    run_passes,
    safe_plan_name,
    stamp_compiled,
)
from painters.decoder_io import past_slots
from painters.errors import CompileError, PaintersError
from painters.fileio import atomic_dir_outputs, check_outputs, command_reads
from painters.ort_ops import MS_DOMAIN
from painters.plans import Plan, parse_plan

__all__ = ["compile_model", "compiled_plan", "CompileResult", "default_output", "safe_plan_name", "prepare",
           "compile_passes", "run_passes", "calibration_tokens", "int4_source", "resolve_plan", "stamp_compiled",
           "describe"]

log = logging.getLogger(__name__)

CALIB_SAMPLES, CALIB_SEQ_LEN = 32, 256  # GPTQ calibration: 8192 tokens in 32 prefills


def prepare(model: ir.Model) -> BlockStructure:
    """Normalize and discover: the shared first step of every rewrite (and of ``painters inspect``).

    Graphs without value types (the TorchScript exporter writes none) get ONNX shape inference first, so
    no-op Casts can be recognized; our own exports carry types and skip it. Residual adds fused into norms
    (ONNX Runtime GenAI's graphs) are split so the stream between blocks is a value
    (:mod:`painters.compiler.passes.skip_norms`), and fused operators painters does not know are refused.
    """
    passes: list[ir.passes.PassBase] = [RemoveNoOpsPass(), SplitSkipNormsPass(), AnchorKVShapesPass()]
    if any(v.dtype is None for node in model.graph for v in node.outputs):
        passes.insert(0, ShapeInferencePass(strict_mode=False))
    run_passes(passes, model)
    try:
        structure = discover_blocks(model)
    except CompileError as exc:
        check_fused_ops(model, None, str(exc))
        raise
    check_fused_ops(model, structure)
    return structure


def compile_passes(structure: BlockStructure, layout: SlotLayout, *, ort_form: bool = False,
                   weights: str = "float", block_size: int = 32, gguf: Path | None = None,
                   quantizer: str = DEFAULT_QUANTIZER, accuracy_level: int = DEFAULT_ACCURACY_LEVEL,
                   calibration: np.ndarray | None = None) -> list[ir.passes.PassBase]:
    """The compile pipeline after discovery: instantiate the layout's stages, then clean up and check.

    Every compiled graph takes ``logits_to_keep`` (:mod:`painters.compiler.passes.logits_to_keep`): a prefill that
    goes on decoding computes the head for its last position only, which no plan's ratio could otherwise reach.

    ``ort_form``: the graph uses ONNX Runtime's contrib operators (``com.microsoft``, ONNX Runtime GenAI's
    builder): residual Adds are folded back into the norms that read them, so the output keeps that form, and
    onnx's checker is skipped — it has no schema for ONNX Runtime's default-domain
    ``SimplifiedLayerNormalization`` and refuses the builder's own graphs. ``weights="int4"`` quantizes every
    2-D MatMul weight once (:class:`~painters.compiler.passes.quantize.QuantizeWeightsPass`), or, given the
    ``gguf`` the graph was exported from, converts that file's own blocks exactly
    (:class:`~painters.compiler.passes.gguf_weights.GgufWeightsPass`); ``quantizer``, ``accuracy_level`` and
    ``calibration`` (token ids, GPTQ) are the int4 pass's.
    """
    quantize: list[ir.passes.PassBase] = []
    if weights == "int4":
        quantize = [GgufWeightsPass(gguf, accuracy_level) if gguf is not None
                    else QuantizeWeightsPass(block_size, accuracy_level, quantizer, calibration)]
    instantiate = InstantiateStagesPass(structure, layout, int4=weights == "int4")
    if ort_form:
        return [LogitsToKeepPass(structure), instantiate, *quantize, FuseSkipNormsPass(), RemoveUnusedNodesPass(),
                TopologicalSortPass()]
    return [LogitsToKeepPass(structure), instantiate, *quantize, RemoveUnusedNodesPass(), TopologicalSortPass(),
            CheckStructurePass()]


def compile_model(model_path: str | Path, plan: str | Plan, out: str | Path | None = None, *,
                  scores: str | Path | None = None, fuse_parallel: bool = True, weights: str = "float",
                  block_size: int | None = None, gguf: str | Path | None = None, quantizer: str | None = None,
                  accuracy_level: int | None = None, calib: str | Path | None = None) -> CompileResult:
    """Rewrite ``model_path`` to ``plan`` and write the result atomically (default ``MODEL.PLAN.onnx``).

    ``fuse_parallel`` (the default) turns each parallel group into one wide block
    (:mod:`painters.compiler.passes.fuse_parallel`); a group it cannot fuse stays unfused, with a warning.

    ``weights="int4"`` stores every 2-D MatMul weight as block-wise int4 (``block_size`` 32 or 128), each shared
    weight quantized once; a parallel group fuses into an int4 wide block whose packed weights are the members'
    own blocks, concatenated (:mod:`painters.compiler.forms.wide_int4`), where its form has one.
    A graph exported from a GGUF keeps that file's own blocks instead, converted exactly (``gguf``: the file;
    None finds it for the built-in ``smollm2-135m``; ``"none"`` re-quantizes): see :func:`int4_source`.
    Re-quantizing uses ``quantizer`` (one of onnxruntime's, default ``DEFAULT_QUANTIZER``; ``"gptq"`` needs
    ``calib``, a local text/JSONL file tokenized with the tokenizer beside the graph); ``accuracy_level`` is
    MatMulNBits' (4: int8 activations on the CPU, the default; 0/1: fp32) on either path.

    An ONNX Runtime GenAI ``model.onnx`` (``genai_config.json`` beside it) compiles to a GenAI folder
    (default ``DIR.PLAN/model.onnx``) with its config rewritten (:mod:`painters.compiler.genai`).
    """
    start = time.perf_counter()
    if weights not in WEIGHT_FORMATS:
        raise CompileError(f"--weights {weights!r}: choose one of {', '.join(WEIGHT_FORMATS)}")
    if weights != "int4" and any(o is not None for o in (block_size, gguf, quantizer, accuracy_level, calib)):
        raise CompileError("--block-size, --gguf, --quantizer, --accuracy-level and --calib choose how int4 weights "
                           "are made; add --weights int4")
    if block_size is not None and block_size not in (32, 128):
        raise CompileError(f"--block-size {block_size}: int4 blocks of 32 or 128 weights")
    src = Path(model_path)
    model = load_graph(src)
    parent = compiled_plan(model)
    if parent is not None:
        raise CompileError(f"{src} was already compiled with plan {parent[:80]}; compiling it again would record a "
                           "schedule its blocks do not have. Compile the source graph instead, with one composed "
                           "plan (e.g. A+B, or a plan file listing the steps)")
    if is_encoder_graph(model):  # BERT family: post-LN blocks, no KV cache
        if weights != "float":
            raise CompileError(f"--weights {weights} applies to decoder graphs; {src} is an encoder graph")
        from painters.compiler.encoder_compile import compile_encoder

        return compile_encoder(model, src, plan, out, scores=scores, start=start)
    source_bytes = initializer_bytes(model)
    config = genai.read_config(src, model)
    reads = graph_inputs(model, src)  # before inlining: every file the graph reads
    inline_small_external(model)
    ort_form = MS_DOMAIN in model.opset_imports
    if config is not None:  # before discovery: the KV-shape anchoring needs a static head dim
        genai.pin_head_dim(model, config)
    structure = prepare(model)
    if config is not None:
        genai.check_config(config, src, model, structure)
    record = Record.from_props(model.metadata_props, str(src))
    source_hash = record.source_hash
    if weights == "int4":
        had = record.extra.get("weights") or next(
            (f"MatMulNBits, {n.attributes['bits'].as_int()}-bit" for n in model.graph if n.op_type == "MatMulNBits"),
            None)
        if had:
            raise CompileError(f"{src} already has quantized weights ({had}); drop --weights int4 (its weights are "
                               "kept as they are), or compile the float graph it came from")
    gguf_path = int4_source(model, gguf, block_size) if weights == "int4" else None
    block_size = 32 if gguf_path is not None or block_size is None else block_size
    if gguf_path is not None and (quantizer is not None or calib is not None):
        raise CompileError(f"--quantizer/--calib choose how float weights are re-quantized; this compile converts "
                           f"{gguf_path.name}'s own 4-bit blocks exactly (nothing is quantized): drop them, or add "
                           "--gguf none to re-quantize the float weights")
    quantizer = quantizer or DEFAULT_QUANTIZER
    level = DEFAULT_ACCURACY_LEVEL if accuracy_level is None else accuracy_level
    if level not in ACCURACY_LEVELS:
        raise CompileError(f"--accuracy-level {level}: choose one of {', '.join(map(str, ACCURACY_LEVELS))} "
                           "(0/1: fp32 activations, 4: int8 activations)")
    calibration = calibration_tokens(src, calib, quantizer) if weights == "int4" and gguf_path is None else None
    plan_arg = plan if isinstance(plan, str) else None  # a plan file is an input too
    plan = resolve_plan(plan, structure.num_layers, src, source_hash, scores)
    if out:
        out = Path(out)
    elif config is not None:
        out = genai.default_output_dir(src, safe_plan_name(plan.name))
    else:
        out = default_output(src, plan.name)
    written = [out, out.with_name(out.name + ".fused.data")]
    if config is not None:
        written.append(out.with_name(genai.CONFIG_NAME))
        reads.append(src.with_name(genai.CONFIG_NAME))
    check_outputs(written, [*reads, *([gguf_path] if gguf_path else []), *([Path(calib)] if calib else []),
                            *command_reads(scores, plans=plan_arg)])
    beside = {str(p.relative_to(src.parent)) for p in reads[1:] if p.is_relative_to(src.parent)}
    for name in (out.name, out.name + ".fused.data"):  # files linked next to the output under these names
        if name in beside:
            raise CompileError(f"output name {name} is the name of a file the graph needs beside it "
                               f"({src.parent / name}); choose another name with -o, e.g. one ending in .onnx")
    layout = slot_layout(plan, structure, fuse_parallel=fuse_parallel, opset=model.opset_imports.get("", 0),
                         int4_block=block_size if weights == "int4" else None)
    run_passes(compile_passes(structure, layout, ort_form=ort_form, weights=weights, block_size=block_size,
                              gguf=gguf_path, quantizer=quantizer, accuracy_level=level, calibration=calibration),
               model)
    extra = None
    if weights == "int4":
        how = f"gguf:{gguf_path.name}" if gguf_path else quantizer
        extra = {"weights": f"int4/block{block_size}/{how}/level{level}"}
    output_bytes = stamp_compiled(model, src, plan, layout, source_bytes, source_hash, extra)
    with atomic_dir_outputs(out) as tmp:
        save_graph(model, src, out, tmp)
        if config is not None:
            genai.write_config(genai.compiled_config(config, out.name, layout.kv_slots), tmp)
    seconds = time.perf_counter() - start
    log.info("compiled %s with %s in %.2f s → %s", src, plan, seconds, out)
    return CompileResult(out, plan, seconds, source_bytes, output_bytes, len(model.graph), layout.kv_slots, layout)


def int4_source(model: ir.Model, gguf: str | Path | None, block_size: int | None) -> Path | None:
    """The GGUF whose own blocks a ``--weights int4`` compile converts, or None to quantize the float weights.

    ``gguf`` "none" re-quantizes; a path names the file; None (the default) finds it where the graph's
    provenance names one painters knows: the built-in ``smollm2-135m`` (a Q4_1 GGUF). A user's GGUF is named by
    its stem only in the graph, so it must be given. Exact blocks are 32 wide: another ``--block-size`` is refused.
    """
    if isinstance(gguf, str) and gguf.lower() == "none":
        return None
    if gguf is None:
        if model.metadata_props.get("painters.source") != "smollm2-135m":
            return None
        from painters.export.sources import smollm2_path

        path = smollm2_path()
    else:
        path = Path(gguf)
        if not path.is_file():
            raise CompileError(f"--gguf {gguf}: no such file; give the .gguf the graph was exported from")
    if block_size not in (None, 32):
        raise CompileError(f"--block-size {block_size}: a GGUF's own blocks are 32 wide; drop --block-size, or "
                           f"add --gguf none to re-quantize at block size {block_size}")
    return path


def calibration_tokens(src: Path, calib: str | Path | None, quantizer: str) -> np.ndarray | None:
    """GPTQ's calibration token ids ``[CALIB_SAMPLES, CALIB_SEQ_LEN]`` from ``calib``; None for the others."""
    if quantizer not in CALIBRATED:
        if calib is not None:
            raise CompileError(f"--calib: --quantizer {quantizer} uses no calibration data; drop --calib, or choose "
                               f"--quantizer {' or '.join(sorted(CALIBRATED))}")
        return None
    if calib is None:
        raise CompileError(f"--quantizer {quantizer} needs calibration text: add --calib FILE (a local .txt or "
                           ".jsonl, e.g. held-out passages of ../shared/data/lambada/lambada_test.jsonl)")
    from painters.analysis.calibration import calibration_ids
    from painters.runtime.ort import load_tokenizer

    tokenizer = load_tokenizer(src.parent)
    if tokenizer is None:
        raise CompileError(f"--quantizer {quantizer}: no tokenizer beside {src} to read --calib {calib}; export "
                           "the graph with its tokenizer (painters export saves it) or choose --quantizer hqq")
    return calibration_ids(calib, tokenizer, samples=CALIB_SAMPLES, seq_len=CALIB_SEQ_LEN, model_name=str(src),
                           fewer="give a longer --calib file").numpy()


def compiled_plan(model: ir.Model) -> str | None:
    """The plan a (non-identity) compile already applied to ``model``; None for an exported or foreign graph.

    Compile refuses such a graph. Why refuse rather than compose: the compiled graph's blocks are the first
    plan's stages — clones, fused parallel groups, blocks with a dropped sublayer — not the model's layers,
    so a second plan over them has no schedule over the source that the reference executor could replay,
    and recording either plan alone is false provenance. A graph compiled with the identity plan keeps the
    source's blocks, so it is not "compiled" here. Every composition is one plan on the source graph (a
    name joined with ``+`` or a plan file listing the steps), so nothing is lost by asking for that.
    """
    try:
        record = Record.from_props(model.metadata_props)
    except PaintersError:
        return model.metadata_props.get(PLAN, "baseline")
    if record.plan is None:
        return None if record.plan_name == "baseline" else record.plan_name
    return None if record.plan == parse_plan("baseline", record.plan.num_layers) else record.plan_name


def describe(path: str | Path) -> dict:
    """What ``painters inspect`` prints: provenance metadata, block counts and the KV slot layout.

    Malformed ``painters.*`` metadata is refused with the key's name (:class:`CompileError`).
    """
    model = load_graph(Path(path))
    record = Record.from_props(model.metadata_props, str(path))
    meta = {k: v for k, v in record.to_props().items() if k not in (SCHEDULE, SLOT_LAYOUT, BLOCKS)}
    slots = len(past_slots(v.name for v in model.graph.inputs))
    info: dict = {"file": str(path), "nodes": len(model.graph), "kv_slots": slots,
                  "initializer_bytes": initializer_bytes(model)}
    plan = record.plan
    if plan is not None:
        info.update(block_evals=plan.block_evals, schedule=[s.to_json() for s in plan.steps])
    elif "blocks" in record.extra:
        try:
            blocks = json.loads(record.extra["blocks"])
        except ValueError as exc:
            raise CompileError(f"metadata {BLOCKS} is not valid JSON ({exc}); re-export the model") from None
        if not isinstance(blocks, list):
            raise CompileError(f"metadata {BLOCKS} is malformed (not a list); re-export the model")
        info["blocks"] = len(blocks)
    else:
        info["blocks"] = (prepare_encoder(model) if is_encoder_graph(model) else prepare(model)).num_layers
    layout = record.slot_layout
    if layout is not None:
        if len(layout.slots) != slots:
            raise CompileError(f"metadata {SLOT_LAYOUT} lists {len(layout.slots)} KV slots but the graph has "
                               f"{slots}; recompile it with `painters compile`")
        recorded = layout.to_json()
        info.update(fused_stages=recorded["fused_stages"], slot_layout=recorded["slots"])
    return {**info, **{k.removeprefix(PREFIX): v for k, v in meta.items()}}
