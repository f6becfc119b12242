"""Checkpoint → ONNX: one decoder graph for prefill and cached decoding, weights as external data.

The graph is traced from the reference executor running the ``baseline`` plan, so export, compiler and
oracle share one definition of a decoder block. The block structure is then discovered once
(:mod:`painters.compiler.blocks`) and recorded in the model's metadata; export fails if it cannot be found.
Last, the graph is run once against the source model (:mod:`painters.export.self_check`); export refuses a
graph that differs, and nothing is written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from painters import __version__
from painters.decoder_io import KINDS, LOGITS, TOKEN_INPUTS, past_name, present_name
from painters.errors import ExportError
from painters.export.sources import LoadedModel, gguf_file, load_source, read_config
from painters.export.trace import check_opset, linears_as_matmul, trace_module
from painters.fileio import atomic_dir_outputs, check_outputs
from painters.runtime.families import family_for

__all__ = ["export_onnx", "export_model", "trace_module", "annotate_and_save"]

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
    from painters.export.self_check import check_finite_weights

    check_finite_weights(loaded.model, loaded.name)
    with atomic_dir_outputs(out) as tmp:
        with linears_as_matmul(loaded.model):
            annotate_and_save(trace_decoder(loaded, opset=opset), tmp / out.name, loaded)
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(tmp)
        gen = getattr(loaded.model, "generation_config", None)
        if gen is not None:
            gen.save_pretrained(tmp)
        if check:
            from painters.export.self_check import check_export

            check_export(loaded.model, tmp / out.name)
    return out


def annotate_and_save(model, path: Path, loaded: LoadedModel, *, weights_written: bool = False) -> None:
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
                                       "vocab_size": cfg.vocab_size, "model_type": cfg.model_type,
                                       "max_position_embeddings": getattr(cfg, "max_position_embeddings", None)}),
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
    side = [out.parent / n for n in (*SIDE_FILES, "config.json") if n != out.name]  # that name: refused by export
    check_outputs([out, out.with_name(out.name + ".data"), *side], reads)
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


FORMS = ("decomposed", "genai")


def export_onnx(src: str | Path, out: str | Path, *, dtype: str = "fp32", opset: int | None = None,
                check: bool = True, form: str = "decomposed", precision: str | None = None,
                target: str | None = None) -> Path:
    """Load SRC and export it: the importable twin of ``painters export``.

    ``form="genai"`` writes ONNX Runtime's fused form through onnxruntime-genai's builder
    (:mod:`painters.export.genai_export`) at ``precision`` (fp32, fp16 or int4) for the execution provider
    ``target`` (cpu or cuda); the decomposed form (the default) takes ``dtype`` and ``opset`` instead.
    """
    from painters.export.encoder_sources import is_encoder_source, load_encoder

    if form not in FORMS:
        raise ExportError(f"--form {form!r}: choose one of {', '.join(FORMS)}")
    if form == "genai":
        return _export_genai(src, out, dtype=dtype, opset=opset, check=check, precision=precision or "fp32",
                             target=target or "cpu")
    if precision is not None or target is not None:
        raise ExportError("--precision and --target apply to --form genai; the decomposed export takes --dtype "
                          "and runs on every backend")
    check_opset(opset)
    check_export_outputs(Path(out), Path(src))
    if is_encoder_source(src):  # BERT family: an encoder graph with its task head, no KV cache
        from painters.export.encoder_export import export_encoder

        return export_encoder(load_encoder(src, dtype=dtype), out, opset=opset, check=check)
    loaded = load_source(src, dtype=dtype)
    return export_model(loaded, out, opset=opset, check=check)


def _export_genai(src: str | Path, out: str | Path, *, dtype: str, opset: int | None, check: bool,
                  precision: str, target: str) -> Path:
    """``--form genai``: refuse what it cannot take before loading anything, then build through the builder."""
    from painters.export import genai_export
    from painters.export.encoder_sources import is_encoder_source

    if dtype != "fp32" or opset is not None:
        raise ExportError("--form genai takes --precision fp32|fp16|int4 (the builder casts or quantizes the fp32 "
                          "source and picks its opset); leave out --dtype and --opset")
    out, path = Path(out), Path(src)
    genai_export.check_request(out, precision, target)
    if is_encoder_source(src):
        raise ExportError(f"{src} is an encoder (BERT) checkpoint; --form genai exports decoder LMs only")
    check_export_outputs(out, path)
    reads = [path, *(f for f in path.rglob("*") if f.is_file())] if path.is_dir() else [path]
    check_outputs([out.with_name(genai_export.CONFIG_NAME)], reads)
    if (path / "config.json").is_file():  # a checkpoint directory: refuse its family before minutes of loading
        config = read_config(path)
        genai_export.check_genai_family(config.model_type, path, config)
    if precision == "int4" and gguf_file(src) is not None:
        log.warning("%s is a GGUF: --precision int4 re-quantizes its 4-bit weights with the builder's quantizer; "
                    "for the file's own blocks (llama.cpp's accuracy) export --precision fp32 and compile it with "
                    "painters-compile --weights int4", src)
    loaded = load_source(src, dtype="fp32")
    return genai_export.export_genai(loaded, out, precision=precision, target=target, check=check,
                                     reads=[p for p in reads if p.exists()])
