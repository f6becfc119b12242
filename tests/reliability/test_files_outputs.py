"""Issue 32, class 1: no command writes over a file it reads — plans, scores, calibration, task data, a source
checkpoint's files — nor gives two of its outputs one path. Each case: exit 2, one line naming the file, every
input byte-identical, nothing new written."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import DATA, SHARED
from tests.reliability.checks import assert_refused

STORIES = SHARED / "models" / "stories260K" / "hf"
needs_stories = pytest.mark.skipif(not STORIES.exists(), reason="stories260K fixture (../shared/models) is absent")
needs_arc = pytest.mark.skipif(not (DATA / "arc" / "ARC-Easy-Test.jsonl").is_file(), reason="ARC data is absent")
OVERWRITE = "would overwrite the input"
TWICE = "name one file"


def _writable_copy(src: Path, dst: Path) -> Path:
    """A copy whose files may be replaced (the shared fixtures are read-only)."""
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    return dst


@pytest.fixture
def ckpt(tmp_path) -> Path:
    if not STORIES.exists():
        pytest.skip("stories260K fixture (../shared/models) is absent")
    return _writable_copy(STORIES, tmp_path / "ckpt")


@pytest.fixture
def data(tmp_path) -> Path:
    """A task-data folder with ARC-Easy and the calibration file (a few lines of each)."""
    if not (DATA / "arc" / "ARC-Easy-Test.jsonl").is_file():
        pytest.skip("ARC data is absent")
    root = tmp_path / "data"
    for rel in ("arc/ARC-Easy-Test.jsonl", "arc/ARC-Easy-Dev.jsonl", "gsm8k/train.jsonl"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        with open(DATA / rel) as f:
            (root / rel).write_text("".join(f.readline() for _ in range(20)))
    (root / "glue" / "RTE").mkdir(parents=True)
    (root / "glue" / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    return root


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    """A plan file (YAML and JSON), a scores file and a calibration text, each a file some command reads."""
    plan_yaml = tmp_path / "p.yaml"
    plan_yaml.write_text("steps: [0, 1, 2, 3, 4, 5, 6, 6]\n")
    plan_json = tmp_path / "q.json"
    plan_json.write_text(json.dumps({"steps": [0, 1, 2, 3, 4, 5, 7]}))
    scores = tmp_path / "s.json"
    scores.write_text(json.dumps({"format": "painters.scores/1", "model_hash": "h", "num_layers": 8,
                                  "attn": [0.1 * i for i in range(8)], "mlp": [0.1] * 8, "block": [0.2] * 8}))
    calib = tmp_path / "calib.txt"
    calib.write_text("Once upon a time there was a tiny model. " * 200)
    return {"plan_yaml": plan_yaml, "plan_json": plan_json, "scores": scores, "calib": calib}


# compile: -o and --engine over a plan file, a scores file, or each other --------------------------------------

@pytest.mark.parametrize(("plan", "out", "engine", "link"), [
    ("drop_attn_k2", "scores", None, None),
    ("plan_yaml", "plan_yaml", None, None),
    ("plan_json", "plan_json", None, None),
    ("drop_attn_k2", "scores_hard", None, "hard"),
    ("drop_attn_k2", "scores_sym", None, "sym"),
    ("plan_yaml", "plan_yaml_hard", None, "hard"),
    ("plan_yaml", "plan_yaml_sym", None, "sym"),
    ("skip_1_3", "new.onnx", "new.onnx", None),
    ("skip_1_3", "new.onnx", "scores", None),
    ("plan_yaml", "new.onnx", "plan_yaml", None),
    ("plan_json", "new.onnx", "plan_json", None),
])
def test_compile_never_writes_over_its_plan_or_scores(model_dir, tmp_path, inputs, plan, out, engine, link):
    def path(name):
        base = name.removesuffix("_hard").removesuffix("_sym")
        if base in inputs and name != base:
            alias = tmp_path / f"alias-{name}{inputs[base].suffix}"
            if link == "hard":
                os.link(inputs[base], alias)
            else:
                alias.symlink_to(inputs[base])
            return alias
        return inputs.get(name, tmp_path / name)

    args = ["compile", "--plan", str(inputs.get(plan, plan)), model_dir, "--scores", inputs["scores"], "-o", path(out)]
    if engine:
        args += ["--engine", path(engine)]
    needle = TWICE if engine == out else OVERWRITE
    assert_refused(args, [tmp_path], needle)


# bench latency / accuracy: --json over a plan file, scores, task data, the model's files -------------------------

@pytest.mark.parametrize(("plans_arg", "json_to"), [
    ("p.yaml", "plan_yaml"), ("baseline,p.yaml", "plan_yaml"), ("p.yaml,baseline", "plan_yaml"),
    ("q.json", "plan_json"), ("baseline,q.json,skip_1_3", "plan_json"), ("drop_attn_k2", "scores"),
    ("baseline,drop_attn_k2", "scores"),
])
@pytest.mark.parametrize("flag", ["--plans", "--plan"])
def test_latency_json_never_over_plan_or_scores(model_dir, tmp_path, inputs, plans_arg, json_to, flag):
    plans_arg = ",".join(str(tmp_path / p) if p.endswith((".yaml", ".json")) else p for p in plans_arg.split(","))
    assert_refused(["bench", "latency", model_dir, flag, plans_arg, "--scores", inputs["scores"],
                    "--json", inputs[json_to]], [tmp_path], OVERWRITE, str(inputs[json_to].name))


@pytest.mark.parametrize("name", ["genai_config.json", "model.onnx", "tokenizer.json"])
def test_latency_json_never_into_the_anchor_folder(model_dir, tmp_path, name):
    anchor = tmp_path / "genai"
    anchor.mkdir()
    (anchor / name).write_text("{}")
    assert_refused(["bench", "latency", model_dir, "--anchor", f"ort-genai:{anchor}", "--json", anchor / name],
                   [tmp_path], OVERWRITE)


@needs_arc
@pytest.mark.parametrize("rel", ["arc/ARC-Easy-Test.jsonl", "arc/ARC-Easy-Dev.jsonl", "gsm8k/train.jsonl",
                                 "glue/RTE/dev.tsv"])
def test_accuracy_json_never_over_task_data(tmp_path, data, rel):
    assert_refused(["bench", "accuracy", "tiny-llama", "--tasks", "arc_easy", "--data", data, "--limit", "1",
                    "--json", data / rel], [tmp_path], OVERWRITE, rel.split("/")[-1])


@needs_arc
def test_accuracy_json_never_over_task_data_through_a_symlinked_file(tmp_path, data):
    target = tmp_path / "elsewhere.jsonl"
    shutil.move(data / "arc" / "ARC-Easy-Dev.jsonl", target)
    (data / "arc" / "ARC-Easy-Dev.jsonl").symlink_to(target)
    assert_refused(["bench", "accuracy", "tiny-llama", "--tasks", "arc_easy", "--data", data, "--limit", "1",
                    "--json", data / "arc" / "ARC-Easy-Dev.jsonl"], [tmp_path], OVERWRITE)


@needs_arc
@pytest.mark.parametrize("json_to", ["plan_yaml", "scores"])
def test_accuracy_json_never_over_plan_or_scores(tmp_path, data, inputs, json_to):
    plan = inputs["plan_yaml"] if json_to == "plan_yaml" else "drop_attn_k2"
    assert_refused(["bench", "accuracy", "tiny-llama", "--tasks", "arc_easy", "--data", data, "--plan", plan,
                    "--scores", inputs["scores"], "--json", inputs[json_to]], [tmp_path], OVERWRITE)


# importance / similarity: the source checkpoint and the calibration file are inputs ------------------------------

CKPT_FILES = ["config.json", "model.safetensors", "generation_config.json"]


@needs_stories
@pytest.mark.parametrize("command", ["importance", "similarity"])
@pytest.mark.parametrize("option", ["--json", "--plot"])
@pytest.mark.parametrize("name", CKPT_FILES)
def test_analysis_never_writes_into_the_checkpoint(tmp_path, ckpt, inputs, command, option, name):
    if not (ckpt / name).exists():
        pytest.skip(f"the checkpoint has no {name}")
    out = ckpt / name
    if option == "--plot":  # a plot path must have an image suffix: link an image name to the file
        out = ckpt / "alias.png"
        out.symlink_to(name)
    assert_refused([command, ckpt, "--calib", inputs["calib"], "--samples", "1", "--seq-len", "8", option, out],
                   [tmp_path], OVERWRITE)


@pytest.mark.parametrize("command", ["importance", "similarity"])
@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_analysis_never_writes_over_its_calibration(tmp_path, inputs, command, option):
    calib = inputs["calib"]
    if option == "--plot":
        calib = calib.rename(tmp_path / "calib.png")  # a text file with an image name: still the input
    assert_refused([command, "tiny-llama", "--calib", calib, "--samples", "1", "--seq-len", "8", option, calib],
                   [tmp_path], OVERWRITE)


@pytest.mark.parametrize("command", ["importance", "similarity"])
@pytest.mark.parametrize("spelling", ["same", "dot", "link"])
def test_analysis_json_and_plot_naming_one_file(tmp_path, inputs, command, spelling):
    out = tmp_path / "h" / "out.png"
    other = {"same": out, "dot": tmp_path / "h" / "." / "out.png", "link": tmp_path / "alias" / "out.png"}[spelling]
    (tmp_path / "h").mkdir()
    if spelling == "link":
        (tmp_path / "alias").symlink_to(tmp_path / "h", target_is_directory=True)
        out.write_bytes(b"old")
    assert_refused([command, "tiny-llama", "--calib", inputs["calib"], "--samples", "1", "--seq-len", "8",
                    "--json", out, "--plot", other], [tmp_path], TWICE)


@pytest.mark.parametrize("command", ["importance", "similarity"])
@pytest.mark.parametrize("suffix", [".txt", ".json", ".onnx", ".csv"])
def test_analysis_plot_format_checked_before_anything_is_written(tmp_path, inputs, command, suffix):
    assert_refused([command, "tiny-llama", "--calib", inputs["calib"], "--samples", "1", "--seq-len", "8",
                    "--json", tmp_path / "h" / "sim.json", "--plot", tmp_path / "h" / f"sim{suffix}"],
                   [tmp_path], "matplotlib cannot write", suffix)


# bench glue: --json over the task data or the model's own files ----------------------------------------------------

@pytest.mark.parametrize("target", ["dev", "model", "data_file", "tokenizer"])
def test_glue_json_never_over_its_inputs(tmp_path, data, target):
    model = tmp_path / "enc" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(b"graph")
    (model.parent / "model.onnx.data").write_bytes(b"weights")
    (model.parent / "tokenizer.json").write_text("{}")
    out = {"dev": data / "glue" / "RTE" / "dev.tsv", "model": model, "data_file": model.parent / "model.onnx.data",
           "tokenizer": model.parent / "tokenizer.json"}[target]
    assert_refused(["bench", "glue", model, "--task", "rte", "--data", data, "--json", out], [tmp_path], OVERWRITE)


# folders: a sweep's or a reproduction's run folder never inside the checkpoint or the task data ------------------

@needs_stories
@pytest.mark.parametrize("where", ["ckpt", "ckpt_sub", "data", "data_arc"])
@pytest.mark.parametrize("command", ["sweep", "reproduce"])
def test_run_folder_never_inside_an_input_folder(tmp_path, ckpt, data, where, command):
    out = {"ckpt": ckpt, "ckpt_sub": ckpt / "runs", "data": data, "data_arc": data / "arc"}[where]
    args = ([command, ckpt, "--tasks", "arc_easy", "--data", data, "-o", out]
            + (["--n", "1"] if command == "sweep" else ["--calib", data / "gsm8k" / "train.jsonl", "--quick"]))
    assert_refused(args, [tmp_path], "would write into the input")


@needs_stories
@pytest.mark.parametrize("command", ["sweep", "reproduce"])
def test_run_folder_through_a_symlink_to_the_checkpoint(tmp_path, ckpt, data, command):
    (tmp_path / "alias").symlink_to(ckpt, target_is_directory=True)
    args = ([command, ckpt, "--tasks", "arc_easy", "--data", data, "-o", tmp_path / "alias"]
            + (["--n", "1"] if command == "sweep" else ["--calib", data / "gsm8k" / "train.jsonl", "--quick"]))
    assert_refused(args, [tmp_path], "would write into the input")


# engine build and finetune glue: their outputs never over the timing cache, the graph, or into the task data -----

@pytest.mark.parametrize("target", ["timing_cache", "data_file", "model"])
def test_engine_build_never_writes_over_its_inputs(model_dir, tmp_path, target):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"cache")
    out = {"timing_cache": cache, "data_file": model_dir.with_name(model_dir.name + ".data"), "model": model_dir}
    assert_refused(["engine", "build", model_dir, "--timing-cache", cache, "-o", out[target]],
                   [tmp_path, model_dir.parent], OVERWRITE)


@pytest.mark.parametrize("where", ["data", "glue", "rte"])
def test_finetune_never_writes_into_the_task_data(tmp_path, data, where):
    out = {"data": data, "glue": data / "glue", "rte": data / "glue" / "RTE" / "new"}[where]
    assert_refused(["finetune", "glue", "minilm-l6", "--task", "rte", "--data", data, "-o", out], [tmp_path],
                   "would write into the input")
