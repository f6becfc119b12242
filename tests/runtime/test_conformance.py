"""One conformance test for every runner backend available on this machine (same model, same plan)."""

from __future__ import annotations

import numpy as np
import pytest

from painters.plans import parse_plan
from painters.runtime.base import left_pad

PLAN = "parallel_2_5+drop_attn_6"


def _cuda_ort() -> bool:
    try:
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        return False


@pytest.fixture(params=["torch", "onnxruntime", "onnxruntime-cuda"])
def runner(request, tiny, tiny_onnx, tmp_path):
    from painters.compiler.compile import compile_model
    from painters.runtime.ort import OrtRunner
    from painters.runtime.torch_ref import TorchRunner

    if request.param == "torch":
        return TorchRunner(tiny.model, parse_plan(PLAN, 8), device="cpu")
    if request.param == "onnxruntime-cuda" and not _cuda_ort():
        pytest.skip("onnxruntime-gpu with a CUDA device is not available")
    # unfused: the reference executor's cache layout (test_static_decode covers fused graphs on every loop)
    path = compile_model(tiny_onnx, PLAN, tmp_path / "m.onnx", fuse_parallel=False).output
    return OrtRunner(path, device="cuda" if request.param == "onnxruntime-cuda" else "cpu")


def test_runner_conformance(runner, tiny):
    from painters.runtime.torch_ref import TorchRunner

    plan = parse_plan(PLAN, 8)
    with runner:
        assert runner.info.num_slots == plan.kv_slots and runner.info.vocab_size == 256
        assert all(k.shape == (3, 2, 0, 16) for k, _ in runner.empty_kv(3))
        prompts = [[1, 17, 99, 3, 45, 8], [1, 5, 6]]
        ids, mask = left_pad(prompts)
        full, kv = runner.prefill(ids, mask)
        assert full.dtype == np.float32 and full.shape == (2, 6, 256)
        assert all(k.shape[2] == 6 for k, _ in kv)
        # a prefix then cached steps reproduces the full prefill
        part, kv = runner.prefill(ids[:, :4], mask[:, :4])
        for t in (4, 5):
            step, kv = runner.decode(ids[:, t], mask[:, : t + 1], kv)
            np.testing.assert_allclose(step[:, -1], full[:, t], rtol=1e-4, atol=1e-4)
        # a shared context repeated over the batch continues like separate runs
        one, kv1 = runner.prefill(ids[:1], mask[:1])
        rep = runner.repeat_kv(kv1, 3)
        cont, _ = runner.forward(np.array([[7], [8], [9]]), np.ones((3, 7), np.int64), np.full((3, 1), 6), rep)
        for row, tok in enumerate((7, 8, 9)):
            alone, _ = runner.forward(np.array([[tok]]), np.ones((1, 7), np.int64), np.full((1, 1), 6), kv1)
            np.testing.assert_allclose(cont[row], alone[0], rtol=1e-4, atol=1e-4)
        reference = TorchRunner(tiny.model, plan, device="cpu")
        assert runner.generate(prompts, 6) == reference.generate(prompts, 6)
