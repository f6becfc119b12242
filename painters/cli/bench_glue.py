"""`painters bench glue` and `painters bench glue-table`: GLUE dev-split scores of fine-tuned encoder graphs."""

from __future__ import annotations

import json

import click

from painters.cli.bench import bench, write_json
from painters.cli.root import handle_errors


@bench.command("glue")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--task", required=True, help="MODEL's task: rte, mrpc, sst2, cola, stsb, wnli, qnli.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="First N dev examples.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Data directory holding glue/ [../shared/data, else $PAINTERS_DATA].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime CPU threads.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the result here.")
@handle_errors
def glue_cmd(model, task, limit, batch_size, data_dir, threads, json_out) -> None:
    """Score MODEL (a fine-tuned encoder .onnx, any plan) on TASK's dev split with GLUE's own metrics."""
    from painters.bench.glue import evaluate_glue

    result = evaluate_glue(model, task, limit=limit, batch_size=batch_size, data_dir=data_dir, threads=threads)
    metrics = ", ".join(f"{k} {100 * v:.2f}" for k, v in result["metrics"].items())
    click.echo(f"{result['model']} [{result['plan']}] GLUE {result['task']} ({result['examples']} dev examples): "
               f"{metrics}; score {result['score']:.2f}")
    if json_out:
        click.echo(f"wrote {write_json(json_out, result)}")


@bench.command("glue-table")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the merged results as JSON instead.")
@handle_errors
def glue_table_cmd(results, as_json) -> None:
    """Merge `bench glue --json` RESULTS into one table: plans × tasks, with the unnormalized average."""
    from painters.bench.glue import load_results, render_table

    data = load_results(list(results))
    click.echo(json.dumps(data, indent=2) if as_json else render_table(data))
