"""Backends behind one runner interface: torch (reference), onnxruntime, tensorrt / tensorrt-rtx."""

from painters.runtime.base import KV, ModelInfo, Runner, left_pad, positions_from_mask

__all__ = ["KV", "ModelInfo", "Runner", "left_pad", "positions_from_mask"]
