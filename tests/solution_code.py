"""The reference answers of the exercises, read from ``solutions/*.md``.

``solution("02_affine_flows", "affine_log_det")`` runs the import statements of the
notebook (only those: a notebook's ``torch.set_default_dtype`` or seeding must not leak
into the tests) and then the code cell that defines the name, and returns the object.
The tests and ``tools/check_report.py`` take their right answers from here, so a check
is always measured against the answer the course publishes.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"


@functools.cache
def _cells(chapter: str) -> tuple[str, ...]:
    nb = jupytext.read(SOLUTIONS / f"{chapter}.md")
    return tuple(c.source for c in nb.cells if c.cell_type == "code")


def _imports(chapter: str) -> str:
    lines = []
    for source in _cells(chapter):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                lines.append(ast.unparse(node))
    return "\n".join(lines)


def _defines(source: str, name: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    return any(
        isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name
        for node in tree.body
    )


@functools.cache
def solution(chapter: str, name: str):
    """The function or class ``name`` as the solution notebook ``chapter`` defines it."""
    namespace: dict = {"__name__": f"solutions_{chapter}"}
    exec(compile(_imports(chapter), f"{chapter}.md:imports", "exec"), namespace)
    for source in _cells(chapter):
        if _defines(source, name):
            exec(compile(source, f"{chapter}.md", "exec"), namespace)
            return namespace[name]
    raise LookupError(f"solutions/{chapter}.md defines no function or class {name!r}")
