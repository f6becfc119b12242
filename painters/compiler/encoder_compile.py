"""``painters-compile`` on an encoder graph: the same command, the encoder discovery and stage pass.

:func:`painters.compiler.compile.compile_model` hands a graph with the encoder IO convention here. The
result is a :class:`~painters.compiler.compile.CompileResult` whose slot layout has no KV slots and no
fused stages (each parallel stage records why: :data:`~painters.compiler.encoder_blocks.NO_FUSION`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import onnx_ir as ir
from onnx_ir.passes.common import CheckerPass, RemoveUnusedNodesPass, TopologicalSortPass

from painters.artifact import Record
from painters.compiler.encoder_blocks import NO_FUSION, prepare_encoder
from painters.compiler.graph_io import graph_inputs, initializer_bytes, save_graph
from painters.compiler.layout import SlotLayout, StageLayout
from painters.compiler.passes.instantiate_encoder import InstantiateEncoderStagesPass
from painters.fileio import atomic_dir_outputs, check_outputs, command_reads
from painters.plans import Plan
from painters.runtime.encoder_ref import check_encoder_plan

__all__ = ["compile_encoder", "encoder_layout"]

log = logging.getLogger(__name__)


def encoder_layout(plan: Plan) -> SlotLayout:
    """The layout of a compiled encoder: every stage cloned, no KV slots."""
    stages = tuple(StageLayout(i, s, False, (None,) * len(s.blocks), NO_FUSION if len(s.blocks) > 1 else None)
                   for i, s in enumerate(plan.stages()))
    return SlotLayout(stages, ())


def compile_encoder(model: ir.Model, src: Path, plan: str | Plan, out: str | Path | None, *,
                    scores: str | Path | None = None, start: float | None = None):
    """Rewrite the loaded encoder graph ``model`` (read from ``src``) to ``plan``; write it atomically."""
    from painters.compiler.pipeline import CompileResult, default_output, resolve_plan, run_passes, stamp_compiled

    start = time.perf_counter() if start is None else start
    source_bytes = initializer_bytes(model)
    structure = prepare_encoder(model)
    source_hash = Record.from_props(model.metadata_props, str(src)).source_hash
    plan_arg = plan if isinstance(plan, str) else None  # a plan file is an input too
    plan = resolve_plan(plan, structure.num_layers, src, source_hash, scores)
    check_encoder_plan(plan)
    out = Path(out) if out else default_output(src, plan.name)
    check_outputs([out], [*graph_inputs(model, src), *command_reads(scores, plans=plan_arg)])
    layout = encoder_layout(plan)
    run_passes([InstantiateEncoderStagesPass(structure, plan), RemoveUnusedNodesPass(), TopologicalSortPass(),
                CheckerPass()], model)
    output_bytes = stamp_compiled(model, src, plan, layout, source_bytes, source_hash)
    with atomic_dir_outputs(out) as tmp:
        save_graph(model, src, out, tmp)
    seconds = time.perf_counter() - start
    log.info("compiled encoder %s with %s in %.2f s → %s", src, plan, seconds, out)
    return CompileResult(out, plan, seconds, source_bytes, output_bytes, len(model.graph), 0, layout)
