"""Parity helpers: a compiled graph (onnxruntime) against the reference executor running the same plan."""

from __future__ import annotations

import numpy as np

from painters.compiler.compile import compile_model
from painters.runtime.base import left_pad
from painters.runtime.ort import OrtRunner
from painters.runtime.torch_ref import TorchRunner

# One plan of every kind, for an 8-layer model.
TINY_PLANS = ["baseline", "skip_2_5", "repeat_2_6", "reverse_2_6", "shuffle_1_7_s3", "parallel_2_6",
              "parallel_1_7_x3", "dup_4_x3", "swap_1_6", "drop_attn_1,3-4", "drop_mlp_0,7", "drop_block_2-3",
              "parallel_2_5+drop_attn_6-7+dup_0_x2"]


def assert_plan_parity(loaded, onnx_path, plan_name, out_dir, prompts, n_tokens=16, rel=1e-4, **compile_kw):
    """Compile, then compare prefill logits (relative max diff ≤ ``rel``) and greedy cached decoding."""
    result = compile_model(onnx_path, plan_name, out_dir / "out.onnx", **compile_kw)
    compiled = OrtRunner(result.output)
    reference = TorchRunner(loaded.model, result.plan, device="cpu")
    assert compiled.info.num_slots == result.kv_slots
    ids, mask = left_pad(prompts)
    got, _ = compiled.prefill(ids, mask)
    want, _ = reference.prefill(ids, mask)
    real = mask.astype(bool)
    diff = np.abs(got[real] - want[real]).max() / np.abs(want[real]).max()
    assert diff <= rel, f"{plan_name}: relative max logit diff {diff:.2e} > {rel:.0e}"
    assert compiled.generate(prompts, n_tokens) == reference.generate(prompts, n_tokens), plan_name
    return result
