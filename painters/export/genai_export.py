"""``painters export --form genai``: ONNX Runtime's fused graph form, written by onnxruntime-genai's own builder.

Why the builder and not painters' tracer: ONNX Runtime GenAI's model builder is the well-kept writer of the form
ONNX LLMs are deployed in (one ``GroupQueryAttention`` per layer with rotary and KV cache inside,
``SkipSimplifiedLayerNormalization``, ``MatMulNBits`` for int4), and ``painters-compile`` already takes its
graphs (:mod:`painters.compiler.genai`). Hand-writing that fusion would be a second, less-tested copy of it. The
decomposed export stays the default: TensorRT cannot parse ``com.microsoft`` operators, and every family
exports in it.

The loaded source is saved as a plain Hugging Face directory in a temp dir (a GGUF-loaded model is re-created
from its config without ``quantization_config`` first: the builder must read plain weights), the builder runs
in-process on it (the same ``create_model`` that ``python -m onnxruntime_genai.models.builder -i HF -o OUT
-p PRECISION -e cpu -c CACHE`` calls; in-process because its imports cost more than building a small model),
painters' provenance is stamped into the graph without loading its weights, an fp32 graph is run once against
the source model (:func:`painters.export.self_check.check_export`), and the whole folder lands by rename.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import tempfile
from pathlib import Path

from painters import __version__
from painters.compiler.genai import CONFIG_NAME
from painters.errors import ExportError
from painters.export.sources import LoadedModel, quiet_transformers
from painters.fileio import atomic_dir_outputs, check_outputs

__all__ = ["GENAI_MODEL_TYPES", "PRECISIONS", "TARGETS", "GRAPH_NAME", "CONFIG_NAME", "check_request",
           "check_genai_family", "save_hf_dir", "build_genai", "export_genai"]

log = logging.getLogger(__name__)

# Families whose builder graph painters checked: exported, compiled (skip and parallel plans) and matched against
# the reference executor (tests/export/test_genai_export.py runs llama; the rest were run by hand with tiny random
# checkpoints). Left out, measured: olmo (the builder's graph differs from the model by 0.6 of the logit scale),
# phi3 (the builder fails: KeyError 'multi_cache'), gemma3_text (KeyError 'rope_type'), stablelm and gpt_neox (the
# builder has no such architecture), gemma2 (sliding windows, below).
GENAI_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "granite", "gemma")
PRECISIONS = ("fp32", "fp16", "int4")
# The builder's execution providers painters exports for: the CPU graphs, and the CUDA ones (fp16 KV caches,
# GroupQueryAttention's CUDA kernels; ONNX Runtime GenAI decodes them with one shared past/present buffer)
TARGETS = ("cpu", "cuda")
GRAPH_DTYPES = {"fp32": "float32", "fp16": "float16"}  # precisions the export self-check has a tolerance for
GRAPH_NAME = "model.onnx"  # the builder's file name; genai_config.json names it


def check_request(out: Path, precision: str, target: str = "cpu") -> None:
    """Refuse, in one line and before any loading, a missing builder, an unknown precision or target, or another
    graph name.

    The folder's graph must be ``model.onnx``: ``genai_config.json`` names it, and the data file is named after it.
    """
    try:
        import onnxruntime_genai.models.builder  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"--form genai needs onnxruntime-genai ({exc}); install the extra: "
                          "pip install 'painters[genai]'") from None
    if precision not in PRECISIONS:
        raise ExportError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if target not in TARGETS:
        raise ExportError(f"--target {target!r}: choose one of {', '.join(TARGETS)}")
    if Path(out).name != GRAPH_NAME:
        raise ExportError(f"--form genai writes an ONNX Runtime GenAI folder whose graph is {GRAPH_NAME}; give "
                          f"-o {Path(out).parent / GRAPH_NAME}")


def check_genai_family(model_type: object, where: object, config=None) -> None:
    """Refuse a family (or, given ``config``, an option) the builder or painters' compile of its graphs does not
    handle, naming it and what is supported.

    Sliding-window layers are refused: with a window of 4, the builder's Mistral graph differed from the model by
    1.1 of the logit scale and its Qwen2 graph failed in ONNX Runtime. ONNX Runtime's CPU ``GroupQueryAttention``
    refuses a head size that is not a multiple of 16.
    """
    if model_type not in GENAI_MODEL_TYPES:
        raise ExportError(f"{where}: model_type {model_type!r} has no --form genai export; supported: "
                          f"{', '.join(GENAI_MODEL_TYPES)} (export it without --form genai for the decomposed "
                          "graph)")
    if config is None:
        return
    from painters.runtime.families import SLIDING, family_for

    family = family_for(config)
    if SLIDING in family.layer_kinds():
        raise ExportError(f"{where}: sliding-window attention (sliding_window={config.sliding_window}) has no "
                          "--form genai export (the builder's windowed attention does not match the model); "
                          "export it without --form genai")
    head_dim = family.kv_shape()[1]
    if head_dim % 16:
        raise ExportError(f"{where}: head size {head_dim} is not a multiple of 16, which ONNX Runtime's CPU "
                          "GroupQueryAttention requires; export it without --form genai")


def save_hf_dir(loaded: LoadedModel, out: Path, tokenizer=None) -> Path:
    """A plain Hugging Face directory (config, safetensors, tokenizer) of ``loaded``, for the builder to read.

    A GGUF-loaded model carries ``quantization_config`` and a GGUF quantizer although its weights are already
    de-quantized; it is re-created on the meta device from its config without them and takes the loaded tensors
    by assignment (no copy), so ``save_pretrained`` writes plain weights the builder can read.
    """
    import torch

    model = loaded.model
    tokenizer = tokenizer if tokenizer is not None else loaded.tokenizer
    if tokenizer is None:
        raise ExportError(f"{loaded.name} has no tokenizer, and ONNX Runtime GenAI's builder writes the tokenizer "
                          "into its folder; export a checkpoint directory with tokenizer files beside config.json")
    if getattr(model.config, "quantization_config", None) is not None or getattr(model, "hf_quantizer", None):
        config = copy.deepcopy(model.config)
        config.__dict__.pop("quantization_config", None)
        with torch.device("meta"):
            plain = type(model)(config)
        plain.load_state_dict(model.state_dict(), assign=True)
        plain.tie_weights()
        model = plain
    with quiet_transformers():  # no progress bars on the CLI
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return out


def build_genai(hf_dir: Path, out: Path, precision: str, cache: Path, target: str = "cpu") -> Path:
    """Run the builder (``-i HF_DIR -o OUT -p PRECISION -e TARGET -c CACHE``) in-process, quietly; returns OUT.

    It needs no GPU for ``target="cuda"``: the builder only writes the graph the CUDA EP runs.

    Its progress output is swallowed; a failure is an :class:`ExportError` naming the builder's exception.
    """
    from onnxruntime_genai.models import builder

    log_text = io.StringIO()
    quantizer_log = logging.getLogger("onnxruntime")  # int4: one INFO line per MatMul quantized
    level = quantizer_log.level
    quantizer_log.setLevel(max(level, logging.WARNING))
    try:
        with contextlib.redirect_stdout(log_text), contextlib.redirect_stderr(log_text):
            options = builder.parse_extra_options(None, str(hf_dir), str(out), precision, target, str(cache), None)
            builder.create_model(None, str(hf_dir), str(out), precision, target, str(cache), **options)
    except Exception as exc:
        raise ExportError(f"ONNX Runtime GenAI's model builder failed ({type(exc).__name__}: {exc}); "
                          "nothing was written") from exc
    finally:
        quantizer_log.setLevel(level)
    return out


def _stamp(path: Path, loaded: LoadedModel, precision: str, target: str) -> None:
    """Record painters' provenance in the graph's metadata and pin the KV head dim; the weights stay untouched.

    The builder leaves the head dim of past/present KV symbolic; painters' runners size caches by it, so it is
    written as ``genai_config.json``'s ``head_size`` (what ``painters-compile`` pins on the builder's graphs).
    """
    import onnx
    import onnxruntime_genai as og

    from painters.decoder_io import parse_past, parse_present
    from painters.runtime.families import family_for

    proto = onnx.load(path, load_external_data=False)
    head_size = json.loads(path.with_name(CONFIG_NAME).read_text())["model"]["decoder"]["head_size"]
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if (parse_past(value.name) or parse_present(value.name)) and len(dims) == 4:
            dims[3].Clear()
            dims[3].dim_value = int(head_size)
    cfg = loaded.config
    meta = {
        "painters.version": __version__,
        "painters.source": loaded.name,
        "painters.source_hash": loaded.hash,
        "painters.plan": "baseline",
        "painters.form": "genai",
        "painters.precision": precision,
        "painters.target": target,
        "painters.builder": f"onnxruntime-genai {og.__version__}",
        "painters.config": json.dumps({"num_layers": loaded.num_layers, "hidden_size": cfg.hidden_size,
                                       "num_attention_heads": cfg.num_attention_heads,
                                       "num_key_value_heads": family_for(cfg).kv_shape()[0],
                                       "vocab_size": cfg.vocab_size, "model_type": cfg.model_type}),
    }
    kept = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, path)


def export_genai(loaded: LoadedModel, out: str | Path, *, precision: str = "fp32", target: str = "cpu",
                 check: bool = True, tokenizer=None, reads: list[Path] | None = None) -> Path:
    """Export ``loaded`` through ONNX Runtime GenAI's builder to the folder of ``out`` (``DIR/model.onnx``).

    The folder (graph, ``model.onnx.data``, ``genai_config.json``, tokenizer files) lands by rename, nothing
    before the builder and the self-check succeeded. With ``check`` an fp32 or fp16 graph is run once against the
    source model (:func:`_self_check`); int4 graphs skip it with a warning (no tolerance is established for
    them). ``tokenizer`` overrides the source's (a source without one is refused: the builder writes it into the
    folder); ``reads`` are the files of the source, which no output may replace.
    """
    out = Path(out)
    check_request(out, precision, target)
    check_genai_family(getattr(loaded.config, "model_type", None), loaded.name, loaded.config)
    with tempfile.TemporaryDirectory(prefix="painters-genai-") as work, atomic_dir_outputs(out) as tmp:
        work = Path(work)
        hf_dir = save_hf_dir(loaded, work / "hf", tokenizer)
        build_genai(hf_dir, tmp, precision, work / "cache", target)
        check_outputs([out.parent / p.name for p in tmp.iterdir()], reads or [])
        _stamp(tmp / GRAPH_NAME, loaded, precision, target)
        if check:
            _self_check(loaded, tmp / GRAPH_NAME, precision, target)
    return out


def _self_check(loaded: LoadedModel, path: Path, precision: str, target: str) -> None:
    """The decomposed export's probe (prefill + cached decode vs the HF model in fp32, on ONNX Runtime's CPU EP)
    on an fp32 or fp16 graph, at that precision's tolerance; int4 graphs skip it (their distance from the source
    is quantization's). A graph for another EP that the CPU EP cannot run is not checked (a warning says so);
    one it runs is held to the tolerance like a CPU graph.

    The builder's fp16 *CPU* graph (decomposed attention) fails here on ONNX Runtime 1.32: its first cached
    decode step stops in a Cast the CPU EP inserted ("Shape mismatch attempting to re-use buffer"), in
    onnxruntime-genai as well; its CUDA graph (GroupQueryAttention) decodes on the CPU EP and passes.
    """
    if precision not in GRAPH_DTYPES:
        log.warning("export self-check skipped: no tolerance is established for %s graphs (export with "
                    "--precision fp32 or fp16 to have the graph checked against the source model)", precision)
        return
    from painters.export.self_check import check_export

    try:
        check_export(loaded.model, path, blame="ONNX Runtime GenAI's builder does not reproduce this checkpoint; "
                                               "export it without --form genai", graph_dtype=GRAPH_DTYPES[precision])
    except RuntimeError as exc:  # onnxruntime's Fail / RuntimeException: the graph does not run at all
        reason = str(exc).splitlines()[0][:300]
        if target != "cpu":
            log.warning("export self-check skipped: ONNX Runtime's CPU EP cannot run this %s graph (%s)", target,
                        reason)
            return
        fix = ("use --target cuda for fp16 (its graph also runs on the CPU EP) or --precision fp32 or int4 for the "
               "CPU" if precision == "fp16" else "export it without --form genai")
        raise ExportError(f"export self-check: onnxruntime could not run the builder's graph ({reason}); nothing "
                          f"was written; {fix}") from None
