"""No import cycle in painters/: every import counts (module level and inside functions), except those under
``if TYPE_CHECKING:``. Imports are read with ``ast``, not executed, so a cycle that only one code path takes
is found too. An edge goes to the module imported (``from pkg import sub`` to ``pkg.sub`` when that is a module);
importing a submodule does not add an edge to its package, which is how Python's import system breaks ties."""

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


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _nodes(node: ast.AST):
    """Every node below ``node`` except the bodies of ``if TYPE_CHECKING:`` blocks (their ``else`` counts)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _nodes(other)
            continue
        yield child
        yield from _nodes(child)


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
    """Module → the painters modules it imports (anywhere in its body, TYPE_CHECKING blocks excepted)."""
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
    assert "painters.compiler.compile" in graph["painters.bench.latency"]  # imported inside a function
    assert "painters.cli.root" in graph["painters.cli.compile"]  # `from painters.cli.root import …`
    assert "painters.runtime.base" not in graph["painters.runtime.decode"]  # under TYPE_CHECKING only


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_layers():
    """The runtime never imports the compiler, and nothing outside the CLI imports the CLI."""
    graph = import_graph()
    runtime_to_compiler = sorted((a, b) for a, edges in graph.items() if a.startswith("painters.runtime")
                                 for b in edges if b.startswith("painters.compiler"))
    into_cli = sorted((a, b) for a, edges in graph.items()
                      if not a.startswith("painters.cli") and a != "painters.__main__"
                      for b in edges if b.startswith("painters.cli"))
    assert runtime_to_compiler == [] and into_cli == []
