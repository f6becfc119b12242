"""`painters sweep`: the Painters grid of plans, accuracy and latency per run, CSV and plots."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from painters.cli.root import handle_errors, main
from painters.fileio import check_output_dir


@main.command("sweep")
@click.argument("model")
@click.option("--variants", default="skip,repeat,reverse,shuffle,parallel,parallel_x3,drop_attn", show_default=True)
@click.option("--n", "n_range", default="1..8", show_default=True, help="Layers modified: 1..K or a list.")
@click.option("--tasks", default="arc_easy", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None)
@click.option("--backend", default=None, help="onnxruntime for an .onnx MODEL; torch for a source.")
@click.option("--data", type=click.Path(file_okay=False), default=None)
@click.option("--latency/--no-latency", default=True, show_default=True, help="Also time each plan vs baseline.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Fan the runs out on Ray: alone starts a local instance; auto, ray://HOST:PORT or HOST:PORT "
                   "connects. Paths must be on a filesystem every node sees.")
@click.option("-o", "--out", type=click.Path(file_okay=False), default="sweep", show_default=True)
@handle_errors
def sweep_cmd(model, variants, n_range, tasks, limit, backend, data, latency, ray_address, out) -> None:
    """Run the Painters grid on MODEL (resumable: finished runs in OUT/runs are kept)."""
    from painters.experiments.sweep import latency_ratio, parse_range, run_sweep, sweep_provenance, sweep_runners
    from painters.fileio import command_reads

    ns = parse_range(n_range)  # before a model loads
    check_output_dir(Path(out), command_reads(data, models=[model]))

    if ray_address:
        from painters.experiments.sweep_ray import import_ray, run_sweep_ray

        import_ray()
    models = sweep_runners(model, backend)
    num_layers = models.num_layers
    provenance = sweep_provenance(models, tasks, limit=limit, latency=latency, data_dir=data)
    if ray_address:
        result = run_sweep_ray(model, Path(out), variants.split(","), ns, tasks,
                               num_layers=num_layers, backend=backend, limit=limit, latency=latency, data_dir=data,
                               address=None if ray_address == "local" else ray_address, provenance=provenance)
        click.echo(f"{result}: summary.csv, score_vs_layers.png, accuracy_vs_latency.png")
        return
    result = run_sweep(model, Path(out), variants.split(","), ns, tasks, num_layers=num_layers,
                       open_plan=models.open, limit=limit, provenance=provenance,
                       latency=functools.partial(latency_ratio, models) if latency else None, data_dir=data)
    click.echo(f"{result}: summary.csv, score_vs_layers.png, accuracy_vs_latency.png")
