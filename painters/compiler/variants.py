"""Plans of an exported graph compiled once into a cache keyed by everything that decides the output.

Every runner of a plan on an exported graph (bench, sweeps, serving, lm-eval, reproduce) goes through
:func:`compiled_variants`, so baseline too runs through the one compile pipeline; the key names the graph's
bytes, its external data files, the scores, the compiler's own code (:func:`compiler_fingerprint`) and the
fusion flag, so a changed rewrite recompiles.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from painters import __version__
from painters.artifact import Record
from painters.cache import cache_dir
from painters.compiler.compile import compile_model, default_output, describe
from painters.compiler.graph_io import SIDE_FILES, allowed_dir, external_files, load_graph
from painters.fileio import file_hash
from painters.plans import load_scores, parse_plan

__all__ = ["code_fingerprint", "code_keyed", "compiled_variants", "compiler_fingerprint"]


def compiled_variants(model: Path, plans: Sequence[str], *, scores: str | None = None,
                      fuse_parallel: bool = True, out_dir: Path | None = None) -> dict[str, Path]:
    """Compile ``plans`` of an exported graph once into a cache (reused by later runs).

    The cache key names the graph's bytes, the identity of its external data files (a re-export writes new
    ones, which the cached outputs do not share), the scores file, the compiler's code and the fusion flag.
    Within it each plan's file is named by its *resolved schedule* (and its name, for reading), never by the
    text given: an edited plan file recompiles, and ``q/r.yaml`` and ``q-r.yaml`` (one safe name) do not share.
    """
    graph = load_graph(model)
    data = [(name, (st := (model.parent / name).stat()).st_size, st.st_mtime_ns, st.st_ino)
            for name in external_files(graph, model.parent, allowed=allowed_dir(model))]
    # the outputs carry copies of the tokenizer files beside the graph: a hard-linked twin of the graph with
    # another tokenizer (or none) must not reuse them
    side = [(name, file_hash(model.parent / name)) for name in SIDE_FILES if (model.parent / name).is_file()]
    parts = [file_hash(model), json.dumps(data), json.dumps(side), file_hash(scores) if scores else "",
             compiler_fingerprint(), str(fuse_parallel)]
    num_layers = describe(model).get("blocks") if plans else None  # None: a compiled graph, refused below
    ranked = load_scores(scores, model_hash=Record.from_props(graph.metadata_props, str(model)).source_hash) \
        if scores and num_layers else None
    key = hashlib.sha256(":".join(parts).encode()).hexdigest()[:16]
    out_dir = out_dir or cache_dir("compiled", key)
    paths: dict[str, Path] = {}
    genai_folder = (model.parent / "genai_config.json").is_file()  # one GenAI folder (and config) per plan
    for plan in plans:
        name = plan
        if num_layers:
            parsed = parse_plan(plan, num_layers, scores=ranked)
            schedule = {k: v for k, v in parsed.to_json().items() if k != "plan"}
            digest = hashlib.sha256(json.dumps(schedule, sort_keys=True).encode()).hexdigest()[:12]
            name = f"{parsed.name[:80]}.{digest}"
        out = default_output(out_dir / model.name, name + (".fused" if fuse_parallel else ""))
        if genai_folder:
            out = out_dir / out.stem.removeprefix(f"{model.stem}.") / model.name
        if not out.exists():
            compile_model(model, plan, out, scores=scores, fuse_parallel=fuse_parallel)
        paths[plan] = out
    return paths


def compiler_fingerprint() -> str:
    """The painters version and a hash of the compiler and plan sources: a changed rewrite recompiles."""
    return code_fingerprint("compiler", "plans")


def code_fingerprint(*packages: str) -> str:
    """The painters version and a hash of the named subpackages' sources (``"export"``, ``"compiler"``…)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(p for name in packages for p in (root / name).rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_keyed(base: Path, *choices: str) -> Path:
    """``base/KEY``, KEY a hash of the export, compiler and plan sources and of ``choices``.

    For scripts that cache the graphs they export and compile by path: a changed painters, or another choice
    (a ``--gguf``, a form), lands in another folder instead of timing a stale graph.
    """
    key = hashlib.sha256(":".join([code_fingerprint("export", "compiler", "plans"), *choices]).encode())
    return base / key.hexdigest()[:12]
