"""`painters importance` and `painters similarity`: the analyses that pick and motivate plans."""

from __future__ import annotations

import time

import click

from painters.cli.root import handle_errors, main

__all__ = ["importance_cmd", "similarity_cmd"]

_calib = click.option("--calib", required=True, type=click.Path(dir_okay=False),
                      help="Calibration text: a .txt file, or .jsonl (field 'text', else 'question').")
_samples = click.option("--samples", type=int, default=None, help="Calibration sequences (default 64).")
_seq_len = click.option("--seq-len", type=int, default=None, help="Tokens per sequence (default 512).")


@main.command("importance")
@click.argument("src")
@_calib
@_samples
@_seq_len
@click.option("--json", "out", type=click.Path(dir_okay=False), help="Write the scores file (for drop_KIND_kN).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a bar chart of the scores (PNG).")
@click.option("--iterative", type=click.Choice(["attn", "mlp", "block", "joint"]),
              help="Drop modules one at a time, rescoring the pruned model after each drop.")
@click.option("--drop", type=int, help="How many modules the iterative drop removes.")
@handle_errors
def importance_cmd(src, calib, samples, seq_len, out, plot, iterative, drop) -> None:
    """Score every attention, MLP and block of SRC by 1 − cos of the residual stream across it (What Matters)."""
    from painters.analysis import measure_importance

    start = time.perf_counter()
    res = measure_importance(src, calib, samples=samples, seq_len=seq_len, iterative=iterative, drop=drop,
                             out=out, plot=plot)
    s = res.scores
    click.echo(f"{'layer':>5} {'attn':>9} {'mlp':>9} {'block':>9}")
    for i in range(s.num_layers):
        click.echo(f"{i:>5} {s.attn[i]:>9.5f} {s.mlp[i]:>9.5f} {s.block[i]:>9.5f}")
    ranked = sorted(range(s.num_layers), key=lambda i: (s.attn[i], i))
    click.echo(f"attention layers, least important first: {', '.join(map(str, ranked))}")
    if res.order:
        steps = ", ".join(f"{d.kind} {d.layer} ({d.score:.5f})" for d in res.order)
        click.echo(f"iterative {iterative} drop order: {steps}\nplan: {res.plan_name}")
    wrote = ", ".join(p for p in (out, plot) if p)
    click.echo(f"{res.meta['samples']} × {res.meta['seq_len']} tokens in {time.perf_counter() - start:.1f} s"
               + (f"; wrote {wrote}" if wrote else ""))


@main.command("similarity")
@click.argument("src")
@_calib
@_samples
@_seq_len
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the heatmap and drift curve (PNG).")
@click.option("--json", "out", type=click.Path(dir_okay=False), help="Write the matrix and drift curve (JSON).")
@handle_errors
def similarity_cmd(src, calib, samples, seq_len, plot, out) -> None:
    """Cosine similarity between the hidden states after every pair of layers of SRC (the Painters' Figure 2)."""
    from painters.analysis import measure_similarity

    start = time.perf_counter()
    sim = measure_similarity(src, calib, samples=samples, seq_len=seq_len, out=out, plot=plot)
    click.echo("drift cos(h_i-1, h_i) by block: " + " ".join(f"{v:.3f}" for v in sim.drift))
    lowest = min(range(sim.num_layers), key=lambda i: sim.drift[i])
    click.echo(f"largest change at block {lowest} (cos {sim.drift[lowest]:.4f}); "
               f"{sim.num_layers + 1}×{sim.num_layers + 1} matrix in {time.perf_counter() - start:.1f} s"
               + (f"; wrote {', '.join(p for p in (out, plot) if p)}" if out or plot else ""))
