"""ONNX Runtime GenAI model folders as compile inputs and outputs.

The model builder of ``onnxruntime-genai`` writes a folder: ``model.onnx`` (+ ``.data``), ``genai_config.json``
(the decoder's IO names, layer count and head shape, search defaults) and the tokenizer. ``painters-compile`` on
such a ``model.onnx`` checks the config against the graph (:func:`check_config`, naming the field that
disagrees), rewrites the graph like any other, and writes another folder that ``og.Model(out_dir)`` opens: the
compiled graph, the tokenizer files and the config with ``num_hidden_layers`` = the compiled KV slots and the
IO names of :mod:`painters.decoder_io` (:func:`compiled_config`). Provenance is the graph's ``painters.*``
metadata, as for every compiled graph; the config itself gets no extra keys (GenAI's parser refuses unknown
fields).

A graph in the builder's form (``com.microsoft`` attention operators) without its config is refused: the output
could not be opened by GenAI, and the head size the runtime needs would be unknown.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import onnx_ir as ir

from painters.compiler.blocks import FUSED_ATTENTION_OPS, BlockStructure
from painters.decoder_io import ATTENTION_MASK, INPUT_IDS, LOGITS, parse_past, parse_present, past_name, present_name
from painters.errors import CompileError
from painters.fileio import write_json
from painters.ort_ops import GQA, MATMUL_NBITS, MS_DOMAIN

__all__ = ["CONFIG_NAME", "ATTENTION_OPS", "read_config", "check_model_fields", "check_config", "pin_head_dim",
           "compiled_config", "default_output_dir", "write_config"]

CONFIG_NAME = "genai_config.json"
ATTENTION_OPS = FUSED_ATTENTION_OPS  # com.microsoft: the builder's attention forms


def _builder_form(model: ir.Model) -> bool:
    return any(n.domain == MS_DOMAIN and n.op_type in ATTENTION_OPS for n in model.graph)


def read_config(model_path: Path, model: ir.Model) -> dict[str, Any] | None:
    """The ``genai_config.json`` beside ``model_path``; None for graphs not in the builder's form.

    Raises :class:`CompileError` when a builder-form graph has no config or the config is not valid JSON.
    """
    path = Path(model_path).parent / CONFIG_NAME
    if not path.is_file():
        if _builder_form(model):
            raise CompileError(f"{model_path}: a graph with com.microsoft attention operators (ONNX Runtime GenAI "
                               f"builder form) needs its {CONFIG_NAME} beside it, and {path} is missing; compile "
                               "the model.onnx inside the builder's output folder")
        return None
    try:
        config = json.loads(path.read_text())
        config["model"]["decoder"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CompileError(f"{path}: not an ONNX Runtime GenAI config ({type(exc).__name__}: {exc}); it needs "
                           "model.decoder — regenerate it with the model builder") from None
    check_model_fields(config)
    return config


# GenAI model types whose folder holds more than one decoder graph (vision, speech, encoder-decoder pipelines):
# painters compiles the decoder only, so the compiled folder would pair a new decoder with the old other parts.
PIPELINE_TYPES = frozenset({"whisper", "phi3v", "phi4mm", "qwen2_5_vl", "gemma3", "marian-ssru", "fara"})
PIPELINE_PARTS = ("vision", "speech", "encoder", "embedding")


def check_model_fields(config: dict) -> None:
    """Check the graph-independent fields GenAI needs.

    They are a decoder-only ``model.type``, a positive ``model.context_length`` and a ``search.max_length``
    within it (GenAI fails on them only at generation).
    """
    kind = config["model"].get("type")
    if not isinstance(kind, str) or not kind:
        raise CompileError(f"{CONFIG_NAME}: field model.type is {kind!r}, not a model type such as \"llama\"; "
                           "regenerate it with the model builder")
    parts = [p for p in PIPELINE_PARTS if p in config["model"]]
    if kind in PIPELINE_TYPES or parts:
        raise CompileError(f"{CONFIG_NAME}: model.type {kind!r} is a multi-graph pipeline "
                           f"({', '.join(parts) or 'not decoder-only'}); painters compiles decoder-only GenAI folders "
                           "— export the language model alone")
    context = config["model"].get("context_length")
    if not isinstance(context, int) or isinstance(context, bool) or context <= 0:
        raise CompileError(f"{CONFIG_NAME}: field model.context_length is {context!r}, not a positive integer; "
                           "set it to the model's max_position_embeddings or regenerate the folder")
    search = config.get("search", {})
    max_length = search.get("max_length") if isinstance(search, dict) else None
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool)
                                   or not 0 < max_length <= context):
        raise CompileError(f"{CONFIG_NAME}: field search.max_length is {max_length!r}; it must be a positive integer "
                           f"no larger than model.context_length ({context})")


def _field(config: dict, dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise CompileError(f"{CONFIG_NAME}: field {dotted} is missing; regenerate it with the model builder")
        node = node[key]
    return node


def _disagree(dotted: str, value: Any, graph_value: Any, what: str) -> CompileError:
    return CompileError(f"{CONFIG_NAME}: field {dotted} is {value!r} but the graph has {graph_value!r} ({what}); "
                        "the config belongs to another model — regenerate the folder with the model builder")


def _attention_node(structure: BlockStructure) -> ir.Node | None:
    return next((n for n in structure.blocks[0].attn_nodes
                 if n.domain == MS_DOMAIN and n.op_type in ATTENTION_OPS), None)


def check_config(config: dict, model_path: Path, model: ir.Model, structure: BlockStructure) -> None:
    """Check every field the runtime relies on against the graph (after :func:`pin_head_dim`).

    Fields: ``decoder.filename``, the IO names (``inputs.*``, ``outputs.*``), ``num_hidden_layers``,
    ``num_key_value_heads``, ``num_attention_heads``, ``head_size``, ``hidden_size`` and ``vocab_size``.
    """
    graph = model.graph
    pre = "model.decoder"
    if _field(config, f"{pre}.filename") != Path(model_path).name:
        raise _disagree(f"{pre}.filename", config["model"]["decoder"]["filename"], Path(model_path).name,
                        "the file compiled")
    names = {"inputs.input_ids": INPUT_IDS, "inputs.attention_mask": ATTENTION_MASK, "outputs.logits": LOGITS}
    for key, name in names.items():
        if _field(config, f"{pre}.{key}") != name:
            raise _disagree(f"{pre}.{key}", _field(config, f"{pre}.{key}"), name, "graph IO name")
    patterns = {"inputs.past_key_names": (parse_past, "key"), "inputs.past_value_names": (parse_past, "value"),
                "outputs.present_key_names": (parse_present, "key"),
                "outputs.present_value_names": (parse_present, "value")}
    for key, (parse, kind) in patterns.items():
        pattern = _field(config, f"{pre}.{key}")
        try:
            parsed = parse(pattern % 7)
        except (TypeError, ValueError):
            parsed = None
        if parsed != (7, kind):
            spelled = (past_name if parse is parse_past else present_name)("%d", kind)
            raise _disagree(f"{pre}.{key}", pattern, spelled, "KV IO names")
    layers = _field(config, f"{pre}.num_hidden_layers")
    if layers != structure.num_layers:
        raise _disagree(f"{pre}.num_hidden_layers", layers, structure.num_layers, "decoder blocks / KV slots")
    past = structure.blocks[0].past[0]
    kv_heads = _field(config, f"{pre}.num_key_value_heads")
    if structure.blocks[0].kv_heads != kv_heads:
        raise _disagree(f"{pre}.num_key_value_heads", kv_heads, structure.blocks[0].kv_heads, f"dim 1 of {past.name}")
    heads = _field(config, f"{pre}.num_attention_heads")
    attn = _attention_node(structure)
    if attn is not None and attn.attributes.get_int("num_heads") != heads:
        raise _disagree(f"{pre}.num_attention_heads", heads, attn.attributes.get_int("num_heads"),
                        f"num_heads of {attn.op_type} in block 0")
    head_size = _field(config, f"{pre}.head_size")
    graph_dim = past.shape[3] if past.shape is not None and len(past.shape) == 4 else None
    if isinstance(graph_dim, int) and graph_dim != head_size:
        raise _disagree(f"{pre}.head_size", head_size, graph_dim, f"dim 3 of {past.name}")
    packed = _packed_qkv_width(structure)
    if packed is not None and packed != (heads + 2 * kv_heads) * head_size:
        raise _disagree(f"{pre}.head_size", head_size, packed // (heads + 2 * kv_heads),
                        "width of the packed q/k/v projection ÷ (heads + 2 · kv heads)")
    hidden = _field(config, f"{pre}.hidden_size")
    x0 = structure.x0.shape
    if x0 is not None and isinstance(x0[-1], int) and x0[-1] != hidden:
        raise _disagree(f"{pre}.hidden_size", hidden, x0[-1], "width of the embedding output")
    vocab = config["model"].get("vocab_size")
    logits = next(v for v in graph.outputs if v.name == LOGITS).shape
    if vocab is not None and logits is not None and isinstance(logits[-1], int) and logits[-1] != vocab:
        raise _disagree("model.vocab_size", vocab, logits[-1], "last dim of logits")


def _packed_qkv_width(structure: BlockStructure) -> int | None:
    """Output width of the MatMul / MatMulNBits feeding a GroupQueryAttention's packed query (None otherwise)."""
    attn = _attention_node(structure)
    if attn is None or attn.op_type != GQA or len(attn.inputs) < 3 or attn.inputs[1] is not None:
        return None
    producer = attn.inputs[0].producer()
    if producer is None:
        return None
    if producer.op_type == MATMUL_NBITS:
        return producer.attributes.get_int("N")
    weight = producer.inputs[1] if producer.op_type == "MatMul" else None
    shape = weight.shape if weight is not None else None
    return shape[1] if shape is not None and len(shape) == 2 and isinstance(shape[1], int) else None


