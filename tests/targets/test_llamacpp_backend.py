"""The llama.cpp backend in the router: a GGUF's own plan, plans deployed from a plain GGUF, the llama.cpp anchor."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from painters.cli import main

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def tiny_gguf(bf_llama, llamacpp_tree, tmp_path_factory):
    from painters.targets.llamacpp_convert import convert_checkpoint

    return convert_checkpoint(bf_llama, tmp_path_factory.mktemp("g") / "tiny.gguf")


def test_latency_rows_beside_the_full_model(tiny_gguf, tmp_path):
    from painters.targets.gguf import deploy_gguf

    planned = deploy_gguf(tiny_gguf, "skip_1_3", tmp_path / "skip.gguf")
    args = ["bench", "latency", str(planned), "--backend", "llama.cpp", "--anchor", f"llama.cpp:{tiny_gguf}",
            "--prompt", "8", "--gen", "4", "--warmup", "0", "--iters", "1", "--threads", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| ") and "llama.cpp |" in line]
    # the anchor runs every plan of the run and the full model on the plain GGUF, in the same rounds
    assert [r.split("|")[1].strip() for r in rows] == ["skip_1_3", "llama.cpp/skip_1_3", "llama.cpp/baseline"]
    ideal = {r.split("|")[1].strip(): r.split("|")[-2].strip() for r in rows}
    assert ideal["llama.cpp/baseline"] == "1.000"  # the plain GGUF's record: baseline


def test_plain_gguf_runs_plans_and_refuses_other_plans_on_deployed(tiny_gguf, tmp_path):
    from painters.errors import BenchError
    from painters.routing import open_runners
    from painters.targets.gguf import deploy_gguf

    runners = open_runners(str(tiny_gguf), ["baseline", "drop_attn_2"], "llama.cpp", threads=1)
    try:
        assert {name: r.info.plan for name, r in runners.items()} == {"baseline": "baseline",
                                                                     "drop_attn_2": "drop_attn_2"}
    finally:
        for r in runners.values():
            r.close()
    planned = deploy_gguf(tiny_gguf, "skip_1_3", tmp_path / "skip.gguf")
    with pytest.raises(BenchError, match="compiled for plan 'skip_1_3'"):
        open_runners(str(planned), ["skip_2_4"], "llama.cpp")


def test_several_anchors_in_one_run(bf_llama, tiny_gguf, tmp_path):
    """Each --anchor adds rows for the run's plans; llama.cpp leaves out the parallel group no GGUF carries."""
    from painters.export.onnx_export import export_model
    from painters.export.sources import load_source

    graph = export_model(load_source(str(bf_llama)), tmp_path / "model.onnx")
    args = ["bench", "latency", str(graph), "--plans", "baseline,parallel_1_3", "--anchor", str(bf_llama),
            "--anchor", f"llama.cpp:{tiny_gguf}", "--prompt", "8", "--gen", "2", "--warmup", "0", "--iters", "1",
            "--threads", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = [line.split("|")[1].strip() for line in result.output.splitlines() if line.startswith("| ")][1:]
    assert rows == ["baseline", "parallel_1_3", "hf/baseline", "hf/parallel_1_3", "llama.cpp/baseline"]


def test_greedy_decoding_asks_for_the_last_logits_and_scoring_stays_exact(tiny_gguf):
    """A timed prefill runs the head on the last position only (no ``scores`` row written); a later forward on the
    same context re-evaluates those positions rather than reading unwritten rows, and the tokens are the argmax of
    the scoring path's logits."""
    import numpy as np

    from painters.runtime.llamacpp import LlamaCppRunner

    prompt, steps = [1, 5, 9, 12, 7, 3, 30, 2], 4
    runner = LlamaCppRunner(tiny_gguf, threads=1)
    try:
        ids = list(prompt)
        want = []
        for _ in range(steps):  # the scoring path: every position's logits, from an empty context each time
            runner.llama.reset()
            logits, _ = runner.forward(np.array([ids]), np.ones((1, len(ids)), np.int64), None, None)
            want.append(int(np.argmax(logits[0, -1])))
            ids.append(want[-1])
        runner.llama.reset()
        reference, _ = runner.forward(np.array([ids]), np.ones((1, len(ids)), np.int64), None, None)

        runner.llama.scores[:] = np.nan
        assert runner.generate([prompt], steps) == [want]
        assert np.isnan(runner.llama.scores[:len(ids)]).all()  # no position's logits were copied out
        again, _ = runner.forward(np.array([ids]), np.ones((1, len(ids)), np.int64), None, None)
        np.testing.assert_array_equal(again, reference)  # the greedy loop's positions were evaluated again
    finally:
        runner.close()
