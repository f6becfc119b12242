"""PaintersLlamaForCausalLM: vLLM's Llama layers walked in the order of a painters plan.

The plan comes from ``config.json``'s ``"painters"`` key (written by ``painters deploy vllm``) and is read with
:mod:`painters.plans` alone. Each source block keeps one copy of its weights (vLLM's own parallel layers, so
tensor parallelism splits them as it splits Llama), and only the sublayers the plan runs are built: a skipped
block and a dropped attention hold no weights and no KV cache.

KV caches belong to executions, not to blocks: the plan's KV slots (:meth:`painters.plans.Plan.stages`) each get
one vLLM ``Attention`` with its own prefix (``model.kv.{slot}.attn``), so a block that runs twice (a repeat, a
loop, a parallel group run R times) writes two caches, as the reference executor does. Sharing one ``Attention``
between executions gives correct prompt logprobs but wrong decode steps (measured: off by 0.26–0.58).

A parallel group's members read the same stream; each adds its own residual, and the outputs are averaged
(``x + mean(deltas)``), as :func:`painters.runtime.torch_ref.plan_forward` does. ``:kvmean`` is refused
(:func:`painters.targets.vllm.check_vllm_plan` says why). Weights are mapped by explicit name: q/k/v into
``qkv_proj``, gate/up into ``gate_up_proj``; weights of blocks the plan never runs are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import QKVParallelLinear, RowParallelLinear
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.rotary_embedding import get_rope
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.models.llama import LlamaMLP

from painters.plans import Plan, Stage

__all__ = ["PaintersLlamaForCausalLM", "plan_of"]

# checkpoint name fragment → (parameter fragment, shard id): the stacked projections of vLLM's Llama
_STACKED = ((".q_proj", ".qkv_proj", "q"), (".k_proj", ".qkv_proj", "k"), (".v_proj", ".qkv_proj", "v"),
            (".gate_proj", ".gate_up_proj", 0), (".up_proj", ".gate_up_proj", 1))


def plan_of(config) -> Plan:
    """The plan a deployed config carries; refuses a config without one or one the plugin cannot run exactly."""
    record = getattr(config, "painters", None)
    if not isinstance(record, dict) or "plan" not in record:
        raise ValueError("config.json has no 'painters' plan; write the checkpoint with `painters deploy vllm`")
    plan = Plan.from_json(record["plan"])
    if plan.num_layers != config.num_hidden_layers:
        raise ValueError(f"the painters plan covers {plan.num_layers} blocks, config.json has "
                         f"{config.num_hidden_layers}")
    if any(stage.shared_kv for stage in plan.stages()):
        raise ValueError(f"plan {plan.name!r} uses :kvmean, which the vLLM plugin cannot run exactly; redeploy "
                         "without :kvmean")
    return plan


class _AttentionWeights(nn.Module):
    """One block's attention projections and rotary table; the KV cache is the caller's (one per slot)."""

    def __init__(self, config, prefix: str):
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        self.q_size = heads // tp * self.head_dim
        self.kv_size = max(1, kv_heads // tp) * self.head_dim
        self.qkv_proj = QKVParallelLinear(config.hidden_size, self.head_dim, heads, kv_heads, bias=False,
                                          prefix=f"{prefix}.qkv_proj")
        self.o_proj = RowParallelLinear(heads * self.head_dim, config.hidden_size, bias=False,
                                        prefix=f"{prefix}.o_proj")
        self.rotary_emb = get_rope(self.head_dim, max_position=getattr(config, "max_position_embeddings", 8192),
                                   rope_parameters=getattr(config, "rope_parameters", None), is_neox_style=True)

    def forward(self, positions: torch.Tensor, x: torch.Tensor, attn: Attention) -> torch.Tensor:
        qkv, _ = self.qkv_proj(x)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q, k = self.rotary_emb(positions, q, k)
        out, _ = self.o_proj(attn(q, k, v))
        return out


class _Block(nn.Module):
    """A source block's weights, limited to the sublayers the plan runs (checkpoint names kept)."""

    def __init__(self, config, prefix: str, attn: bool, mlp: bool):
        super().__init__()
        if attn:
            self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.self_attn = _AttentionWeights(config, f"{prefix}.self_attn")
        if mlp:
            self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.mlp = LlamaMLP(config.hidden_size, config.intermediate_size, config.hidden_act,
                                bias=False, prefix=f"{prefix}.mlp")

    def forward(self, positions, x, attn: Attention | None, run_mlp: bool) -> torch.Tensor:
        h = x
        if attn is not None:
            h = h + self.self_attn(positions, self.input_layernorm(x), attn)
        if run_mlp:
            h = h + self.mlp(self.post_attention_layernorm(h))
        return h


