"""Fused vs unfused int4 parallel groups (issue 29 item 4): latency interleaved in one run, and the logits bound.

    python scripts/bench_fuse_int4.py [SRC] [--work DIR] [--plan parallel_4_26] [--gguf FILE|none]
        [--prompt 128] [--gen 32] [--iters 5] [--threads N] [--json OUT]

SRC (default ``smollm2-135m``) is exported once to ``DIR/KEY/fp32/model.onnx`` (KEY: painters' export and compiler
code, SRC and ``--gguf``, so a changed painters never reuses a stale graph); the plan is compiled from it with
``--weights int4`` twice, fused (``DIR/KEY/fused/model.onnx``) and with ``--no-fuse-parallel``
(``DIR/KEY/unfused/model.onnx``), beside the int4 baseline (for a GGUF source: the file's own blocks; ``--gguf none``
re-quantizes). The three run on painters' onnxruntime runner interleaved round by round
(:func:`painters.bench.latency.benchmark`); the script prints the table and fused ÷ unfused prefill and decode.
Then it prints the relative max logit difference of fused vs unfused (two random prompts of 64 and 17 ids,
real positions, and one decode step), at the default ``accuracy_level`` 4 and at 0 (fp32 activations), and for
scale the unfused graph at level 4 vs itself at level 0 (what int8 activations alone move).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _graphs(src: str, work: Path, plan: str, gguf: str | None) -> dict[str, Path]:
    from painters.compiler.compile import compile_model
    from painters.export.onnx_export import export_model
    from painters.export.sources import load_source

    fp32 = work / "fp32" / "model.onnx"
    if not fp32.exists():
        export_model(load_source(src), fp32)
    paths = {}
    for name, compiled, fuse in (("int4/baseline", "baseline", True), (f"int4/{plan}/unfused", plan, False),
                                 (f"int4/{plan}/fused", plan, True)):
        out = work / name.replace("/", "_") / "model.onnx"
        if not out.exists():
            result = compile_model(fp32, compiled, out, weights="int4", gguf=gguf, fuse_parallel=fuse)
            print(f"{name}: {result.nodes} nodes, fused stages {result.layout.fused_stages}", file=sys.stderr)
        paths[name] = out
    return paths


def _bound(fused: Path, unfused: Path, level: int) -> dict[str, float]:
    import numpy as np

    from painters.compiler.passes.quantize import with_accuracy_level
    from painters.runtime.base import left_pad
    from painters.runtime.ort import OrtRunner

    rng = np.random.default_rng(0)
    ids, mask = left_pad([list(rng.integers(1, 49000, 64)), list(rng.integers(1, 49000, 17))])
    real = mask.astype(bool)
    runners = [OrtRunner(with_accuracy_level(p, level)) for p in (fused, unfused)]
    (got, got_kv), (want, want_kv) = (r.prefill(ids, mask) for r in runners)
    step, step_mask = np.array([[7], [9]]), np.concatenate([mask, np.ones((2, 1), dtype=mask.dtype)], axis=1)
    got_step, want_step = runners[0].decode(step, step_mask, got_kv)[0], runners[1].decode(step, step_mask,
                                                                                           want_kv)[0]
    rel = lambda a, b: float(np.abs(a - b).max() / np.abs(b).max())  # noqa: E731
    return {"prefill": rel(got[real], want[real]), "decode": rel(got_step, want_step)}


def main(argv: list[str] | None = None) -> None:
    """Compile, time interleaved, print the table, the ratios and the logits bound."""
    from painters.bench.latency import benchmark, format_table, rows_to_json
    from painters.runtime.ort import OrtRunner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", default="smollm2-135m")
    ap.add_argument("--work", type=Path, default=Path("build/bench_fuse_int4"))
    ap.add_argument("--plan", default="parallel_4_26")
    ap.add_argument("--gguf", default=None, help="the GGUF (default: the built-in's), or none to re-quantize")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    from painters.compiler.variants import code_keyed

    paths = _graphs(args.src, code_keyed(args.work, args.src, str(args.gguf)), args.plan, args.gguf)
    runners = {name: OrtRunner(path, threads=args.threads) for name, path in paths.items()}
    try:
        rows = benchmark(runners, prompts=(args.prompt,), gen=args.gen, warmup=args.warmup, iters=args.iters,
                         baseline="int4/baseline", progress=lambda msg: print(msg, file=sys.stderr))
    finally:
        for runner in runners.values():
            runner.close()
    print(format_table(rows))
    by = {r.plan: r for r in rows}
    fused, unfused = by[f"int4/{args.plan}/fused"], by[f"int4/{args.plan}/unfused"]
    ratios = {"prefill_fused_over_unfused": fused.prefill_ms / unfused.prefill_ms,
              "decode_fused_over_unfused": fused.decode_ms / unfused.decode_ms}
    print(f"\n{args.plan} int4 fused ÷ unfused: prefill {ratios['prefill_fused_over_unfused']:.3f}, "
          f"decode {ratios['decode_fused_over_unfused']:.3f}")
    bounds = {level: _bound(paths[f"int4/{args.plan}/fused"], paths[f"int4/{args.plan}/unfused"], level)
              for level in (4, 0)}
    for level, b in bounds.items():
        print(f"logits, fused vs unfused, accuracy_level {level}: relative max diff prefill {b['prefill']:.2e}, "
              f"decode step {b['decode']:.2e}")
    from painters.compiler.passes.quantize import with_accuracy_level

    unfused_path = paths[f"int4/{args.plan}/unfused"]
    # for scale: what int8 activations alone do
    bounds["int8_noise"] = _bound(unfused_path, with_accuracy_level(unfused_path, 0), 4)
    print(f"for scale, unfused at level 4 vs unfused at level 0: prefill {bounds['int8_noise']['prefill']:.2e}, "
          f"decode step {bounds['int8_noise']['decode']:.2e}")
    if args.json:
        from painters.fileio import write_json

        write_json(args.json, {**rows_to_json(rows, model=args.src), "ratios": ratios,
                               "logits_bound": {str(k): v for k, v in bounds.items()}})
    else:
        print(json.dumps(ratios))


if __name__ == "__main__":
    main()
