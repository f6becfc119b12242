"""``painters-compile``: exported ONNX graph + plan → rewritten ONNX graph (and optionally an engine)."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass

from painters import __version__
from painters.compiler.blocks import discover_blocks
from painters.compiler.graph_io import graph_inputs, initializer_bytes, load_graph, save_graph
from painters.compiler.passes.anchor_shapes import AnchorKVShapesPass
from painters.compiler.passes.noops import RemoveNoOpsPass
from painters.compiler.rewrite import RewriteToPlanPass
from painters.errors import CompileError
from painters.fileio import atomic_dir_outputs, check_output_path, check_outputs, file_hash
from painters.plans import Plan, load_scores, parse_plan

__all__ = ["compile_model", "CompileResult", "default_output", "prepare"]

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


def default_output(model: Path, plan_name: str) -> Path:
    """``MODEL.PLAN.onnx`` beside the input, with the plan name made file-system safe."""
    safe = re.sub(r"[^A-Za-z0-9_.,+-]", "-", plan_name)
    return model.with_name(f"{model.stem}.{safe}.onnx")


def prepare(model: ir.Model):
    """Normalize and discover: the shared first step of every rewrite (and of ``painters inspect``).

    Graphs without value types (the TorchScript exporter writes none) get ONNX shape inference first, so
    no-op Casts can be recognized; our own exports carry types and skip it.
    """
    if any(v.dtype is None for node in model.graph for v in node.outputs):
        ShapeInferencePass(strict_mode=False)(model)
    RemoveNoOpsPass()(model)
    AnchorKVShapesPass()(model)
    return discover_blocks(model)


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
    for key in ("painters.fused_stages", "painters.slot_heads"):  # a parent graph's, if any
        model.metadata_props.pop(key, None)
    RewriteToPlanPass(structure, plan)(model)
    kv_slots = plan.kv_slots
    if fuse_parallel:
        from painters.compiler.passes.fuse_parallel import FuseParallelPass

        fuse = FuseParallelPass(plan)
        fuse(model)
        kv_slots = fuse.kv_slots
    RemoveUnusedNodesPass()(model)
    output_bytes = initializer_bytes(model)
    if output_bytes > source_bytes:
        raise CompileError(f"internal error: plan {plan} grew the weights ({output_bytes} > {source_bytes} bytes)")
    model.metadata_props.update({
        "painters.version": __version__,
        "painters.plan": plan.name,
        "painters.schedule": plan.to_json_text(),
        "painters.kv_slots": str(kv_slots),
        "painters.source_hash": source_hash or file_hash(src),
        "painters.parent_graph_hash": file_hash(src),
    })
    model.metadata_props.pop("painters.blocks", None)  # described the parent graph's blocks, not these
    with atomic_dir_outputs(out) as tmp:
        save_graph(model, src, out, tmp)
    seconds = time.perf_counter() - start
    log.info("compiled %s with %s in %.2f s → %s", src, plan, seconds, out)
    return CompileResult(out, plan, seconds, source_bytes, output_bytes, len(model.graph), kv_slots)


def describe(path: str | Path) -> dict:
    """What ``painters inspect`` prints: provenance metadata plus block and KV-slot counts."""
    model = load_graph(Path(path))
    meta = {k.removeprefix("painters."): v for k, v in model.metadata_props.items() if k.startswith("painters.")}
    slots = sum(1 for v in model.graph.inputs if (v.name or "").startswith("past_key_values.")) // 2
    info: dict = {"file": str(path), "nodes": len(model.graph), "kv_slots": slots,
                  "initializer_bytes": initializer_bytes(model)}
    if "schedule" in meta:
        schedule = json.loads(meta.pop("schedule"))
        info.update(block_evals=schedule["block_evals"], schedule=schedule["steps"])
    elif "blocks" in meta:
        info["blocks"] = len(json.loads(meta.pop("blocks")))
    else:
        info["blocks"] = prepare(model).num_layers
    return {**info, **meta}
