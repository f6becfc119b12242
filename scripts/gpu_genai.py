"""painters' compiled ONNX Runtime GenAI CUDA graphs on a GPU: correct against the reference, decoded in place.

Two halves, because the GPU machine has no model source to run the reference executor on:

  python scripts/gpu_genai.py reference FOLDER REF.npz   (any machine with the source: SmolLM2)
  python scripts/gpu_genai.py check FOLDER REF.npz OUT [cpu]  (the GPU machine, onnxruntime-gpu; cpu: a dry run)

FOLDER is the builder's CUDA folder (``painters export smollm2-135m --form genai --precision fp16 --target cuda``).
``reference`` compiles every plan below on it and saves the fp32 reference executor's prefill logits and greedy
tokens; ``check`` compiles the same plans there and, on onnxruntime's CUDA EP, asserts per plan:

* the cache updates in place (every KV slot is one GroupQueryAttention's) and CUDA graphs are on;
* prefill logits are within 2e-2 of the logit scale of the reference's (the fp16 tolerance of the export
  self-check: the graph computes in fp16, the reference in fp32);
* the static loop's greedy tokens (captured as a CUDA graph, then replayed) equal the growing-cache loop's on
  the same session, twice; agreement with the fp32 reference's tokens is printed, not asserted (fp16 rounding
  may flip a near-tie).

It writes OUT/gpu_genai.json and prints one line per plan.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

PLANS = ("baseline", "skip_4_26", "drop_attn_k8")
SCORES = Path(__file__).resolve().parents[1] / "docs/results/smollm2-135m/analysis/importance.json"
PROMPTS = ("The capital of France is", "Q: What is 2 + 3?\nA:")
NEW_TOKENS = 24
FP16_REL = 2e-2


def _compiled(folder: Path, plan: str):
    from painters.compiler.compile import compile_model

    out = folder.with_name(f"{folder.name}.{plan}") / "model.onnx"
    return compile_model(folder / "model.onnx", plan, out, scores=SCORES)


def reference(folder: Path, ref: Path) -> None:
    from painters.export.sources import load_source
    from painters.runtime.ort import load_tokenizer
    from painters.runtime.torch_ref import TorchRunner

    model = load_source("smollm2-135m").model
    tok = load_tokenizer(folder)
    arrays = {}
    for plan in PLANS:
        runner = TorchRunner(model, _compiled(folder, plan).plan, device="cpu")
        for i, text in enumerate(PROMPTS):
            ids = np.array([tok.encode(text)])
            logits, _ = runner.prefill(ids, np.ones_like(ids))
            arrays[f"{plan}/{i}/logits"] = logits[0].astype(np.float32)
            arrays[f"{plan}/{i}/tokens"] = np.array(runner.generate([ids[0].tolist()], NEW_TOKENS)[0])
    np.savez_compressed(ref, **arrays)
    print(f"reference of {', '.join(PLANS)} → {ref}")


def check(folder: Path, ref: Path, out: Path, device: str = "cuda") -> int:
    import torch  # noqa: F401  (first: it loads the CUDA libraries onnxruntime-gpu needs)

    from painters.runtime.ort import OrtRunner

    want = np.load(ref)
    rows, failed = [], 0
    for plan in PLANS:
        with OrtRunner(_compiled(folder, plan).output, device=device) as gpu:
            tok = gpu.tokenizer
            row = {"plan": plan, "in_place": gpu.kv_in_place, "cuda_graph": gpu.cuda_graph, "prompts": []}
            ok = gpu.kv_in_place and (gpu.cuda_graph or device == "cpu")
            for i, text in enumerate(PROMPTS):
                ids = [tok.encode(text)]
                logits, _ = gpu.prefill(np.array(ids), np.ones((1, len(ids[0])), np.int64))
                ref_logits = want[f"{plan}/{i}/logits"]
                rel = float(np.abs(logits[0] - ref_logits).max() / np.abs(ref_logits).max())
                static = gpu.generate(ids, NEW_TOKENS, static=True)[0]
                replay = gpu.generate(ids, NEW_TOKENS, static=True)[0]
                growing = gpu.generate(ids, NEW_TOKENS, static=False)[0]
                agree = int(np.sum(np.array(static) == want[f"{plan}/{i}/tokens"]))
                good = rel <= FP16_REL and static == replay == growing
                ok = ok and good
                row["prompts"].append({"text": text, "prefill_rel": rel, "static_eq_growing": static == growing,
                                       "replay_eq": static == replay, "tokens_equal_reference": agree,
                                       "tokens": len(static), "text_out": tok.decode(static)})
            row["ok"] = bool(ok)
            failed += not ok
            rows.append(row)
            worst = max(p["prefill_rel"] for p in row["prompts"])
            agreed = ", ".join(f"{p['tokens_equal_reference']}/{p['tokens']}" for p in row["prompts"])
            print(f"{plan}: {'ok' if ok else 'FAILED'} — in place {gpu.kv_in_place}, CUDA graph {gpu.cuda_graph}, "
                  f"prefill rel {worst:.2e} (≤ {FP16_REL:.0e}), static = replay = growing "
                  f"{all(p['static_eq_growing'] and p['replay_eq'] for p in row['prompts'])}, "
                  f"tokens equal to the fp32 reference {agreed}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_genai.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "reference":
        reference(Path(argv[1]), Path(argv[2]))
        return 0
    if len(argv) >= 4 and argv[0] == "check":
        return check(Path(argv[1]), Path(argv[2]), Path(argv[3]), *argv[4:5])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
