"""The reproduction report: figures, tables and the papers' statements, rebuilt from ``DIR/runs`` alone.

``figure_data`` computes every number a figure or table shows from the run and analysis files; the PNGs are
drawn from it and it is written as ``figures.json``, so a test (or a reader) can recompute the numbers from the
run files and compare. Nothing here measures anything.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from painters.experiments.claims import PAINTERS_CLAIMS, WHAT_MATTERS_CLAIMS, verdicts
from painters.fileio import atomic_dir_outputs, write_json

__all__ = ["load_runs", "figure_data", "pareto_front", "write_report", "FIGURES"]

FIGURES = ("painters_variants.png", "similarity.png", "ranking.png", "what_matters.png", "importance.png",
           "pareto.png")


def load_runs(out: Path) -> list[dict]:
    """Every finished run record in ``out/runs``, in plan-name order."""
    return [json.loads(p.read_text()) for p in sorted((Path(out) / "runs").glob("*.json"))]


def _score(record: dict, task: str) -> float:
    res = record["tasks"][task]
    return float(res["metrics"][res["main_metric"]])


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of the points no other point beats: lower latency ratio and at least the score (or equal and higher)."""
    front = []
    for name, x, y in points:
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for _, x2, y2 in points)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: next(x for m, x, _ in points if m == n))


def figure_data(out: Path) -> dict:
    """The numbers behind every figure and table, from ``out/runs`` and ``out/analysis``."""
    out = Path(out)
    runs = load_runs(out)
    if not runs:
        raise FileNotFoundError(f"no runs in {out / 'runs'}")
    tasks = sorted({t for r in runs for t in r["tasks"]})
    base = next((r for r in runs if r["plan"] == "baseline"), None)
    baseline = {t: _score(base, t) for t in tasks} if base else {}
    metric = {t: next(r["tasks"][t]["main_metric"] for r in runs if t in r["tasks"]) for t in tasks}

    painters: dict = {t: defaultdict(list) for t in tasks}
    for r in runs:
        if r.get("experiment") == "painters":
            for t in tasks:
                painters[t][r["variant"]].append((r["n"], _score(r, t)))
    variants = {}
    for t in tasks:
        variants[t] = {}
        for v, pts in sorted(painters[t].items()):
            by_n: dict[int, list[float]] = defaultdict(list)
            for n, s in pts:
                by_n[n].append(s)
            variants[t][v] = [[n, statistics.fmean(s), statistics.pstdev(s), len(s)] for n, s in sorted(by_n.items())]

    ranking = {}
    for t in tasks:
        means = {v: statistics.fmean(p[1] for p in rows) for v, rows in variants[t].items()}
        ranking[t] = sorted(([v, m] for v, m in means.items()), key=lambda vm: (-vm[1], vm[0]))

    wm: dict = {"score": {t: {} for t in tasks}, "kv_ratio": {}, "decode_speedup": {}, "prefill_speedup": {}}
    for r in sorted((r for r in runs if r.get("experiment") == "what_matters"), key=lambda r: (r["variant"], r["n"])):
        kind = r["variant"]
        for t in tasks:
            wm["score"][t].setdefault(kind, []).append([r["n"], _score(r, t)])
        lat = r["latency"]
        wm["kv_ratio"].setdefault(kind, []).append([r["n"], lat["kv_cache_bytes"] / lat["baseline_kv_cache_bytes"]])
        wm["decode_speedup"].setdefault(kind, []).append([r["n"], 1.0 / lat["decode_ratio"]])
        wm["prefill_speedup"].setdefault(kind, []).append([r["n"], 1.0 / lat["prefill_ratio"]])

    pareto = {}
    for t in tasks:
        pts = [(r["plan"], float(r["latency"]["decode_ratio"]), _score(r, t)) for r in runs if r.get("latency")]
        pareto[t] = {"points": [list(p) for p in pts], "front": pareto_front(pts)}

    data = {"tasks": tasks, "metric": metric, "baseline": baseline, "painters_variants": variants,
            "ranking": ranking, "what_matters": wm, "pareto": pareto, "runs": len(runs)}
    imp, sim = out / "analysis" / "importance.json", out / "analysis" / "similarity.json"
    if imp.exists():
        scores = json.loads(imp.read_text())
        data["importance"] = {k: scores[k] for k in ("attn", "mlp", "block")}
    if sim.exists():
        s = json.loads(sim.read_text())
        data["similarity"] = {"matrix": s["matrix"], "drift": s["drift"]}
    return data


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> None:
    """Lay out, write (by rename) and close ``fig``: every figure of the report ends this way."""
    fig.tight_layout()
    with atomic_dir_outputs(path) as tmp:
        fig.savefig(tmp / path.name, dpi=110)
    plt.close(fig)


