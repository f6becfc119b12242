"""Every non-Llama decoder family builds a TensorRT-RTX engine from a compiled plan (CPU-only build, SM 8.9).

The graphs are the exports of tests/export/test_families.py (one per family per run, tests/families.py), compiled
with the plan whose ONNX Runtime parity that file checks: a parallel group (a wide block where the family's
blocks match the fused form, Mistral; averaged clones elsewhere), an MLP drop and a skip with its KV slot
averaged. So each family's own operators (soft-capping Tanh, LayerNormalization with and without bias, partial
rotary Slice/Concat, q/k norms, packed qkv Split, the multipliers, sliding-window masks) go through TensorRT's
ONNX parser and builder. Running the engines needs a GPU.
"""

from __future__ import annotations

import pytest

from painters.compiler.compile import compile_model
from tests.compiler.test_engine_plans import build_and_check
from tests.families import FAMILIES, family_params

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (pip install painters[test]) is not installed")

PLAN = "parallel_1_3+drop_mlp_0+skip_3_4:kvmean"


@pytest.mark.parametrize("name", family_params(list(FAMILIES)))
def test_family_engine_builds(family_exports, tmp_path, name):
    compiled = compile_model(family_exports(name).onnx, PLAN, tmp_path / "m.onnx").output
    build_and_check(compiled, tmp_path / "m.engine", "batch=1:1:2,seq=1:16:64,past=0:16:64")
