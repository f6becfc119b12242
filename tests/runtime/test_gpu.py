"""On a CUDA GPU: onnxruntime's CUDA EP (IO binding, static decode, CUDA graphs) equals its CPU EP on SmolLM2.

Skipped without onnxruntime-gpu and a CUDA device; ``scripts/gpu_check.sh`` runs it on the device machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from painters.compiler.compile import compile_model
from painters.runtime.base import left_pad
from painters.runtime.ort import OrtRunner


def _cuda_ort() -> bool:
    try:
        import onnxruntime
        import torch

        return torch.cuda.is_available() and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        return False


pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not _cuda_ort(), reason="needs onnxruntime-gpu and a CUDA device")]

PLANS = [("baseline", False), ("parallel_4_26", True), ("skip_13_17", False), ("drop_attn_5-7,9,25-29", False)]


@pytest.mark.parametrize("plan, fuse", PLANS)
def test_cuda_equals_cpu(smollm2, smollm2_onnx, tmp_path, plan, fuse):
    path = compile_model(smollm2_onnx, plan, tmp_path / "m.onnx", fuse_parallel=fuse).output
    tok = smollm2.tokenizer
    prompts = [tok.encode("The capital of France is"), tok.encode("Q: What is 2 + 3?\nA:")]
    ids, mask = left_pad(prompts)
    with OrtRunner(path) as cpu, OrtRunner(path, device="cuda") as gpu:
        assert gpu.cuda_graph  # refused capture would fall back with a warning: this model must not need it
        want, _ = cpu.prefill(ids, mask)
        got, _ = gpu.prefill(ids, mask)
        real = mask.astype(bool)
        assert np.abs(got[real] - want[real]).max() <= 1e-3 * np.abs(want[real]).max()
        expected = cpu.generate(prompts, 16)
        assert gpu.generate(prompts, 16) == expected  # static loop, captured graph
        assert gpu.generate(prompts, 16) == expected  # replayed graph
        assert gpu.generate(prompts, 16, static=False) == expected  # growing cache, KV on the device