def _panels(plt, count: int, extra: int = 0):
    fig, axes = plt.subplots(1, count + extra, figsize=(4.6 * (count + extra), 4), squeeze=False)
    return fig, list(axes[0])


def _plot_painters(plt, data: dict, path: Path) -> None:
    fig, axes = _panels(plt, len(data["tasks"]))
    for ax, t in zip(axes, data["tasks"]):
        for v, rows in data["painters_variants"][t].items():
            xs, ys, err = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
            if any(r[3] > 1 for r in rows):
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{v} (mean ± sd)")
            else:
                ax.plot(xs, ys, marker="o", label=v)
        if t in data["baseline"]:
            ax.axhline(data["baseline"][t], color="black", linestyle="--", label="baseline")
        ax.set(title=t, xlabel="middle layers modified", ylabel=data["metric"][t])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _save(plt, fig, path)


def _plot_ranking(plt, data: dict, path: Path) -> None:
    fig, axes = _panels(plt, len(data["tasks"]))
    for ax, t in zip(axes, data["tasks"]):
        names = [v for v, _ in data["ranking"][t]][::-1]
        ax.barh(names, [m for _, m in data["ranking"][t]][::-1])
        if t in data["baseline"]:
            ax.axvline(data["baseline"][t], color="black", linestyle="--")
        ax.set(title=f"{t}: mean over n", xlabel=data["metric"][t])
    _save(plt, fig, path)


def _plot_what_matters(plt, data: dict, path: Path) -> None:
    wm = data["what_matters"]
    fig, axes = _panels(plt, len(data["tasks"]), extra=2)
    for ax, t in zip(axes, data["tasks"]):
        for kind, rows in wm["score"][t].items():
            ax.plot([r[0] for r in rows], [r[1] for r in rows], marker="o", label=kind)
        if t in data["baseline"]:
            ax.axhline(data["baseline"][t], color="black", linestyle="--", label="baseline")
        ax.set(title=t, xlabel="modules dropped (by importance)", ylabel=data["metric"][t])
        ax.grid(alpha=0.3)
    for ax, key, label in ((axes[-2], "kv_ratio", "KV cache (× baseline)"),
                           (axes[-1], "decode_speedup", "measured decode speed-up (×)")):
        for kind, rows in wm[key].items():
            ax.plot([r[0] for r in rows], [r[1] for r in rows], marker="o", label=kind)
        ax.axhline(1.0, color="black", linestyle="--")
        ax.set(title=label, xlabel="modules dropped")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _save(plt, fig, path)


