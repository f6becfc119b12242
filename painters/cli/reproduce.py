"""`painters reproduce`: both papers' experiments on one model through compiled graphs, with a report."""

from __future__ import annotations

import shlex
import time
from dataclasses import replace
from pathlib import Path

import click

from painters.cli.root import handle_errors, main


@main.command("reproduce")
@click.argument("model")
@click.option("--tasks", default=None, help="Accuracy tasks (default arc_easy,hellaswag,winogrande,lambada; "
                                            "--quick: arc_easy,lambada).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Items per task (default 200; --quick: 20).")
@click.option("--quick", is_flag=True, help="A small grid that finishes on a CPU in minutes (see README).")
@click.option("--n", "ns", default=None, help="Middle layers modified, e.g. 2,4,8 or 2..8 (default: even, up to L-4).")
@click.option("--k", "ks", default=None, help="Modules dropped, e.g. 2,4,8 (default: even, up to L/2).")
@click.option("--variants", default=None, help="Painters variants (default all: skip,repeat,reverse,shuffle,"
                                               "parallel,parallel_x2,parallel_x3).")
@click.option("--kinds", default=None, help="What Matters drops (default all: attn,mlp,block,joint).")
@click.option("--seeds", default=None, help="Random-order seeds (default 0,1,2; --quick: 0,1).")
@click.option("--calib", default=None, help="Calibration file for importance/similarity (default: "
                                            "DATA/gsm8k/train.jsonl, the questions).")
@click.option("--data", type=click.Path(file_okay=False), default=None, help="Task data directory.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads per runner.")
@click.option("-o", "--out", type=click.Path(file_okay=False), required=True, help="Output directory (resumable).")
@handle_errors
def reproduce_cmd(model, tasks, limit, quick, ns, ks, variants, kinds, seeds, calib, data, threads, out) -> None:
    """Run both papers' experiments on MODEL through compiled graphs; write OUT/report.md (resumable)."""
    from painters.experiments.reproduce import FULL, QUICK, parse_ints, run_reproduce

    grid = QUICK if quick else FULL
    changes = {k: v for k, v in (("tasks", tasks), ("limit", limit), ("ns", parse_ints(ns)),
                                 ("ks", parse_ints(ks, "--k")), ("seeds", parse_ints(seeds, "--seeds")),
                                 ("calib", calib),
                                 ("variants", tuple(variants.split(",")) if variants else None),
                                 ("kinds", tuple(kinds.split(",")) if kinds else None)) if v}
    grid = replace(grid, **changes)
    start = time.perf_counter()
    given = [("--tasks", tasks), ("--limit", limit), ("--n", ns), ("--k", ks), ("--variants", variants),
             ("--kinds", kinds), ("--seeds", seeds),
             ("--calib", calib), ("--data", data), ("--threads", threads)]
    argv = [model, *(["--quick"] if quick else []), *(a for o, v in given if v is not None for a in (o, str(v))),
            "-o", out]
    command = "painters reproduce " + shlex.join(argv)
    report = run_reproduce(model, Path(out), grid, data_dir=data, command=command, threads=threads,
                           progress=lambda msg: click.echo(msg, err=True))
    click.echo(f"{report} ({time.perf_counter() - start:.0f} s)")
