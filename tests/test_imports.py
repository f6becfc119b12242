"""No import cycle in painters/: every import counts (module level, inside functions and under
``if TYPE_CHECKING:``), and no module imports another module's private name. Imports are read with ``ast``, not
executed, so a cycle that only one code path takes is found too. An edge goes to the module imported
(``from pkg import sub`` to ``pkg.sub`` when that is a module); importing a submodule does not add an edge to
its package, which is how Python's import system breaks ties."""

from __future__ import annotations

import ast
from pathlib import Path

import painters

ROOT = Path(painters.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def _nodes(node: ast.AST):
    """Every node below ``node`` (``if TYPE_CHECKING:`` bodies included: an annotation's import is an edge too)."""
    yield from ast.walk(node)


def _targets(tree: ast.AST, name: str, package: bool, modules: dict) -> set[str]:
    """The painters modules a module's body imports."""

    def owner(dotted: str) -> str | None:  # the module a dotted name lives in
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    edges: set[str | None] = set()
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            edges.update(owner(a.name) for a in node.names if a.name.split(".")[0] == "painters")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name if package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] == "painters":
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add(sub if sub in modules else owner(target))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("painters")):
            edges.add(owner(node.args[0].value))  # importlib.import_module("painters.x")
    edges.discard(None)
    edges.discard(name)
    return edges  # type: ignore[return-value]


def import_graph() -> dict[str, set[str]]:
    """Module → the painters modules it imports (anywhere in its body, TYPE_CHECKING blocks included)."""
    modules = _modules()
    return {name: _targets(ast.parse(path.read_text(), str(path)), name, package, modules)
            for name, (path, package) in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, …, a], or None (depth-first search with an explicit path)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := dfs(start)):
            return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_function_level_and_from_imports():
    graph = import_graph()
    assert "painters.compiler.compile" in graph["painters.routing"]  # imported inside a function
    assert "painters.cli.root" in graph["painters.cli.compile"]  # `from painters.cli.root import …`


def test_the_graph_counts_type_checking_imports(tmp_path):
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from painters.plans import Plan\n"
    modules = {"painters.a": (tmp_path / "a.py", False), "painters.plans": (tmp_path / "p.py", True)}
    assert _targets(ast.parse(source), "painters.a", False, modules) == {"painters.plans"}


def private_imports() -> list[str]:
    """``module: from other import _name`` for every private (single underscore) name taken from another module."""
    modules = _modules()
    found = []
    for name, (path, _) in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("painters"):
                found += [f"{name}: from {node.module} import {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")
                          and f"{node.module}.{a.name}" not in modules]
    return found


def test_no_private_names_across_modules():
    assert private_imports() == []


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_layers():
    """The runtime never imports the compiler, nothing outside the CLI imports the CLI, and the router is the only
    module that imports both the compiler and the runtime (the exporters aside: they trace with the runtime's
    families and check their graph with the compiler's block discovery)."""
    graph = import_graph()
    both = sorted(a for a, edges in graph.items()
                  if not a.startswith(("painters.compiler", "painters.runtime", "painters.export"))
                  and any(b.startswith("painters.compiler") for b in edges)
                  and any(b.startswith("painters.runtime") for b in edges))
    assert both in ([], ["painters.routing"]), both
    runtime_to_compiler = sorted((a, b) for a, edges in graph.items() if a.startswith("painters.runtime")
                                 for b in edges if b.startswith("painters.compiler"))
    into_cli = sorted((a, b) for a, edges in graph.items()
                      if not a.startswith("painters.cli") and a != "painters.__main__"
                      for b in edges if b.startswith("painters.cli"))
    assert runtime_to_compiler == [] and into_cli == []


# Modules that may be imported inside a function, and why: each is heavy to import (torch, TensorRT, ONNX Runtime,
# transformers, onnx and plotting) or an optional extra (pip install painters[...]) a command must not need.
# Everything else is imported at the top of the module.
LAZY_THIRD_PARTY = frozenset({
    "torch", "tensorrt", "tensorrt_rtx", "onnxruntime", "onnxruntime_genai", "transformers", "onnx", "onnx_ir",
    "google", "matplotlib", "gguf", "yaml", "tqdm",  # heavy
    "ray", "lm_eval", "jinja2", "fastapi", "uvicorn", "pydantic", "openai", "tritonclient",  # optional extras
    "llama_cpp", "vllm", "safetensors",  # engines (extras painters[llamacpp], painters[vllm]); safetensors loads torch
})
# painters modules imported inside functions: the CLI (each command loads its room when run, so `painters --help`
# stays fast) and, outside it, these modules — each defers a room that pulls in torch or onnx at import time.
# A ratchet: the test fails on a module not listed here; shrink the list as rooms stop needing it.
LAZY_PAINTERS_IMPORTERS = frozenset({
    "painters.analysis.importance", "painters.bench.genai_anchor",
    "painters.compiler.compile", "painters.compiler.encoder_blocks", "painters.compiler.encoder_compile",
    "painters.compiler.engine.request", "painters.experiments.report", "painters.experiments.reproduce",
    "painters.experiments.sweep", "painters.experiments.sweep_ray", "painters.export", "painters.export.encoder_export",
    "painters.export.encoder_sources", "painters.export.genai_export", "painters.export.onnx_export",
    "painters.export.self_check", "painters.glue.evaluate", "painters.glue.finetune",
    "painters.integrations.lm_eval", "painters.routing", "painters.runtime.trt", "painters.serve.server",
    "painters.serve.triton",
    # the engine targets and runners defer the exporters' sources (torch, transformers) and each other's targets
    "painters.fileio", "painters.runtime.vllm", "painters.targets.common", "painters.targets.gguf",
    "painters.targets.llamacpp_convert", "painters.targets.summary", "painters.targets.vllm",
})
LAZY_STDLIB_IMPORTERS = frozenset({"painters.serve.app"})  # the serve room's own (another change owns it)


def function_level_imports() -> list[tuple[str, str]]:
    """(module, imported module) for every import inside a function body of painters/."""
    found = []
    for name, (path, _) in _modules().items():
        for fn in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.Import):
                        found += [(name, a.name) for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                        found.append((name, node.module))
    return found


def test_function_level_imports_are_on_the_allow_list():
    bad = []
    for module, imported in function_level_imports():
        top = imported.split(".")[0]
        if top == "painters":
            ok = module.startswith("painters.cli") or module in LAZY_PAINTERS_IMPORTERS
        else:
            ok = top in LAZY_THIRD_PARTY or module in LAZY_STDLIB_IMPORTERS
        if not ok:
            bad.append(f"{module} imports {imported} inside a function")
    assert bad == [], "\n".join(bad)
