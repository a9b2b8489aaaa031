"""Write an nbgrader course folder for the exercises: ``make classroom``.

``solutions/NN_topic.md`` stays the single source. For every chapter this writes
``source/NN_topic/NN_topic.ipynb``: the solution notebook with the course rules of
``tools/make_exercises.py`` applied (so that ``nbgrader generate_assignment`` releases the
same notebook as ``exercises/NN_topic.md``) and nbgrader's cell metadata added:

* a code cell with a ``### BEGIN SOLUTION`` region is a solution cell (the student edits
  it); a Markdown cell with one is a manually graded answer worth 0 points (the written
  derivation: the teacher may read and comment on it, the autograder does not score it);
* a cell tagged ``check`` that calls a ``check_*`` function imported from
  ``nfcourse.checks`` is an autograded test cell, worth the exercise's points from
  ``tools/classroom_points.csv`` (split evenly when an exercise has several);
* when that check takes a ``seed`` argument, the test cell also gets a hidden test, the
  same check on inputs drawn with a seed that only the teacher's copy holds
  (``--hidden-seed``): an answer tuned to the inputs of the visible check fails it;
* every other cell is read-only (locked): nbgrader restores it before grading.

An exercise starts at its ``{exercise}`` statement and runs to the next one. An exercise
that is missing from the points file gets ``DEFAULT_POINTS`` (with a warning); an
exercise without a graded check cell is an error.

Usage: ``python tools/make_classroom.py [--out build/classroom] [--hidden-seed N]``.
Rerunning rewrites ``source/`` and ``nbgrader_config.py`` only: the gradebook, the
submissions and the feedback in the folder are kept.
"""

from __future__ import annotations

import argparse
import ast
import csv
import importlib
import inspect
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_exercises import (  # noqa: E402
    SOLUTIONS,
    STUB,
    TEXT_STUB,
    course_notebook,
    has_solution,
)

ROOT = Path(__file__).resolve().parents[1]
POINTS = ROOT / "tools" / "classroom_points.csv"
DEFAULT_OUT = ROOT / "build" / "classroom"
DEFAULT_POINTS = 1.0
DEFAULT_HIDDEN_SEED = 2718
STATEMENT = re.compile(r"^(`{3,}|:{3,})\{exercise\}[ \t]*(?P<title>[^\n]*)\n", re.MULTILINE)
LABEL = re.compile(r"^:label:[ \t]*(?P<label>\S+)", re.MULTILINE)

CONFIG = """\
# nbgrader configuration of the nfcourse classroom, written by tools/make_classroom.py.
# Run every nbgrader command in this folder (it holds source/, release/, submitted/,
# autograded/, feedback/ and the gradebook, gradebook.db).
import os
import sys

c = get_config()  # noqa: F821

# nbgrader runs `alembic`, installed next to it, when it creates the gradebook: find it
# there even when the virtual environment is not activated.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

HERE = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "nfcourse"
c.CourseDirectory.root = HERE
# The gradebook lives next to this file. Several autograde runs may share it at once (one
# per student, `nbgrader autograde "*" --student=ID`): each waits up to a minute for the
# others' writes instead of failing with "database is locked".
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(HERE, "gradebook.db") + "?timeout=60"
# The stubs that replace the solutions: the same as in exercises/ (tools/make_exercises.py).
c.ClearSolutions.code_stub = {{"python": {stub!r}}}
c.ClearSolutions.text_stub = {text_stub!r}
# Seconds a single cell may run when a submission is graded; a cell still running then is
# stopped, and a test cell stopped so scores zero.
c.Execute.timeout = 300
# On JupyterHub, nbgrader's exchange folder (release, fetch, submit, collect) is
# /srv/nbgrader/exchange by default; set another one here if your hub uses one:
# c.Exchange.root = "/srv/nbgrader/exchange"
"""


@dataclass
class Exercise:
    """One exercise of an assignment and the cells nbgrader grades it by."""

    assignment: str
    label: str
    title: str
    points: float = DEFAULT_POINTS
    answer_ids: list[str] = field(default_factory=list)
    check_ids: list[str] = field(default_factory=list)
    hidden_tests: list[str] = field(default_factory=list)


