"""int4 quantizers side by side (issue 29 item 2): decode and prefill latency of compiled graphs, interleaved.

    python scripts/bench_int4_quantizers.py NAME=GRAPH.onnx [NAME=GRAPH.onnx ...] [--baseline NAME]
        [--prompt 128] [--gen 32] [--iters 3] [--threads N] [--json OUT]

Each GRAPH is a compiled graph (e.g. ``painters-compile --plan baseline FP32.onnx --weights int4 --gguf none
--quantizer hqq -o hqq/model.onnx``); every one runs on painters' runner in the same rounds (``painters.bench
.latency.benchmark``), so the ratios to ``--baseline`` (default: the first) are comparable on a loaded machine.
Accuracy is ``painters bench accuracy GRAPH --tasks arc_easy,lambada --limit N`` per graph.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graphs", nargs="+", help="NAME=GRAPH.onnx")
    parser.add_argument("--baseline", default=None)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--gen", type=int, default=32)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from painters.bench.latency import benchmark, format_table, rows_to_json
    from painters.routing import open_runners

    named = dict(g.split("=", 1) for g in args.graphs)
    runners: dict = {}
    try:
        for name, path in named.items():
            (runner,) = open_runners(path, threads=args.threads).values()
            runners[name] = runner
        rows = benchmark(runners, prompts=[args.prompt], gen=args.gen, iters=args.iters,
                         baseline=args.baseline or next(iter(named)), progress=lambda m: print(m, file=sys.stderr))
    finally:
        for runner in runners.values():
            runner.close()
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows_to_json(rows, script="scripts/bench_int4_quantizers.py"), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
