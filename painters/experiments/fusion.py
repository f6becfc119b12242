"""Fused vs unfused parallel groups, side by side: ``python -m painters.experiments.fusion MODEL.onnx``.

Compiles each parallel plan twice (``--fuse-parallel`` on and off), then times baseline, every unfused and
every fused graph interleaved in the same rounds (see :func:`painters.bench.latency.benchmark`) and prints
each as a ratio to baseline and the fused one as a ratio to its unfused twin: the figure that says whether
fusing the group into one wide block pays on this machine and backend.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from painters.bench.latency import benchmark, format_table, rows_to_json
from painters.fileio import write_json
from painters.plans import split_plans
from painters.routing import open_runners

__all__ = ["fusion_rows", "main"]

FUSED = "+fused"  # suffix of a fused graph's row


def fusion_rows(model: Path, plans: list[str], *, backend: str | None = None, threads: int | None = None,
                batches=(1,), prompts=(128,), gen: int = 32, warmup: int = 1, iters: int = 5):
    """Latency rows for baseline, each plan unfused and each plan fused (named ``PLAN+fused``)."""
    runners = open_runners(str(model), ["baseline", *plans], backend, fuse_parallel=False, threads=threads)
    try:
        fused = open_runners(str(model), plans, backend, fuse_parallel=True, threads=threads)
    except BaseException:
        for runner in runners.values():
            runner.close()
        raise
    runners.update({plan + FUSED: runner for plan, runner in fused.items()})
    try:
        return benchmark(runners, batches=batches, prompts=prompts, gen=gen, warmup=warmup, iters=iters,
                         progress=lambda msg: print(msg, file=sys.stderr))
    finally:
        for runner in runners.values():
            runner.close()


def fused_vs_unfused(rows) -> list[dict]:
    """Per (plan, batch, prompt): fused ÷ unfused prefill and decode latency, from rows of one run."""
    by = {(r.plan, r.batch, r.prompt): r for r in rows}
    out = []
    for (name, batch, prompt), row in by.items():
        if name.endswith(FUSED) and (name.removesuffix(FUSED), batch, prompt) in by:
            twin = by[(name.removesuffix(FUSED), batch, prompt)]
            out.append({"plan": twin.plan, "batch": batch, "prompt": prompt,
                        "prefill_fused_over_unfused": row.prefill_ms / twin.prefill_ms,
                        "decode_fused_over_unfused": row.decode_ms / twin.decode_ms})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="an exported baseline .onnx")
    ap.add_argument("--plans", default="parallel_4_26,parallel_4_26_x3")
    ap.add_argument("--backend", default=None, help="onnxruntime (default) or onnxruntime-cuda")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", default="1")
    ap.add_argument("--prompt", default="128")
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
    rows = fusion_rows(args.model, split_plans(args.plans), backend=args.backend, threads=args.threads,
                       batches=ints(args.batch), prompts=ints(args.prompt), gen=args.gen, warmup=args.warmup,
                       iters=args.iters)
    print(format_table(rows))
    ratios = fused_vs_unfused(rows)
    print("\n| plan | batch | prompt | prefill fused ÷ unfused | decode fused ÷ unfused |\n|---|---|---|---|---|")
    for r in ratios:
        print(f"| {r['plan']} | {r['batch']} | {r['prompt']} | {r['prefill_fused_over_unfused']:.3f} "
              f"| {r['decode_fused_over_unfused']:.3f} |")
    if args.json:
        write_json(args.json, {**rows_to_json(rows, model=str(args.model)), "fused_vs_unfused": ratios})


if __name__ == "__main__":
    main()
