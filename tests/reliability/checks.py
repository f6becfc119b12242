"""Shared assertions of the reliability suite: exit code, one-line message, inputs byte-identical, nothing left."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from click.testing import CliRunner

from painters.cli import main


def tree_state(*folders: Path) -> tuple[dict[str, str], set[str]]:
    """sha256 of every regular file under ``folders`` (links followed) and the set of every entry's path."""
    hashes, names = {}, set()
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            names.add(str(path))
            if path.is_file():
                hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes, names


def run_cli(args: list) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(result.exception))
        return result.exit_code, f"{result.output}Traceback (uncaught, as the CLI would print it):\n{tb}"
    return result.exit_code, result.output


def assert_refused(args: list, folders: list[Path], *needles: str, code: int = 2) -> str:
    """Run ``painters ARGS``: exit ``code`` with one line ``error: ...`` naming ``needles``; ``folders`` unchanged.

    Unchanged means every file's sha256 is the same and no entry appeared (no output, no temp directory)
    or vanished.
    """
    before = tree_state(*folders)
    exit_code, output = run_cli(args)
    assert exit_code == code, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    for needle in needles:
        assert needle in errors[0], output
    assert tree_state(*folders) == before
    return errors[0]


def new_entries(folder: Path, before: set[str]) -> list[str]:
    return sorted(set(map(str, Path(folder).rglob("*"))) - before)


def same_inode(a: Path, b: Path) -> bool:
    return os.stat(a).st_ino == os.stat(b).st_ino
