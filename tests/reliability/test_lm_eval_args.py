"""Bad ``--model_args`` for the lm-eval plugin: each refused with one PaintersError line naming the argument and the
fix (in process, through lm-eval's own ``create_from_arg_string``), and the CLI exits 2 with that one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'painters[lmeval]')")

from painters.errors import PaintersError  # noqa: E402
from tests.reliability.checks import tree_state  # noqa: E402
from tests.serve.conftest import link_with_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def graph(tiny_onnx, tmp_path_factory) -> Path:
    return link_with_tokenizer(tiny_onnx, tmp_path_factory.mktemp("lm_eval_args") / "m")


def _cases(graph: Path, tmp: Path) -> dict[str, tuple[str, str]]:
    (tmp / "empty").mkdir(exist_ok=True)
    (tmp / "notckpt").mkdir(exist_ok=True)
    (tmp / "notckpt" / "config.json").write_text("{not json")
    (tmp / "scores.json").write_text("{truncated")
    return {
        "no_args": ("", "model="),
        "no_model": ("plan=skip_1_2", "model="),
        "empty_model": ("model=", "model="),
        "model_without_value": ("model", "model="),
        "missing_file": (f"model={tmp / 'nowhere.onnx'}", "nowhere.onnx"),
        "empty_directory": (f"model={tmp / 'empty'}", "empty"),
        "corrupt_checkpoint": (f"model={tmp / 'notckpt'}", "notckpt"),
        "unknown_backend": (f"model={graph},backend=nonsense", "nonsense"),
        "bad_plan": ("model=tiny-llama,plan=frobnicate_3", "frobnicate_3"),
        "plan_out_of_range": ("model=tiny-llama,plan=skip_40_50", "skip_40_50"),
        "kN_without_scores": ("model=tiny-llama,plan=drop_attn_k2", "scores"),
        "kN_corrupt_scores": (f"model=tiny-llama,plan=drop_attn_k2,scores={tmp / 'scores.json'}", "scores"),
        "kN_missing_scores": (f"model=tiny-llama,plan=drop_attn_k2,scores={tmp / 'none.json'}", "none.json"),
        "threads_text": (f"model={graph},threads=x", "threads"),
        "threads_zero": (f"model={graph},threads=0", "threads"),
        "threads_negative": (f"model={graph},threads=-3", "threads"),
        "threads_float": (f"model={graph},threads=1.5", "threads"),
        "max_length_zero": (f"model={graph},max_length=0", "max_length"),
        "max_length_negative": (f"model={graph},max_length=-8", "max_length"),
        "max_length_text": (f"model={graph},max_length=long", "max_length"),
        "batch_size_zero": (f"model={graph},batch_size=0", "batch_size"),
        "batch_size_text": (f"model={graph},batch_size=big", "batch_size"),
        "unknown_key": (f"model={graph},colour=red", "colour"),
        "misspelt_key": (f"model={graph},thread=2", "thread"),
        "empty_key": (f"model={graph},=x", "''"),
    }


CASE_NAMES = sorted([
    "no_args", "no_model", "empty_model", "model_without_value", "missing_file", "empty_directory",
    "corrupt_checkpoint", "unknown_backend", "bad_plan", "plan_out_of_range", "kN_without_scores",
    "kN_corrupt_scores", "kN_missing_scores", "threads_text", "threads_zero", "threads_negative", "threads_float",
    "max_length_zero", "max_length_negative", "max_length_text", "batch_size_zero", "batch_size_text",
    "unknown_key", "misspelt_key", "empty_key"])


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_model_args_are_one_line(graph, tmp_path, case):
    from painters.integrations.lm_eval import PaintersLM

    args, needle = _cases(graph, tmp_path)[case]
    before = tree_state(graph.parent, tmp_path)
    with pytest.raises(PaintersError) as info:
        PaintersLM.create_from_arg_string(args, {"batch_size": None, "max_batch_size": None, "device": None})
    message = str(info.value)
    assert "\n" not in message and needle in message, message
    assert tree_state(graph.parent, tmp_path) == before


def test_good_model_args_still_open(graph):
    from painters.integrations.lm_eval import PaintersLM

    lm = PaintersLM.create_from_arg_string(f"model={graph},threads=1,max_length=64,batch_size=auto",
                                           {"batch_size": 2, "max_batch_size": None, "device": "cpu"})
    try:
        assert lm.max_length == 64 and lm.batch_size == 2
    finally:
        lm.runner.close()


@pytest.mark.parametrize("args,needle", [("threads=x,model=tiny-llama", "threads"),
                                         ("model=tiny-llama,colour=red", "colour")])
def test_cli_exits_2_with_one_line(args, needle):
    tasks = Path(__file__).resolve().parents[2] / "painters" / "integrations" / "lm_eval" / "tasks"
    proc = subprocess.run([sys.executable, "-m", "painters.integrations.lm_eval", "--model", "painters",
                           "--model_args", args, "--tasks", "painters_arc_easy", "--include_path", str(tasks),
                           "--limit", "1"], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and needle in last, proc.stderr[-3000:]
