"""The painters vLLM plugin: registers :data:`ARCHITECTURE` (a Llama that runs a painters plan) with vLLM.

vLLM calls :func:`register` in each of its processes through the ``vllm.general_plugins`` entry point (installed
with painters, see ``make vllm-env``). Registration passes the class by its import path, so vLLM imports the model
file (and torch) only when a checkpoint asks for it; importing this package costs nothing.
"""

from __future__ import annotations

__all__ = ["register", "ARCHITECTURE"]

ARCHITECTURE = "PaintersLlamaForCausalLM"  # the name `painters deploy vllm` writes into config.json


def register() -> None:
    """Tell vLLM's model registry where :data:`ARCHITECTURE` lives (idempotent)."""
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "painters.integrations.vllm.model:PaintersLlamaForCausalLM")
