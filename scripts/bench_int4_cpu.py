"""CPU int4 benchmark (issue 29): painters' int4 graph vs its fp32 graph, its plans and llama.cpp, in one run.

    python scripts/bench_int4_cpu.py [SRC] [--work DIR] [--form genai|decomposed]
        [--plans baseline,drop_attn_k8,skip_4_26,parallel_4_26] [--llamacpp FILE.gguf] [--limit 500]
        [--tasks arc_easy,lambada] [--no-accuracy] [--json OUT]

SRC (default ``smollm2-135m``) is exported once to ``DIR/FORM/KEY/fp32/model.onnx`` (KEY: painters' export and
compiler code, SRC and ``--gguf``, so a changed painters never reuses a stale graph; ``--form genai``, the default: ONNX
Runtime GenAI's builder writes the fp32 graph, one ``GroupQueryAttention`` per block — on a 2-core Xeon it decodes
int4 about 1.6x faster than ``--form decomposed``, painters' own export); ``painters-compile --weights int4`` makes
``DIR/FORM/KEY/int4/model.onnx`` from it (for a GGUF source: the file's own blocks, exactly; pass ``--gguf`` for a GGUF
other than the built-in one) and ``DIR/FORM/KEY/int4-requant/model.onnx`` with ``--gguf none`` (the weights
re-quantized, for comparison). Latency rows, interleaved round by round on painters' runner: every plan on the int4
graph (ratios to the int4 baseline beside the ideal and weight-read ratios), a parallel plan also unfused
(``PLAN/unfused``), ``fp32/baseline``, ``int4-requant/baseline`` and llama.cpp on the GGUF (``--llamacpp``, by
default the built-in file; rows ``llama.cpp/PLAN``). Accuracy: the first ``--limit`` items of each task on the int4,
re-quantized and fp32 graphs and llama.cpp. Last, issue 29's targets, each with its figures and whether this run met
it. Everything goes through painters' bench API, as ``painters bench latency|accuracy`` does.

``--builder`` adds the issue's prefill case on ONNX Runtime GenAI's int4 graph: ``painters export SRC --form genai
--precision int4`` to ``DIR/FORM/KEY/genai-int4/model.onnx``, every plan compiled on it and timed in rounds of their own
(rows ``genai-int4/PLAN``, ratios to that graph's baseline). Every table ends with a line per plan saying whether
its prefill ratio is within its ideal ratio + 0.05 (``PREFILL_MARGIN``), the bound issue 29 sets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCORES = ROOT / "docs/results/smollm2-135m/analysis/importance.json"
PREFILL_MARGIN = 0.05  # issue 29: a plan's prefill ratio may exceed its ideal ratio by this much, no more
BUILDER = "genai-int4"  # rows of the builder's int4 graph: BUILDER/PLAN


def _graphs(src: str, work: Path, gguf: str | None, form: str) -> dict[str, Path]:
    from painters.compiler.compile import compile_model
    from painters.export.onnx_export import export_onnx

    fp32 = work / "fp32" / "model.onnx"
    if not fp32.exists():
        export_onnx(src, fp32, form=form, precision="fp32" if form == "genai" else None)
    paths = {"fp32": fp32}
    for name, choice in (("int4", gguf), ("int4-requant", "none")):
        out = work / name / "model.onnx"
        if not out.exists():
            compile_model(fp32, "baseline", out, weights="int4", gguf=choice)
        paths[name] = out
    return paths


def _latency(paths: dict[str, Path], plans: list[str], args) -> list:
    from painters.bench.latency import benchmark
    from painters.compiler.compile import compile_model
    from painters.routing import decode_weight_bytes, ideal_ratio, open_runners

    runners: dict = {}
    try:
        for plan in plans:  # each plan compiled from the fp32 graph with --weights int4 (same blocks)
            path = paths["int4"] if plan == "baseline" else args.work / f"int4.{plan}" / "model.onnx"
            if not path.exists():
                compile_model(paths["fp32"], plan, path, scores=args.scores, weights="int4", gguf=args.gguf)
            anchor = f"llama.cpp:{args.llamacpp}" if args.llamacpp and plan == "baseline" else None
            for name, runner in open_runners(str(path), anchor=anchor, threads=args.threads).items():
                runners[plan if name == runner.info.plan and not name.startswith("llama.cpp") else name] = runner
        for name in ("fp32", "int4-requant"):
            (runner,) = open_runners(str(paths[name]), threads=args.threads).values()
            runners[f"{name}/baseline"] = runner
        for plan in [p for p in plans if p.startswith("parallel")]:  # the same group left unfused, for the ratio
            path = args.work / f"int4.{plan}.unfused" / "model.onnx"
            if not path.exists():
                compile_model(paths["fp32"], plan, path, weights="int4", gguf=args.gguf, fuse_parallel=False)
            (runners[f"{plan}/unfused"],) = open_runners(str(path), threads=args.threads).values()
        ideal = {name: ideal_ratio(r) for name, r in runners.items()}
        weights = {name: decode_weight_bytes(r) for name, r in runners.items()}
        return benchmark(runners, prompts=[args.prompt], gen=args.gen, iters=args.iters, ideal=ideal,
                         weights=weights, baseline="baseline", progress=lambda m: print(m, file=sys.stderr))
    finally:
        for runner in runners.values():
            runner.close()


def _builder_latency(src: str, plans: list[str], args) -> list:
    """The plans compiled on the builder's int4 GQA graph (in-place cache), timed in rounds of their own."""
    from painters.bench.latency import benchmark
    from painters.compiler.compile import compile_model
    from painters.export.genai_export import export_genai
    from painters.export.sources import load_source
    from painters.routing import decode_weight_bytes, ideal_ratio, open_runners

    source = args.work / BUILDER / "model.onnx"
    if not source.exists():
        export_genai(load_source(src), source, precision="int4")
    runners: dict = {}
    try:
        for plan in plans:  # baseline compiled too: every row runs the same compiled form and cache path
            path = args.work / f"{BUILDER}.{plan}" / "model.onnx"
            if not path.exists():
                compile_model(source, plan, path, scores=args.scores)
            (runner,) = open_runners(str(path), threads=args.threads).values()
            runners[f"{BUILDER}/{plan}"] = runner
        return benchmark(runners, prompts=[args.prompt], gen=args.gen, iters=args.iters,
                         ideal={n: ideal_ratio(r) for n, r in runners.items()},
                         weights={n: decode_weight_bytes(r) for n, r in runners.items()},
                         baseline=f"{BUILDER}/baseline", progress=lambda m: print(m, file=sys.stderr))
    finally:
        for runner in runners.values():
            runner.close()


