"""`painters bench`: measure a model under a plan (accuracy here; latency and sweeps join the same group)."""

from __future__ import annotations

from pathlib import Path

import click

from painters.cli.root import handle_errors, main
from painters.fileio import check_outputs, command_reads, write_json

__all__ = ["bench", "write_json", "model_reads"]

BACKEND_CHOICES = ["torch", "onnxruntime", "onnxruntime-cuda", "tensorrt", "tensorrt-rtx", "llama.cpp"]


def model_reads(model: str, *others: str | None) -> list[Path]:
    """Files a bench run reads through MODEL and ``others`` (see :func:`painters.fileio.command_reads`)."""
    return command_reads(*others, models=[model])


@main.group("bench")
def bench() -> None:
    """Measure models: accuracy on standard tasks (lm-evaluation-harness formats)."""


@bench.command("accuracy")
@click.argument("model")
@click.option("--tasks", required=True,
              help="Comma-separated: arc_easy,arc_challenge,hellaswag,winogrande,lambada,gsm8k.")
@click.option("--backend", type=click.Choice([*BACKEND_CHOICES, "vllm"]), default=None,
              help="Executor [onnxruntime for .onnx, tensorrt for .engine, torch for a source]; vllm: the plan "
              "deployed on the source and scored by vLLM's prompt log-probabilities (make vllm-env).")
@click.option("--plan", default=None, help="Plan: run by torch on a source, compiled from an exported .onnx "
              "[the model's own: baseline, or a compiled graph's plan].")
@click.option("--scores", type=click.Path(dir_okay=False), default=None, help="Importance scores for drop_*_kN plans.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Task data directory [../shared/data, else $PAINTERS_DATA].")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="First N items of each task.")
@click.option("--num-fewshot", type=click.IntRange(min=0), default=None,
              help="Exemplars [task default: gsm8k 5, else 0].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Continuation rows per forward [16].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (onnxruntime, torch).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write results here.")
@handle_errors
def accuracy_cmd(model, tasks, backend, plan, scores, data_dir, limit, num_fewshot, batch_size, threads,
                 json_out) -> None:
    """Score MODEL (.onnx, .engine, or a source such as smollm2-135m) on TASKS and print a Markdown table."""
    from painters.bench.accuracy import evaluate, render_markdown
    from painters.bench.tasks import parse_tasks, resolve_data_dir
    from painters.routing import open_runner

    parse_tasks(tasks)  # fail on a typo before a model loads
    data = resolve_data_dir(data_dir)
    check_outputs([json_out], command_reads(scores, data, models=[model], plans=plan))  # before the run, not after it
    with open_runner(model, backend, plan, scores=scores, threads=threads) as runner:
        results = evaluate(runner, tasks, limit=limit, num_fewshot=num_fewshot, batch_size=batch_size,
                           data_dir=data_dir)
    click.echo(render_markdown(results))
    if json_out:
        click.echo(f"wrote {write_json(json_out, {'model': model, 'results': results})}")