def read_points(path: Path = POINTS) -> dict[tuple[str, str], tuple[str, float]]:
    """``{(assignment, exercise label): (title, points)}`` from the points file."""
    table = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            key = (row["assignment"].strip(), row["exercise"].strip())
            if key in table:
                raise ValueError(f"{path.name}: {key[1]} of {key[0]} is listed twice")
            try:
                points = float(row["points"])
            except ValueError:
                raise ValueError(
                    f"{path.name}: points of {key[1]} should be a number, got {row['points']!r}"
                ) from None
            if points <= 0:
                raise ValueError(
                    f"{path.name}: points of {key[1]} should be positive, got {points}"
                )
            table[key] = (row["title"].strip(), points)
    return table


def statement(cell) -> tuple[str, str] | None:
    """``(label, title)`` when the cell is an exercise statement, else ``None``."""
    if cell.cell_type != "markdown":
        return None
    m = STATEMENT.search(cell.source)
    if m is None:
        return None
    label = LABEL.search(cell.source[m.end() :])
    if label is None:
        raise ValueError(f"the exercise {m['title'].strip()!r} has no :label:")
    return label["label"], m["title"].strip()


def _check_imports(nb) -> dict[str, tuple[str, str | None]]:
    """What the notebook imports from ``nfcourse.checks``: ``{name: (module, function)}``
    for a ``check_*`` function, ``{alias: (module, None)}`` for a module."""
    names = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "nfcourse.checks"
            ):
                for alias in node.names:
                    if alias.name.startswith("check_"):
                        names[alias.asname or alias.name] = (node.module, alias.name)
                    elif alias.name.islower():  # a module: `from nfcourse.checks import vae`
                        names[alias.asname or alias.name] = (f"{node.module}.{alias.name}", None)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("nfcourse") and alias.asname:
                        names[alias.asname] = (alias.name, None)
                    elif alias.name.startswith("nfcourse"):
                        names["nfcourse"] = ("nfcourse", None)
    return names


