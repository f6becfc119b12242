"""Deploy targets: a plan written as a checkpoint an engine loads (hf, nemotron-nas, gguf, vllm).

One module per target, each exposing ``deploy_<target>(source, plan, out, *, scores=None) -> Path``; shared helpers
in :mod:`painters.targets.common`. Imports are lazy: ``painters deploy --help`` loads no torch.
"""

__all__ = ["TARGETS"]

TARGETS = ("hf", "nemotron-nas", "gguf", "vllm")
