"""`painters export`: checkpoint → ONNX."""

from __future__ import annotations

import time

import click

from painters.cli.root import handle_errors, main


@main.command("export")
@click.argument("src")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Output .onnx (weights go to OUT.data); with --form genai, DIR/model.onnx.")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True)
@click.option("--opset", type=int, default=None, help="ONNX opset (default: the exporter's).")
@click.option("--form", type=click.Choice(["decomposed", "genai"]), default="decomposed", show_default=True,
              help="decomposed: standard ONNX ops (TensorRT parses it; every family). genai: ONNX Runtime's fused "
                   "form written by onnxruntime-genai's model builder (extra 'genai'), an ONNX Runtime GenAI folder.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int4"]), default=None,
              help="--form genai: the builder's precision (default fp32).")
@click.option("--target", type=click.Choice(["cpu", "cuda"]), default=None,
              help="--form genai: the execution provider the builder writes for (default cpu; cuda needs no GPU "
                   "to export).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run the written graph once against the source model and refuse it if they differ "
                   "(--no-check: for a model that does not fit in memory twice).")
@handle_errors
def export_cmd(src: str, out: str, dtype: str, opset: int | None, form: str, precision: str | None,
               target: str | None, check: bool) -> None:
    """Export SRC (smollm2-135m, tiny-llama, a .gguf file or a checkpoint directory) to one ONNX decoder graph
    that serves prefill and cached decoding; a BERT checkpoint (or minilm-l6) becomes an encoder graph with its
    task head."""
    from painters.export.onnx_export import export_onnx

    start = time.perf_counter()
    path = export_onnx(src, out, dtype=dtype, opset=opset, check=check, form=form, precision=precision,
                       target=target)
    what = f"genai {precision or 'fp32'} {target or 'cpu'}" if form == "genai" else dtype
    click.echo(f"exported {src} ({what}) → {path} in {time.perf_counter() - start:.1f} s")