class _PlanModel(nn.Module):
    """Embedding, the plan's blocks and KV slots, final norm: ``model.*`` in the checkpoint."""

    def __init__(self, vllm_config: VllmConfig, plan: Plan, prefix: str):
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.stages: list[Stage] = plan.stages()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        runs_attn = {b for s in self.stages if s.attn for b in s.blocks}
        runs_mlp = {b for s in self.stages if s.mlp for b in s.blocks}
        self.layers = nn.ModuleDict({
            str(b): _Block(config, f"{prefix}.layers.{b}", b in runs_attn, b in runs_mlp)
            for b in sorted(runs_attn | runs_mlp)})
        tp = get_tensor_model_parallel_world_size()
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        self.kv = nn.ModuleList([
            Attention(heads // tp, head_dim, head_dim ** -0.5, num_kv_heads=max(1, kv_heads // tp),
                      cache_config=vllm_config.cache_config, prefix=f"{prefix}.kv.{slot}.attn")
            for slot in range(plan.kv_slots)])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        x = inputs_embeds if inputs_embeds is not None else self.embed_tokens(input_ids)
        for stage in self.stages:
            outs = [self.layers[str(b)](positions, x, self.kv[slot] if slot is not None else None, stage.mlp)
                    for b, slot in zip(stage.blocks, stage.slots)]
            x = outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)
        return self.norm(x)


class PaintersLlamaForCausalLM(nn.Module):
    """A Llama-family checkpoint deployed with a painters plan (see the module docstring)."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        self.plan = plan_of(config)
        self.model = _PlanModel(vllm_config, self.plan, "model" if not prefix else f"{prefix}.model")
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, prefix="lm_head")
        if config.tie_word_embeddings:
            self.lm_head = self.lm_head.tie_weights(self.model.embed_tokens)
        self.logits_processor = LogitsProcessor(config.vocab_size)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Embed token ids with the model's input embedding table."""
        return self.model.embed_tokens(input_ids)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor, intermediate_tensors=None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states of the plan's blocks (``intermediate_tensors`` is unused: no pipeline parallelism)."""
        return self.model(input_ids, positions, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        """Logits of ``hidden_states`` through the LM head (vLLM's logits processor)."""
        return self.logits_processor(self.lm_head, hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Checkpoint tensors into parameters by explicit name; blocks the plan never runs are skipped."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            if "rotary_emb.inv_freq" in name or (self.config.tie_word_embeddings and name == "lm_head.weight"):
                continue
            for old, new, shard in _STACKED:
                if old in name:
                    target = name.replace(old, new)
                    if target in params:
                        params[target].weight_loader(params[target], tensor, shard)
                        loaded.add(target)
                    break
            else:
                if name in params:
                    param = params[name]
                    getattr(param, "weight_loader", default_weight_loader)(param, tensor)
                    loaded.add(name)
        missing = set(params) - loaded - ({"lm_head.weight"} if self.config.tie_word_embeddings else set())
        if missing:
            raise ValueError(f"the checkpoint lacks {len(missing)} weight(s) the plan runs: {sorted(missing)[:4]}")
        return loaded
