"""The exercise pipeline: exercises/ is generated from solutions/ and is up to date."""

import re
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9]*.md"))
sys.path.insert(0, str(ROOT / "tools"))
from make_exercises import make_exercise  # noqa: E402


def test_exercises_are_up_to_date_with_the_solutions():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_exercises.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_each_chapter_has_at_least_three_checked_exercises(solution):
    nb = jupytext.read(solution)
    answers = [c for c in nb.cells if c.cell_type == "code" and "### BEGIN SOLUTION" in c.source]
    checks = [c for c in nb.cells if "check" in c.metadata.get("tags", [])]
    statements = [c for c in nb.cells if c.cell_type == "markdown" and "{exercise}" in c.source]
    assert len(statements) >= 3, f"{solution.name}: {len(statements)} exercise statements"
    assert len(answers) >= 3 and len(checks) >= 3


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_every_solution_opens_and_closes_once_per_exercise(solution):
    # The website's solution pages fail to build when a solution-start has no matching
    # solution-end, or when one is nested in another.
    names = re.findall(
        r"^```\{exercise-start\}[ \t]*(\S*)|^:label:[ \t]*(\S+)", solution.read_text(), re.M
    )
    labels = [a or b for a, b in names if a or b]
    depth, opened = 0, []
    for line in solution.read_text().splitlines():
        if line.startswith("```{solution-start}"):
            assert depth == 0, f"{solution.name}: solution-start inside another solution"
            depth += 1
            opened.append(line.split("}", 1)[1].strip())
        elif line.startswith("```{solution-end}"):
            assert depth == 1, f"{solution.name}: solution-end without a solution-start"
            depth -= 1
    assert depth == 0, f"{solution.name}: the solution of {opened[-1]} has no solution-end"
    assert len(opened) == len(set(opened)), f"{solution.name}: a solution appears twice"
    assert set(opened) <= set(labels), f"{solution.name}: solutions {opened}, labels {labels}"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_exercise_notebooks_hide_every_solution_and_flag_cells_that_may_raise(solution):
    text = make_exercise(solution)
    assert "### BEGIN SOLUTION" not in text and "### END SOLUTION" not in text
    assert "{solution-start}" not in text and "{solution-end}" not in text
    nb = jupytext.reads(text, fmt="md:myst")
    for cell in nb.cells:
        if cell.cell_type == "code" and "raise NotImplementedError()" in cell.source:
            assert "raises-exception" in cell.metadata.get("tags", [])
        if "check" in cell.metadata.get("tags", []):
            assert "raises-exception" in cell.metadata["tags"]


def test_clear_solutions_replaces_code_and_text_answers(tmp_path):
    source = tmp_path / "99_demo.md"
    source.write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "---\n\n# Demo\n\nWhy?\n\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION\n\n"
        "```{code-cell} ipython3\ndef f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n"
        "    ### END SOLUTION\n```\n"
    )
    text = make_exercise(source)
    assert "Because." not in text and "return 2 * x" not in text
    assert "raise NotImplementedError()" in text and "Write your answer here" in text


@pytest.mark.parametrize(
    "solution", sorted((ROOT / "solutions").glob("*.md")), ids=lambda p: p.stem
)
def test_pages_link_their_chapter_and_the_solutions_link_the_exercises(solution):
    stem = solution.stem
    exercise = (ROOT / "exercises" / solution.name).read_text()
    text = solution.read_text()
    assert f"{{doc}}`../chapters/{stem}`" in text, f"solutions/{stem} does not link its chapter"
    assert f"{{doc}}`../chapters/{stem}`" in exercise, (
        f"exercises/{stem} does not link its chapter"
    )
    assert f"{{doc}}`../exercises/{stem}`" in text, f"solutions/{stem} does not link its exercises"
    assert f"{{doc}}`../exercises/{stem}`" not in exercise, "the exercise page links itself"
