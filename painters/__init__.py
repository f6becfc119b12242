"""painters: compile layer plans ("Transformer Layers as Painters", "What Matters in Transformers?")
into deployable ONNX graphs and TensorRT engines, and measure them."""

__version__ = "0.1.0"
__all__ = ["__version__"]
