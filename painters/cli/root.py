"""The root ``painters`` command group and the error handler every command shares.

Command modules import these from here, not from :mod:`painters.cli` (which imports every command module to
register it), so the package and its commands import in one direction only.
"""

from __future__ import annotations

import functools
import logging
import sys

import click

from painters import __version__
from painters.errors import PaintersError

__all__ = ["main", "handle_errors"]


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
