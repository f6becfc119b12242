"""Reliability: values that used to pass silently or crash (opset range, task rows) are clear errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from painters.bench.tasks import get_task, load_items
from painters.cli import main
from painters.errors import BenchError

_GOOD = {"activity_label": "Cooking", "ctx_a": "A man cracks an egg.", "ctx_b": "he", "label": "1",
         "endings": ["stirs it.", "sings.", "flies.", "sleeps."]}


@pytest.mark.parametrize("opset", ["1", "17", "99999", "99999999999999999999"])
def test_export_refuses_an_opset_the_exporter_cannot_write(tmp_path, opset):
    out = tmp_path / "m" / "model.onnx"
    result = CliRunner().invoke(main, ["export", "tiny-llama", "-o", str(out), "--opset", opset])
    assert result.exit_code == 2, result.output
    assert "--opset" in result.output and "18" in result.output and "Traceback" not in result.output
    assert not out.parent.exists()


def _hellaswag_dir(tmp_path, rows) -> str:
    (tmp_path / "hellaswag").mkdir()
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    (tmp_path / "hellaswag" / "hellaswag_val.jsonl").write_text(text)
    return str(tmp_path)


def test_good_hellaswag_rows_load(tmp_path):
    items = load_items(get_task("hellaswag"), _hellaswag_dir(tmp_path, [_GOOD, _GOOD]), num_fewshot=0)
    assert len(items) == 2 and items[0].gold == 1


@pytest.mark.parametrize("row, message", [
    ({**_GOOD, "label": "4"}, "gold label 4 is not one of the 4 choices"),
    ({**_GOOD, "label": "-1"}, "gold label -1"),
    ({**_GOOD, "ctx_b": 7}, "AttributeError"),
    ({**_GOOD, "endings": "abcd"}, "item 2"),
    ([1, 2, 3], "TypeError"),
    ({k: v for k, v in _GOOD.items() if k != "label"}, "KeyError"),
])
def test_bad_task_rows_name_the_file_and_item(tmp_path, row, message):
    data = _hellaswag_dir(tmp_path, [_GOOD, row])
    with pytest.raises(BenchError, match="hellaswag_val.jsonl: item 2") as info:
        load_items(get_task("hellaswag"), data, num_fewshot=0)
    assert message in str(info.value)


def test_empty_task_file_is_an_error_not_n_0(tmp_path):
    data = _hellaswag_dir(tmp_path, [])
    with pytest.raises(BenchError, match="holds no items"):
        load_items(get_task("hellaswag"), data, num_fewshot=0)
