"""Internal bugs keep their traceback; user errors are one line; the two named ValueErrors are user errors now."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from painters.cli.root import handle_errors
from painters.compiler.passes.quantize import QuantizeWeightsPass
from painters.errors import CompileError, InternalError, PaintersError


def test_internal_error_is_not_a_user_error():
    assert not issubclass(InternalError, PaintersError)

    @click.command()
    @click.argument("kind")
    @handle_errors
    def cmd(kind):
        raise (InternalError if kind == "bug" else CompileError)("broken invariant")

    bug = CliRunner().invoke(cmd, ["bug"])
    assert bug.exit_code == 1 and isinstance(bug.exception, InternalError)  # through, with its traceback
    user = CliRunner().invoke(cmd, ["user"])
    assert user.exit_code == 2 and user.output.strip() == "error: broken invariant"


def test_bad_block_size_is_a_compile_error():
    with pytest.raises(CompileError, match="--block-size 7: choose one of"):
        QuantizeWeightsPass(block_size=7)
