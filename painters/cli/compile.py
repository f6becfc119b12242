"""`painters compile` (= `painters-compile`) and `painters inspect`."""

from __future__ import annotations

import json

import click

from painters.cli.root import handle_errors, main


@main.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--plan", required=True, help="Plan name (see `painters plans list`) or a .yaml/.json plan file.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None, help="Output .onnx [MODEL.PLAN.onnx].")
@click.option("--scores", type=click.Path(dir_okay=False), default=None, help="Importance scores for drop_*_kN plans.")
@click.option("--fuse-parallel/--no-fuse-parallel", default=True, show_default=True,
              help="Fuse each parallel group into one wide block.")
@click.option("--weights", type=click.Choice(["float", "int4"]), default="float", show_default=True,
              help="int4: MatMul weights as ONNX Runtime MatMulNBits (each shared weight quantized once; a graph "
                   "exported from a GGUF keeps the file's own blocks, see --gguf).")
@click.option("--block-size", type=click.Choice(["32", "128"]), default=None,
              help="int4 quantization block when re-quantizing [32].")
@click.option("--gguf", default=None,
              help="int4 from this GGUF's own blocks (the file the graph was exported from; found automatically "
                   "for smollm2-135m); 'none' re-quantizes the float weights.")
@click.option("--quantizer", type=click.Choice(["rtn", "k_quant", "hqq", "gptq"]), default=None,
              help="How float weights are re-quantized (onnxruntime's quantizers; not with a GGUF's own blocks) "
                   "[rtn]. gptq needs --calib.")
@click.option("--accuracy-level", type=click.Choice(["0", "1", "4"]), default=None,
              help="MatMulNBits accuracy_level: 4 int8 activations (faster on the CPU), 0/1 fp32 [4].")
@click.option("--calib", type=click.Path(dir_okay=False), default=None,
              help="Calibration text (.txt/.jsonl) for --quantizer gptq, tokenized with the graph's tokenizer.")
@click.option("--engine", type=click.Path(dir_okay=False), default=None, help="Also build a TensorRT engine here.")
@click.option("--backend", type=click.Choice(["tensorrt-rtx", "tensorrt"]), default="tensorrt-rtx", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="Checked against the graph.")
@click.option("--profile", default=None, help="Shape ranges, e.g. batch=1:8:32,seq=1:128:2048,past=0:512:4096.")
@handle_errors
def compile_cmd(model, plan, out, scores, fuse_parallel, weights, block_size, gguf, quantizer, accuracy_level, calib,
                engine, backend, precision, profile) -> None:
    """Rewrite MODEL (an exported .onnx) to PLAN: drop, duplicate, reorder or parallelize decoder blocks."""
    from painters.compiler.compile import compile_model
    from painters.fileio import check_outputs, command_reads

    check_outputs([out, engine], command_reads(scores, models=[model], plans=plan))  # -o and --engine too
    result = compile_model(model, plan, out, scores=scores, fuse_parallel=fuse_parallel, weights=weights,
                           block_size=None if block_size is None else int(block_size), gguf=gguf,
                           quantizer=quantizer, accuracy_level=None if accuracy_level is None else int(accuracy_level),
                           calib=calib)
    p = result.plan
    fused = f" (parallel groups fused: {p.kv_slots} plan slots)" if result.layout.fused_stages else ""
    click.echo(f"{result.output}: plan {p} — {p.block_evals} block evals, {result.kv_slots} KV slots{fused}, "
               f"{result.nodes} nodes, weights {result.output_bytes / 2**20:.1f} MiB "
               f"(source {result.source_bytes / 2**20:.1f} MiB), {result.seconds:.2f} s")
    if engine:
        from painters.compiler.engine import build_engine

        path = build_engine(result.output, engine, backend=backend, precision=precision, profile=profile)
        click.echo(f"{path}: {backend} engine")


@main.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def inspect_cmd(model: str, as_json: bool) -> None:
    """Print a graph's plan, blocks, KV slots, weights and provenance as a short table (--json: the full record)."""
    from painters.compiler.compile import describe

    info = describe(model)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    rows = summary(info)
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        click.echo(f"{key:>{width}}: {value}")


def summary(info: dict) -> list[tuple[str, str]]:
    """The first screen of ``painters inspect``: one line per question a newcomer asks of a graph."""
    rows = [("file", info["file"]), ("plan", str(info.get("plan", "baseline")))]
    if "schedule" in info:
        rows.append(("blocks", f"{info['block_evals']} block evaluations in {len(info['schedule'])} steps"))
    elif "blocks" in info:
        rows.append(("blocks", f"{info['blocks']} (as exported)"))
    heads = [s["heads"] for s in info.get("slot_layout", [])]
    counts = ", ".join(f"{heads.count(h)}× {h} heads" for h in dict.fromkeys(heads))
    rows.append(("kv slots", f"{len(heads) or info['kv_slots']}" + (f" ({counts})" if counts else "")))
    if "fused_stages" in info:
        rows.append(("fused stages", ", ".join(map(str, info["fused_stages"])) or "none"))
    rows.append(("weights", f"{info['initializer_bytes'] / 2**20:.1f} MiB in {info['nodes']} nodes"))
    shown = {"file", "plan", "schedule", "block_evals", "blocks", "slot_layout", "kv_slots", "fused_stages",
             "initializer_bytes", "nodes", "config"}
    rows += [(key.replace("_", " "), str(value)) for key, value in info.items() if key not in shown]
    return rows
