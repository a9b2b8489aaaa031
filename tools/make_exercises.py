"""Generate the exercise notebooks from the solution notebooks.

``solutions/NN_topic.md`` is the single source. nbgrader's ``ClearSolutions`` preprocessor
replaces every region between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` by a stub
(``raise NotImplementedError()`` in code, a prompt in Markdown) and
``ClearOutputPreprocessor`` drops outputs. Two course rules are applied around it:

* cells that hold a stub, or carry the tag ``check`` (they call a check on the student's
  answer), get the tag ``raises-exception``: in the exercise notebook they may raise until
  the student answers, and nbval and JupyterLab's "run all" go on past them;
* Markdown cells that only open or close a folded solution box of the website
  (``{solution-start}`` / ``{solution-end}``) are left out, and so are cells tagged
  ``solutions-only`` (the solutions page's link to its exercise page).

Usage: ``python tools/make_exercises.py`` writes ``exercises/``;
``--check`` exits with status 1 and names the files that are out of date.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import jupytext
from nbconvert.preprocessors import ClearOutputPreprocessor
from nbgrader.preprocessors import ClearSolutions

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "*Write your answer here.*"
BOX = re.compile(
    r"^(```|:::)\{solution-(?:start|end)\}[^\n]*\n(?::[^\n]*\n)*\1[ \t]*(?:\n|$)", re.MULTILINE
)


def _tags(cell) -> list[str]:
    return list(cell.metadata.get("tags", []))


def has_solution(cell) -> bool:
    """Whether the cell holds a region between ``### BEGIN SOLUTION`` and ``### END
    SOLUTION``."""
    return "### BEGIN SOLUTION" in cell.source


def course_notebook(nb):
    """A copy of a solution notebook with the course rules applied and the solutions kept:
    the folded-box cells of the website are left out, stub and check cells get the tag
    ``raises-exception``, and the website's ``hide-*`` tags are dropped. The exercise
    notebook is this notebook with its solutions cleared; the classroom's source notebook
    is this notebook with nbgrader's cell metadata added."""
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = BOX.sub("", cell.source).strip()
            if not cell.source:
                continue
        tags = _tags(cell)
        if "solutions-only" in tags:
            continue
        if cell.cell_type == "code" and (has_solution(cell) or "check" in tags):
            if "raises-exception" not in tags:
                tags.append("raises-exception")
        tags = [t for t in tags if t not in {"hide-input", "hide-output", "hide-cell"}]
        if tags:
            cell.metadata["tags"] = tags
        else:
            cell.metadata.pop("tags", None)
        cells.append(cell)
    nb.cells = cells
    return nb


def clear_solutions(nb, enforce_metadata: bool = False):
    """Replace every solution region by its stub (nbgrader's ``ClearSolutions``) and drop
    the outputs; the configuration that ``nbgrader generate_assignment`` uses too."""
    clear = ClearSolutions(
        enforce_metadata=enforce_metadata, code_stub={"python": STUB}, text_stub=TEXT_STUB
    )
    nb, _ = clear.preprocess(copy.deepcopy(nb), {})
    nb, _ = ClearOutputPreprocessor().preprocess(nb, {})
    return nb


def make_exercise(solution_path: Path) -> str:
    nb = clear_solutions(course_notebook(jupytext.read(solution_path)))
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
    nb.metadata.get("jupytext", {}).get("text_representation", {}).pop("jupytext_version", None)
    text = jupytext.writes(nb, fmt="md:myst")
    banner = (
        f"<!-- Generated from solutions/{solution_path.name} by tools/make_exercises.py: "
        "edit the solution notebook, then run `make exercises`. -->\n"
    )
    # Keep the jupytext front matter first, then the banner.
    if text.startswith("---"):
        end = text.index("\n---\n", 3) + len("\n---\n")
        return text[:end] + "\n" + banner + text[end:]
    return banner + text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="do not write; fail if exercises/ is out of date"
    )
    args = parser.parse_args(argv)
    expected = {p.name: make_exercise(p) for p in sorted(SOLUTIONS.glob("[0-9]*.md"))}
    stale = []
    for name, text in expected.items():
        target = EXERCISES / name
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            EXERCISES.mkdir(exist_ok=True)
            target.write_text(text, encoding="utf-8")
    orphans = sorted(p.name for p in EXERCISES.glob("[0-9]*.md") if p.name not in expected)
    if args.check:
        if stale or orphans:
            print(
                "exercises/ is out of date; run `make exercises`. Stale: "
                f"{stale or 'none'}; without a solution notebook: {orphans or 'none'}"
            )
            return 1
        print(f"exercises/ is up to date ({len(expected)} notebooks)")
        return 0
    for name in orphans:
        (EXERCISES / name).unlink()
    print(f"wrote {len(stale)} exercise notebook(s); removed {len(orphans)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
