"""The `painters` command line: a thin shell over the importable API (one module per command group).

The root group and the error handler live in :mod:`painters.cli.root`; importing a command module attaches its
commands to the group, so this package imports each of them once, here.
"""

from __future__ import annotations

import painters.cli.analysis  # noqa: F401  (each import registers its commands)
import painters.cli.bench  # noqa: F401
import painters.cli.bench_glue  # noqa: F401
import painters.cli.bench_latency  # noqa: F401
import painters.cli.compile  # noqa: F401
import painters.cli.deploy  # noqa: F401
import painters.cli.engine  # noqa: F401
import painters.cli.export  # noqa: F401
import painters.cli.finetune  # noqa: F401
import painters.cli.plans  # noqa: F401
import painters.cli.reproduce  # noqa: F401
import painters.cli.serve  # noqa: F401
import painters.cli.sweep  # noqa: F401
from painters.cli.root import handle_errors, main

__all__ = ["main", "compile_main", "handle_errors"]


def compile_main() -> None:
    """Entry point of `painters-compile` (the same command as `painters compile`)."""
    main.commands["compile"].main(prog_name="painters-compile")
