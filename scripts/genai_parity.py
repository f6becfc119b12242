"""Every block plan kind compiled on ONNX Runtime GenAI's SmolLM2 folder, against the reference executor.

  python scripts/genai_parity.py FOLDER [--rel 1e-4]

FOLDER is the builder's folder of SmolLM2 (``painters export smollm2-135m --form genai -o FOLDER/model.onnx``).
Each plan is compiled on ``FOLDER/model.onnx``; its prefill logits on two prompts (one at a time: the builder's
GroupQueryAttention takes no padded rows) are compared with the fp32 reference executor running the same plan on
the source model, as ``max |Δ| / max |reference|``. Prints one line per plan and exits 1 if any exceeds ``--rel``.
The plans are the SmolLM2 parity list of tests/compiler/test_compile_parity.py, plus their kv=mean variants.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

PLANS = ["baseline", "skip_13_17", "repeat_11_19", "reverse_11_19", "shuffle_11_19_s0", "parallel_4_26",
         "parallel_11_19_x2", "dup_15_x2", "swap_10_20", "swap_5_20", "drop_attn_20-27", "drop_mlp_12,14",
         "drop_block_5-6", "parallel_8_20+drop_attn_24-27"]
PROMPTS = ("The capital of France is", "Q: What is 2 + 3?\nA:")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rel", type=float, default=1e-4)
    args = parser.parse_args(argv)

    from painters.compiler.compile import compile_model
    from painters.export.sources import load_source
    from painters.runtime.ort import OrtRunner
    from painters.runtime.torch_ref import TorchRunner

    model = load_source("smollm2-135m").model
    plans = PLANS + [p + ":kvmean" for p in PLANS if "parallel" in p]
    worst, failed = 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        for plan in plans:
            result = compile_model(args.folder / "model.onnx", plan, Path(tmp) / plan.replace(":", "-") / "model.onnx")
            reference = TorchRunner(model, result.plan, device="cpu")
            with OrtRunner(result.output) as runner:
                diffs = []
                for text in PROMPTS:
                    ids = np.array([runner.tokenizer.encode(text)])
                    got, _ = runner.prefill(ids, np.ones_like(ids))
                    want, _ = reference.prefill(ids, np.ones_like(ids))
                    diffs.append(float(np.abs(got - want).max() / np.abs(want).max()))
            diff = max(diffs)
            worst = max(worst, diff)
            if diff > args.rel:
                failed.append(plan)
            print(f"{plan:40s} {diff:.2e} {'ok' if diff <= args.rel else 'OVER'}", flush=True)
    print(f"{len(plans)} plans, worst {worst:.2e}, over {args.rel:.0e}: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
