"""Mean token NLL of held-out passages on compiled graphs: a quick check of weight quantizers (issue 29 item 2).

    python scripts/heldout_nll.py GRAPH.onnx [GRAPH.onnx ...] [--data FILE.jsonl] [--start 4500] [--count 64]

Passages ``--start`` … ``--start+--count`` of a JSONL file's ``text`` (default lambada's test split, items
4500–4563: outside the first 500 that accuracy runs score and the last 500 a GPTQ ``--calib`` file can take),
each at most 256 tokens, tokenized by the tokenizer beside each graph and scored in one prefill.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared/data/lambada/lambada_test.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graphs", nargs="+")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--start", type=int, default=4500)
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    from painters.runtime.ort import OrtRunner, load_tokenizer

    lines = args.data.read_text(encoding="utf-8").splitlines()[args.start:args.start + args.count]
    texts = [json.loads(line)["text"] for line in lines]
    for path in args.graphs:
        tokenizer = load_tokenizer(Path(path).parent)
        runner = OrtRunner(path, threads=args.threads)
        nll, n = 0.0, 0
        for text in texts:
            ids = tokenizer.encode(text, add_special_tokens=False)[:256]
            x = np.array([ids], dtype=np.int64)
            logits, _ = runner.prefill(x, np.ones_like(x))
            lg = logits[0, :-1].astype(np.float64)
            top = lg.max(-1)
            lse = np.log(np.exp(lg - top[:, None]).sum(-1)) + top
            nll += float((lse - lg[np.arange(len(ids) - 1), ids[1:]]).sum())
            n += len(ids) - 1
        print(f"{path}: mean NLL {nll / n:.4f} over {n} tokens (ppl {np.exp(nll / n):.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
