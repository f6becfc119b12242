"""``python -m painters.integrations.lm_eval ARGS``: the ``lm_eval`` command with the painters model registered.

A :class:`~painters.errors.PaintersError` (a bad ``--model_args``, a missing model) ends the command with one line
``error: ...`` and exit status 2, as every painters command does, instead of a traceback from inside lm-eval.
"""

from __future__ import annotations

import sys

from lm_eval.__main__ import cli_evaluate

import painters.integrations.lm_eval  # noqa: F401  (registers --model painters)
from painters.errors import PaintersError


def main() -> None:
    """Run lm-eval's command; a painters error ends it with one ``error:`` line and exit status 2."""
    try:
        cli_evaluate()
    except PaintersError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
