"""`painters serve` start-up failures: each exits 2 with one line `error: ...` naming the problem, before serving,
with the model folder unchanged (a real subprocess: uvicorn's own exits are what a user sees)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed: pip install 'painters[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed: pip install 'painters[serve]'")

from tests.reliability.checks import tree_state  # noqa: E402
from tests.reliability.serve_client import free_port  # noqa: E402
from tests.serve.conftest import link_with_tokenizer  # noqa: E402


@pytest.fixture
def served(tiny_onnx, tmp_path) -> Path:
    """A private copy of the tiny graph with the byte tokenizer beside it."""
    src = link_with_tokenizer(tiny_onnx, tmp_path / "linked")
    dst = tmp_path / "m"
    shutil.copytree(src.parent, dst)
    return dst / src.name


def refused(args: list, folder: Path, *needles: str) -> str:
    """``painters serve ARGS`` exits 2 within 120 s, stderr's last line is the one ``error:`` line; folder unchanged."""
    before = tree_state(folder)
    proc = subprocess.run([sys.executable, "-m", "painters", "serve", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=os.environ.copy())
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    for needle in needles:
        assert needle in errors[0], output
    assert tree_state(folder) == before
    return errors[0]


def test_missing_model(served):
    refused([served.parent / "nowhere.onnx"], served.parent, "nowhere.onnx")


def test_port_out_of_range(served):
    refused([served, "--port", "99999"], served.parent, "99999")


def test_negative_port(served):
    refused([served, "--port", "-1"], served.parent, "-1")


def test_port_in_use(served):
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        refused([served, "--port", port], served.parent, str(port), "--port")


def test_host_that_does_not_resolve(served):
    refused([served, "--host", "no-such-host.invalid", "--port", free_port()], served.parent, "no-such-host.invalid")


@pytest.mark.parametrize("content", [b"{not json", b"", b'{"model": 3}', b"\x00\xff" * 100])
def test_corrupt_tokenizer_json(served, content):
    (served.parent / "tokenizer.json").write_bytes(content)
    refused([served, "--port", free_port()], served.parent, "tokenizer")


def test_truncated_tokenizer_json(served):
    path = served.parent / "tokenizer.json"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    refused([served, "--port", free_port()], served.parent, "tokenizer")


def test_tokenizer_option_not_a_folder(served, tmp_path):
    refused([served, "--tokenizer", tmp_path / "none", "--port", free_port()], served.parent, "--tokenizer")


def test_tokenizer_option_without_tokenizer(served, tmp_path):
    (tmp_path / "empty").mkdir()
    refused([served, "--tokenizer", tmp_path / "empty", "--port", free_port()], served.parent, "no tokenizer")


def test_graph_without_tokenizer(tiny_onnx, tmp_path):
    dst = tmp_path / "bare"
    shutil.copytree(Path(tiny_onnx).parent, dst)
    refused([dst / Path(tiny_onnx).name, "--port", free_port()], dst, "--tokenizer")


def test_unknown_backend(served):
    refused([served, "--backend", "nonsense", "--port", free_port()], served.parent, "nonsense")


def test_max_model_len_zero(served):
    refused([served, "--max-model-len", "0", "--port", free_port()], served.parent, "--max-model-len")


def test_bad_plan_on_a_source(tmp_path):
    tmp_path.joinpath("keep").write_text("x")
    refused(["tiny-llama", "--plan", "skip_99_100", "--port", free_port()], tmp_path, "skip_99_100")


def test_empty_directory_as_model(tmp_path):
    (tmp_path / "empty").mkdir()
    refused([tmp_path / "empty", "--port", free_port()], tmp_path)
