"""GLUE data reading, `painters finetune glue` end to end (a handful of examples) and `painters bench glue`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from painters.bench.glue_data import GLUE_TASKS, get_task, read_split
from painters.cli import main
from painters.errors import BenchError
from tests.conftest import requires_data

# dev / train sizes from ../shared/data/README.md
DEV = {"cola": 1043, "mrpc": 408, "qnli": 5463, "rte": 277, "sst2": 872, "stsb": 1500, "wnli": 71}
TRAIN = {"cola": 8551, "mrpc": 3668, "rte": 2490, "sst2": 67349, "stsb": 5749, "wnli": 635}


@requires_data("glue", "RTE", "dev.tsv")
@pytest.mark.parametrize("task", sorted(GLUE_TASKS))
def test_splits_read_with_their_documented_sizes(task):
    dev = read_split(get_task(task), "dev")
    assert len(dev) == DEV[task] and len(dev.labels) == DEV[task]
    if task == "stsb":
        assert 0.0 <= dev.labels.min() and dev.labels.max() <= 5.0
    else:
        assert set(dev.labels.tolist()) == {0, 1}
    if task in TRAIN:
        assert len(read_split(get_task(task), "train", limit=5)) == 5


@requires_data("glue", "QNLI", "dev.tsv")
def test_unavailable_tasks_say_why():
    with pytest.raises(BenchError, match="only its dev split"):
        read_split(get_task("qnli"), "train")
    with pytest.raises(BenchError, match="MNLI and QQP are absent"):
        get_task("mnli")


@requires_data("glue", "RTE", "train.tsv")
def test_finetune_then_bench_end_to_end(tiny_bert_dir, tiny_bert_onnx, tmp_path):
    out = tmp_path / "ckpt"
    args = ["finetune", "glue", str(tiny_bert_dir), "--task", "rte", "-o", str(out), "--limit", "12",
            "--batch-size", "4", "--max-steps", "2", "--seed", "3"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    record = json.loads((out / "finetune.json").read_text())
    assert record["steps"] == 2 and record["examples"] == 12 and record["seed"] == 3
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    from painters.export.encoder_sources import load_encoder

    tuned = load_encoder(out)
    assert tuned.hash == record["weights_hash"] and tuned.config.id2label == {0: "entailment", 1: "not_entailment"}

    again = CliRunner().invoke(main, args)  # never writes over an existing checkpoint
    assert again.exit_code == 2 and "already exists" in again.output

    res = CliRunner().invoke(main, ["bench", "glue", str(tiny_bert_onnx), "--task", "rte", "--limit", "20",
                                    "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["examples"] == 20 and 0.0 <= result["metrics"]["accuracy"] <= 1.0
    assert result["score"] == pytest.approx(100 * result["metrics"]["accuracy"])
    table = CliRunner().invoke(main, ["bench", "glue-table", str(tmp_path / "r.json")])
    assert "| baseline |" in table.output and "rte (accuracy)" in table.output


@requires_data("glue", "STS-B", "dev.tsv")
def test_bench_refuses_a_head_of_the_wrong_task(tiny_bert_onnx):
    res = CliRunner().invoke(main, ["bench", "glue", str(tiny_bert_onnx), "--task", "stsb", "--limit", "4"])
    assert res.exit_code == 2 and "needs 1" in res.output
