"""The standard ONNX deployment as a latency anchor: onnxruntime-genai's generator on the builder's folder.

``painters bench latency M.onnx --plans a,b --anchor ort-genai:DIR`` compiles every plan on ``DIR/model.onnx``
(the ONNX Runtime GenAI builder's graph of the same model; cached like painters' own variants) and times
``og.Generator`` on each compiled folder in the same interleaved rounds, as rows ``genai/PLAN``: the baseline
row is the builder's own graph, the others what a GenAI user deploys with a plan. The runner offers just what
:func:`painters.bench.latency.measure_once` drives — a greedy loop with ``prefill``/``step`` — since GenAI
owns its cache and search; it is a timing anchor, not a painters runner.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from painters.artifact import GenaiFolder, Record
from painters.errors import BenchError

__all__ = ["ANCHOR_PREFIX", "GenaiRunner", "genai_runners"]

ANCHOR_PREFIX = "ort-genai:"


@dataclass
class _Info:
    vocab_size: int
    dtype: str


class _GenaiLoop:
    """One generation: the prompt appended (prefill), then one ``generate_next_token`` per step."""

    def __init__(self, og, model, ids: np.ndarray, gen: int, kv_bytes_per_position: int):
        batch, prompt = ids.shape
        params = og.GeneratorParams(model)
        total = prompt + gen + 1
        # min_length = max_length: EOS is masked, so random prompts always decode every timed step
        params.set_search_options(max_length=total, min_length=total, batch_size=batch, do_sample=False)
        self.generator = og.Generator(model, params)
        self.ids = ids
        self._kv = kv_bytes_per_position * batch * total  # GenAI's shared past/present buffer: max_length long

    def prefill(self) -> None:
        self.generator.append_tokens(self.ids)

    def step(self) -> None:
        self.generator.generate_next_token()

    def synchronize(self) -> None:
        """CPU: every call returns when its work is done."""

    def kv_bytes(self) -> int:
        return self._kv


class GenaiRunner:
    """``og.Model`` on a GenAI folder, timed through :func:`~painters.bench.latency.measure_once`."""

    name = "onnxruntime-genai"
    plan = None  # the parsed plan of the row, set by genai_runners (its ideal cost ratio)

    def __init__(self, folder: str | Path):
        import onnxruntime_genai as og

        self.folder = Path(folder)
        config = json.loads((self.folder / "genai_config.json").read_text())["model"]
        decoder = config["decoder"]
        self.path = self.folder / decoder.get("filename", "model.onnx")  # the graph it runs (bench weight reads)
        self._og = og
        self.model = og.Model(str(self.folder))
        dtype_bytes = 2 if "fp16" in self.folder.name else 4  # KV bytes only; the builder's CPU caches are fp32
        self._kv_per_position = (2 * decoder["num_hidden_layers"] * decoder["num_key_value_heads"]
                                 * decoder["head_size"] * dtype_bytes)
        self.info = _Info(int(config["vocab_size"]), "float32")

    def greedy_loop(self, input_ids, attention_mask, max_new_tokens: int, static: bool | None = None) -> _GenaiLoop:
        if not np.asarray(attention_mask).all():
            raise BenchError("the ort-genai anchor times unpadded prompts only")
        return _GenaiLoop(self._og, self.model, np.asarray(input_ids, dtype=np.int32), max_new_tokens,
                          self._kv_per_position)

    def close(self) -> None:
        self.model = None


def _variants(folder: Path, plans: list[str], scores: str | None) -> dict[str, Path]:
    """Each plan compiled on the builder's graph into its own cached GenAI folder (baseline: the folder itself)."""
    from painters.cache import cache_dir
    from painters.compiler.compile import compile_model, safe_plan_name
    from painters.compiler.variants import compiler_fingerprint
    from painters.fileio import file_hash

    model = folder / "model.onnx"
    parts = [file_hash(model), file_hash(folder / "genai_config.json"), file_hash(scores) if scores else "",
             compiler_fingerprint()]
    key = hashlib.sha256(":".join(parts).encode()).hexdigest()[:16]
    paths = {}
    for plan in plans:
        if plan == "baseline":
            paths[plan] = folder
            continue
        out = cache_dir("compiled-genai", key, safe_plan_name(plan)) / "model.onnx"
        if not out.exists():
            compile_model(model, plan, out, scores=scores)
        paths[plan] = out.parent
    return paths


def genai_runners(anchor: str, plans: list[str], scores: str | None) -> dict[str, GenaiRunner]:
    """Rows ``genai/PLAN`` for ``--anchor ort-genai:DIR``; each runner carries its parsed ``plan`` (for the ideal
    cost ratio, :func:`painters.routing.ideal_ratio`)."""
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        raise BenchError("--anchor ort-genai:DIR needs onnxruntime-genai: pip install 'painters[genai]'") from None
    folder = Path(anchor.removeprefix(ANCHOR_PREFIX))
    if not (folder / "genai_config.json").is_file() or not (folder / "model.onnx").is_file():
        raise BenchError(f"--anchor {anchor}: {folder} is not an ONNX Runtime GenAI folder (model.onnx and "
                         "genai_config.json, as `python -m onnxruntime_genai.models.builder` writes it)")
    from painters.compiler.compile import describe
    from painters.plans import load_scores, parse_plan

    layers = describe(folder / "model.onnx")["blocks"]
    table = load_scores(scores) if scores else None
    paths = _variants(folder, plans, scores)
    runners = {}
    for p, path in paths.items():
        runners[f"genai/{p}"] = runner = GenaiRunner(path)
        runner.plan = parse_plan(p, layers, scores=table)
        runner.artifact = GenaiFolder(Path(path), runner.path, Record(runner.plan.name, runner.plan))
    return runners