def _prefill_check(rows) -> str:
    """One line per row with an ideal ratio: its prefill ratio against ideal + PREFILL_MARGIN."""
    lines = []
    for r in rows:
        if r.prefill_ratio is not None and r.ideal_ratio is not None and r.ideal_ratio < 1:
            bound = r.ideal_ratio + PREFILL_MARGIN
            verdict = "ok" if r.prefill_ratio <= bound else "ABOVE"
            lines.append(f"prefill {r.plan}: {r.prefill_ratio:.3f} vs ideal {r.ideal_ratio:.3f} + {PREFILL_MARGIN} "
                         f"= {bound:.3f}: {verdict}")
    return "\n".join(lines)


def _accuracy(paths: dict[str, Path], args) -> dict[str, dict]:
    from painters.bench.accuracy import evaluate
    from painters.routing import open_runners

    results = {}
    for name in ("int4", "int4-requant", "fp32"):
        (runner,) = open_runners(str(paths[name]), threads=args.threads).values()
        with runner:
            results[name] = evaluate(runner, args.tasks, limit=args.limit)
    if args.llamacpp:
        (runner,) = open_runners(f"{args.llamacpp}", backend="llama.cpp", threads=args.threads).values()
        with runner:
            results["llama.cpp"] = evaluate(runner, args.tasks, limit=args.limit)
    return results


def _accuracy_table(results: dict[str, dict]) -> str:
    lines = ["| model | task | n | metric | value | ± stderr |", "|---|---|---|---|---|---|"]
    for model, tasks in results.items():
        for task, r in tasks.items():
            metric = "acc_norm" if "acc_norm" in r["metrics"] else r["main_metric"]
            se = r["stderr"].get(metric)
            lines.append(f"| {model} | {task} | {r['n']} | {metric} | {r['metrics'][metric]:.4f} | "
                         f"{'—' if se is None else f'{se:.4f}'} |")
    return "\n".join(lines)


