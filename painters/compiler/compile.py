"""``painters-compile``: exported ONNX graph + plan → rewritten ONNX graph (and optionally an engine)."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass, TopologicalSortPass

from painters import __version__
from painters.compiler.blocks import BlockStructure, discover_blocks
from painters.compiler.graph_io import graph_inputs, initializer_bytes, load_graph, save_graph
from painters.compiler.layout import METADATA_KEY as LAYOUT_KEY
from painters.compiler.layout import SlotLayout, slot_layout
from painters.compiler.passes.anchor_shapes import AnchorKVShapesPass
from painters.compiler.passes.check import CheckStructurePass
from painters.compiler.passes.instantiate import InstantiateStagesPass
from painters.compiler.passes.noops import RemoveNoOpsPass
from painters.decoder_io import past_slots
from painters.errors import CompileError, PaintersError
from painters.fileio import atomic_dir_outputs, check_output_path, check_outputs, file_hash
from painters.graph_metadata import SCHEDULE, painters_metadata, read_schedule, read_slot_layout
from painters.plans import Plan, load_scores, parse_plan

__all__ = ["compile_model", "CompileResult", "default_output", "prepare", "compile_passes", "run_passes", "describe"]

log = logging.getLogger(__name__)


@dataclass
class CompileResult:
    output: Path
    plan: Plan
    seconds: float
    source_bytes: int
    output_bytes: int
    nodes: int
    kv_slots: int  # KV slots of the graph: the plan's, or fewer where parallel groups were fused
    layout: SlotLayout  # which stages fused, and each compiled slot's stage, plan slots and heads


def default_output(model: Path, plan_name: str) -> Path:
    """``MODEL.PLAN.onnx`` beside the input, with the plan name made file-system safe."""
    safe = re.sub(r"[^A-Za-z0-9_.,+-]", "-", plan_name)
    return model.with_name(f"{model.stem}.{safe}.onnx")


def run_passes(passes: list[ir.passes.PassBase], model: ir.Model) -> ir.passes.PassResult:
    """Run ``passes`` in one onnx-ir ``PassManager``; a painters error inside a pass comes out as itself.

    The manager wraps every exception in ``PassError`` (naming the passes already run); a ``PaintersError``
    is the user's problem and keeps its one-line message, and any other failure is a bug that keeps its chain.
    """
    try:
        return ir.passes.PassManager(passes)(model)
    except ir.passes.PassError as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, PaintersError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def prepare(model: ir.Model) -> BlockStructure:
    """Normalize and discover: the shared first step of every rewrite (and of ``painters inspect``).

    Graphs without value types (the TorchScript exporter writes none) get ONNX shape inference first, so
    no-op Casts can be recognized; our own exports carry types and skip it.
    """
    passes: list[ir.passes.PassBase] = [RemoveNoOpsPass(), AnchorKVShapesPass()]
    if any(v.dtype is None for node in model.graph for v in node.outputs):
        passes.insert(0, ShapeInferencePass(strict_mode=False))
    run_passes(passes, model)
    return discover_blocks(model)


def compile_passes(structure: BlockStructure, layout: SlotLayout) -> list[ir.passes.PassBase]:
    """The compile pipeline after discovery: instantiate the layout's stages, then clean up and check."""
    return [InstantiateStagesPass(structure, layout), RemoveUnusedNodesPass(), TopologicalSortPass(),
            CheckStructurePass()]


def compile_model(model_path: str | Path, plan: str | Plan, out: str | Path | None = None, *,
                  scores: str | Path | None = None, fuse_parallel: bool = True) -> CompileResult:
    """Rewrite ``model_path`` to ``plan`` and write the result atomically (default ``MODEL.PLAN.onnx``).

    ``fuse_parallel`` (the default) turns each parallel group into one wide block
    (:mod:`painters.compiler.passes.fuse_parallel`); a group it cannot fuse stays unfused, with a warning.
    """
    start = time.perf_counter()
    src = Path(model_path)
    model = load_graph(src)
    source_bytes = initializer_bytes(model)
    structure = prepare(model)
    source_hash = model.metadata_props.get("painters.source_hash", "")
    if isinstance(plan, str):
        plan = parse_plan(plan, structure.num_layers,
                          scores=load_scores(scores, model_hash=source_hash) if scores else None)
    elif plan.num_layers != structure.num_layers:
        raise CompileError(f"plan {plan} was made for {plan.num_layers} layers; {src} has {structure.num_layers}")
    out = Path(out) if out else default_output(src, plan.name)
    check_output_path(out, src)
    check_outputs([out, out.with_name(out.name + ".fused.data")], graph_inputs(model, src))
    layout = slot_layout(plan, structure, fuse_parallel=fuse_parallel, opset=model.opset_imports.get("", 0))
    run_passes(compile_passes(structure, layout), model)
    output_bytes = initializer_bytes(model)
    if output_bytes > source_bytes:
        raise CompileError(f"internal error: plan {plan} grew the weights ({output_bytes} > {source_bytes} bytes)")
    model.metadata_props.update({
        "painters.version": __version__,
        "painters.plan": plan.name,
        "painters.schedule": plan.to_json_text(),
        "painters.kv_slots": str(layout.kv_slots),
        LAYOUT_KEY: json.dumps(layout.to_json(), separators=(",", ":")),
        "painters.source_hash": source_hash or file_hash(src),
        "painters.parent_graph_hash": file_hash(src),
    })
    model.metadata_props.pop("painters.blocks", None)  # described the parent graph's blocks, not these
    with atomic_dir_outputs(out) as tmp:
        save_graph(model, src, out, tmp)
    seconds = time.perf_counter() - start
    log.info("compiled %s with %s in %.2f s → %s", src, plan, seconds, out)
    return CompileResult(out, plan, seconds, source_bytes, output_bytes, len(model.graph), layout.kv_slots, layout)


def describe(path: str | Path) -> dict:
    """What ``painters inspect`` prints: provenance metadata, block counts and the KV slot layout.

    Malformed ``painters.*`` metadata is refused with the key's name (:class:`CompileError`).
    """
    model = load_graph(Path(path))
    meta = painters_metadata(model.metadata_props)
    slots = len(past_slots(v.name for v in model.graph.inputs))
    info: dict = {"file": str(path), "nodes": len(model.graph), "kv_slots": slots,
                  "initializer_bytes": initializer_bytes(model)}
    plan = read_schedule(meta)
    if plan is not None:
        info.update(block_evals=plan.block_evals, schedule=[s.to_json() for s in plan.steps])
        meta.pop(SCHEDULE)
    elif "painters.blocks" in meta:
        try:
            blocks = json.loads(meta.pop("painters.blocks"))
        except ValueError as exc:
            raise CompileError(f"metadata painters.blocks is not valid JSON ({exc}); re-export the model") from None
        if not isinstance(blocks, list):
            raise CompileError("metadata painters.blocks is malformed (not a list); re-export the model")
        info["blocks"] = len(blocks)
    else:
        info["blocks"] = prepare(model).num_layers
    layout = read_slot_layout(meta)
    if layout is not None:
        meta.pop(LAYOUT_KEY)
        if len(layout["slots"]) != slots:
            raise CompileError(f"metadata {LAYOUT_KEY} lists {len(layout['slots'])} KV slots but the graph has "
                               f"{slots}; recompile it with `painters compile`")
        info.update(fused_stages=layout["fused_stages"], slot_layout=layout["slots"])
    return {**info, **{k.removeprefix("painters."): v for k, v in meta.items()}}
