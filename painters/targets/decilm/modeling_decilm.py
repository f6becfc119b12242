"""A Nemotron-NAS (DeciLM) decoder for transformers: Llama layers whose attention or FFN may be absent.

Written by ``painters deploy nemotron-nas`` beside the weights (``auto_map``) so ``trust_remote_code=True`` loads
the checkpoint. Kept short on purpose (nanoGPT's shape): the layers are transformers' own Llama modules, built
per block from ``block_configs`` — a ``no_op`` attention has no weights and adds nothing to the residual stream,
likewise a ``no_op`` FFN; an FFN's width comes from ``ffn_mult`` (``round_up(int(2 * ffn_mult * hidden / 3),
256)``, as vLLM and llama.cpp compute it) or ``intermediate_size``. Forward only (no KV cache): it is the
reference the serving engines are checked against, not a server.
"""

import copy

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaForCausalLM,
    LlamaMLP,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)

from .configuration_decilm import DeciLMConfig  # noqa: TID252  (remote code is loaded as its own package)

__all__ = ["DeciLMForCausalLM", "ffn_width"]


def ffn_width(ffn, hidden: int) -> int:
    """The FFN width a block config says: ``ffn_mult`` if present (NVIDIA's rounding), else ``intermediate_size``."""
    if hasattr(ffn, "ffn_mult"):
        width = int(2 * ffn.ffn_mult * hidden / 3)
        return width + (-width) % 256
    return int(ffn.intermediate_size)


class DeciLMBlock(nn.Module):
    def __init__(self, config: DeciLMConfig, index: int):
        super().__init__()
        block = config.block_configs[index]
        self.self_attn = self.mlp = None
        if not block.attention.no_op:
            cfg = copy.copy(config)
            cfg.num_key_value_heads = config.num_attention_heads // block.attention.n_heads_in_group
            self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.self_attn = LlamaAttention(cfg, index)
        if not block.ffn.no_op:
            cfg = copy.copy(config)
            cfg.intermediate_size = ffn_width(block.ffn, config.hidden_size)
            self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.mlp = LlamaMLP(cfg)

    def forward(self, x, position_embeddings, mask):
        if self.self_attn is not None:
            x = x + self.self_attn(self.input_layernorm(x), position_embeddings=position_embeddings,
                                   attention_mask=mask)[0]
        if self.mlp is not None:
            x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class DeciLMPreTrainedModel(PreTrainedModel):
    config_class = DeciLMConfig
    base_model_prefix = "model"
    _no_split_modules = ["DeciLMBlock"]
    _supports_sdpa = True


class DeciLMModel(DeciLMPreTrainedModel):
    def __init__(self, config: DeciLMConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(DeciLMBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        batch, seq = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:  # left padding: positions count real tokens
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        x = self.embed_tokens(input_ids)
        causal = torch.ones(seq, seq, dtype=torch.bool, device=x.device).tril()
        allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(~allowed, torch.finfo(x.dtype).min)
        pe = self.rotary_emb(x, position_ids)
        for layer in self.layers:
            x = layer(x, pe, mask)
        return self.norm(x)


class DeciLMForCausalLM(DeciLMPreTrainedModel):
    """The DeciLM decoder with a language-model head (logits only, no KV cache)."""

    _tied_weights_keys = LlamaForCausalLM._tied_weights_keys

    def __init__(self, config: DeciLMConfig):
        super().__init__(config)
        self.model = DeciLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        """The token embedding table."""
        return self.model.embed_tokens

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        """Logits of every position (no loss, no cache; extra keyword arguments are ignored)."""
        return CausalLMOutput(logits=self.lm_head(self.model(input_ids, attention_mask, position_ids)))
