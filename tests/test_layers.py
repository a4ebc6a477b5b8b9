"""The package layering: stages never import the layers above them, and the import graph of
psearch's packages has no cycle (every import counted, also those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import psearch

ROOT = Path(psearch.__file__).parent
STAGES = ("data", "detector", "reid", "gallery", "evaluation", "baselines", "training", "nn",
          "formats", "core")
ABOVE_STAGES = ("joint", "search", "cli", "pipeline", "registry", "serve", "api")


def imported_modules(path: Path) -> set[str]:
    """Every ``psearch...`` module a file of the package imports, at the top or in functions."""
    return imports_of(path.read_text(), ".".join(("psearch", *path.relative_to(ROOT).parent.parts)))


def imports_of(source: str, package: str) -> set[str]:
    """The ``psearch...`` modules (and imported names) of Python ``source`` in ``package``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "psearch" or m.startswith("psearch.")}


def package_of(module: str) -> str | None:
    """The top-level package (or module) of psearch a dotted name belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if len(rel.parts) == 1 and rel.name == "__init__.py":
            continue
        source = rel.parts[0].removesuffix(".py")
        targets = {package_of(m) for m in imported_modules(path)} - {None, source}
        graph.setdefault(source, set()).update(
            t for t in targets if (ROOT / t).is_dir() or (ROOT / f"{t}.py").is_file())
    return graph


def test_stages_never_import_the_layers_above_them():
    offenders = []
    for stage in STAGES:
        for path in sorted((ROOT / stage).rglob("*.py")):
            for module in sorted(imported_modules(path)):
                if package_of(module) in ABOVE_STAGES:
                    offenders.append(f"{path.relative_to(ROOT.parent)} imports {module}")
    assert offenders == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a path [a, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                here = [*path, node]
                return [*here[here.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None


def test_the_package_import_graph_has_no_cycle():
    graph = package_graph()
    assert {"core", "detector", "reid", "joint", "cli", "registry"} <= set(graph)
    assert "core" in graph["detector"] and "roles" in graph["registry"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_checks_see_lazy_and_relative_imports_and_cycles():
    source = "import os\nfrom . import boxes\ndef f():\n    from psearch.joint.infer import X\n"
    found = imports_of(source, "psearch.core")
    assert {"psearch.joint.infer", "psearch.core.boxes"} <= found and "os" not in found
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
