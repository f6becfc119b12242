"""Task construction against hand-written lm-eval prompts for real items, and the data-directory errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from painters.bench.tasks import (
    Generation,
    Loglikelihood,
    MultipleChoice,
    get_task,
    hellaswag_preprocess,
    load_items,
    parse_tasks,
    resolve_data_dir,
)
from painters.errors import BenchError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"evaluation data {DATA} is absent (../shared/data)")


@needs_data
def test_arc_easy_first_item():
    (item,) = load_items(get_task("arc_easy"), DATA, limit=1)
    ctx = "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:"
    assert item == MultipleChoice(
        (ctx,) * 4,
        (" Sunlight is the source of energy for nearly all ecosystems.",
         " Most ecosystems are found on land instead of in water.",
         " Carbon dioxide is more available than other gases.",
         " The producers in all ecosystems are plants."),
        0, (59, 54, 50, 43))


@needs_data
def test_arc_challenge_numeric_labels():
    item = load_items(get_task("arc_challenge"), DATA, limit=45)[44]  # NYSEDREGENTS_2008_8_34: labels "1".."4"
    assert item.contexts[0] == ("Question: Which statement best describes the energy changes that occur while a child "
                                "is riding on a sled down a steep, snow-covered hill?\nAnswer:")
    assert item.continuations[1] == " Kinetic energy increases and potential energy decreases."
    assert item.gold == 1  # answerKey "2"


@needs_data
def test_arc_fewshot_prefix():
    (item,) = load_items(get_task("arc_easy"), DATA, limit=1, num_fewshot=1)
    first_train = json.loads((DATA / "arc/ARC-Easy-Train.jsonl").read_text().splitlines()[0])
    q = first_train["question"]
    gold = [c["label"] for c in q["choices"]].index(first_train["answerKey"])
    assert item.contexts[0].startswith(f"Question: {q['stem']}\nAnswer: {q['choices'][gold]['text']}\n\nQuestion: ")


@needs_data
def test_hellaswag_activitynet_item():
    (item,) = load_items(get_task("hellaswag"), DATA, limit=1)
    assert item.contexts == ("Roof shingle removal: A man is sitting on a roof. He",) * 4
    assert item.continuations == (" is using wrap to wrap a pair of skis.", " is ripping level tiles off.",
                                  " is holding a rubik's cube.", " starts pulling up roofing on a roof.")
    assert item.gold == 3
    assert item.norm_lengths == tuple(len(c) - 1 for c in item.continuations)


@needs_data
def test_hellaswag_wikihow_item():
    item = load_items(get_task("hellaswag"), DATA, limit=3244)[3243]  # [header]/[title]/[step] markup
    assert item.contexts[0] == (
        "Personal Care and Style: How to become a fashion consultant. Obtain your high school diploma or ged. "
        "This job requires a high school diploma or equivalent, so make sure to apply yourself and finish school. "
        "If your high school offers these classes, take art, design, and sewing to familiarize yourself with "
        "foundational concepts in fashion.")
    # lm-eval keeps the space left where a leading "[substeps]" was removed, and " [title]" becomes ". ".
    assert item.continuations[0] == (
        "  Many high schools have classes offered for their students who do not have a high school diploma, so be "
        "sure to register to take these classes and find a job in your field.. Search for entry-level positions in "
        "fashion industries.")


def test_hellaswag_preprocess_rules():
    assert hellaswag_preprocess("  a [title] b [step] c  ") == "a. b c"
    assert hellaswag_preprocess("x [header] y") == "x y"


@needs_data
def test_winogrande_partial_scoring():
    (item,) = load_items(get_task("winogrande"), DATA, limit=1)
    assert item == MultipleChoice(("Sarah was a much better surgeon than Maria so Sarah",
                                   "Sarah was a much better surgeon than Maria so Maria"),
                                  (" always got the easier cases.",) * 2, 1, None)


@needs_data
def test_lambada_last_word():
    (item,) = load_items(get_task("lambada_openai"), DATA, limit=1)
    assert isinstance(item, Loglikelihood)
    assert item.continuation == " signs"
    assert item.context.startswith("In my palm is a clear stone, and inside it is a small ivory statuette.")
    assert item.context.endswith("his mouth curved in a confident grin, I don't care about")


@needs_data
def test_gsm8k_five_shot_prompt():
    (item,) = load_items(get_task("gsm8k"), DATA, limit=1)
    assert isinstance(item, Generation)
    assert item.prompt.startswith(
        "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?\nAnswer: Natalia sold 48/2 = <<48/2=24>>24 "
        "clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72\n\n"
        "Question: Weng earns $12 an hour")
    assert item.prompt.count("Question: ") == 6 and item.prompt.count("\n\n") == 5
    assert item.prompt.endswith(
        "\n\nQuestion: Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
        "muffins for her friends every day with four. She sells the remainder at the farmers' market daily for $2 "
        "per fresh duck egg. How much in dollars does she make every day at the farmers' market?\nAnswer:")
    assert item.target.endswith("#### 18") and item.max_new_tokens == 256
    assert item.until == ("Question:", "</s>", "<|im_end|>", "\n\n")
    (zero,) = load_items(get_task("gsm8k"), DATA, limit=1, num_fewshot=0)
    assert zero.prompt.startswith("Question: Janet")


def test_missing_file_names_the_file_and_layout(tmp_path):
    with pytest.raises(BenchError, match=r"arc/ARC-Easy-Test\.jsonl is missing; expected layout"):
        load_items(get_task("arc_easy"), tmp_path, limit=1)


def test_data_dir_errors(tmp_path, monkeypatch):
    with pytest.raises(BenchError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")
    assert resolve_data_dir(tmp_path) == tmp_path


def test_task_names_and_fewshot_errors(tmp_path):
    assert [t.name for t in parse_tasks("arc_easy, lambada_openai,arc_easy")] == ["arc_easy", "lambada"]
    with pytest.raises(BenchError, match="unknown task 'mmlu'"):
        parse_tasks("mmlu")
    (tmp_path / "hellaswag").mkdir()
    (tmp_path / "hellaswag/hellaswag_val.jsonl").write_text("{}\n")
    with pytest.raises(BenchError, match="hellaswag has no few-shot pool"):
        load_items(get_task("hellaswag"), tmp_path, num_fewshot=2)
    with pytest.raises(BenchError, match="unexpected item format"):
        load_items(get_task("hellaswag"), tmp_path)