def _plot_pareto(plt, data: dict, runs: list[dict], path: Path) -> None:
    experiment = {r["plan"]: r.get("experiment", "") for r in runs}
    fig, axes = _panels(plt, len(data["tasks"]))
    for ax, t in zip(axes, data["tasks"]):
        pts = data["pareto"][t]["points"]
        for exp, marker in (("baseline", "*"), ("painters", "o"), ("what_matters", "s")):
            sel = [p for p in pts if experiment.get(p[0]) == exp]
            ax.scatter([p[1] for p in sel], [p[2] for p in sel], marker=marker, label=exp, alpha=0.7)
        front = [next(p for p in pts if p[0] == name) for name in data["pareto"][t]["front"]]
        ax.plot([p[1] for p in front], [p[2] for p in front], color="red", drawstyle="steps-post",
                label="Pareto front")
        for p in front:
            ax.annotate(p[0], (p[1], p[2]), fontsize=6)
        ax.set(title=t, xlabel="decode latency (× baseline, measured)", ylabel=data["metric"][t])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _save(plt, fig, path)


def _render(out: Path, data: dict, runs: list[dict]) -> None:
    plt = _pyplot()
    _plot_painters(plt, data, out / "painters_variants.png")
    _plot_ranking(plt, data, out / "ranking.png")
    _plot_what_matters(plt, data, out / "what_matters.png")
    _plot_pareto(plt, data, runs, out / "pareto.png")
    from painters.analysis import Similarity, plot_scores, plot_similarity
    from painters.plans.scores import Scores

    if "similarity" in data:
        matrix = tuple(tuple(r) for r in data["similarity"]["matrix"])
        plot_similarity(Similarity(matrix), out / "similarity.png", title="hidden-state cosine similarity")
    if "importance" in data:
        imp = data["importance"]
        plot_scores(Scores(tuple(imp["attn"]), tuple(imp["mlp"]), tuple(imp["block"])), out / "importance.png",
                    title="module importance (1 − cos) by layer")


def _f(x: float) -> str:
    return f"{x:.4g}"


def _tables(data: dict, runs: list[dict]) -> dict[str, str]:
    tasks = data["tasks"]
    head = "| plan | variant | n | " + " | ".join(f"{t} {data['metric'][t]}" for t in tasks)
    lat_head = " | decode × | prefill × | KV × |"
    rule = "|" + "---|" * (3 + len(tasks) + 3)

    def row(r: dict) -> str:
        lat = r.get("latency") or {}
        kv = lat["kv_cache_bytes"] / lat["baseline_kv_cache_bytes"] if lat else float("nan")
        return (f"| {r['plan']} | {r['variant']} | {r['n']} | " + " | ".join(_f(_score(r, t)) for t in tasks)
                + f" | {_f(lat.get('decode_ratio', float('nan')))} | {_f(lat.get('prefill_ratio', float('nan')))}"
                f" | {_f(kv)} |")

    tables = {}
    for exp in ("painters", "what_matters"):
        sel = [r for r in runs if r.get("experiment") in ("baseline", exp)]
        sel.sort(key=lambda r: (r["experiment"] != "baseline", r["variant"], r["n"], r.get("seed") or 0))
        tables[exp] = "\n".join([head + lat_head, rule, *map(row, sel)])
    rank = ["| rank | " + " | ".join(tasks) + " |", "|" + "---|" * (1 + len(tasks))]
    depth = max((len(data["ranking"][t]) for t in tasks), default=0)
    for i in range(depth):
        cells = [f"{data['ranking'][t][i][0]} ({_f(data['ranking'][t][i][1])})" if i < len(data["ranking"][t])
                 else "" for t in tasks]
        rank.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    tables["ranking"] = "\n".join(rank)
    front = ["| task | Pareto front (plan: decode ×, score) |", "|---|---|"]
    for t in tasks:
        pts = {p[0]: p for p in data["pareto"][t]["points"]}
        front.append(f"| {t} | " + "; ".join(f"{n}: {_f(pts[n][1])}, {_f(pts[n][2])}"
                                              for n in data["pareto"][t]["front"]) + " |")
    tables["pareto"] = "\n".join(front)
    if "importance" in data:
        imp = data["importance"]
        lines = ["| layer | attn | mlp | block |", "|---|---|---|---|"]
        lines += [f"| {i} | {_f(a)} | {_f(m)} | {_f(b)} |" for i, (a, m, b) in
                  enumerate(zip(imp["attn"], imp["mlp"], imp["block"]))]
        tables["importance"] = "\n".join(lines)
    return tables


