"""Checkpoint → ONNX: one decoder graph for prefill and cached decoding, weights as external data.

The graph is traced from the reference executor running the ``baseline`` plan, so export, compiler and
oracle share one definition of a decoder block. The block structure is then discovered once
(:mod:`painters.compiler.blocks`) and recorded in the model's metadata; export fails if it cannot be found.
Last, the graph is run once against the source model (:mod:`painters.export.self_check`); export refuses a
graph that differs, and nothing is written.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import time
import types
from pathlib import Path
from typing import Any

from painters import __version__
from painters.decoder_io import KINDS, LOGITS, TOKEN_INPUTS, past_name, present_name
from painters.errors import ExportError
from painters.export.quiet import quiet_exporter
from painters.export.sources import LoadedModel, load_source
from painters.fileio import atomic_dir_outputs, check_outputs
from painters.runtime.families import family_for

__all__ = ["export_onnx", "export_model", "trace_module"]

log = logging.getLogger(__name__)


def _wrapper(loaded: LoadedModel):
    import torch

    from painters.plans import parse_plan
    from painters.runtime.torch_ref import plan_forward

    plan = parse_plan("baseline", loaded.num_layers)

    class Decoder(torch.nn.Module):
        """Flat IO (Optimum convention) around the reference executor's baseline forward."""

        def __init__(self, model):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask, position_ids, *past_flat):
            past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(len(past_flat) // 2)]
            out = plan_forward(self.m, plan, input_ids, attention_mask, position_ids, past)
            return (out.logits, *[t for kv in out.present for t in kv])

    return Decoder(loaded.model).eval()


def _matmul_forward(self, x):
    out = x @ self.weight
    return out if self.bias is None else out + self.bias


def _transposed(weight):
    return weight.detach().t().contiguous()


@contextlib.contextmanager
def linears_as_matmul(model, transpose=_transposed):
    """During export, hold every ``nn.Linear`` weight transposed ([in, out]) and compute ``x @ W``.

    The exporter turns ``F.linear`` into ``MatMul(x, Transpose(W))`` and constant-folds the transpose into a
    *new* initializer: a second copy of every weight, which a 7B model cannot afford in 24 GiB. Swapping
    one matrix at a time keeps at most one extra matrix alive, and the graph's MatMuls read initializers
    named after their modules. The model is restored (tied weights re-tied) on exit.
    """
    import torch

    owners: dict[int, int] = {}
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None:
                owners[id(p)] = owners.get(id(p), 0) + 1
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    tied = {m: m.weight for m in linears if owners[id(m.weight)] > 1}
    try:
        for m in linears:
            m.weight = torch.nn.Parameter(transpose(m.weight), requires_grad=False)
            m.forward = types.MethodType(_matmul_forward, m)
        yield
    finally:
        gc.collect()  # the traced program's references to W^T must be gone before W is rebuilt
        for m in linears:
            m.weight = tied[m] if m in tied else torch.nn.Parameter(transpose(m.weight), requires_grad=False)
            del m.forward


def trace_decoder(loaded: LoadedModel, *, opset: int | None = None):
    """Trace the baseline decoder to an onnx-ir model (weights still torch tensors, nothing written).

    Call it inside :func:`linears_as_matmul` and save before leaving it, so the graph shares the weights.
    """
    import torch

    cfg = loaded.config
    L = loaded.num_layers
    kv_heads, head_dim = family_for(cfg).kv_shape()
    dtype = next(loaded.model.parameters()).dtype
    batch, seq, past = 2, 3, 4
    past_kv = [torch.zeros(batch, kv_heads, past, head_dim, dtype=dtype) for _ in range(2 * L)]
    args = (torch.ones(batch, seq, dtype=torch.long), torch.ones(batch, past + seq, dtype=torch.long),
            torch.arange(past, past + seq).repeat(batch, 1), *past_kv)
    B, S, P = torch.export.Dim("batch"), torch.export.Dim("seq"), torch.export.Dim("past")
    # attention_mask's length is past + seq; torch.export only takes it as its own dynamic dim
    dynamic = ({0: B, 1: S}, {0: B, 1: torch.export.Dim.DYNAMIC}, {0: B, 1: S}, tuple({0: B, 2: P} for _ in past_kv))
    names = [past_name(i, kind) for i in range(L) for kind in KINDS]
    outputs = [LOGITS, *[present_name(i, kind) for i in range(L) for kind in KINDS]]
    return trace_module(_wrapper(loaded), args, dynamic, [*TOKEN_INPUTS, *names], outputs, opset=opset)


def trace_module(module, args: tuple, dynamic: tuple, input_names: list[str], output_names: list[str], *,
                 opset: int | None, what: str = "") -> Any:
    """``torch.onnx.export`` (dynamo, optimized, weights left as tensors) of a wrapper, quietly; its onnx-ir model.

    The one set of exporter options decoder and encoder export share, so both graphs come out the same way.
    """
    import torch

    start = time.perf_counter()
    with quiet_exporter():
        program = torch.onnx.export(
            module, args, dynamic_shapes=dynamic, dynamo=True, optimize=True, opset_version=opset,
            input_names=input_names, output_names=output_names, external_data=True, verbose=False,
        )
    log.info("traced %sin %.1f s", what, time.perf_counter() - start)
    return program.model


def export_model(loaded: LoadedModel, out: str | Path, *, opset: int | None = None, check: bool = True) -> Path:
    """Export a loaded model to ``out`` (+ ``out.data`` and tokenizer files beside it), atomically.

    With ``check`` (the default) the written graph is run once against the source model
    (:func:`painters.export.self_check.check_export`) before anything lands at ``out``.
    """
    check_opset(opset)
    out = Path(out)
    check_outputs([out, out.with_name(out.name + ".data")])
    from painters.compiler.graph_io import SIDE_FILES

    if out.name in (*SIDE_FILES, "config.json"):
        raise ExportError(f"output name {out.name} is the name of a file export writes beside the graph; choose "
                          "a name ending in .onnx with -o")
    with atomic_dir_outputs(out) as tmp:
        with linears_as_matmul(loaded.model):
            _annotate_and_save(trace_decoder(loaded, opset=opset), tmp / out.name, loaded)
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(tmp)
        gen = getattr(loaded.model, "generation_config", None)
        if gen is not None:
            gen.save_pretrained(tmp)
        if check:
            from painters.export.self_check import check_export

            check_export(loaded.model, tmp / out.name)
    return out


def _annotate_and_save(model, path: Path, loaded: LoadedModel, *, weights_written: bool = False) -> None:
    """Write graph + external data, then record provenance and the discovered block structure."""
    import onnx_ir as ir

    from painters.compiler.compile import prepare

    ir.save(model, path, **({} if weights_written else {"external_data": path.name + ".data"}))
    model = ir.load(path)  # plain onnx-ir values from here on; weights stay in the data file
    structure = prepare(model)  # raises CompileError naming the failed expectation
    structure.tag_nodes()
    cfg = loaded.config
    model.metadata_props.update({
        "painters.version": __version__,
        "painters.source": loaded.name,
        "painters.source_hash": loaded.hash,
        "painters.plan": "baseline",
        "painters.blocks": json.dumps(structure.to_json()),
        "painters.config": json.dumps({"num_layers": loaded.num_layers, "hidden_size": cfg.hidden_size,
                                       "num_attention_heads": cfg.num_attention_heads,
                                       "num_key_value_heads": family_for(cfg).kv_shape()[0],
                                       "vocab_size": cfg.vocab_size, "model_type": cfg.model_type}),
    })
    ir.save(model, path)


def check_export_outputs(out: Path, src: Path) -> None:
    """Refuse an export that would write over a file of SRC or a data file other graphs in OUT's folder use.

    Export writes OUT, OUT.data and the tokenizer/generation-config files beside OUT, so each of those is
    checked against every file of SRC; an existing OUT.data referenced by another ``.onnx`` in the folder
    (compiled graphs share it) would silently break those graphs, so it is refused too.
    """
    from painters.compiler.graph_io import SIDE_FILES

    reads = [src, *(f for f in src.rglob("*") if f.is_file())] if src.is_dir() else [src]
    check_outputs([out, out.with_name(out.name + ".data"), *(out.parent / n for n in (*SIDE_FILES, "config.json"))],
                  reads)
    data = out.with_name(out.name + ".data")
    if data.exists():
        import onnx

        for other in out.parent.glob("*.onnx"):
            if other.resolve() == out.resolve() or not other.is_file():
                continue
            try:
                graph = onnx.load(other, load_external_data=False).graph
            except Exception:  # not a readable graph: it references nothing we can see
                continue
            locations = {e.value for t in graph.initializer for e in t.external_data if e.key == "location"}
            if data.name in locations:
                raise ExportError(f"{data} is the weights file of {other}; exporting to {out} would replace it "
                                  "and break that graph; choose another output directory with -o")


# torch's dynamo exporter emits onnxscript's torchlib, written at opset 18; it converts up to torch's maximum.
MIN_OPSET = 18


def check_opset(opset: int | None) -> None:
    """Refuse an opset the exporter cannot write (it would otherwise fail deep in tracing, or ignore it)."""
    if opset is None:
        return
    from torch.onnx._constants import ONNX_MAX_OPSET

    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= ONNX_MAX_OPSET:
        raise ExportError(f"--opset {opset!r} is not supported: the exporter writes opsets {MIN_OPSET}..."
                          f"{ONNX_MAX_OPSET}; pick one in that range or leave --opset out for the default")


def export_onnx(src: str | Path, out: str | Path, *, dtype: str = "fp32", opset: int | None = None,
                check: bool = True) -> Path:
    """Load SRC and export it: the importable twin of ``painters export``."""
    from painters.export.encoder_sources import is_encoder_source, load_encoder

    check_opset(opset)
    check_export_outputs(Path(out), Path(src))
    if is_encoder_source(src):  # BERT family: an encoder graph with its task head, no KV cache
        from painters.export.encoder_export import export_encoder

        return export_encoder(load_encoder(src, dtype=dtype), out, opset=opset, check=check)
    loaded = load_source(src, dtype=dtype)
    return export_model(loaded, out, opset=opset, check=check)
