"""The encoder reference executor: runs any plan on a Hugging Face BERT model's own layer modules.

It is to encoders what :mod:`painters.runtime.torch_ref` is to decoders: export traces its baseline, and
every compiled encoder graph is tested against it. A BERT block is *post-LN*::

    h     = LN_1(x + Attn(x))       # layer.attention: self-attention, output dense, LayerNorm of the sum
    x_out = LN_2(h + FFN(h))        # layer.intermediate, then layer.output (dense, LayerNorm of the sum)

Plans mean what they mean for decoders: blocks run in the plan's order, parallel members read the same
stream and their outputs (each after its own LN_2) are averaged, loops feed the average back. Sublayer drops
remove the sublayer *with its LayerNorm*: ``drop_attn`` makes ``h = x`` and ``drop_mlp`` makes ``x_out = h``.
A post-LN block has no un-normalized stream to keep (the LN is part of the residual update), so "the block
without its attention" is the block's FFN half applied to ``x`` — the same reading as What Matters' drops on
pre-LN models, where a dropped sublayer leaves the stream untouched. There is no KV cache, so the
``kv=mean`` option (``PLAN:kvmean``) does not apply and is refused.
"""

from __future__ import annotations

from typing import Any

import torch

from painters.errors import PlanError
from painters.plans import Plan

__all__ = ["encoder_plan_forward", "check_encoder_plan", "encoder_mask", "bert_of", "has_head"]


def check_encoder_plan(plan: Plan) -> Plan:
    """Refuse plan options that only decoders have (the shared KV slot of ``:kvmean``)."""
    if plan.kv != "exact":
        raise PlanError(f"plan {plan.name!r}: ':kvmean' averages a KV cache, and encoders have none; "
                        "drop the ':kvmean' suffix")
    return plan


def bert_of(model: Any) -> Any:
    """The ``BertModel`` / ``RobertaModel`` inside ``model`` (``model`` itself for a bare encoder)."""
    return getattr(model, "bert", None) or getattr(model, "roberta", None) or model


def has_head(model: Any) -> bool:
    """Whether ``model`` carries a sequence-classification head (→ ``logits``)."""
    return bert_of(model) is not model and hasattr(model, "classifier")


def _head(model: Any, x: torch.Tensor) -> torch.Tensor:
    """BERT: pooler (dense + tanh on [CLS]) then classifier; RoBERTa's classifier takes the sequence itself
    (dense + tanh + projection on <s>), its encoder having no pooler."""
    pooler = getattr(bert_of(model), "pooler", None)
    return model.classifier(pooler(x) if pooler is not None else x)  # dropouts are the identity in eval mode


def encoder_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[batch, 1, 1, seq] additive mask: 0 where a key is a real token, the dtype's minimum at padding."""
    keep = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


def _block(layer: Any, x: torch.Tensor, mask: torch.Tensor, attn: bool, mlp: bool) -> torch.Tensor:
    h = layer.attention(x, mask)[0] if attn else x
    return layer.output(layer.intermediate(h), h) if mlp else h


@torch.no_grad()
def encoder_plan_forward(model: Any, plan: Plan, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         token_type_ids: torch.Tensor) -> torch.Tensor:
    """Run ``plan`` on a ``BertModel`` (→ last hidden state) or ``BertForSequenceClassification`` (→ logits)."""
    check_encoder_plan(plan)
    bert = bert_of(model)
    x = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    mask = encoder_mask(attention_mask, x.dtype)
    layers = bert.encoder.layer
    for stage in plan.stages():
        outs = [_block(layers[b], x, mask, stage.attn, stage.mlp) for b in stage.blocks]
        x = outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)
    return _head(model, x) if has_head(model) else x
