"""The static-shape decode loop (the GPU path, run here on onnxruntime's CPU EP through the same IO binding)
decodes exactly what the growing-cache loop and the reference executor decode."""

from __future__ import annotations

import numpy as np
import pytest

from painters.compiler.compile import compile_model
from painters.runtime.base import left_pad
from painters.runtime.decode import ForwardLoop, StaticLoop, bucket_for
from painters.runtime.ort import OrtRunner
from painters.runtime.torch_ref import TorchRunner

PROMPTS = [[1, 17, 99, 3, 45, 8, 200], [1, 5, 6]]


def test_buckets():
    assert [bucket_for(n) for n in (1, 64, 65, 128, 129, 1000)] == [64, 64, 128, 128, 256, 1024]


@pytest.mark.parametrize("plan, fuse", [("baseline", False), ("parallel_2_6_x2", True), ("parallel_2_6:kvmean", True),
                                        ("drop_attn_1,3-4+dup_6_x2", False), ("reverse_1_7", False)])
def test_static_equals_forward_and_reference(tiny, tiny_onnx, tmp_path, plan, fuse):
    result = compile_model(tiny_onnx, plan, tmp_path / "m.onnx", fuse_parallel=fuse)
    runner = OrtRunner(result.output)
    static = runner.generate(PROMPTS, 12, static=True)
    assert static == runner.generate(PROMPTS, 12, static=False)
    assert static == TorchRunner(tiny.model, result.plan, device="cpu").generate(PROMPTS, 12)
    # a second generation reuses the buffers (and on CUDA the captured graph) of the first
    buffers = runner.static_buffers(2, bucket_for(7 + 12))
    assert runner.generate(PROMPTS, 12, static=True) == static
    assert runner.static_buffers(2, bucket_for(7 + 12)) is buffers


def test_static_loop_grows_its_bucket(tiny_onnx):
    """A loop that outruns its bucket (64) moves into a bucket twice as long and keeps decoding the same."""
    runner = OrtRunner(tiny_onnx)
    ids, mask = left_pad([list(range(3, 63)), [1, 5, 6]])  # 60 positions
    static, plain = StaticLoop(runner, ids, mask, max_new_tokens=1), ForwardLoop(runner, ids, mask)
    static.prefill()
    plain.prefill()
    assert static.buffers.bucket == 64
    for _ in range(10):
        np.testing.assert_array_equal(static.tokens(), plain.tokens())
        static.step()
        plain.step()
    np.testing.assert_array_equal(static.tokens(), plain.tokens())
    assert static.buffers.bucket == 128


def test_static_cache_follows_kv_slots(tiny_onnx, tmp_path):
    """Attention-drop plans allocate proportionally less static cache."""
    base = OrtRunner(tiny_onnx)
    drop = OrtRunner(compile_model(tiny_onnx, "drop_attn_0-3", tmp_path / "d.onnx").output)
    ids, mask = left_pad(PROMPTS)
    sizes = []
    for runner in (base, drop):
        loop = runner.greedy_loop(ids, mask, 4, static=True)
        loop.prefill()
        loop.step()
        sizes.append(loop.kv_bytes())
    assert sizes[0] == 2 * sizes[1] == 8 * 2 * 2 * 2 * 64 * 16 * 4  # slots·(k,v)·batch·heads·bucket·dim·fp32
