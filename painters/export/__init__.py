"""Model sources and checkpoint → ONNX export."""

from painters.export.sources import LoadedModel, load_source

__all__ = ["LoadedModel", "load_source", "export_onnx"]


def export_onnx(*args, **kwargs):
    """Lazy twin of :func:`painters.export.onnx_export.export_onnx` (keeps torch.onnx off the import path)."""
    from painters.export.onnx_export import export_onnx as _export

    return _export(*args, **kwargs)
