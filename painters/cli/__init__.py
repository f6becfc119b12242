"""The `painters` command line: a thin shell over the importable API (one module per command group)."""

from __future__ import annotations

import functools
import logging
import sys

import click

from painters import __version__
from painters.errors import PaintersError

__all__ = ["main", "compile_main", "handle_errors"]


def handle_errors(fn):
    """Turn a PaintersError into a one-line message and exit code 2; anything else is a bug (traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PaintersError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group()
@click.version_option(__version__, prog_name="painters")
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
def main(verbose: bool) -> None:
    """Compile layer plans for pretrained transformers into deployable graphs and engines."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    # Each command group lives in its own module; importing it attaches its commands to `main`.
    import importlib

    for module in ("export", "plans", "compile", "engine", "bench", "bench_latency", "bench_glue", "finetune", "sweep",
                   "analysis", "serve"):
        try:
            importlib.import_module(f"painters.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"painters.cli.{module}":
                raise


_register()


def compile_main() -> None:
    """Entry point of `painters-compile` (the same command as `painters compile`)."""
    main.commands["compile"].main(prog_name="painters-compile")
