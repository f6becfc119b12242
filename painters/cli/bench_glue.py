"""`painters bench glue` and `painters bench glue-table`: GLUE dev-split scores of fine-tuned encoder graphs."""

from __future__ import annotations

import json
from pathlib import Path

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
    from painters.bench.tasks import resolve_data_dir
    from painters.fileio import check_outputs, command_reads
    from painters.glue.evaluate import evaluate_glue

    check_outputs([json_out], command_reads(resolve_data_dir(data_dir), models=[model]))  # before the run
    result = evaluate_glue(model, task, limit=limit, batch_size=batch_size, data_dir=data_dir, threads=threads)
    metrics = ", ".join(f"{k} {100 * v:.2f}" for k, v in result["metrics"].items())
    click.echo(f"{result['model']} [{result['plan']}] GLUE {result['task']} ({result['examples']} dev examples): "
               f"{metrics}; score {result['score']:.2f}")
    if json_out:
        click.echo(f"wrote {write_json(json_out, result)}")


@bench.command("glue-table")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help="Merge RESULTS (with any finetune.json records among them) into one JSON file instead.")
@click.option("--page", is_flag=True, help="Write the whole results page (Markdown) instead of the table.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None, help="Write here instead of stdout.")
@handle_errors
def glue_table_cmd(results, as_json, page, out) -> None:
    """Merge `bench glue --json` RESULTS into one table: plans × tasks, with the unnormalized average.

    RESULTS may also hold fine-tuning records (CKPT/finetune.json: they give each result its seed, and several
    seeds show as mean ± standard deviation) and files merged by --json. --page needs the records.
    """
    from painters.errors import BenchError
    from painters.experiments.reproduce import provenance
    from painters.fileio import atomic_write, check_outputs, write_json
    from painters.glue.evaluate import load_results, render_table
    from painters.glue.page import render_page

    if as_json and page:
        raise BenchError("--json and --page write different things; give one of them")
    check_outputs([out], results)
    data, records = load_results(list(results))
    if not data:
        raise BenchError("no `bench glue --json` result among RESULTS; give the result files too")
    merged = {"provenance": provenance("painters bench glue-table --json"), "finetune": records, "results": data}
    for r in results:  # a merged file keeps the provenance of the run that merged it
        loaded = json.loads(Path(r).read_text())
        if isinstance(loaded, dict) and "provenance" in loaded:
            merged["provenance"] = loaded["provenance"]
    if page and not records:
        raise BenchError("--page needs the fine-tuning records: give CKPT/finetune.json files or a merged file")
    if as_json and out:
        click.echo(f"wrote {write_json(out, merged)}")
        return
    if as_json:
        text = json.dumps(merged, indent=2) + "\n"
    else:
        text = render_page(merged) if page else render_table(data) + "\n"
    if out:
        click.echo(f"wrote {atomic_write(out, text)}")
    else:
        click.echo(text, nl=False)
