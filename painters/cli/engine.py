"""`painters engine build`: an ONNX graph → a TensorRT or TensorRT-RTX engine."""

from __future__ import annotations

import time
from pathlib import Path

import click

from painters.cli.root import handle_errors, main


@main.group("engine")
def engine_group() -> None:
    """Build TensorRT / TensorRT-RTX engines from exported or compiled graphs."""


@engine_group.command("build")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="Output .engine [cached under $PAINTERS_CACHE/engines].")
@click.option("--backend", type=click.Choice(["tensorrt-rtx", "tensorrt"]), default="tensorrt-rtx", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="Checked against the graph.")
@click.option("--profile", default=None, help="Shape ranges, e.g. batch=1:8:32,seq=1:128:2048,past=0:512:4096.")
@click.option("--compute-capability", default=None, help="TensorRT-RTX target GPU, e.g. 8.9 [this GPU, or 8.9].")
@click.option("--timing-cache", type=click.Path(dir_okay=False), default=None, help="Timing cache file (GPU only).")
@handle_errors
def build_cmd(model, out, backend, precision, profile, compute_capability, timing_cache) -> None:
    """Build an engine for MODEL (.onnx) with a prefill and a decode optimization profile."""
    from painters.compiler.engine import build_engine, cached_engine
    from painters.fileio import check_outputs, command_reads

    check_outputs([out], command_reads(timing_cache, models=[model]))  # the timing cache is read, then updated
    start = time.perf_counter()
    if out:
        path = build_engine(model, out, backend=backend, precision=precision, profile=profile,
                            compute_capability=compute_capability, timing_cache=timing_cache)
    else:
        path = cached_engine(model, backend=backend, precision=precision, profile=profile,
                             compute_capability=compute_capability)
    click.echo(f"{path}: {backend} engine, {Path(path).stat().st_size / 2**20:.1f} MiB, "
               f"{time.perf_counter() - start:.1f} s")
