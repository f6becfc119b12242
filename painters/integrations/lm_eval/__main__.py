"""``python -m painters.integrations.lm_eval ARGS``: the ``lm_eval`` command with the painters model registered."""

from __future__ import annotations

from lm_eval.__main__ import cli_evaluate

import painters.integrations.lm_eval  # noqa: F401  (registers --model painters)

if __name__ == "__main__":
    cli_evaluate()
