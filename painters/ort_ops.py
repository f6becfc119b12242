"""ONNX Runtime's contrib-operator names, spelled once.

The ``com.microsoft`` domain and the fused operators painters matches, rewrites, refuses or counts (GenAI
builder graphs, int4 weights).
"""

__all__ = ["MS_DOMAIN", "GQA", "MHA", "ROTARY", "NORM", "SKIP_NORM", "MATMUL_NBITS", "GATHER_BLOCK_QUANTIZED"]

MS_DOMAIN = "com.microsoft"
GQA = "GroupQueryAttention"
MHA = "MultiHeadAttention"
ROTARY = "RotaryEmbedding"
NORM = "SimplifiedLayerNormalization"
SKIP_NORM = "SkipSimplifiedLayerNormalization"
MATMUL_NBITS = "MatMulNBits"
GATHER_BLOCK_QUANTIZED = "GatherBlockQuantized"
