"""`painters bench latency` and `painters bench check` (the CI latency gate)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from painters.cli.bench import BACKEND_CHOICES, bench
from painters.cli.root import handle_errors
from painters.fileio import check_outputs, command_reads, write_json


class _Sizes(click.ParamType):
    """A comma list of positive integers (``1,8``): zero or negative sizes are usage errors."""

    name = "N[,N...]"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            sizes = [int(v) for v in str(value).split(",")]
        except ValueError:
            self.fail(f"{value!r} is not a comma list of positive integers, e.g. 1,8", param, ctx)
        if not sizes or any(not 1 <= v <= 1 << 20 for v in sizes):
            self.fail(f"{value!r}: every size must be an integer 1..{1 << 20}, e.g. 1,8", param, ctx)
        return sizes


@bench.command("latency")
@click.argument("model")
@click.option("--backend", type=click.Choice([*BACKEND_CHOICES, "hf", "vllm"]), default=None,
              help="hf = the papers' path: Hugging Face modules called eagerly in the plan's order; vllm = each plan "
              "deployed on the source (painters deploy vllm) and served by vLLM (make vllm-env).")
@click.option("--plans", default=None, help="Comma-separated plans, measured interleaved (compiled from MODEL.onnx; "
              "with --backend tensorrt/tensorrt-rtx each is built into a cached engine).")
@click.option("--plan", default=None, help="One plan (torch/hf backends on a source model).")
@click.option("--scores", type=click.Path(dir_okay=False), default=None)
@click.option("--fuse-parallel/--no-fuse-parallel", default=True, show_default=True,
              help="Compile parallel groups fused into wide blocks.")
@click.option("--batch", type=_Sizes(), default="1", show_default=True, help="Batch sizes, e.g. 1,8.")
@click.option("--prompt", type=_Sizes(), default="128", show_default=True, help="Prompt lengths, e.g. 128,512.")
@click.option("--gen", type=click.IntRange(min=1), default=32, show_default=True, help="Decode steps timed per round.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--iters", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (onnxruntime / torch).")
@click.option("--anchor", multiple=True,
              help="Repeatable; each adds rows for the same plans. A source model (e.g. smollm2-135m) times the "
              "papers' eager Hugging Face path for every plan beside MODEL.onnx, as rows hf/PLAN; ort-genai:DIR "
              "times onnxruntime-genai's generator on the builder's folder DIR with every plan compiled on it, as "
              "rows genai/PLAN; llama.cpp:FILE.gguf runs every plan a GGUF carries and the full model in llama.cpp "
              "on FILE, as rows llama.cpp/PLAN and llama.cpp/baseline; vllm:SRC serves every plan deployed on SRC "
              "with vLLM, as rows vllm/PLAN.")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="dtype of a source model (torch/hf backends, --anchor) [the graph's, else fp32].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@handle_errors
def latency_cmd(model, backend, plans, plan, scores, fuse_parallel, batch, prompt, gen, warmup, iters, threads,
                anchor, dtype, json_out) -> None:
    """Prefill latency, decode ms/token and KV bytes of MODEL; several plans interleaved, as ratios to baseline."""
    from painters.bench.latency import format_table, measure_latency, rows_to_json
    from painters.plans import split_plans

    anchor_paths = [a.split(":", 1)[-1] for a in anchor]  # ort-genai:DIR, llama.cpp:FILE, vllm:SRC
    check_outputs([json_out], command_reads(scores, *anchor, *anchor_paths, models=[model, *anchor_paths],
                                            plans=plans or plan))  # before the run, not after it
    asked = split_plans(plans or plan) if (plans or plan) else None  # None: the model's own plan
    rows, model_hash = measure_latency(model, asked, backend, anchor=list(anchor), scores=scores,
                                       fuse_parallel=fuse_parallel, threads=threads, dtype=dtype, batches=batch,
                                       prompts=prompt, gen=gen, warmup=warmup, iters=iters,
                                       progress=lambda msg: click.echo(msg, err=True))
    click.echo(format_table(rows))
    if json_out:
        write_json(json_out, rows_to_json(rows, model=str(model), model_hash=model_hash, warmup=warmup, iters=iters))



@bench.command("check")
@click.argument("result", type=click.Path(dir_okay=False))
@click.option("--baseline", required=True, type=click.Path(dir_okay=False), help="Stored latency result to compare to.")
@click.option("--max-regression", type=click.FloatRange(min=0), default=0.10, show_default=True,
              help="Allowed relative growth of a ratio.")
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
