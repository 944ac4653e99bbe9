"""Layers point one way (issue 17): read every module's imports with ``ast`` (module level and
inside functions alike) and check the directions the package promises.

- ``regionedit.toyworld`` (worlds, toy models, their bars and evaluation) never imports the bench;
- ``regionedit.masks`` never imports the toy world (the face-part boxes are a leaf module);
- the bench's modules import one another without a cycle (e.g. ``quality`` ↔ ``adapters``). (The
  fuzzer driving the CLI, which runs the bench, is a cycle through the front end, not inside it.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import regionedit

PACKAGE = Path(regionedit.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(name: str) -> set[str]:
    """The package's modules that ``name`` imports; ``from a import b`` counts ``a.b`` when it is a
    module, else ``a``. Relative imports are resolved against the module's package."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imported(name) for name in MODULES}


def inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def offenders(lower: str, upper: str) -> dict[str, list[str]]:
    """Modules in ``lower`` that import a module in ``upper``, with what they import."""
    found = {name: sorted(m for m in deps if inside(m, upper)) for name, deps in GRAPH.items() if inside(name, lower)}
    return {name: deps for name, deps in found.items() if deps}


def cycles(package: str) -> list[list[str]]:
    """Import cycles among ``package``'s modules: strongly connected components of more than one
    module (Tarjan), each sorted."""
    graph = {name: {m for m in deps if inside(m, package)} for name, deps in GRAPH.items() if inside(name, package)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                components.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return components


def test_the_import_reader_sees_lazy_and_module_level_imports():
    assert "regionedit.toyworld.faces" in GRAPH["regionedit.toyworld.probes"]  # from regionedit.toyworld import faces
    assert "regionedit.bench.adapters" in GRAPH["regionedit.bench.quality"]  # inside a factory function
    assert "regionedit.face_parts" in GRAPH["regionedit.masks"]


def test_toyworld_never_imports_the_bench():
    assert offenders("regionedit.toyworld", "regionedit.bench") == {}


def test_masks_never_import_the_toy_world():
    assert offenders("regionedit.masks", "regionedit.toyworld") == {}
    assert GRAPH["regionedit.face_parts"] == set()  # a leaf: masks and the face renderer both read it


def test_the_bench_modules_import_one_another_without_a_cycle():
    assert cycles("regionedit.bench") == []
