"""GLUE data reading, `painters finetune glue` end to end (a handful of examples) and `painters bench glue`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from painters.cli import main
from painters.errors import BenchError
from painters.glue.data import GLUE_TASKS, get_task, read_split
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
            "--batch-size", "4", "--max-steps", "2", "--seed", "3", "--group-by-length"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    record = json.loads((out / "finetune.json").read_text())
    assert record["steps"] == 2 and record["examples"] == 12 and record["seed"] == 3 and record["group_by_length"]
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


@requires_data("glue", "MRPC", "dev.tsv")
def test_dev_batches_sorted_by_length_give_the_file_order_logits(tiny_bert_onnx):
    """Batching the dev split by length (less padding) changes the logits by float noise only."""
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from painters.glue.evaluate import dev_logits

    dev = read_split(get_task("mrpc"), "dev", limit=40)
    session = ort.InferenceSession(str(tiny_bert_onnx), providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_onnx.parent)
    by_length = dev_logits(session, tokenizer, dev, 8, 64)
    in_order = dev_logits(session, tokenizer, dev, 8, 64, by_length=False)
    assert by_length.shape == (40, 2)
    np.testing.assert_allclose(by_length, in_order, rtol=1e-4, atol=1e-5)
    one_by_one = dev_logits(session, tokenizer, dev, 1, 64, by_length=False)
    np.testing.assert_allclose(by_length, one_by_one, rtol=1e-4, atol=1e-5)  # no padding at all
    lengths = [len(tokenizer(a, b)["input_ids"]) for a, b in zip(dev.text_a, dev.text_b)]
    assert len(set(lengths)) > 5  # the sort did reorder the batches


def _result(task, plan, score, seed, metrics=None):
    return {"task": task, "plan": plan, "score": score, "seed": seed, "source_hash": f"{task}{seed}",
            "metrics": metrics or {m: score / 100 for m in get_task(task).metrics}}


def test_table_shows_seed_means_and_spreads():
    from statistics import fmean, stdev

    from painters.glue.evaluate import render_table

    rows = [_result("rte", "baseline", 60.0, 0), _result("rte", "baseline", 64.0, 1),
            _result("cola", "baseline", 30.0, 0), _result("cola", "baseline", 40.0, 1),
            _result("rte", "skip_2_4", 55.0, 0), _result("cola", "skip_2_4", 20.0, 0)]
    lines = render_table(rows).splitlines()
    assert lines[0] == "| plan | cola (matthews) | rte (accuracy) | average |"  # GLUE's task order
    avg = fmean([fmean([60, 30]), fmean([64, 40])])
    spread = stdev([fmean([60, 30]), fmean([64, 40])])
    assert lines[2] == (f"| baseline | 35.0 ±{stdev([30, 40]):.1f} | 62.0 ±{stdev([60, 64]):.1f} | "
                        f"{avg:.1f} ±{spread:.1f} |")
    assert lines[3] == "| skip_2_4 | 20.0 | 55.0 | 37.5 |"  # one seed: no spread


def test_results_take_the_seed_of_their_finetune_record(tmp_path):
    from painters.glue.evaluate import load_results

    result = _result("rte", "baseline", 60.0, None)
    del result["seed"]
    record = {"task": "rte", "seed": 4, "weights_hash": "rte"}
    result["source_hash"] = "rte"
    (tmp_path / "r.json").write_text(json.dumps(result))
    (tmp_path / "finetune.json").write_text(json.dumps(record))
    results, records = load_results([tmp_path / "r.json", tmp_path / "finetune.json"])
    assert results[0]["seed"] == 4 and records == [record]
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(BenchError, match="bad.json: not a"):
        load_results([tmp_path / "bad.json"])


def test_glue_table_merges_then_writes_a_page_and_never_overwrites_its_input(tmp_path):
    rows = [_result("rte", "baseline", 60.0, 0), _result("rte", "skip_2_4", 50.0, 0)]
    for i, r in enumerate(rows):
        del r["seed"]
        (tmp_path / f"r{i}.json").write_text(json.dumps(r))
    record = {"output": "ckpt", "task": "rte", "source": "minilm-l6", "source_hash": "x", "weights_hash": "rte0",
              "seed": 0, "examples": 2490, "epochs": 3, "steps": 234, "batch_size": 32, "lr": 5e-5, "max_length": 128,
              "final_loss": 0.5, "seconds": 600.0, "group_by_length": True}
    (tmp_path / "finetune.json").write_text(json.dumps(record))
    merged = tmp_path / "merged.json"
    inputs = [str(tmp_path / n) for n in ("finetune.json", "r0.json", "r1.json")]
    res = CliRunner().invoke(main, ["bench", "glue-table", "--json", "-o", str(merged), *inputs])
    assert res.exit_code == 0, res.output
    data = json.loads(merged.read_text())
    assert [r["seed"] for r in data["results"]] == [0, 0] and data["finetune"] == [record]
    page = tmp_path / "page.md"
    res = CliRunner().invoke(main, ["bench", "glue-table", "--page", "-o", str(page), str(merged)])
    assert res.exit_code == 0, res.output
    text = page.read_text()
    assert "| rte | 0 | 2490 | 3 | 234 | 0.5000 | 10.0 min |" in text
    assert "| skip_2_4 | 50.0 | 83.3 % |" in text  # 50 / 60 of the baseline average
    res = CliRunner().invoke(main, ["bench", "glue-table", "--json", "-o", str(merged), str(merged)])
    assert res.exit_code == 2 and "overwrite the input" in res.output
    res = CliRunner().invoke(main, ["bench", "glue-table", "--page", str(tmp_path / "r0.json")])
    assert res.exit_code == 2 and "needs the fine-tuning records" in res.output
