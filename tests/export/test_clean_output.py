"""A new user's first commands print what they need and real warnings only (issue: a clean first run).

The commands run in a subprocess, as a user runs them, so every third-party import and logger is live.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# Lines a command may print on stderr, each with why it is not noise we can remove.
ALLOWED: dict[str, str] = {
    # (none today: export, compile and inspect of tiny-llama print nothing on stderr)
}

_NOISE = re.compile(r"warn|deprecat|skipping|traceback", re.IGNORECASE)


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-m", "painters", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def _unexpected(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if line.strip() and not any(re.search(pattern, line) for pattern in ALLOWED)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("clean") / "model.onnx"
    return out, _run("export", "tiny-llama", "-o", str(out))


def test_export_prints_the_result_and_no_third_party_noise(exported):
    out, result = exported
    assert result.returncode == 0, result.stderr
    assert "exported tiny-llama" in result.stdout and str(out) in result.stdout
    assert _unexpected(result.stderr) == [], result.stderr


def test_compile_and_inspect_print_no_warnings(exported):
    out, _ = exported
    compiled = out.with_name("model.skip_2_4.onnx")
    result = _run("compile", "--plan", "skip_2_4", str(out), "-o", str(compiled))
    assert result.returncode == 0, result.stderr
    assert _unexpected(result.stderr) == [], result.stderr
    result = _run("inspect", str(compiled))
    assert result.returncode == 0, result.stderr
    assert "skip_2_4" in result.stdout
    assert _unexpected(result.stderr) == [], result.stderr


def test_quiet_exporter_drops_only_the_known_messages_and_verbose_keeps_them():
    """The filters are narrow: a real axis conflict and other warnings pass; INFO logging keeps everything."""
    import logging
    import warnings

    from painters.export.quiet import quiet_exporter

    harmless = "# The axis name: batch will not be used, since it shares the same shape constraints with " \
               "another axis: batch."
    conflict = "# The axis name: seq will not be used, since it shares the same shape constraints with " \
               "another axis: past."
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    painters_logger = logging.getLogger("painters")
    old_level = painters_logger.level

    def emit() -> tuple[list[str], list[str]]:
        records: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: records.append(record.getMessage())
        registration.addHandler(handler)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with quiet_exporter():
                    warnings.warn(harmless, UserWarning, stacklevel=1)
                    warnings.warn(conflict, UserWarning, stacklevel=1)
                    warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
                    warnings.warn("something real", UserWarning, stacklevel=1)
                    registration.warning("torchvision is not installed. Skipping torchvision::nms")
                    registration.warning("a real registration problem")
        finally:
            registration.removeHandler(handler)
        return [str(w.message) for w in caught], records

    try:
        painters_logger.setLevel(logging.WARNING)
        shown, logged = emit()
        assert shown == [conflict, "something real"]
        assert logged == ["a real registration problem"]
        painters_logger.setLevel(logging.INFO)  # what `painters -v` sets
        shown, logged = emit()
        assert len(shown) == 4 and len(logged) == 2
    finally:
        painters_logger.setLevel(old_level)
