"""The PyTorch reference executor: runs any plan on a Hugging Face decoder of a supported family.

It is the oracle the compiled graphs are checked against, and the `torch` backend of bench. It reuses the
model's own modules (norms, attention, MLP, rotary embedding) and only re-implements the layer loop, so a
plan means the same thing here as in the papers' PyTorch code: blocks called in the plan's order, parallel
members fed the same residual stream and averaged. What differs between families (embedding scale, each
layer's mask and rotary, residual multipliers, the head) is a :class:`~painters.runtime.families.Family`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from painters.artifact import Record, Source
from painters.plans import Plan, Stage
from painters.runtime.base import KV, ModelInfo, Runner
from painters.runtime.families import Family, additive_mask, cache_kwarg, family_for

__all__ = ["plan_forward", "SlotCache", "additive_mask", "cache_kwarg", "TorchRunner", "PlanOutput"]


class SlotCache:
    """Stands in for a transformers Cache for one attention call: the layer sees past + its own new keys."""

    def __init__(self, past: tuple[torch.Tensor, torch.Tensor] | None):
        self.past = past
        self.new: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key: torch.Tensor, value: torch.Tensor, *args, **kwargs):
        self.new = (key, value)
        if self.past is None:  # no shape test on `past`: exported graphs must serve past = 0 and > 0 alike
            return key, value
        return torch.cat([self.past[0], key], dim=-2), torch.cat([self.past[1], value], dim=-2)


@dataclass
class PlanOutput:
    logits: torch.Tensor
    present: list[tuple[torch.Tensor, torch.Tensor]]
    hidden_states: list[torch.Tensor] = field(default_factory=list)  # stream after embedding and each stage


def _run_stage(family: Family, layers, stage: Stage, x, pe, masks, past, present) -> torch.Tensor:
    outs = []
    new_by_slot: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    kinds = family.layer_kinds()
    for block, slot in zip(stage.blocks, stage.slots):
        layer, kind = layers[block], kinds[block]  # a block keeps its own mask and rotary wherever it runs
        h = x
        if stage.attn:
            cache = SlotCache(past[slot] if past is not None else None)
            h = x + family.attention_delta(layer, x, pe[kind], masks[kind], cache)
            new_by_slot.setdefault(slot, []).append(cache.new)
        if stage.mlp:
            h = h + family.mlp_delta(layer, x, h)
        outs.append(h)
    for slot, new in new_by_slot.items():
        # kv=mean: members of a stage share a slot, which stores the mean of their new keys/values.
        k = new[0][0] if len(new) == 1 else torch.stack([n[0] for n in new]).mean(0)
        v = new[0][1] if len(new) == 1 else torch.stack([n[1] for n in new]).mean(0)
        if past is not None:
            k, v = torch.cat([past[slot][0], k], dim=-2), torch.cat([past[slot][1], v], dim=-2)
        present[slot] = (k, v)
    return outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)


@torch.no_grad()
def plan_forward(model: Any, plan: Plan, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 position_ids: torch.Tensor, past: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                 *, keep_hidden: bool = False) -> PlanOutput:
    """Run ``plan`` on a ``*ForCausalLM`` model; ``past`` has one (key, value) per KV slot of the plan."""
    family = family_for(model.config)
    x = family.embed(model, input_ids)
    masks = family.masks(attention_mask, input_ids.shape[1], x.dtype)
    pe = family.rotary(model, x, position_ids)
    present: list = [None] * plan.kv_slots
    hidden = [x] if keep_hidden else []
    for stage in plan.stages():
        x = _run_stage(family, family.layers(model), stage, x, pe, masks, past, present)
        if keep_hidden:
            hidden.append(x)
    return PlanOutput(family.logits(model, x), present, hidden)


class TorchRunner(Runner):
    """The reference executor behind the runner interface (CPU or CUDA, the model's dtype)."""

    name = "torch"

    def __init__(self, model: Any, plan: Plan, *, tokenizer: Any = None, model_hash: str = "",
                 device: str | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.plan = plan
        name = getattr(model, "name_or_path", "") or "torch"
        self.artifact = Source(name, Record(plan.name, plan, source_hash=model_hash))
        self.tokenizer = tokenizer
        cfg = model.config
        kv_heads, head_dim = family_for(cfg).kv_shape()
        self.dtype = next(model.parameters()).dtype
        self.info = ModelInfo(plan.kv_slots, kv_heads, head_dim, cfg.vocab_size,
                              str(self.dtype).removeprefix("torch."), str(plan), model_hash,
                              getattr(cfg, "eos_token_id", None))

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), device=self.device)

    def forward(self, input_ids, attention_mask, position_ids, past: KV | None = None):
        out = plan_forward(self.model, self.plan, self._t(input_ids), self._t(attention_mask),
                           self._t(position_ids), past)
        return out.logits.float().cpu().numpy(), out.present

    def empty_kv(self, batch: int) -> KV:
        shape = (batch, self.info.kv_heads, 0, self.info.head_dim)
        return [(torch.zeros(shape, dtype=self.dtype, device=self.device),) * 2 for _ in range(self.info.num_slots)]

    def repeat_kv(self, kv: KV, n: int) -> KV:
        return [(k.expand(n, -1, -1, -1).contiguous(), v.expand(n, -1, -1, -1).contiguous()) for k, v in kv]

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
