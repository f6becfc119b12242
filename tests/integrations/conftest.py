"""Fixtures for the engine integrations: vLLM's own environment, made once per machine by `make vllm-env`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def vllm_env() -> Path:
    """The interpreter of vLLM's environment (``$PAINTERS_CACHE/venv-vllm``), made by `make vllm-env` on first use
    (about 2 minutes, cached for every later run and checkout); the test is skipped, with the reason, when it
    cannot be made (no make, no python3 venv, no registry)."""
    from filelock import FileLock

    from painters.cache import cache_dir

    if os.environ.get("PAINTERS_VLLM_PYTHON"):
        return Path(os.environ["PAINTERS_VLLM_PYTHON"])
    root = cache_dir()
    python = root / "venv-vllm" / "bin" / "python"
    if shutil.which("make") is None:
        pytest.skip("vLLM's environment needs `make vllm-env`, and make is not installed")
    with FileLock(str(root / "venv-vllm.lock")):  # xdist workers: one of them builds it
        result = subprocess.run(["make", "-s", "vllm-env", f"PAINTERS_CACHE={root}"], cwd=REPO,
                                capture_output=True, text=True, timeout=1800)
    if result.returncode != 0 or not python.is_file():
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        pytest.skip(f"vLLM's environment could not be made with `make vllm-env` (exit {result.returncode}): {tail}")
    return python
