"""Deploy at Llama-2-7B scale without 13 GB of weights: ``python scripts/deploy_scale.py``.

Writes (once, cached under ``$PAINTERS_CACHE/scale/llama2-7b-hf``) a Hugging Face checkpoint with Llama-2-7B's
shapes in fp16 — 32 layers, hidden 4096, intermediate 11008, vocab 32000 — whose safetensors files are *sparse*:
the header is real, the 13.5 GB of data are holes (zeros that cost no disk). Then it runs ``deploy hf`` and
``deploy nemotron-nas`` in fresh processes and prints wall time, bytes written and peak RSS (``ru_maxrss`` of the
child). Target (issue 28): peak RSS under 1 GiB, because weights stream one layer at a time.

The sparse files are laid out by hand (8-byte header length, JSON header, data offsets) because safetensors' writer
needs every tensor in memory, which is exactly what this benchmark must not do.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

from painters.cache import cache_dir

__all__ = ["build_sparse_checkpoint", "measure", "main"]

LLAMA2_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5)
RUNS = [("hf", "skip_8_24"), ("nemotron-nas", "drop_attn_20-31+skip_4_20")]


def _shapes(cfg: dict) -> dict[str, list[int]]:
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    shapes = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h], "lm_head.weight": [v, h]}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes.update({p + "self_attn.q_proj.weight": [h, h], p + "self_attn.k_proj.weight": [h, h],
                       p + "self_attn.v_proj.weight": [h, h], p + "self_attn.o_proj.weight": [h, h],
                       p + "mlp.gate_proj.weight": [i, h], p + "mlp.up_proj.weight": [i, h],
                       p + "mlp.down_proj.weight": [h, i], p + "input_layernorm.weight": [h],
                       p + "post_attention_layernorm.weight": [h]})
    return shapes


def build_sparse_checkpoint(directory: Path) -> Path:
    """The sparse fp16 Llama-2-7B-shaped checkpoint (one file per 8 layers, like the released shards)."""
    done = directory / "config.json"
    if done.is_file():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    shapes = _shapes(LLAMA2_7B)
    groups: dict[str, list[str]] = {}
    for name in shapes:
        layer = int(name.split(".")[2]) // 8 if name.startswith("model.layers.") else -1
        groups.setdefault(f"model-{layer + 1:02d}.safetensors", []).append(name)
    weight_map = {}
    for file, names in groups.items():
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name in names:
            size = 2 * int(math.prod(shapes[name]))
            header[name] = {"dtype": "F16", "shape": shapes[name], "data_offsets": [offset, offset + size]}
            offset += size
            weight_map[name] = file
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        with open(directory / file, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text)
            f.truncate(8 + len(text) + offset)  # the data: a hole
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = {**LLAMA2_7B, "model_type": "llama", "architectures": ["LlamaForCausalLM"], "torch_dtype": "float16",
              "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}
    done.write_text(json.dumps(config, indent=2))
    return directory


def measure(target: str, plan: str, source: Path, out: Path) -> dict:
    """Deploy in a fresh process; wall seconds, output bytes and the child's peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    module = target.replace("-", "_")
    code = (f"import resource; from painters.targets.{module} import deploy_{module} as d; "
            f"d({str(source)!r}, {plan!r}, {str(out)!r}); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")  # KiB on Linux
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = int(result.stdout.strip().splitlines()[-1])
    written = sum(p.stat().st_size for p in out.iterdir())
    shutil.rmtree(out, ignore_errors=True)
    return {"target": target, "plan": plan, "seconds": round(seconds, 1), "written_gib": round(written / 2**30, 2),
            "peak_rss_mib": round(peak / 1024, 1)}


def main(argv: list[str] | None = None) -> None:
    """Build the sparse Llama-2-7B checkpoint once, deploy it per run, and print a table of time, bytes and RSS."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="Where deploys are written [a scratch dir].")
    args = parser.parse_args(argv)
    source = build_sparse_checkpoint(cache_dir("scale") / "llama2-7b-hf")
    scratch = args.out or cache_dir("scale") / "deploy-out"
    print("| target | plan | wall s | written GiB | peak RSS MiB |\n|---|---|---:|---:|---:|")
    for target, plan in RUNS:
        row = measure(target, plan, source, scratch)
        print(f"| {row['target']} | {row['plan']} | {row['seconds']} | {row['written_gib']} | {row['peak_rss_mib']} |")


if __name__ == "__main__":
    main()
