"""`painters serve` (an OpenAI-compatible server) and `painters deploy triton` (a Triton model repository)."""

from __future__ import annotations

import click

from painters.cli.root import handle_errors, main


@main.command("serve")
@click.argument("model")
@click.option("--plan", default=None, help="Plan for a source model (compiled graphs carry theirs).")
@click.option("--backend", default=None, help="onnxruntime, onnxruntime-cuda, tensorrt, tensorrt-rtx or torch.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--tokenizer", type=click.Path(file_okay=False), default=None,
              help="Tokenizer directory [the one beside MODEL].")
@click.option("--max-batch", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option("--name", default=None, help="Model id clients send [MODEL's stem].")
@handle_errors
def serve_cmd(model, plan, backend, host, port, tokenizer, max_batch, name) -> None:
    """Serve MODEL (.onnx, .engine or a source) over /v1/completions, /v1/chat/completions, /v1/models."""
    from painters.serve.server import serve

    serve(model, plan=plan, backend=backend, host=host, port=port, tokenizer=tokenizer, max_batch=max_batch,
          name=name)


@main.group("deploy")
def deploy_group() -> None:
    """Write deployment artifacts for inference servers."""


@deploy_group.command("triton")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "repo", type=click.Path(file_okay=False), required=True, help="Model repository.")
@click.option("--name", default=None, help="Model name in the repository [MODEL's stem].")
@handle_errors
def triton_cmd(model, repo, name) -> None:
    """Write REPO/NAME/config.pbtxt and REPO/NAME/1/model.onnx (or model.plan) for Triton."""
    from painters.serve.triton import deploy_triton

    target = deploy_triton(model, repo, name)
    click.echo(f"{target}: Triton model ({'model.plan' if model.endswith('.engine') else 'model.onnx'})")


# The lead moves this beside the other targets into painters/cli/deploy.py (the engines branch creates it).
@deploy_group.command("vllm")
@click.argument("source")
@click.option("--plan", required=True, help="Plan name or plan file.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Checkpoint directory to write.")
@click.option("--scores", type=click.Path(dir_okay=False), default=None, help="Importance scores for drop_*_kN.")
@handle_errors
def vllm_cmd(source, plan, out, scores) -> None:
    """Write a checkpoint directory vLLM serves (`vllm serve OUT`) with the painters plugin running PLAN."""
    from painters.targets.vllm import deploy_vllm

    target = deploy_vllm(source, plan, out, scores=scores)
    click.echo(f"{target}: vLLM checkpoint (architecture PaintersLlamaForCausalLM, plan {plan})")
