"""BERT checkpoint → ONNX encoder graph (no KV cache), with its task head, weights as external data.

Like the decoder export, the graph is traced from the reference executor's baseline
(:func:`painters.runtime.encoder_ref.encoder_plan_forward`), so export, compiler and oracle share one
definition of a block; the blocks are then discovered once (:mod:`painters.compiler.encoder_blocks`) and
recorded in the metadata, and export fails (writing nothing) if they cannot be found. Last, as for decoders,
the written graph is run once against the Hugging Face model
(:func:`painters.export.self_check.check_encoder_export`); a graph that differs is refused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from painters import __version__
from painters.decoder_io import LOGITS
from painters.encoder_io import ENCODER_INPUTS, ENCODER_KIND, HIDDEN, KIND_KEY
from painters.export.sources import LoadedModel
from painters.export.trace import check_opset, linears_as_matmul, trace_module
from painters.fileio import atomic_dir_outputs, check_outputs

__all__ = ["trace_encoder", "export_encoder", "encoder_output_name"]

log = logging.getLogger(__name__)

INLINE_BYTES = 1024


def encoder_output_name(model) -> str:
    """``logits`` for a model with a classification head, ``last_hidden_state`` for a bare encoder."""
    from painters.runtime.encoder_ref import has_head

    return LOGITS if has_head(model) else HIDDEN


def _wrapper(loaded: LoadedModel):
    import torch

    from painters.plans import parse_plan
    from painters.runtime.encoder_ref import encoder_plan_forward

    plan = parse_plan("baseline", loaded.num_layers)

    class Encoder(torch.nn.Module):
        """The three token inputs around the encoder executor's baseline forward."""

        def __init__(self, model):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return encoder_plan_forward(self.m, plan, input_ids, attention_mask, token_type_ids)

    return Encoder(loaded.model).eval()


def trace_encoder(loaded: LoadedModel, *, opset: int | None = None):
    """Trace the baseline encoder to an onnx-ir model (call inside :func:`linears_as_matmul`)."""
    import torch

    batch, seq = 2, 5
    args = tuple(torch.ones(batch, seq, dtype=torch.long) for _ in ENCODER_INPUTS)
    B, S = torch.export.Dim("batch"), torch.export.Dim("seq", max=loaded.config.max_position_embeddings)
    dynamic = tuple({0: B, 1: S} for _ in ENCODER_INPUTS)
    return trace_module(_wrapper(loaded), args, dynamic, list(ENCODER_INPUTS), [encoder_output_name(loaded.model)],
                        opset=opset, what="encoder ")


def annotate_and_save(model, path: Path, loaded: LoadedModel, *, weights_written: bool = False) -> None:
    """Write graph + external data, then record provenance and the discovered encoder blocks."""
    import onnx_ir as ir

    from painters.compiler.encoder_blocks import prepare_encoder

    # Tensors under 1 KiB stay inline: onnx's checker (run after every compile) resolves the external data of
    # the small tensors it is handed against the working directory, not the model's.
    ir.save(model, path, **({} if weights_written else {"external_data": path.name + ".data",
                                                         "size_threshold_bytes": INLINE_BYTES}))
    model = ir.load(path)
    structure = prepare_encoder(model)  # raises CompileError naming the failed expectation
    structure.tag_nodes()
    cfg = loaded.config
    model.metadata_props.update({
        "painters.version": __version__,
        KIND_KEY: ENCODER_KIND,
        "painters.source": loaded.name,
        "painters.source_hash": loaded.hash,
        "painters.plan": "baseline",
        "painters.blocks": json.dumps(structure.to_json()),
        "painters.config": json.dumps({"num_layers": loaded.num_layers, "hidden_size": cfg.hidden_size,
                                       "num_attention_heads": cfg.num_attention_heads,
                                       "vocab_size": cfg.vocab_size, "model_type": cfg.model_type,
                                       "max_position_embeddings": cfg.max_position_embeddings,
                                       "num_labels": cfg.num_labels if encoder_output_name(loaded.model) == LOGITS
                                       else None,
                                       "problem_type": getattr(cfg, "problem_type", None),
                                       "finetuning_task": getattr(cfg, "finetuning_task", None),
                                       "id2label": {str(k): v for k, v in cfg.id2label.items()}}),
    })
    ir.save(model, path)


def export_encoder(loaded: LoadedModel, out: str | Path, *, opset: int | None = None, check: bool = True) -> Path:
    """Export a loaded encoder to ``out`` (+ ``out.data`` and the tokenizer files beside it), atomically.

    With ``check`` (the default) the written graph's prefill is compared with the source model's
    (:func:`painters.export.self_check.check_encoder_export`) before anything lands at ``out``.
    """
    check_opset(opset)
    out = Path(out)
    check_outputs([out, out.with_name(out.name + ".data")])
    from painters.export.self_check import check_finite_weights

    check_finite_weights(loaded.model, loaded.name)
    with atomic_dir_outputs(out) as tmp:
        with linears_as_matmul(loaded.model):
            annotate_and_save(trace_encoder(loaded, opset=opset), tmp / out.name, loaded)
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(tmp)
        if check:
            from painters.export.self_check import check_encoder_export

            check_encoder_export(loaded.model, tmp / out.name)
    return out