def _resolve(func: ast.expr, checks: dict) -> tuple[str, str] | None:
    """``(module, function)`` when ``func`` names a ``check_*`` function of
    ``nfcourse.checks``, else ``None``."""
    if isinstance(func, ast.Name):
        found = checks.get(func.id)
        return found if found is not None and found[1] is not None else None
    if isinstance(func, ast.Attribute) and func.attr.startswith("check_"):
        parts, value = [], func.value
        while isinstance(value, ast.Attribute):
            parts.append(value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in checks and checks[value.id][1] is None:
            module = ".".join([checks[value.id][0], *reversed(parts)])
            if module.startswith("nfcourse.checks"):
                return module, func.attr
    return None


def _check_calls(source: str, checks: dict) -> list[ast.Call]:
    """The calls of ``check_*`` functions of ``nfcourse.checks`` in a cell's code."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _resolve(node.func, checks) is not None
    ]


def _takes_seed(module: str, name: str) -> bool:
    """Whether the check ``module.name`` has a ``seed`` parameter: read from the module's
    source in this repository (no torch import), else from the imported function."""
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            tree = ast.parse(candidate.read_text(encoding="utf-8"))
            for node in tree.body:
                if isinstance(node, ast.FunctionDef) and node.name == name:
                    args = node.args
                    return any(
                        a.arg == "seed" for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]
                    )
    fn = getattr(importlib.import_module(module), name)
    return "seed" in inspect.signature(fn).parameters


def _hidden_test(call: ast.Call, checks: dict, seed: int) -> str | None:
    """The same check on inputs drawn with ``seed``, when the check takes a seed that the
    visible call leaves at its default."""
    if not _takes_seed(*_resolve(call.func, checks)):
        return None
    if any(k.arg == "seed" for k in call.keywords):
        return None
    hidden = ast.Call(
        func=call.func,
        args=call.args,
        keywords=[*call.keywords, ast.keyword(arg="seed", value=ast.Constant(seed))],
    )
    return ast.unparse(hidden)


def _meta(grade_id: str, *, solution=False, grade=False, locked=False, points=None) -> dict:
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if grade:
        meta["points"] = points
    return meta


def classroom_notebook(
    solution_path: Path, points_table=None, hidden_seed: int = DEFAULT_HIDDEN_SEED, warn=print
):
    """The nbgrader source notebook of one chapter and the exercises it grades."""
    assignment = solution_path.stem
    points_table = read_points() if points_table is None else points_table
    nb = course_notebook(jupytext.read(solution_path))
    checks = _check_imports(nb)

    # Split the notebook into exercises: cells before the first statement are the setup.
    owners, exercises, current = [], [], None
    for cell in nb.cells:
        found = statement(cell)
        if found is not None:
            label, title = found
            title_points = points_table.get((assignment, label))
            if title_points is None:
                warn(
                    f"warning: {assignment} {label} is not in {POINTS.name}; it gets "
                    f"{DEFAULT_POINTS:g} point(s)"
                )
                points = DEFAULT_POINTS
            else:
                points = title_points[1]
            current = Exercise(assignment, label, title, points)
            exercises.append(current)
        owners.append(current)

    graded = {}
    for i, (cell, owner) in enumerate(zip(nb.cells, owners, strict=False)):
        tags = cell.metadata.get("tags", [])
        if (
            owner is not None
            and cell.cell_type == "code"
            and "check" in tags
            and _check_calls(cell.source, checks)
        ):
            graded.setdefault(owner.label, []).append(i)
    for ex in exercises:
        if ex.label not in graded:
            raise ValueError(
                f"{solution_path.name}: exercise {ex.label} has no graded check: a cell "
                "tagged `check` that calls a check_* function imported from nfcourse.checks"
            )

    used = set()

    def unique(base: str) -> str:
        grade_id, k = base, 1
        while grade_id in used:
            k += 1
            grade_id = f"{base}-{k}"
        used.add(grade_id)
        return grade_id

    for i, (cell, owner) in enumerate(zip(nb.cells, owners, strict=False)):
        prefix = owner.label if owner is not None else "setup"
        if has_solution(cell):
            if cell.cell_type == "code":
                meta = _meta(unique(f"{prefix}-answer"), solution=True)
            else:
                meta = _meta(unique(f"{prefix}-written"), solution=True, grade=True, points=0)
            if owner is not None:
                owner.answer_ids.append(meta["grade_id"])
        elif owner is not None and i in graded.get(owner.label, []):
            share = owner.points / len(graded[owner.label])
            meta = _meta(unique(f"{prefix}-check"), grade=True, locked=True, points=share)
            owner.check_ids.append(meta["grade_id"])
            hidden = [
                h
                for call in _check_calls(cell.source, checks)
                if (h := _hidden_test(call, checks, hidden_seed)) is not None
            ]
            if hidden:
                cell.source = (
                    cell.source.rstrip("\n")
                    + "\n### BEGIN HIDDEN TESTS\n"
                    + "\n".join(hidden)
                    + "\n### END HIDDEN TESTS"
                )
                owner.hidden_tests.extend(hidden)
        else:
            meta = _meta(unique(f"{prefix}-cell"), locked=True)
        cell.metadata["nbgrader"] = meta
        cell.id = meta["grade_id"][:64]  # stable cell ids: the same notebook on every run

    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nbformat.from_dict(nb), exercises


def write_course(
    out: Path = DEFAULT_OUT,
    hidden_seed: int = DEFAULT_HIDDEN_SEED,
    solutions: list[Path] | None = None,
    warn=print,
) -> dict[str, list[Exercise]]:
    """Write ``nbgrader_config.py`` and ``source/`` under ``out``; return the exercises of
    every assignment."""
    solutions = sorted(SOLUTIONS.glob("[0-9]*.md")) if solutions is None else solutions
    points_table = read_points()
    out.mkdir(parents=True, exist_ok=True)
    (out / "nbgrader_config.py").write_text(
        CONFIG.format(stub=STUB, text_stub=TEXT_STUB), encoding="utf-8"
    )
    source = out / "source"
    if source.exists():
        shutil.rmtree(source)
    course = {}
    for path in solutions:
        nb, exercises = classroom_notebook(path, points_table, hidden_seed, warn)
        folder = source / path.stem
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{path.stem}.ipynb")
        course[path.stem] = exercises
    return course


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="the course folder (default: build/classroom)",
    )
    parser.add_argument(
        "--hidden-seed",
        type=int,
        default=DEFAULT_HIDDEN_SEED,
        help="seed of the hidden tests' inputs (change it for each class)",
    )
    args = parser.parse_args(argv)
    course = write_course(args.out.resolve(), args.hidden_seed)
    print(f"{'assignment':<24} {'exercise':<28} {'points':>6}  hidden test")
    for assignment, exercises in course.items():
        for ex in exercises:
            print(
                f"{assignment:<24} {ex.label:<28} {ex.points:>6g}  "
                f"{'yes' if ex.hidden_tests else '-'}"
            )
        total = sum(ex.points for ex in exercises)
        print(f"{assignment:<24} {'total':<28} {total:>6g}")
    print(
        f"wrote the nbgrader course folder {args.out}; release with "
        f"`cd {args.out} && nbgrader generate_assignment <assignment>`"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
