"""The import graph of Troupe's packages, read from the source with ``ast``: no cycle
among modules or among packages, counting imports inside functions and under
``TYPE_CHECKING``; no package imports another's private module; and the layers point one
way (``actors`` → ``runtime`` → ``protocol``)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "runtime", "actors")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _package_of(module: str) -> str:
    """The package a module belongs to (a package is its own). A ``__main__`` module is
    a node of its own: it is run, never imported, so it can close no circle."""
    if (ROOT / module.replace(".", "/") / "__init__.py").exists():
        return module
    if module.endswith(".__main__"):
        return module
    return module.rpartition(".")[0]


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """The Troupe modules ``module`` imports, anywhere in its file, with their lines."""
    package = _package_of(module)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _known(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                # `from . import x` imports a module x; `from .m import name` imports m
                if f"{target}.{alias.name}" in MODULES:
                    yield f"{target}.{alias.name}", node.lineno
                else:
                    yield from _known(target, node.lineno)


def _known(name: str, line: int) -> Iterator[tuple[str, int]]:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    if name:
        yield name, line


GRAPH = {
    module: {(target, line) for target, line in _imports(module, path) if target != module}
    for module, path in MODULES.items()
}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_in_a_circle() -> None:
    edges = {module: {target for target, _ in targets} for module, targets in GRAPH.items()}
    assert _cycles(edges) == []


def test_no_package_imports_in_a_circle() -> None:
    edges: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        source = _package_of(module)
        for target, _ in targets:
            if _package_of(target) != source:
                edges.setdefault(source, set()).add(_package_of(target))
    assert _cycles(edges) == []


def _top(module: str) -> str:
    return module.split(".")[0]


def test_no_package_imports_anothers_private_module() -> None:
    # Within one top-level package (``actors`` and its edges) private modules are shared;
    # across them, only what a package's ``__init__`` exports is used.
    private = [
        f"{module} imports {target} (line {line})"
        for module, targets in GRAPH.items()
        for target, line in targets
        if any(part.startswith("_") for part in target.split(".")[1:])
        and not target.endswith(".__init__")
        and _top(target) != _top(module)
    ]
    assert private == []


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("protocol", ("runtime", "actors")), ("runtime", ("actors",))],
)
def test_layers_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module.split(".")[0] == package
        for target, _ in targets
        if target.split(".")[0] in forbidden
    ]
    assert wrong == []
