"""Issue 15 item 12 (writes) and 15 (temp folders): a full disk or a size limit, --json, killed runs.

A file-size limit (RLIMIT_FSIZE with SIGXFSZ ignored) makes write() fail with EFBIG exactly where a full
disk fails with ENOSPC; both go through one handler (``fileio.disk_error``). The limit is set in this process
for the duration of one command and restored after.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from painters.errors import PaintersError
from painters.fileio import clean_stale_temps, write_json
from tests.reliability.checks import assert_refused, run_cli

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _refused_under_limit(args, folders, limit=64 << 10):
    with file_size_limit(limit):
        return assert_refused(args, folders, "a file-size limit was reached", "nothing was written")


def test_compile_under_a_file_size_limit_leaves_nothing(model_dir, tmp_path):
    out = tmp_path / "new" / "deeper" / "x.onnx"
    _refused_under_limit(["compile", "--plan", "skip_1_3", model_dir, "-o", out], [model_dir.parent, tmp_path])
    assert not (tmp_path / "new").exists()  # the folders the command created are gone again


def test_export_under_a_file_size_limit_leaves_nothing(model_dir, tmp_path, monkeypatch):
    """The tracer is replaced by the graph it produced for the tiny model (a trace costs tens of seconds); every
    write after it — graph, external data, side files — is export's own. (A private copy: onnx-ir refuses to
    copy weights out of a data file with several hard links, which the shared fixture's may have.)"""
    import onnx_ir as ir

    import painters.export.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "trace_decoder", lambda loaded, opset=None: ir.load(model_dir))
    out = tmp_path / "new" / "model.onnx"
    _refused_under_limit(["export", "tiny-llama", "-o", out], [tmp_path])
    assert not (tmp_path / "new").exists()


def test_engine_build_under_a_file_size_limit_leaves_nothing(tmp_path, monkeypatch):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx is not installed (pip install painters[test])")
    from tests.compiler.test_engine import make_decoder

    monkeypatch.setenv("PAINTERS_CACHE", str(tmp_path / "cache"))
    graph = make_decoder(tmp_path / "toy" / "model.onnx")
    (tmp_path / "work").mkdir()
    out = tmp_path / "work" / "new" / "toy.engine"
    _refused_under_limit(["engine", "build", graph, "-o", out, "--profile", "batch=1:1:2,seq=1:4:8,past=0:4:8"],
                         [tmp_path / "toy", tmp_path / "work"], limit=8 << 10)
    assert not out.parent.exists()


# --json: checked before the run; a failed final write keeps the results --------------------------------------

@pytest.mark.parametrize("where, needle", [("under_a_file", "not a writable directory"),
                                           ("a_fifo", "not a regular file"),
                                           ("the_data", "would overwrite the input")])
def test_latency_json_is_checked_before_the_run(model_dir, tmp_path, where, needle):
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo.json")
    json_out = {"under_a_file": tmp_path / "file" / "r.json", "a_fifo": tmp_path / "fifo.json",
                "the_data": model_dir.with_name("model.onnx.data")}[where]
    start = time.perf_counter()
    message = assert_refused(["bench", "latency", model_dir, "--prompt", "4", "--gen", "1", "--json", json_out],
                             [model_dir.parent, tmp_path], needle)
    assert "round" not in message and time.perf_counter() - start < 10  # refused before any runner loaded


def test_results_whose_final_write_fails_are_saved_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("PAINTERS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "file").write_text("x")  # the run's folder turned into a file while it ran
    data = {"rows": [1, 2, 3]}
    with pytest.raises(PaintersError, match="the results were saved to") as info:
        write_json(tmp_path / "file" / "r.json", data)
    saved = Path(str(info.value).rsplit(" to ", 1)[1].removesuffix(" instead"))
    assert saved.is_relative_to(tmp_path / "cache") and json.loads(saved.read_text()) == data
    assert write_json(tmp_path / "ok" / "r.json", data).read_text() == saved.read_text()


# scores files: binary, special or malformed files are plan errors ----------------------------------------------

@pytest.mark.parametrize("kind, needle", [("binary", "is not JSON"), ("fifo", "not a regular file"),
                                          ("zero", "not a regular file"), ("letters", "lacks per-layer lists"),
                                          ("huge", "bytes; it is not a scores file")])
def test_scores_file_that_is_no_scores_file(model_dir, tmp_path, kind, needle):
    scores = tmp_path / "scores.json"
    if kind == "binary":
        scores.write_bytes(bytes(range(256)) * 4)
    elif kind == "fifo":
        os.mkfifo(scores)
    elif kind == "zero":
        if not Path("/dev/zero").exists():
            pytest.skip("/dev/zero is absent")
        scores.symlink_to("/dev/zero")
    elif kind == "letters":
        scores.write_text(json.dumps({"format": "painters.scores/1", "attn": "0123", "mlp": "0123", "block": "0123"}))
    else:
        with open(scores, "wb") as f:
            f.truncate(17 << 20)  # sparse: no disk used
    assert_refused(["compile", "--plan", "drop_attn_k2", model_dir, "--scores", scores], [model_dir.parent],
                   needle)


# temp folders of killed runs ------------------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from painters.fileio import atomic_dir_outputs
    with atomic_dir_outputs(Path(sys.argv[1])) as tmp:
        (tmp / "half-written").write_bytes(b"x" * 1000)
        print(tmp, flush=True)
        time.sleep(120)
""")


def test_a_later_run_removes_the_temp_folder_of_a_killed_one(model_dir, tmp_path):
    out = tmp_path / "out" / "x.onnx"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(out)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        stale = Path(child.stdout.readline().strip())
        assert stale.is_dir() and stale.parent == out.parent
    finally:
        child.kill()  # SIGKILL: no finally block of the child runs
        child.wait()
        child.stdout.close()
    assert stale.is_dir()
    live = out.parent / f".x.onnx.painters-{stale.name.split('-')[1]}-1-keep"  # pid 1 is alive: not ours to take
    other = out.parent / f".y.onnx.painters-{stale.name.split('-')[1]}-{child.pid}-keep"  # another output's
    live.mkdir()
    other.mkdir()
    code, output = run_cli(["compile", "--plan", "skip_1_3", model_dir, "-o", out])
    assert code == 0, output
    assert not stale.exists() and live.is_dir() and other.is_dir()
    assert clean_stale_temps(out) == []
