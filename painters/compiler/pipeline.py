"""The plumbing every compile shares (decoder and encoder graphs): the pass manager, the plan to compile, the
output name, and the provenance record — one definition each, below both compile paths so neither imports the
other's module back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir

from painters import __version__
from painters.artifact import BLOCKS, Record
from painters.compiler.graph_io import initializer_bytes
from painters.compiler.layout import SlotLayout
from painters.errors import CompileError, InternalError, PaintersError
from painters.fileio import file_hash
from painters.plans import Plan, load_scores, parse_plan

__all__ = ["CompileResult", "default_output", "safe_plan_name", "run_passes", "resolve_plan", "stamp_compiled"]


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
    return model.with_name(f"{model.stem}.{safe_plan_name(plan_name)}.onnx")


def safe_plan_name(plan_name: str) -> str:
    """The plan name with characters a file name should not carry replaced by ``-``."""
    return re.sub(r"[^A-Za-z0-9_.,+-]", "-", plan_name)


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


def resolve_plan(plan: str | Plan, num_layers: int, src: Path, source_hash: str,
                 scores: str | Path | None) -> Plan:
    """The plan to compile: a name/text parsed for the graph's ``num_layers``, or a Plan checked against them.

    Shared by the decoder and encoder compiles, so both refuse a plan for another depth in the same words.
    """
    if isinstance(plan, str):
        return parse_plan(plan, num_layers, scores=load_scores(scores, model_hash=source_hash) if scores else None)
    if plan.num_layers != num_layers:
        raise CompileError(f"plan {plan} was made for {plan.num_layers} layers; {src} has {num_layers}")
    return plan


def stamp_compiled(model: ir.Model, src: Path, plan: Plan, layout: SlotLayout, source_bytes: int, source_hash: str,
                   extra: dict[str, str] | None = None) -> int:
    """Refuse a rewrite that grew the weights, then record the compile's provenance; return the output's bytes.

    One place writes the ``painters.*`` keys of a compiled graph (decoder or encoder), so ``inspect``, the
    engines and a later compile read the same record whichever path wrote it.
    """
    output_bytes = initializer_bytes(model)
    if output_bytes > source_bytes:
        raise InternalError(f"plan {plan} grew the weights ({output_bytes} > {source_bytes} bytes)")
    record = Record(plan_name=plan.name, plan=plan, slot_layout=layout.recorded,
                    source_hash=source_hash or file_hash(src), version=__version__,
                    extra={"kv_slots": str(layout.kv_slots), "parent_graph_hash": file_hash(src), **(extra or {})})
    model.metadata_props.update(record.to_props())
    model.metadata_props.pop(BLOCKS, None)  # described the parent graph's blocks, not these
    return output_bytes
