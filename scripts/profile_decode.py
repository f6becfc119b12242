"""Where a graph's decode time goes: ONNX Runtime's profiler over painters' greedy loop, summed per operator type.

    python scripts/profile_decode.py GRAPH.onnx [GRAPH.onnx ...] [--prompt 128] [--gen 32] [--threads 2]

Each graph runs one greedy generation on painters' onnxruntime runner (random prompt ids, seed 0) with
``SessionOptions.enable_profiling``; the prefill run is left out and every later run is a decode step. Printed per
graph: the median step's wall time under the profiler, then per operator type its kernel time per step, its share
and its node count, and the ``MatMulNBits`` nodes grouped by the projection their name carries (``qkv_proj``,
``down_proj``, ``lm_head`` ...). The profiler adds a few microseconds to every node, so the figures rank the
operators of one graph and compare graphs profiled alike; they are not the graph's latency (``painters bench
latency`` times that).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

__all__ = ["main", "profile"]


def profile(path: Path, prompt: int, gen: int, threads: int | None) -> dict:
    """Per-step kernel time by operator type (µs) and by ``MatMulNBits`` projection, from one profiled generation."""
    import numpy as np

    from painters.runtime.ort import OrtRunner

    with tempfile.TemporaryDirectory() as folder:

        class Profiled(OrtRunner):  # the runner's own session options, profiling switched on
            def _open(self, ort, graph, options):
                options.enable_profiling = True
                options.profile_file_prefix = str(Path(folder) / "decode")
                return super()._open(ort, graph, options)

        runner = Profiled(path, threads=threads)
        try:
            ids = np.random.default_rng(0).integers(100, runner.info.vocab_size - 100, size=prompt).tolist()
            runner.generate([ids], gen + 1)
            events = json.loads(Path(runner.session.end_profiling()).read_text())
        finally:
            runner.close()
    runs = [e for e in events if e.get("name") == "model_run"]
    first_end = runs[0]["ts"] + runs[0]["dur"]  # the prefill
    steps = len(runs) - 1
    by_op, nodes, proj = Counter(), Counter(), defaultdict(list)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < first_end:
            continue
        op = e["args"].get("op_name", "?")
        by_op[op] += e["dur"]
        nodes[op] += 1
        if op == "MatMulNBits":
            found = re.search(r"([a-z_]*proj|lm_head)", e["name"])
            proj[found.group(1) if found else "other"].append(e["dur"])
    return {"steps": steps, "step_us": float(np.median([r["dur"] for r in runs[1:]])),
            "ops": {op: (us / steps, nodes[op] // steps) for op, us in by_op.most_common()},
            "matmulnbits": {name: (sum(v) / steps, len(v) // steps) for name, v in sorted(proj.items())}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graphs", nargs="+", type=Path)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--gen", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    for path in args.graphs:
        if not path.is_file():
            print(f"error: {path} not found; pass an .onnx graph", file=sys.stderr)
            return 2
    for path in args.graphs:
        result = profile(path, args.prompt, args.gen, args.threads)
        total = sum(us for us, _ in result["ops"].values())
        print(f"\n{path}: {result['steps']} decode steps, median step {result['step_us']:.0f} µs under the "
              f"profiler, kernels {total:.0f} µs/step")
        print("| operator | µs/step | share | nodes |\n|---|---:|---:|---:|")
        for op, (us, count) in result["ops"].items():
            print(f"| {op} | {us:.1f} | {us / total:.1%} | {count} |")
        print("\n| MatMulNBits of | µs/step | nodes |\n|---|---:|---:|")
        for name, (us, count) in result["matmulnbits"].items():
            print(f"| {name} | {us:.1f} | {count} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
