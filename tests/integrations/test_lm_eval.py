"""The lm-eval plugin against lm-eval's own HF backend, ``painters bench accuracy`` and painters' generation.

Fixture: stories260K (a real 5-layer Llama, ../shared/models) with a byte-level BPE tokenizer trained here on
ARC questions (the checkpoint ships none; lm-eval's HF backend and painters both need one), exported to ONNX.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import DATA, SHARED

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'painters[lmeval]')")

STORIES = SHARED / "models" / "stories260K" / "hf"
LIMIT = 4
LL_TOL = 1e-4  # absolute, per item: fp32 ONNX Runtime vs fp32 PyTorch eager on the same weights

pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason=f"evaluation data {DATA} is absent (../shared/data)"),
    pytest.mark.skipif(not STORIES.is_dir(), reason=f"stories260K fixture {STORIES} is absent (../shared/models)"),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """stories260K's HF directory plus a 512-piece byte-level BPE tokenizer (deterministic training)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("stories_tok")
    for f in STORIES.iterdir():
        shutil.copy(f, out / f.name)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    with open(DATA / "arc" / "ARC-Easy-Train.jsonl", encoding="utf-8") as f:
        tok.train_from_iterator([next(f) for _ in range(300)], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def graphs(checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The checkpoint exported to ONNX, and compiled to skip_2_4."""
    from painters.compiler.compile import compile_model
    from painters.export.onnx_export import export_model
    from painters.export.sources import load_source

    base = export_model(load_source(checkpoint), tmp_path_factory.mktemp("stories_onnx") / "model.onnx")
    compile_model(base, "skip_2_4")
    return {"baseline": base, "skip_2_4": base.with_name("model.skip_2_4.onnx")}


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    from painters.integrations.lm_eval import TASKS_DIR

    return TaskManager(include_path=str(TASKS_DIR))


def _evaluate(model: str, args: str, tasks: list[str], task_manager) -> dict:
    return lm_eval.simple_evaluate(model=model, model_args=args, tasks=tasks, limit=LIMIT, device="cpu",
                                   task_manager=task_manager, bootstrap_iters=0, log_samples=True)


def _lls(result: dict, task: str) -> list[float]:
    samples = sorted(result["samples"][task], key=lambda s: s["doc_id"])
    return [float(resp[0]) for s in samples for resp in s["filtered_resps"]]


TASKS = ["painters_arc_easy", "painters_hellaswag", "painters_winogrande", "painters_lambada"]


def test_plugin_matches_hf_backend(graphs, checkpoint, task_manager):
    """Baseline: per-request loglikelihoods within LL_TOL of lm-eval's HF backend, and the same metrics."""
    ours = _evaluate("painters", f"model={graphs['baseline']}", TASKS, task_manager)
    theirs = _evaluate("hf", f"pretrained={checkpoint},dtype=float32", TASKS, task_manager)
    for task in TASKS:
        a, b = _lls(ours, task), _lls(theirs, task)
        assert len(a) == len(b) > 0
        assert max(abs(x - y) for x, y in zip(a, b)) < LL_TOL, task
        metrics = {m: v for m, v in theirs["results"][task].items() if m.startswith(("acc", "perplexity"))
                   and "stderr" not in m}
        assert metrics, task
        for metric, value in metrics.items():
            if metric.startswith("perplexity"):
                assert ours["results"][task][metric] == pytest.approx(value, rel=1e-4), (task, metric)
            else:
                assert ours["results"][task][metric] == value, (task, metric)


def test_plugin_matches_bench_accuracy_for_a_plan(graphs, task_manager):
    """skip_2_4: the plugin's metrics equal ``painters bench accuracy``'s on the same compiled graph."""
    from painters.bench.accuracy import evaluate
    from painters.routing import open_runner

    ours = _evaluate("painters", f"model={graphs['skip_2_4']}", TASKS, task_manager)
    with open_runner(str(graphs["skip_2_4"])) as runner:
        bench = evaluate(runner, "arc_easy,hellaswag,winogrande,lambada", limit=LIMIT, data_dir=DATA)
    assert ours["config"]["painters_plan"] == "skip_2_4"
    for task in TASKS:
        name = task.removeprefix("painters_")
        for metric, value in bench[name]["metrics"].items():
            got = ours["results"][task][f"{metric},none"]
            if metric == "perplexity":
                # same scoring code; lm-eval hands over its own request order, so batches (padding) differ
                assert got == pytest.approx(value, rel=1e-5), (task, metric)
            else:
                assert got == value, (task, metric)


def test_generate_until_matches_painters_generation(graphs, checkpoint):
    """generate_until on the compiled skip_2_4 graph returns the torch reference executor's greedy tokens."""
    from lm_eval.api.instance import Instance

    from painters.export.sources import load_source
    from painters.integrations.lm_eval import PaintersLM
    from painters.plans import parse_plan
    from painters.runtime.torch_ref import TorchRunner

    prompts = ["Question: Which gas do plants take in?\nAnswer:", "Question: What melts ice?\nAnswer: The"]
    gen = {"until": ["never-appears"], "max_gen_toks": 12, "do_sample": False}
    lm = PaintersLM(model=str(graphs["skip_2_4"]))
    texts = lm.generate_until([Instance("generate_until", {}, (p, dict(gen)), i) for i, p in enumerate(prompts)])
    loaded = load_source(checkpoint)
    ref = TorchRunner(loaded.model, parse_plan("skip_2_4", loaded.num_layers), tokenizer=loaded.tokenizer)
    eos = loaded.tokenizer.eos_token_id
    for prompt, text in zip(prompts, texts):
        tokens = ref.generate([loaded.tokenizer.encode(prompt, add_special_tokens=False)], 12, stop_ids=[eos])[0]
        expected = loaded.tokenizer.decode([t for t in tokens if t != eos])
        assert len(tokens) > 0 and text == expected


def test_cli_lists_the_painters_model_and_tasks(tmp_path):
    """``python -m painters.integrations.lm_eval`` is lm-eval's CLI with the model registered."""
    import subprocess
    import sys

    from painters.integrations.lm_eval import TASKS_DIR

    out = subprocess.run([sys.executable, "-m", "painters.integrations.lm_eval", "ls", "tasks", "--include_path",
                          str(TASKS_DIR)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "painters_arc_easy" in out.stdout and "painters_lambada" in out.stdout


def test_plain_lm_eval_command_runs_the_painters_model(graphs, tmp_path):
    """The real ``lm_eval`` console script: ``--model painters`` with the task YAML given by path.

    lm-eval 0.4.13 loads such YAMLs (and their ``!function`` module, which registers the model) before it looks
    the model up; its metrics equal ``painters bench accuracy``'s on the same compiled graph.
    """
    import json
    import subprocess
    import sys

    from painters.bench.accuracy import evaluate
    from painters.integrations.lm_eval import TASKS_DIR
    from painters.routing import open_runner

    exe = Path(sys.executable).with_name("lm_eval")
    if not exe.exists():
        pytest.skip(f"no lm_eval console script beside {sys.executable}")
    out = subprocess.run([str(exe), "--model", "painters", "--model_args", f"model={graphs['skip_2_4']}",
                          "--tasks", str(TASKS_DIR / "painters_arc_easy.yaml"), "--limit", str(LIMIT),
                          "--output_path", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert result["config"]["model"] == "painters" and result["config"]["painters_plan"] == "skip_2_4"
    with open_runner(str(graphs["skip_2_4"])) as runner:
        bench = evaluate(runner, "arc_easy", limit=LIMIT, data_dir=DATA)
    for metric, value in bench["arc_easy"]["metrics"].items():
        assert result["results"]["painters_arc_easy"][f"{metric},none"] == value, metric


def test_entry_point_names_the_model_class():
    """pyproject's ``lm_eval.models`` entry point (read by lm-eval after 0.4.13) resolves to PaintersLM."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    from lm_eval.api.registry import _materialise_placeholder

    from painters.integrations.lm_eval import PaintersLM

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    target = pyproject["project"]["entry-points"]["lm_eval.models"]["painters"]
    assert _materialise_placeholder(target) is PaintersLM


def test_chat_template_matches_the_hf_backend():
    """--apply_chat_template renders what lm-eval's HF backend renders for the same tokenizer (also without a
    generation prompt, i.e. continuing the last assistant message)."""
    from types import SimpleNamespace

    from lm_eval.models.huggingface import HFLM

    from painters.integrations.lm_eval import PaintersLM
    from tests.byte_tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Question: 2+2?"},
               {"role": "assistant", "content": "Answer:"}]
    ours = SimpleNamespace(tokenizer=tok, runner=None)
    theirs = SimpleNamespace(tokenizer=tok, chat_template_args={})
    for gen_prompt, turns in ((True, history[:2]), (False, history)):
        got = PaintersLM.apply_chat_template(ours, turns, add_generation_prompt=gen_prompt)
        assert got == HFLM.apply_chat_template(theirs, turns, add_generation_prompt=gen_prompt)
        assert "Question: 2+2?" in got


def test_registration_keeps_builtin_models():
    from lm_eval.api.registry import get_model

    import painters.integrations.lm_eval  # noqa: F401

    assert get_model("painters").__name__ == "PaintersLM"
    assert get_model("hf").__name__ == "HFLM"
