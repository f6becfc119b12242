"""`painters sweep --ray` on a local two-worker Ray instance: the same summary as the serial sweep, and it resumes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.byte_tokenizer import byte_tokenizer
from tests.conftest import requires_data

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'painters[ray]')")

ARGS = ["--variants", "skip,parallel", "--n", "2", "--tasks", "arc_easy", "--limit", "4", "--no-latency"]


@pytest.fixture(scope="module")
def graph(tiny_onnx, tmp_path_factory) -> Path:
    """tiny-llama's graph hard-linked into a directory with a tokenizer beside it (accuracy tasks need one)."""
    out = tmp_path_factory.mktemp("sweep_graph")
    for f in tiny_onnx.parent.iterdir():
        if f.is_file():
            os.link(f, out / f.name)
    byte_tokenizer().save_pretrained(out)
    return out / tiny_onnx.name


@pytest.fixture(scope="module")
def local_ray():
    """Two CPU workers on this machine; start-up is slow on a loaded 2-core box, so its timeout is generous."""
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
             _system_config={"worker_register_timeout_seconds": 120})
    yield ray
    ray.shutdown()


def _sweep(*args):
    from painters.cli import main

    result = CliRunner().invoke(main, ["sweep", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@requires_data("arc", "ARC-Easy-Test.jsonl")
def test_ray_sweep_equals_serial_and_resumes(graph, local_ray, tmp_path, monkeypatch):
    import painters.bench.accuracy

    _sweep(str(graph), *ARGS, "-o", str(tmp_path / "serial"))
    # The driver must not compute runs: evaluate raising here proves the Ray workers (other processes) did.
    monkeypatch.setattr(painters.bench.accuracy, "evaluate", lambda *a, **k: pytest.fail("run on the driver"))
    _sweep(str(graph), *ARGS, "--ray", "-o", str(tmp_path / "ray"))
    serial, fanned = (tmp_path / "serial" / "summary.csv").read_text(), (tmp_path / "ray" / "summary.csv").read_text()
    assert serial == fanned  # same rows, same numbers to the last digit
    assert len(serial.splitlines()) == 1 + 3  # header + baseline, skip, parallel
    assert (tmp_path / "ray" / "score_vs_layers.png").stat().st_size > 0

    runs = sorted((tmp_path / "ray" / "runs").glob("*.json"))
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in runs}
    removed = runs[1]
    removed.unlink()
    _sweep(str(graph), *ARGS, "--ray", "-o", str(tmp_path / "ray"))  # resumes: only the removed run is redone
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "ray" / "runs").glob("*.json")}
    assert after.keys() == before.keys()
    assert {k: v for k, v in after.items() if k != removed.name} == {k: v for k, v in before.items()
                                                                     if k != removed.name}
    assert after[removed.name] != before[removed.name]
    assert (tmp_path / "ray" / "summary.csv").read_text() == serial

    # its runs record the sweep's provenance, so a resume with other options is refused as on the serial path
    from painters.cli import main

    other = [*ARGS[:-3], "--limit", "5", "--no-latency"]
    refused = CliRunner().invoke(main, ["sweep", str(graph), *other, "--ray", "-o", str(tmp_path / "ray")])
    assert refused.exit_code == 2, refused.output
    assert "runs" in refused.output and "Traceback" not in refused.output


def test_ray_missing_names_the_extra(monkeypatch, tmp_path):
    from painters.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    result = CliRunner().invoke(main, ["sweep", "tiny-llama", "--ray", "-o", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "painters[ray]" in result.output
    assert not (tmp_path / "s").exists()
