"""The package's structure, read from its imports: layers that run downhill, no cycles, and
no arrow from the flows to training, checks or applications."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nfcourse"

#: The floors of the package, lowest first: a module imports only from its own floor or
#: lower ones. Package ``__init__`` files that only re-export are left out.
FLOORS = [
    ("validation", "seeding", "testing", "plot", "claims"),
    ("distributions", "images", "densities"),
    ("core", "targets"),
    ("flows",),
    ("vae",),
    ("training", "widgets"),
    ("applications", "pretrained"),
    ("checks",),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The nfcourse modules that ``path`` imports, at its top or inside a function."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                as_path = PACKAGE.parent / sub.replace(".", "/")
                found.add(
                    sub if as_path.with_suffix(".py").exists() or as_path.is_dir() else target
                )
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("nfcourse.") and m != name}


GRAPH = {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _floor(module: str) -> int:
    top = module.split(".")[1]
    for k, names in enumerate(FLOORS):
        if top in names:
            return k
    raise AssertionError(f"{module} is on no floor: add its top-level name to FLOORS")


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m != "nfcourse"))
def test_every_module_imports_only_from_its_floor_or_below(module):
    up = sorted(d for d in GRAPH[module] if _floor(d) > _floor(module))
    assert not up, f"{module} (floor {_floor(module)}) imports from higher floors: {up}"


def test_no_flow_imports_training_checks_or_applications():
    for module, deps in GRAPH.items():
        if module.startswith("nfcourse.flows"):
            bad = sorted(
                d
                for d in deps
                if d.split(".")[1] in ("training", "checks", "applications", "vae", "widgets")
            )
            assert not bad, f"{module} imports {bad}"


def test_the_import_graph_has_no_cycles():
    # Edges from a package to its own submodules are re-exports, not dependencies.
    edges = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(edges.get(module, ())):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :] + [dep] if dep in path else [module, dep]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
