"""The same plans' accuracy on several engines, in one table (issue 28: llama.cpp beside the ONNX graph).

    python scripts/engines_accuracy.py [--graph G.onnx] [--gguf FILE.gguf] [--plans baseline,drop_attn_k8,skip_4_26]
        [--tasks arc_easy,lambada] [--limit 200] [--engines onnxruntime,llama.cpp[,vllm]] [--json OUT]

``onnxruntime`` runs each plan compiled from the exported fp32 graph G (default: the built-in SmolLM2 exported
once to ``$PAINTERS_CACHE/scale/engines-accuracy/model.onnx``); ``llama.cpp`` runs each plan deployed from the GGUF
(default: the built-in Q4_1 file) with its quantized blocks kept; ``vllm`` serves each plan deployed on the
source (``painters deploy vllm``, fp32, from ``make vllm-env``) and scores with vLLM's prompt log-probabilities.
All score the same items the same way
(``painters bench accuracy``'s :func:`~painters.bench.accuracy.evaluate`), so a row pair differs only by the engine
and its weights. Prints one Markdown row per (plan, engine): each task's main metric ± its standard error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCORES = ROOT / "docs/results/smollm2-135m/analysis/importance.json"


def _models(args) -> dict[str, str]:
    from painters.cache import cache_dir
    from painters.export.sources import smollm2_path

    graph = args.graph
    if graph is None:
        graph = cache_dir("scale") / "engines-accuracy" / "model.onnx"
        if not graph.exists():
            from painters.export.onnx_export import export_model
            from painters.export.sources import load_source

            export_model(load_source("smollm2-135m"), graph)
    return {"onnxruntime": str(graph), "llama.cpp": str(args.gguf or smollm2_path()), "vllm": "smollm2-135m"}


def main(argv: list[str] | None = None) -> int:
    """Score every plan on every engine; print the table (and write ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graph", type=Path)
    parser.add_argument("--gguf", type=Path)
    parser.add_argument("--plans", default="baseline,drop_attn_k8,skip_4_26")
    parser.add_argument("--tasks", default="arc_easy,lambada")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--engines", default="onnxruntime,llama.cpp")
    parser.add_argument("--scores", default=str(SCORES))
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from painters.bench.accuracy import evaluate
    from painters.routing import open_runner

    models = _models(args)
    results: dict[str, dict] = {}
    for plan in args.plans.split(","):
        for engine in args.engines.split(","):
            with open_runner(models[engine], engine, plan, scores=args.scores, threads=args.threads) as runner:
                results[f"{plan}/{engine}"] = evaluate(runner, args.tasks, limit=args.limit)
            print(f"{plan} on {engine}: done", file=sys.stderr)
    tasks = args.tasks.split(",")
    print(f"| plan | engine | {' | '.join(tasks)} |\n|---|---|{'---|' * len(tasks)}")
    for key, res in results.items():
        plan, engine = key.split("/", 1)
        cells = [f"{res[t]['metrics'][res[t]['main_metric']]:.3f} ± {res[t]['stderr'][res[t]['main_metric']]:.3f}"
                 f" ({res[t]['main_metric']})" for t in tasks]
        print(f"| {plan} | {engine} | {' | '.join(cells)} |")
    print(f"\nfirst {args.limit} items of each task; models: {json.dumps(models)}")
    if args.json:
        from painters.fileio import write_json

        write_json(args.json, {"models": models, "limit": args.limit, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
