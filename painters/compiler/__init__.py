"""Graph rewrite (plans → ONNX) and engine builds."""

from painters.compiler.compile import CompileResult, compile_model, describe

__all__ = ["CompileResult", "compile_model", "describe"]
