"""`painters finetune glue`: the standard fine-tuning step of the GLUE protocol (encoder + task head)."""

from __future__ import annotations

import click

from painters.cli.root import handle_errors, main


@main.group("finetune")
def finetune() -> None:
    """Fine-tune an encoder on a task before plans are applied (the Painters GLUE protocol)."""


@finetune.command("glue")
@click.argument("src")
@click.option("--task", required=True, help="rte, mrpc, sst2, cola, stsb or wnli (qnli has no train split here).")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="New checkpoint directory.")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after N optimizer steps.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=5e-5, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--max-length", type=click.IntRange(min=8), default=128, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Train on the first N examples only.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Data directory holding glue/ [../shared/data, else $PAINTERS_DATA].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--group-by-length", is_flag=True,
              help="Batch examples of similar length together (fewer padded tokens; run_glue's option).")
@handle_errors
def glue_cmd(src, task, out, epochs, max_steps, lr, batch_size, max_length, seed, limit, data_dir, threads,
             group_by_length) -> None:
    """Fine-tune encoder SRC (minilm-l6 or a BERT checkpoint directory) on GLUE TASK into checkpoint OUT."""
    from painters.bench.tasks import resolve_data_dir
    from painters.fileio import check_output_dir, command_reads
    from painters.glue.finetune import finetune_glue

    check_output_dir(out, command_reads(resolve_data_dir(data_dir), models=[src]))  # never into the data
    r = finetune_glue(src, task, out, epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,
                      max_length=max_length, seed=seed, limit=limit, data_dir=data_dir, threads=threads,
                      group_by_length=group_by_length)
    click.echo(f"{r.output}: {r.task} fine-tuned from {r.source} — {r.examples} examples, {r.steps} steps "
               f"({r.epochs} epochs), final loss {r.final_loss:.4f}, {r.seconds:.0f} s (seed {r.seed})")
