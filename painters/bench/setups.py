"""Turn a latency/sweep request (MODEL, backend, plans) into named runners measured side by side."""

from __future__ import annotations

from pathlib import Path

from painters.decoder_io import precision_of
from painters.errors import BenchError
from painters.runtime.base import Runner

__all__ = ["latency_runners"]


def latency_runners(model: str, backend: str | None, plans: str, *, scores: str | None = None,
                    fuse_parallel: bool = True, threads: int | None = None, anchor: str | None = None,
                    dtype: str | None = None) -> tuple[dict[str, Runner], dict]:
    """Runners keyed by plan name, plus each plan's ideal cost ratio (sublayer evaluations / baseline).

    An ``.onnx`` MODEL is compiled once per plan (cached); a source MODEL runs the plans on the torch
    reference executor (``--backend torch``) or as the papers' eager Hugging Face path (``--backend hf``).
    ``anchor`` (a source model) adds the papers' path for every plan as ``hf/PLAN``, in the same rounds, in
    the graph's dtype unless ``dtype`` says otherwise; ``ort-genai:DIR`` instead times onnxruntime-genai's
    generator on the builder's folder DIR with every plan compiled on it, as ``genai/PLAN``
    (:mod:`painters.bench.genai_anchor`).
    """
    from painters.bench.runners import open_runner
    from painters.plans import split_plans

    names = split_plans(plans)
    if Path(model).suffix == ".onnx":
        from painters.bench.latency import compiled_variants

        if backend in ("torch", "hf"):
            raise BenchError(f"--backend {backend} runs a source model (e.g. smollm2-135m), not {model}; "
                             f"use --anchor SRC to time the papers' path beside {Path(model).name}")
        paths = compiled_variants(Path(model), names, scores=scores, fuse_parallel=fuse_parallel)
        runners = {name: open_runner(str(path), backend, None, threads=threads) for name, path in paths.items()}
        ideal = {name: _ideal(r) for name, r in runners.items()}
        if anchor and anchor.startswith("ort-genai:"):  # ONNX Runtime GenAI's generator: rows genai/PLAN
            from painters.bench.genai_anchor import genai_runners

            genai, genai_ideal = genai_runners(anchor, names, scores)
            runners.update(genai)
            ideal.update(genai_ideal)
        elif anchor:
            graph_dtype = precision_of(runners[names[0]].info.dtype)
            hf, hf_ideal = _source_runners(anchor, "hf", names, scores, threads, dtype or graph_dtype or "fp32")
            runners.update({f"hf/{n}": r for n, r in hf.items()})
            ideal.update({f"hf/{n}": v for n, v in hf_ideal.items()})
        return runners, ideal
    if backend not in (None, "torch", "hf"):
        raise BenchError(f"{model} is a source model; --backend {backend} needs an exported .onnx or an engine")
    if anchor:
        raise BenchError("--anchor adds the papers' path beside an exported .onnx; with a source MODEL use "
                         "--backend hf instead")
    return _source_runners(model, backend or "torch", names, scores, threads, dtype or "fp32")


def _source_runners(model: str, backend: str, names: list[str], scores: str | None, threads: int | None,
                    dtype: str) -> tuple[dict[str, Runner], dict]:
    """One TorchRunner (or HfRunner) per plan over a single loaded copy of the source model."""
    from painters.export.sources import load_source
    from painters.plans import load_scores, parse_plan
    from painters.runtime.hf import HfRunner
    from painters.runtime.torch_ref import TorchRunner

    if threads:
        import torch

        torch.set_num_threads(threads)
    loaded = load_source(model, dtype=dtype)
    table = load_scores(scores, model_hash=loaded.hash) if scores else None
    runner_class = HfRunner if backend == "hf" else TorchRunner
    runners, ideal = {}, {}
    for name in names:
        plan = parse_plan(name, loaded.num_layers, scores=table)
        runners[name] = runner_class(loaded.model, plan, tokenizer=loaded.tokenizer, model_hash=loaded.hash)
        ideal[name] = plan.ideal_cost_ratio()
    return runners, ideal


def _ideal(runner: Runner) -> float | None:
    """Ideal cost ratio of a compiled graph, from the schedule recorded in its metadata."""
    import json

    session = getattr(runner, "session", None)
    if session is None:
        return None
    meta = session.get_modelmeta().custom_metadata_map
    if "painters.schedule" not in meta:
        return 1.0
    from painters.plans import Plan, Step

    data = json.loads(meta["painters.schedule"])
    steps = tuple(Step(tuple(s["blocks"]), s["parallel"], s["loops"], s["attn"], s["mlp"]) for s in data["steps"])
    return Plan(data["plan"], steps, data["num_layers"], data["kv"]).ideal_cost_ratio()


def sweep_setup(model: str, backend: str | None, threads: int | None = None):
    """(num_layers, open_plan(plan) → Runner, latency_ratio(plan) → prefill ratio vs baseline) for a sweep.

    ``threads`` caps CPU threads per runner (a Ray worker gets as many as its task reserved).
    """
    from painters.bench.latency import benchmark
    from painters.bench.runners import open_runner

    if Path(model).suffix == ".onnx":
        from painters.bench.latency import compiled_variants
        from painters.compiler.compile import describe

        info = describe(model)
        num_layers = info.get("blocks")
        if not isinstance(num_layers, int):
            raise BenchError(f"{model} is already compiled for a plan; sweep an exported baseline graph")

        def open_plan(plan: str) -> Runner:
            return open_runner(str(compiled_variants(Path(model), [plan])[plan]), backend, threads=threads)
    else:
        from painters.export.sources import load_source
        from painters.plans import parse_plan
        from painters.runtime.torch_ref import TorchRunner

        if threads:
            import torch

            torch.set_num_threads(threads)
        loaded = load_source(model)
        num_layers = loaded.num_layers

        def open_plan(plan: str) -> Runner:
            return TorchRunner(loaded.model, parse_plan(plan, num_layers), tokenizer=loaded.tokenizer,
                               model_hash=loaded.hash)

    def latency_ratio(plan: str) -> float:
        runners = {"baseline": open_plan("baseline"), plan: open_plan(plan)}
        rows = benchmark(runners, prompts=(128,), gen=8, warmup=1, iters=3)
        return next(r.prefill_ratio for r in rows if r.plan == plan)

    return num_layers, open_plan, latency_ratio