def _targets(rows: list, results: dict[str, dict]) -> list[str]:
    """Issue 29's targets, each with the measured figures and whether this run met it."""
    by = {r.plan: r for r in rows}
    out = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    base, engine = by.get("baseline"), by.get("llama.cpp/baseline")
    if base and engine:
        ratio = base.decode_ms / engine.decode_ms
        out.append(f"int4 decode / llama.cpp decode = {base.decode_ms:.3f} / {engine.decode_ms:.3f} ms = "
                   f"{ratio:.3f} (target <= 0.65: {verdict(ratio <= 0.65)})")
    for plan in ("drop_attn_k8", "skip_4_26"):
        r = by.get(plan)
        if r and r.ideal_ratio is not None:
            out.append(f"{plan}: prefill x {r.prefill_ratio:.3f} vs ideal {r.ideal_ratio:.3f} + 0.05 "
                       f"({verdict(r.prefill_ratio <= r.ideal_ratio + 0.05)}); decode x {r.decode_ratio:.3f} vs "
                       f"weights {r.weights_ratio or float('nan'):.3f} + 0.05 "
                       f"({verdict(r.weights_ratio is not None and r.decode_ratio <= r.weights_ratio + 0.05)})")
    fused, unfused = by.get("parallel_4_26"), by.get("parallel_4_26/unfused")
    if fused and unfused:
        ratio = fused.decode_ms / unfused.decode_ms
        out.append(f"fused / unfused int4 parallel_4_26 decode = {ratio:.3f} (target < 1.0: {verdict(ratio < 1.0)})")
    if results and "llama.cpp" in results:
        for task, r in results["int4"].items():
            metric = "acc_norm" if "acc_norm" in r["metrics"] else r["main_metric"]
            mine, se = r["metrics"][metric], r["stderr"][metric]
            for other in ("llama.cpp", "fp32"):
                theirs = results[other][task]["metrics"][metric]
                out.append(f"{task} {metric}: int4 {mine:.4f} vs {other} {theirs:.4f} (|diff| {abs(mine - theirs):.4f}"
                           f", one stderr {se:.4f}: {verdict(abs(mine - theirs) <= se)})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", default="smollm2-135m")
    parser.add_argument("--work", type=Path, default=None,
                        help="graphs go to WORK/FORM/KEY [$PAINTERS_CACHE/scale/int4-bench]")
    parser.add_argument("--gguf", default=None, help="the GGUF the source is (found for smollm2-135m)")
    parser.add_argument("--form", choices=["genai", "decomposed"], default="genai",
                        help="the fp32 graph every int4 graph is compiled from: the builder's GroupQueryAttention "
                             "form, or painters' decomposed export [genai]")
    parser.add_argument("--plans", default="baseline,drop_attn_k8,skip_4_26,parallel_4_26")
    parser.add_argument("--scores", type=Path, default=SCORES)
    parser.add_argument("--llamacpp", default=None,
                        help="FILE.gguf: llama.cpp rows beside painters' [the built-in GGUF for smollm2-135m]")
    parser.add_argument("--tasks", default="arc_easy,lambada")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--gen", type=int, default=32)
    # 15 rounds: a 128-token prefill on this 2-core VM varies by about ±8 % round to round, so 5 rounds' median
    # ratios moved by 0.07 between runs (drop_attn_k8: 0.896 and 0.970), more than issue 29's 0.05 margin
    parser.add_argument("--iters", type=int, default=15, help="timed rounds (interleaved), after one warm-up")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument("--builder", action="store_true", help="also the plans on the builder's int4 graph")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from painters.bench.latency import format_table, rows_to_json
    from painters.cache import cache_dir
    from painters.compiler.variants import code_keyed

    # keyed by painters' code and the choices that decide the graphs: a changed compiler never times a stale one
    args.work = code_keyed((args.work or cache_dir("scale", "int4-bench")) / args.form, args.src, str(args.gguf))

    if args.llamacpp is None and args.src == "smollm2-135m":  # the anchor: llama.cpp on the very file
        from painters.export.sources import smollm2_path

        args.llamacpp = str(smollm2_path())
    paths = _graphs(args.src, args.work, args.gguf, args.form)
    rows = _latency(paths, [p for p in args.plans.split(",") if p], args)
    print(format_table(rows))
    print(_prefill_check(rows))
    if args.builder:
        builder = _builder_latency(args.src, [p for p in args.plans.split(",") if p], args)
        print()
        print(format_table(builder))
        print(_prefill_check(builder))
        rows = [*rows, *builder]
    results = {} if args.no_accuracy else _accuracy(paths, args)
    if results:
        print()
        print(_accuracy_table(results))
    print()
    print("\n".join(_targets(rows, results)))
    if args.json:
        args.json.write_text(json.dumps({"latency": rows_to_json(rows, script="scripts/bench_int4_cpu.py"),
                                         "accuracy": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
