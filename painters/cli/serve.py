"""`painters serve`: an OpenAI-compatible server (`painters deploy` lives in :mod:`painters.cli.deploy`)."""

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
@click.option("--max-model-len", type=int, default=None,
              help="Context length: prompt + max_tokens above it is refused with a 400 [the model's own].")
@click.option("--max-body-bytes", type=click.IntRange(1024), default=None,
              help="Largest request body; a larger one is refused with a 413 [8 MiB].")
@handle_errors
def serve_cmd(model, plan, backend, host, port, tokenizer, max_batch, name, max_model_len, max_body_bytes) -> None:
    """Serve MODEL (.onnx, .engine or a source) over /v1/completions, /v1/chat/completions, /v1/models."""
    from painters.serve.server import serve

    serve(model, plan=plan, backend=backend, host=host, port=port, tokenizer=tokenizer, max_batch=max_batch,
          name=name, max_model_len=max_model_len, max_body_bytes=max_body_bytes)