def _claims_section(claims, found: dict[str, str]) -> str:
    lines = ["| finding | the paper says (source) | this run |", "|---|---|---|"]
    for c in claims:
        lines.append(f"| {c.finding} | {c.statement} ({c.source}) | {found.get(c.key, 'not measured in this run')} |")
    return "\n".join(lines)


def write_report(out: Path) -> Path:
    """Figures, ``figures.json`` and ``report.md`` for the runs in ``out``; returns the report's path."""
    out = Path(out)
    runs = load_runs(out)
    data = figure_data(out)
    meta = json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else {}
    _render(out, data, runs)
    write_json(out / "figures.json", data, indent=1)
    tables = _tables(data, runs)
    found = verdicts(data)
    commits = sorted({(r.get("provenance") or {}).get("commit") or "?" for r in runs})
    commands = []
    for inv in meta.get("invocations", []):
        line = f"- `{inv['command']}` at commit `{inv.get('commit')}`" + (" (uncommitted changes)" if inv.get(
            "dirty") else "") + f", started {inv.get('started')}"
        if "wall_s" in inv:
            line += f", {inv['wall_s']} s"
        commands.append(line)
    grid = meta.get("grid", {})
    lat = next((r["latency"] for r in runs if r.get("latency")), {})
    text = f"""# Reproducing *Transformer Layers as Painters* and *What Matters in Transformers?* on \
{meta.get('model', '?')}

Every number below is read from the run files in `runs/` (one per plan) and `analysis/`; the figures are drawn
from `figures.json`, which `painters.experiments.report.figure_data` recomputes from those files. Accuracy is
`painters bench accuracy` (lm-evaluation-harness task definitions) on each compiled graph
({meta.get('num_layers', '?')} decoder blocks); latency is measured on the same compiled graph
({lat.get('backend', '?')}, prompt {lat.get('prompt', '?')} tokens, {lat.get('gen', '?')} generated,
{lat.get('iters', '?')} timed rounds interleaved with baseline), as ratios to baseline.

Settings: tasks `{grid.get('tasks')}`, limit {grid.get('limit')} items per task, n = {grid.get('ns')},
k = {grid.get('ks')}, random-order seeds {grid.get('seeds')}, calibration `{grid.get('calib')}`
({grid.get('samples')} × {grid.get('seq_len')} tokens). {data['runs']} runs.

Produced by:
{chr(10).join(commands) or '- (no meta.json)'}

Run files come from commit(s): {', '.join(f'`{c}`' for c in commits)}.

The papers' models are far larger than most models this runs on (Painters: Llama2-7B with 32 layers and
BERT-Large with 24; What Matters: Llama-2-13B/70B and Mistral-7B), and small `--limit`s give coarse scores
(an item is 1/limit of the score): read agreements and disagreements with that in mind.

## Painters: variants vs. middle layers modified

![variants](painters_variants.png)

{tables['painters']}

Random order (`shuffle`) is run once per seed; the figure shows mean ± standard deviation over seeds.

### Per-task ranking of variants (mean score over n)

![ranking](ranking.png)

{tables['ranking']}

### Hidden-state similarity

![similarity](similarity.png)

{_claims_section(PAINTERS_CLAIMS, found)}

## What Matters: dropping attention, MLP, blocks, and attention + MLP jointly, by importance

![what matters](what_matters.png)

{tables['what_matters']}

### Importance profile per layer

![importance](importance.png)

{tables.get('importance', '(no importance scores)')}

{_claims_section(WHAT_MATTERS_CLAIMS, found)}

## Accuracy vs. measured latency: the Pareto front

![pareto](pareto.png)

{tables['pareto']}
"""
    path = out / "report.md"
    with atomic_dir_outputs(path) as tmp:
        (tmp / "report.md").write_text(text)
    return path
