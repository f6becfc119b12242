"""`painters deploy`: artifacts an inference server loads as they are (Triton, Hugging Face, Nemotron-NAS, GGUF, vLLM).

Each plan target is one row of :data:`PLAN_TARGETS` (name → ``module:function``); a new target is one
more row: the same options, the same summary line.
"""

from __future__ import annotations

import importlib

import click

from painters.cli.root import handle_errors, main

__all__ = ["deploy_group", "PLAN_TARGETS"]

# target → (the function that writes it, what it is for); every function is deploy_<target>(src, plan, out, scores=)
PLAN_TARGETS: dict[str, tuple[str, str]] = {
    "hf": ("painters.targets.hf:deploy_hf",
           "a checkpoint of SRC's architecture, layers renumbered (block-level plans; any engine)"),
    "nemotron-nas": ("painters.targets.nemotron_nas:deploy_nemotron_nas",
                     "a Nemotron-NAS (DeciLM) checkpoint: sublayer drops on Llama/Mistral (vLLM, SGLang, TRT-LLM)"),
    "gguf": ("painters.targets.gguf:deploy_gguf",
             "a GGUF for llama.cpp (deci architecture for sublayer drops); GGUF sources keep their quantized bytes"),
    "vllm": ("painters.targets.vllm:deploy_vllm",
             "a checkpoint vLLM serves with the painters plugin (every plan kind: parallel groups, loops, shared "
             "repeats; Llama/Mistral)"),
}


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


def _plan_command(target: str, spec: str, help_text: str) -> None:
    @deploy_group.command(target, help=f"Write PLAN on SRC as {help_text}.")
    @click.argument("src")
    @click.option("--plan", required=True, help="Plan name or plan file.")
    @click.option("-o", "--out", required=True, type=click.Path(), help="Output (a directory; a .gguf for gguf).")
    @click.option("--scores", default=None, type=click.Path(dir_okay=False), help="Importance scores (_kN plans).")
    @handle_errors
    def command(src, plan, out, scores) -> None:
        from painters.targets.summary import summary

        module, _, function = spec.partition(":")
        written = getattr(importlib.import_module(module), function)(src, plan, out, scores=scores)
        click.echo(summary(written, src))


for _target, (_spec, _help) in PLAN_TARGETS.items():
    _plan_command(_target, _spec, _help)
