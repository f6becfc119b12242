"""Issue 32, GLUE: a graph fine-tuned on one task refuses another, an empty or header-only dev.tsv is one line (not an
IndexError), and glue-table counts no result file twice."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.reliability.checks import assert_refused, run_cli

FOLDERS = {"rte": "RTE", "sst2": "SST-2", "cola": "CoLA", "mrpc": "MRPC", "stsb": "STS-B", "qnli": "QNLI",
           "wnli": "WNLI"}
HEADERS = {"rte": "index\tsentence1\tsentence2\tlabel", "sst2": "sentence\tlabel",
           "mrpc": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String", "stsb": "index\tsentence1\tsentence2\tscore",
           "qnli": "index\tquestion\tsentence\tlabel", "wnli": "index\tsentence1\tsentence2\tlabel"}


@pytest.fixture
def model(tmp_path) -> Path:
    """A stand-in graph file: dev.tsv is read before the graph is opened."""
    path = tmp_path / "enc" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(b"graph")
    return path


@pytest.mark.parametrize("task", sorted(FOLDERS))
@pytest.mark.parametrize("content", ["empty", "header", "blank_lines", "header_and_blank"])
def test_empty_or_header_only_dev_split_is_one_line(tmp_path, model, task, content):
    if task == "cola" and "header" in content:
        pytest.skip("CoLA's dev.tsv has no header row")
    header = HEADERS.get(task, "")
    text = {"empty": "", "header": header + "\n", "blank_lines": "\n\n\n",
            "header_and_blank": header + "\n\n\n"}[content]
    dev = tmp_path / "data" / "glue" / FOLDERS[task] / "dev.tsv"
    dev.parent.mkdir(parents=True)
    dev.write_text(text)
    assert_refused(["bench", "glue", model, "--task", task, "--data", tmp_path / "data",
                    "--json", tmp_path / "r.json"], [tmp_path], str(dev), "no examples")


# a head fine-tuned on one task ----------------------------------------------------------------------------------

def _export_finetuned(src: Path, dst: Path, *, task: str | None, labels: list[str]) -> Path:
    from painters.export.onnx_export import export_onnx

    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(id2label={str(i): name for i, name in enumerate(labels)},
                  label2id={name: i for i, name in enumerate(labels)})
    if task:
        config["finetuning_task"] = task
    (dst / "config.json").write_text(json.dumps(config))
    return Path(export_onnx(str(dst), dst.with_name(dst.name + "-onnx") / "model.onnx"))


@pytest.fixture(scope="module")
def rte_graphs(tiny_bert_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rte")
    nli = ["entailment", "not_entailment"]
    return {"recorded": _export_finetuned(tiny_bert_dir, root / "recorded", task="rte", labels=nli),
            "labels_only": _export_finetuned(tiny_bert_dir, root / "labels", task=None, labels=nli)}


@pytest.mark.skipif(not (DATA / "glue").is_dir(), reason="GLUE data is absent")
@pytest.mark.parametrize(("graph", "task", "needle"), [
    ("recorded", "sst2", "fine-tuned on GLUE rte"), ("recorded", "cola", "fine-tuned on GLUE rte"),
    ("recorded", "mrpc", "fine-tuned on GLUE rte"), ("recorded", "qnli", "fine-tuned on GLUE rte"),
    ("recorded", "wnli", "fine-tuned on GLUE rte"), ("labels_only", "sst2", "labels"),
    ("labels_only", "cola", "labels"), ("labels_only", "mrpc", "labels"), ("labels_only", "wnli", "labels"),
])
def test_a_graph_fine_tuned_on_rte_refuses_another_task(rte_graphs, tmp_path, graph, task, needle):
    assert_refused(["bench", "glue", rte_graphs[graph], "--task", task, "--limit", "2",
                    "--json", tmp_path / "r.json"], [tmp_path, rte_graphs[graph].parent], needle)


@pytest.mark.skipif(not (DATA / "glue" / "RTE" / "dev.tsv").is_file(), reason="GLUE data is absent")
@pytest.mark.parametrize("graph", ["recorded", "labels_only"])
def test_a_graph_fine_tuned_on_rte_scores_rte(rte_graphs, graph):
    code, out = run_cli(["bench", "glue", rte_graphs[graph], "--task", "rte", "--limit", "2"])
    assert code == 0 and "GLUE rte (2 dev examples)" in out, out


# glue-table: one file given twice is one seed, not two ----------------------------------------------------------

def _glue_result(path: Path, score: float = 60.0) -> Path:
    path.write_text(json.dumps({"model": "m.onnx", "task": "rte", "plan": "baseline", "source_hash": "h",
                                "examples": 10, "metrics": {"accuracy": score / 100}, "score": score}))
    return path


@pytest.mark.parametrize("spelling", ["same", "dot", "symlink", "hardlink", "thrice"])
@pytest.mark.parametrize("mode", ["table", "json", "out"])
def test_glue_table_refuses_one_file_given_twice(tmp_path, spelling, mode):
    first = _glue_result(tmp_path / "a.json")
    other = _glue_result(tmp_path / "b.json", 70.0)
    second = {"same": first, "dot": tmp_path / "." / "a.json", "symlink": tmp_path / "link.json",
              "hardlink": tmp_path / "hard.json", "thrice": first}[spelling]
    if spelling == "symlink":
        second.symlink_to(first)
    elif spelling == "hardlink":
        os.link(first, second)
    files = [first, other, second] + ([first] if spelling == "thrice" else [])
    extra = {"table": [], "json": ["--json"], "out": ["-o", tmp_path / "table.md"]}[mode]
    assert_refused(["bench", "glue-table", *files, *extra], [tmp_path], "given twice")


def test_glue_table_of_distinct_files_still_merges(tmp_path):
    code, out = run_cli(["bench", "glue-table", _glue_result(tmp_path / "a.json"),
                         _glue_result(tmp_path / "b.json", 70.0)])
    assert code == 0 and "rte" in out, out
