"""The package's shape: no import cycles, and every import goes down the stack of layers.

Imports are read from the source (every `import` and `from ... import`, at any depth, type-only
ones included), so a cycle hidden inside a function is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "pipeline", "models", "cli")
# bottom to top; a module may import its own layer or any layer below it
LAYERS = ("schemas", "pipeline.lazy", "pipeline.errors", "pipeline.geometry", "pipeline.faces", "pipeline.io", "pipeline.runtime",
          "pipeline.stages", "pipeline", "models", "cli")


def module_files() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (names relative to `facepipe.`)."""
    files = module_files()
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
                module = ".".join(p for p in (base, (node.module or "").removeprefix("facepipe.")) if p)
                if not node.level and not (node.module or "").startswith("facepipe."):
                    continue
                targets = [module] + [f"{module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name.removeprefix("facepipe.") for a in node.names if a.name.startswith("facepipe.")]
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> int:
    matches = [k for k, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + ".")]
    return max(matches, key=lambda k: len(LAYERS[k]))


def test_the_graph_sees_imports() -> None:
    graph = import_graph()
    assert "pipeline.geometry.scan" in graph["pipeline.io.bu3dfe"]
    assert "pipeline.faces.procedural" in graph["pipeline.io.face_models"]  # an import inside a function counts
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_imports_only_go_down_the_stack() -> None:
    upward = [f"{a} -> {b}" for a, targets in import_graph().items() for b in sorted(targets) if layer(b) > layer(a)]
    assert upward == []
