"""`painters bench latency` and `painters bench check` (the CI latency gate)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from painters.cli import handle_errors
from painters.cli.bench import BACKEND_CHOICES, bench, write_json


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


@bench.command("latency")
@click.argument("model")
@click.option("--backend", type=click.Choice([*BACKEND_CHOICES, "hf"]), default=None,
              help="hf = the papers' path: Hugging Face modules called eagerly in the plan's order.")
@click.option("--plans", default=None, help="Comma-separated plans, measured interleaved (compiled from MODEL.onnx).")
@click.option("--plan", default=None, help="One plan (torch/hf backends on a source model).")
@click.option("--scores", type=click.Path(dir_okay=False), default=None)
@click.option("--fuse-parallel/--no-fuse-parallel", default=True, show_default=True,
              help="Compile parallel groups fused into wide blocks.")
@click.option("--batch", default="1", show_default=True, help="Batch sizes, e.g. 1,8.")
@click.option("--prompt", default="128", show_default=True, help="Prompt lengths, e.g. 128,512.")
@click.option("--gen", default=32, show_default=True, help="Decode steps timed per round.")
@click.option("--warmup", default=1, show_default=True)
@click.option("--iters", default=5, show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads (onnxruntime / torch).")
@click.option("--anchor", default=None, help="Source model (e.g. smollm2-135m): time the papers' eager Hugging Face "
              "path for every plan beside MODEL.onnx, as rows hf/PLAN.")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="dtype of a source model (torch/hf backends, --anchor) [the graph's, else fp32].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@handle_errors
def latency_cmd(model, backend, plans, plan, scores, fuse_parallel, batch, prompt, gen, warmup, iters, threads,
                anchor, dtype, json_out) -> None:
    """Prefill latency, decode ms/token and KV bytes of MODEL; several plans interleaved, as ratios to baseline."""
    from painters.bench.latency import benchmark, format_table, rows_to_json
    from painters.bench.setups import latency_runners

    runners, ideal = latency_runners(model, backend, plans or plan or "baseline", scores=scores,
                                     fuse_parallel=fuse_parallel, threads=threads, anchor=anchor, dtype=dtype)
    try:
        rows = benchmark(runners, batches=_ints(batch), prompts=_ints(prompt), gen=gen, warmup=warmup, iters=iters,
                         ideal=ideal, progress=lambda msg: click.echo(msg, err=True))
    finally:
        for runner in runners.values():
            runner.close()
    click.echo(format_table(rows))
    if json_out:
        write_json(json_out, rows_to_json(rows, model=str(model), warmup=warmup, iters=iters))


@bench.command("check")
@click.argument("result", type=click.Path(dir_okay=False))
@click.option("--baseline", required=True, type=click.Path(dir_okay=False), help="Stored latency result to compare to.")
@click.option("--max-regression", default=0.10, show_default=True, help="Allowed relative growth of a ratio.")
@handle_errors
def check_cmd(result: str, baseline: str, max_regression: float) -> None:
    """Exit 1 when a plan's latency ratio regressed beyond --max-regression against the stored result."""
    from painters.bench.gate import check_regressions

    regressions, compared = check_regressions(Path(result), Path(baseline), max_regression)
    for r in regressions:
        click.echo(f"REGRESSION {r.plan} batch={r.batch} prompt={r.prompt} {r.metric}: "
                   f"{r.stored:.3f} → {r.measured:.3f} ({r.change:+.1%} > {max_regression:.0%})")
    click.echo(f"{compared} ratios compared, {len(regressions)} regressed")
    sys.exit(1 if regressions else 0)
