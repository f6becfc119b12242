"""The two papers' findings, in their words where quoted, and what a reproduction's numbers say about each.

Quotes are marked with quotation marks and their place in the paper; anything else is a paraphrase and says
so. Sources: *Transformer Layers as Painters* (Sun, Pickett, Nain, Jones; AAAI 2025, arXiv 2407.09298), on
Llama2-7B (32 layers) and BERT-Large (24 layers); *What Matters in Transformers? Not All Attention is Needed*
(He, Sun, Shen, Li; arXiv 2406.15786), on Llama-2-13B/70B and Mistral-7B. ``verdicts`` compares only what the
run measured, from ``report.figure_data``'s numbers.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

__all__ = ["Claim", "PAINTERS_CLAIMS", "WHAT_MATTERS_CLAIMS", "verdicts"]


@dataclass(frozen=True)
class Claim:
    key: str
    finding: str
    statement: str
    source: str


PAINTERS_CLAIMS = (
    Claim("p_similarity", "first and last layers differ, the middle is uniform",
          "\"the lower and final layers of pretrained transformers differ from middle layers, but [...] middle "
          "layers have a surprising amount of uniformity\"", "Painters, abstract; Llama2-7B and BERT-Large"),
    Claim("p_skip", "skipping a few middle layers degrades gracefully",
          "paraphrase of the answer to Q2 (\"Are all the layers necessary?\"): no, a few middle layers can be "
          "skipped without catastrophic failure", "Painters, Sec. Q2, Llama2-7B benchmarks"),
    Claim("p_repeat", "middle layers are not interchangeable: repeating the middle one is worse than skipping",
          "paraphrase of the answer to Q3: sharing weights among middle layers (middle repeat) is catastrophic, "
          "so the middle layers perform different functions", "Painters, Sec. Q3"),
    Claim("p_order", "order matters somewhat: reversed and random order degrade gracefully",
          "\"Somewhat. Both randomizing and reversing the middle layer order has graceful degradation.\"",
          "Painters, answer to Q4"),
    Claim("p_parallel", "middle layers can run in parallel (except on math)",
          "paraphrase of the answer to Q5: yes, except for math-heavy benchmarks (GSM8K)", "Painters, Sec. Q5"),
    Claim("p_loop", "looping a parallel group helps",
          "paraphrase of the answer to Q7: iterating the parallelized layers (looped parallel) improves on a "
          "single parallel pass", "Painters, Sec. Q7"),
    Claim("p_rank", "least harmful variants",
          "paraphrase of the answer to Q8: repeating a single layer is the worst variant; random order and "
          "looped parallel do the least damage", "Painters, Sec. Q8 (average over benchmarks)"),
)

WHAT_MATTERS_CLAIMS = (
    Claim("w_attn", "attention layers are the redundant modules: dropping them costs less than MLPs or blocks",
          "\"a large portion of these layers exhibit excessively high similarity and can be pruned without "
          "degrading performance\"", "What Matters, abstract"),
    Claim("w_speed", "dropping attention speeds decoding up",
          "\"Llama-2-70B achieved a 48.4% speedup with only a 2.4% performance drop by pruning half of the "
          "attention layers\"", "What Matters, abstract; Llama-2-70B"),
    Claim("w_eight", "8 attention layers can go",
          "Llama-2-13B and Mistral-7B keep over 99% of their performance after dropping 8 attention layers",
          "What Matters, as summarized by secondary sources; not checked against the paper's table here"),
    Claim("w_joint", "joint attention + MLP drop goes further",
          "\"when dropping 31 layers (Attention + MLP), Llama-2-13B still retains 90% of the performance on the "
          "MMLU task\"", "What Matters, abstract; Llama-2-13B, MMLU"),
    Claim("w_kv", "attention drop shrinks the KV cache",
          "paraphrase: a dropped attention layer needs no KV cache, so memory falls with the layers dropped",
          "What Matters, efficiency discussion"),
    Claim("w_deep", "deeper attention layers are the redundant ones",
          "paraphrase: the attention layers with the highest similarity (lowest importance) lie in the deeper "
          "part of the network", "What Matters, importance visualizations"),
)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _rel(data: dict, task: str, score: float) -> str:
    base = data["baseline"].get(task)
    return _pct(score / base) if base else "n/a (baseline 0)"


def verdicts(data: dict) -> dict[str, str]:
    """Per claim key, what this run's numbers show (only the claims it has runs for)."""
    found: dict[str, str] = {}
    tasks, var = data["tasks"], data["painters_variants"]

    def curve(task: str, variant: str) -> list:
        return var.get(task, {}).get(variant, [])

    def mean(task: str, variant: str) -> float | None:
        rows = curve(task, variant)
        return statistics.fmean(r[1] for r in rows) if rows else None

    if "similarity" in data:
        drift = data["similarity"]["drift"]
        if len(drift) >= 3:
            mid = statistics.fmean(drift[1:-1])
            agree = drift[0] < mid and drift[-1] < mid
            found["p_similarity"] = (f"cos(hidden before, after block): first {drift[0]:.3f}, last {drift[-1]:.3f}, "
                                     f"middle mean {mid:.3f} — " + ("agrees" if agree else "differs"))
    parts = {key: [] for key in ("p_skip", "p_repeat", "p_order", "p_parallel", "p_loop")}
    for t in tasks:
        if curve(t, "skip"):
            n, s = curve(t, "skip")[0][:2]
            parts["p_skip"].append(f"{t}: skip {n} keeps {_rel(data, t, s)}")
        if mean(t, "repeat") is not None and mean(t, "skip") is not None:
            worse = mean(t, "repeat") < mean(t, "skip")
            parts["p_repeat"].append(f"{t}: repeat {mean(t, 'repeat'):.3f} vs skip {mean(t, 'skip'):.3f} "
                                     + ("(worse: agrees)" if worse else "(not worse: differs)"))
        for v in ("reverse", "shuffle"):
            if curve(t, v):
                n, s = curve(t, v)[0][:2]
                parts["p_order"].append(f"{t}: {v} {n} keeps {_rel(data, t, s)}")
        if curve(t, "parallel"):
            n, s = curve(t, "parallel")[0][:2]
            parts["p_parallel"].append(f"{t}: parallel {n} keeps {_rel(data, t, s)}")
        if mean(t, "parallel") is not None:
            loops = {v: mean(t, v) for v in ("parallel_x2", "parallel_x3") if mean(t, v) is not None}
            if loops:
                better = all(m >= mean(t, "parallel") for m in loops.values())
                parts["p_loop"].append(f"{t}: parallel {mean(t, 'parallel'):.3f}, " + ", ".join(
                    f"{v} {m:.3f}" for v, m in loops.items()) + (" (agrees)" if better else " (differs)"))
    for key, items in parts.items():
        if items:
            found[key] = "; ".join(items)
    rank = []
    for t in tasks:
        order = [v for v, _ in data["ranking"].get(t, [])]
        if order:
            rank.append(f"{t}: best {', '.join(order[:2])}; worst {order[-1]}")
    if rank:
        found["p_rank"] = "; ".join(rank)

    wm = data["what_matters"]
    cmp_, speed, eight, joint = [], [], [], []
    for t in tasks:
        score = wm["score"].get(t, {})
        attn = dict(map(tuple, score.get("drop_attn", [])))
        for k, s in sorted(attn.items()):
            others = {kind: dict(map(tuple, score.get(kind, []))).get(k) for kind in ("drop_mlp", "drop_block")}
            others = {kind: v for kind, v in others.items() if v is not None}
            if others:
                best = all(s >= v for v in others.values())
                cmp_.append(f"{t} k={k}: attn {s:.3f}, " + ", ".join(f"{kd.removeprefix('drop_')} {v:.3f}"
                                                                     for kd, v in others.items())
                            + (" (agrees)" if best else " (differs)"))
        if 8 in attn:
            eight.append(f"{t}: drop_attn_k8 keeps {_rel(data, t, attn[8])}")
        jt = score.get("drop_joint", [])
        if jt:
            k, s = jt[-1]
            joint.append(f"{t}: drop_joint_k{k} keeps {_rel(data, t, s)}")
    sp = wm["decode_speedup"].get("drop_attn", [])
    if sp:
        speed.append(", ".join(f"k={k}: {x:.2f}×" for k, x in sp) + " measured decode speed-up (attention drop)")
    kv = wm["kv_ratio"].get("drop_attn", [])
    for key, items in (("w_attn", cmp_), ("w_eight", eight), ("w_joint", joint), ("w_speed", speed)):
        if items:
            found[key] = "; ".join(items)
    if kv:
        found["w_kv"] = "KV cache × baseline: " + ", ".join(f"k={k}: {x:.3f}" for k, x in kv)
    if "importance" in data:
        attn = data["importance"]["attn"]
        half = len(attn) // 2
        lo, hi = statistics.fmean(attn[:half]), statistics.fmean(attn[half:])
        found["w_deep"] = (f"mean attention importance: first half {lo:.4f}, second half {hi:.4f} — "
                           + ("agrees" if hi < lo else "differs"))
    return found
