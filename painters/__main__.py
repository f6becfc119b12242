"""``python -m painters``: the CLI where console scripts are not installed (e.g. a source tree on PYTHONPATH)."""

from painters.cli import main

main()
