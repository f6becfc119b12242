"""Fixtures for the engine integrations: vLLM's own environment, made once per machine by `make vllm-env`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAMP = ".painters-vllm-installed"  # the Makefile's stamp: the environment is complete


@pytest.fixture(scope="session")
def vllm_env() -> Path:
    """The interpreter of vLLM's environment (``PAINTERS_VLLM_PYTHON``, else ``$PAINTERS_CACHE/venv-vllm``), made
    by `make vllm-env` on first use (about 2 minutes, then cached for every run and checkout on the machine:
    painters is installed there as a copy, for its plugin entry point, and the worker puts the calling checkout
    first on PYTHONPATH); the tests are skipped, with the reason, when it cannot be made (no make, no venv
    module, no registry)."""
    from filelock import FileLock

    from painters.runtime.vllm import vllm_python_path

    python = vllm_python_path()
    venv = python.parent.parent
    if (venv / STAMP).is_file():
        return python
    if shutil.which("make") is None:
        pytest.skip("vLLM's environment needs `make vllm-env`, and make is not installed")
    venv.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(venv.parent / "venv-vllm.lock")):  # xdist workers: one of them builds it
        result = subprocess.run(["make", "-s", "vllm-env", f"VLLM_VENV={venv}"], cwd=REPO, capture_output=True,
                                text=True, timeout=1800)
    if result.returncode != 0 or not python.is_file():
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        pytest.skip(f"vLLM's environment could not be made with `make vllm-env` (exit {result.returncode}): {tail}")
    return python
