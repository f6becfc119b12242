"""Model families: how the reference executor runs one Hugging Face ``model_type``, in five small hooks.

The executor (:mod:`painters.runtime.torch_ref`) only re-implements the layer loop; everything inside a layer
is the checkpoint's own module. What differs between families is what sits *around* those modules:

* ``embed``: token embedding (Granite multiplies it);
* ``masks`` / ``rotary``: each layer's additive mask and rotary table, chosen by the layer's *kind*
  (``full_attention`` or ``sliding_attention``, as ``config.layer_types`` names them). A layer keeps its own
  kind wherever a plan moves it, so a sliding-window layer always attends through its own window;
* ``attention_delta`` / ``mlp_delta``: what each sublayer adds to the residual stream (Granite scales both);
* ``logits``: final norm and LM head (Granite divides by ``logits_scaling``).

:func:`family_for` picks the family from ``config.model_type`` (the field transformers itself picks the model
class from) and refuses, naming it, any checkpoint option painters does not implement. A new family is a
subclass with the hooks that differ, plus a tiny random config in ``tests/runtime/test_families.py``.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, ClassVar

from painters.decoder_io import HF_CACHE_ARG
from painters.errors import ExportError

if TYPE_CHECKING:  # torch is imported where it runs, so the export guard stays light for the CLI
    import torch

__all__ = ["Family", "family_for", "additive_mask", "cache_kwarg", "SUPPORTED_MODEL_TYPES", "FULL", "SLIDING"]

FULL, SLIDING = "full_attention", "sliding_attention"

# Rotary types whose tables depend on the position only: HF's rotary module computes them for us and they trace
# to constants. "dynamic" and "longrope" rescale from the sequence length at run time, which a traced graph
# would freeze at the trace's length.
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
LAYER_TYPED = ("qwen2", "qwen3", "gemma2", "gemma3_text")  # models that pick each layer's mask by layer_types
WINDOWED = ("mistral", "phi3")  # models with one sliding window for every layer when sliding_window is set


@functools.cache
def _forward_params(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def cache_kwarg(module: Any) -> str:
    """The keyword a transformers module takes its KV cache by: ``cache`` in newer 5.x releases,
    :data:`~painters.decoder_io.HF_CACHE_ARG` before (still accepted there, with a deprecation warning, until 5.40)."""
    return "cache" if "cache" in _forward_params(type(module)) else HF_CACHE_ARG


def additive_mask(attention_mask: torch.Tensor, seq: int, dtype: torch.dtype,
                  window: int | None = None) -> torch.Tensor:
    """[batch, 1, seq, past+seq] additive mask: causal within the new tokens, padding from ``attention_mask``.

    With ``window``, a query at index q sees keys k with ``q - window < k <= q`` (transformers'
    ``sliding_window_overlay``). Indices count cache positions, padding included, exactly as transformers does.
    """
    import torch

    total = attention_mask.shape[1]
    past = total - seq
    q = torch.arange(seq, device=attention_mask.device)[:, None] + past
    k = torch.arange(total, device=attention_mask.device)[None, :]
    allowed = k <= q
    if window is not None:
        allowed = allowed & (k > q - window)
    allowed = allowed[None, None] & attention_mask[:, None, None, :].bool()
    mask = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


def _cfg(config: Any, name: str, default: Any = None) -> Any:
    return getattr(config, name, default)


class Family:
    """The Llama layout: ``x + attn(input_layernorm(x))``, then ``h + mlp(post_attention_layernorm(h))``.

    Llama, Mistral, Qwen2 and the families whose differences all live inside these modules share it: Qwen3
    (q/k RMSNorm), OLMo (non-parametric LayerNorm, q/k/v clipping), Phi-3 (packed qkv and gate_up), Gemma
    (scaled embedding, (1+w) RMSNorm).
    """

    model_types: ClassVar[tuple[str, ...]] = ("llama", "mistral", "qwen2", "qwen3", "olmo", "phi3", "gemma")

    def __init__(self, config: Any):
        self.config = config

    # ---- what a checkpoint may ask for ---------------------------------------------------------------------
    def unsupported(self) -> list[str]:
        """Checkpoint options this family's hooks do not implement (each named with its value)."""
        cfg, bad = self.config, []
        rope = _cfg(cfg, "rope_parameters") or _cfg(cfg, "rope_scaling") or {}
        ropes = rope.values() if rope and all(isinstance(v, dict) for v in rope.values()) else [rope]
        for r in ropes:
            kind = (r or {}).get("rope_type", (r or {}).get("type", "default"))
            if kind not in STATIC_ROPE_TYPES:
                bad.append(f"rope type {kind!r} (supported: {', '.join(STATIC_ROPE_TYPES)})")
        if _cfg(cfg, "use_bidirectional_attention"):
            bad.append("use_bidirectional_attention=True (painters graphs are causal decoders)")
        for name in ("attn_logit_softcapping", "final_logit_softcapping"):
            if _cfg(cfg, name) is not None and not self.implements(name):
                bad.append(f"{name}={_cfg(cfg, name)}")
        return bad

    def implements(self, option: str) -> bool:
        return False

    def kv_shape(self) -> tuple[int, int]:
        """(KV heads, head dim) of one layer's cache (GPT-NeoX configs have no ``num_key_value_heads``)."""
        cfg = self.config
        heads = _cfg(cfg, "num_key_value_heads") or cfg.num_attention_heads
        return int(heads), int(_cfg(cfg, "head_dim") or cfg.hidden_size // cfg.num_attention_heads)

    # ---- the five hooks ------------------------------------------------------------------------------------
    def layer_kinds(self) -> list[str]:
        """The kind of each layer, read as the family's own model reads it: ``config.layer_types`` (Qwen2/3,
        Gemma2/3), one ``sliding_window`` for every layer (Mistral, Phi-3), else full attention. A stray field
        that the family's model ignores (a ``sliding_window`` in a Llama config) is ignored here too."""
        n = int(self.config.num_hidden_layers)
        model_type = _cfg(self.config, "model_type")
        if model_type in LAYER_TYPED:
            return list(self.config.layer_types)[:n]
        if model_type in WINDOWED and _cfg(self.config, "sliding_window") is not None:
            return [SLIDING] * n
        return [FULL] * n

    def kinds(self) -> list[str]:
        """The layer kinds present, sorted (a fixed order keeps traced graphs reproducible)."""
        return sorted(set(self.layer_kinds()))

    def window(self, kind: str) -> int | None:
        return int(self.config.sliding_window) if kind == SLIDING else None

    def embed(self, model: Any, input_ids: torch.Tensor) -> torch.Tensor:
        return model.model.embed_tokens(input_ids)

    def layers(self, model: Any) -> Any:
        return model.model.layers

    def rotary(self, model: Any, x: torch.Tensor, position_ids: torch.Tensor) -> dict[str, Any]:
        """(cos, sin) per layer kind; one table shared by every kind here (Gemma3 has one per kind)."""
        pe = model.model.rotary_emb(x, position_ids)
        return {kind: pe for kind in self.kinds()}

    def masks(self, attention_mask: torch.Tensor, seq: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """One additive mask per layer kind present in the model (built once, shared by its layers)."""
        return {kind: additive_mask(attention_mask, seq, dtype, self.window(kind)) for kind in self.kinds()}

    def attention_delta(self, layer: Any, x: torch.Tensor, pe, mask: torch.Tensor, cache: Any) -> torch.Tensor:
        """Attn(LN(x)): what the attention sublayer adds to the residual stream."""
        out, _ = layer.self_attn(hidden_states=layer.input_layernorm(x), position_embeddings=pe,
                                 attention_mask=mask, **{cache_kwarg(layer.self_attn): cache})
        return out

    def mlp_delta(self, layer: Any, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """MLP(LN'(h)): what the MLP sublayer adds; ``x`` is the block input (parallel-residual families read it)."""
        return layer.mlp(layer.post_attention_layernorm(h))

    def logits(self, model: Any, x: torch.Tensor) -> torch.Tensor:
        return model.lm_head(model.model.norm(x))


class Granite(Family):
    """Granite: the Llama layout with four scalars. The embedding is multiplied by ``embedding_multiplier``, each
    sublayer's output by ``residual_multiplier`` before its residual Add, and the logits are divided by
    ``logits_scaling``; ``attention_multiplier`` is the attention module's own softmax scale."""

    model_types = ("granite",)

    def embed(self, model, input_ids):
        return super().embed(model, input_ids) * self.config.embedding_multiplier

    def attention_delta(self, layer, x, pe, mask, cache):
        return super().attention_delta(layer, x, pe, mask, cache) * self.config.residual_multiplier

    def mlp_delta(self, layer, x, h):
        return super().mlp_delta(layer, x, h) * self.config.residual_multiplier

    def logits(self, model, x):
        return super().logits(model, x) / self.config.logits_scaling


class StableLm(Family):
    """StableLM: LayerNorms, partial rotary and optional q/k norms live in its modules. With
    ``use_parallel_residual`` the MLP reads the block input through the *same* norm as attention:
    ``h = x + attn(ln1(x)); out = h + mlp(ln1(x))`` (see :class:`GptNeoX` for what plans mean then)."""

    model_types = ("stablelm",)

    def mlp_delta(self, layer, x, h):
        if self.config.use_parallel_residual:
            return layer.mlp(layer.input_layernorm(x))
        return super().mlp_delta(layer, x, h)


class GptNeoX(Family):
    """GPT-NeoX (Pythia): LayerNorms with bias, partial rotary, GELU MLP and, by default, a *parallel residual*:
    attention and MLP both read the block input ``x``. Written as two residual Adds so block discovery sees the
    usual two sublayers::

        h   = x + attn(ln1(x))
        out = h + mlp(ln2(x))          # ln2 reads x, not h

    So ``drop_attn`` leaves ``x + mlp(ln2(x))`` and ``drop_mlp`` leaves ``x + attn(ln1(x))``: each drop removes
    exactly one term of the block's sum. A parallel *group* of such blocks averages whole block outputs, as for
    every family. The Llama matcher does not recognise these blocks (LayerNorm, partial rotary), so parallel
    groups run unfused (the compiler says so)."""

    model_types = ("gpt_neox",)

    def embed(self, model, input_ids):
        return model.gpt_neox.embed_in(input_ids)

    def layers(self, model):
        return model.gpt_neox.layers

    def rotary(self, model, x, position_ids):
        pe = model.gpt_neox.rotary_emb(x, position_ids)
        return {kind: pe for kind in self.kinds()}

    def attention_delta(self, layer, x, pe, mask, cache):
        out, _ = layer.attention(layer.input_layernorm(x), attention_mask=mask, layer_past=cache,
                                 position_embeddings=pe)
        return out

    def mlp_delta(self, layer, x, h):
        return layer.mlp(layer.post_attention_layernorm(x if self.config.use_parallel_residual else h))

    def logits(self, model, x):
        return model.lm_head(model.gpt_neox.final_layer_norm(x))


class Gemma2(Family):
    """Gemma 2 and 3 (text): the scaled embedding and (1+w) RMSNorms live in their modules; each sublayer's output
    is normalised again before its residual Add (post-attention and post-feed-forward norms), the MLP reads a
    pre-feed-forward norm, logits are soft-capped (``tanh(z / c) · c``) and attention scores too (inside the
    attention module, which needs the eager attention kernel). Layers alternate sliding (local) and full
    (global) attention by ``config.layer_types``; Gemma 3 also gives each kind its own rotary base."""

    model_types = ("gemma2", "gemma3_text")

    def implements(self, option):
        return option in ("attn_logit_softcapping", "final_logit_softcapping")

    def rotary(self, model, x, position_ids):
        if self.config.model_type == "gemma2":
            return super().rotary(model, x, position_ids)
        return {kind: model.model.rotary_emb(x, position_ids, kind) for kind in self.kinds()}

    def attention_delta(self, layer, x, pe, mask, cache):
        return layer.post_attention_layernorm(super().attention_delta(layer, x, pe, mask, cache))

    def mlp_delta(self, layer, x, h):
        return layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(h)))

    def logits(self, model, x):
        logits = super().logits(model, x)
        import torch

        cap = self.config.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap


FAMILIES: tuple[type[Family], ...] = (Family, Granite, StableLm, GptNeoX, Gemma2)
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for f in FAMILIES for t in f.model_types)


def family_for(config: Any) -> Family:
    """The family of ``config.model_type``; raises :class:`ExportError` naming what painters cannot run."""
    model_type = _cfg(config, "model_type")
    for cls in FAMILIES:
        if model_type in cls.model_types:
            family = cls(config)
            bad = family.unsupported()
            if bad:
                raise ExportError(f"model_type {model_type!r} with {'; '.join(bad)} is not supported by painters "
                                  "(it would export wrong logits); use a checkpoint without these options")
            return family
    raise ExportError(f"model_type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