def pin_head_dim(model: ir.Model, config: dict) -> None:
    """Make the head dim of past/present KV the config's ``head_size`` where the graph leaves it symbolic.

    The builder writes it as a symbolic dim; runners size caches by it and the KV-shape anchoring
    (:mod:`painters.compiler.passes.anchor_shapes`) needs it static. A static dim is left for
    :func:`check_config` to compare.
    """
    head_size = _field(config, "model.decoder.head_size")
    if not isinstance(head_size, int) or head_size <= 0:
        raise CompileError(f"{CONFIG_NAME}: field model.decoder.head_size is {head_size!r}, not a positive integer")
    for value in (*model.graph.inputs, *model.graph.outputs):
        if (parse_past(value.name) or parse_present(value.name)) and value.shape is not None \
                and len(value.shape) == 4 and not isinstance(value.shape[3], int):
            dims = list(value.shape)
            dims[3] = head_size
            value.shape = ir.Shape(dims)


def compiled_config(config: dict, filename: str, kv_slots: int) -> dict:
    """The source config with the compiled graph's file name, KV slot count and IO names."""
    out = copy.deepcopy(config)
    decoder = out["model"]["decoder"]
    decoder["filename"] = filename
    decoder["num_hidden_layers"] = kv_slots
    decoder.setdefault("inputs", {}).update(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK,
                                            past_key_names=past_name("%d", "key"),
                                            past_value_names=past_name("%d", "value"))
    decoder.setdefault("outputs", {}).update(logits=LOGITS, present_key_names=present_name("%d", "key"),
                                             present_value_names=present_name("%d", "value"))
    return out


def default_output_dir(model_path: Path, safe_plan: str) -> Path:
    """``DIR.PLAN/model.onnx`` beside the builder's folder ``DIR``: GenAI opens a folder, one model per folder."""
    folder = model_path.resolve().parent
    return folder.with_name(f"{folder.name}.{safe_plan}") / model_path.name


def write_config(config: dict, tmp: Path) -> None:
    """Write ``genai_config.json`` into the temp directory the compiled folder is assembled in."""
    write_json(tmp / CONFIG_NAME, config, indent=4)
