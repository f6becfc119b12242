"""Nemotron-NAS (DeciLM) configuration: a Llama configuration plus one ``block_configs`` entry per layer.

Written by ``painters deploy nemotron-nas``. Each entry is ``{"attention": {"no_op", "n_heads_in_group",
"replace_with_linear"}, "ffn": {"no_op", "ffn_mult" | "intermediate_size", "replace_with_linear"}}``, NVIDIA's
format, read by vLLM, SGLang, TensorRT-LLM and llama.cpp's converter. Entries allow attribute access
(``block.attention.no_op``) because vLLM reads them that way; they stay plain dicts in ``config.json``.
"""

from transformers import LlamaConfig

__all__ = ["DeciLMConfig", "BlockConfig"]


class BlockConfig(dict):
    """A ``block_configs`` entry: a dict (serialized as JSON) whose keys also read as attributes."""

    def __getattr__(self, name):
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None  # hasattr(ffn, "ffn_mult") must be False when absent (vLLM)
        return BlockConfig(value) if isinstance(value, dict) else value


class DeciLMConfig(LlamaConfig):
    """A Llama configuration with one :class:`BlockConfig` per layer (``block_configs``)."""

    model_type = "nemotron-nas"

    def __init__(self, block_configs=None, **kwargs):
        super().__init__(**kwargs)
        self.block_configs = [BlockConfig(b) for b in block_configs or []]
