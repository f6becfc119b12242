"""Packaging: building the wheel prints no setuptools deprecation (they become build failures on a date)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_DEPRECATION = re.compile(r"Deprecat|BuildBackendWarning|SetuptoolsDeprecationWarning")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to copy the tracked tree")
def test_wheel_builds_without_deprecation_warnings(tmp_path):
    # Build from a copy of the tracked files so the check neither writes into the checkout nor sees build leftovers.
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path / "dist"),
                             str(src)], capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert list((tmp_path / "dist").glob("painters-*.whl")), output[-2000:]
    hits = [line for line in output.splitlines() if _DEPRECATION.search(line)]
    assert hits == [], "\n".join(hits)
