"""The classroom: nbgrader releases, autogrades and gives feedback on every chapter's
exercises, with its real SQLite gradebook.

``tools/make_classroom.py`` writes the course folder; ``nbgrader generate_assignment``
releases one assignment per chapter. Three students then submit every assignment:

* ``solved``: the solutions (every answer cell holds the solution's code);
* ``untouched``: the released notebooks as they are;
* ``one_mistake``: the solutions, except that one exercise per chapter holds a realistic
  wrong answer (``WRONG`` below).

``nbgrader autograde`` grades all of them in one run; the solutions get full marks, the
untouched notebooks zero (and every cell still runs), the wrong answer loses exactly its
exercise's points, and ``nbgrader generate_feedback`` shows the student the check's
message that names the mistake.
"""

from __future__ import annotations

import copy
import csv
import html
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from make_classroom import (  # noqa: E402
    DEFAULT_POINTS,
    POINTS,
    classroom_notebook,
    read_points,
    statement,
    write_course,
)
from make_exercises import EXERCISES, SOLUTIONS, course_notebook  # noqa: E402

CHAPTERS = [p.stem for p in sorted(SOLUTIONS.glob("[0-9]*.md"))]
NBGRADER = [sys.executable, "-m", "nbgrader"]
STUDENTS = ("solved", "untouched", "one_mistake")
BANNER = re.compile(r"^<!-- Generated from solutions/.*?-->\n", re.DOTALL)
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


@dataclass
class Wrong:
    """A wrong answer: the first solution region of the answer cell that contains
    ``cell`` is replaced by ``code``; the check's message must contain ``message``."""

    exercise: str
    cell: str
    code: str
    message: str


WRONG = {
    "01_change_of_variables": Wrong(  # the Jacobian term -log x forgotten
        "ex-01-lognormal",
        "def lognormal_log_prob",
        "z = (torch.log(x) - mu) / sigma\n"
        "log_p_z = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)\n"
        "return log_p_z - math.log(sigma)",
        "the term -log x is missing",
    ),
    "02_affine_flows": Wrong(  # log of the scale, without the absolute value
        "ex-02-affine-log-det",
        "def affine_log_det",
        "return torch.log(scale).sum()",
        "the log of a negative scale is NaN",
    ),
    "03_planar_flows": Wrong(  # no absolute value: NaN where the layer folds
        "ex-03-planar-log-det",
        "def planar_log_det",
        "h = torch.tanh(z @ w + b)\nreturn torch.log(1 + (1 - h**2) * (w @ u))",
        "the absolute value is missing",
    ),
    "04_piecewise_linear": Wrong(  # slope q_k instead of K q_k
        "ex-04-log-det",
        "def piecewise_log_det",
        "K = len(q)\n"
        "k = torch.clamp(torch.floor(K * x).long(), max=K - 1)\n"
        "return torch.log(q[k])",
        "you returned log q_k",
    ),
    "05_coupling_flows": Wrong(  # scale by s instead of exp(s)
        "ex-05-affine-forward",
        "def affine_coupling_forward",
        "d = z.shape[1] // 2\n"
        "z_a, z_b = z[:, :d], z[:, d:]\n"
        "s, t = conditioner(z_a).chunk(2, dim=1)\n"
        "return torch.cat([z_a, s * z_b + t], dim=1), s.sum(dim=1)",
        "the scale is exp(s), not s",
    ),
    "06_vae_flow_posterior": Wrong(  # the Gaussian's normalising constant without -log sigma
        "ex-06-reparameterise",
        "def reparameterise",
        "z0 = mu + torch.exp(log_sigma) * eps\n"
        "log_q0 = (-0.5 * eps**2 - 0.5 * math.log(2 * math.pi)).sum(dim=-1)\n"
        "return z0, log_q0",
        "misses the term -log sigma",
    ),
    "07_autoregressive_flows": Wrong(  # the output mask lets x_i see itself
        "ex-07-made-masks",
        "def made_masks_from_degrees",
        "hidden_mask = hidden_degrees[:, None] >= in_degrees[None, :]\n"
        "out_mask = in_degrees[:, None] >= hidden_degrees[None, :]\n"
        "return hidden_mask.float(), out_mask.float()",
        "see itself",
    ),
    "08_spline_flows": Wrong(  # the textbook root: 0/0 where a bin is straight
        "ex-08-inverse",
        "def rq_inverse",
        "k = (y.unsqueeze(1) >= knot_y[:, 1:-1]).sum(dim=1, keepdim=True)\n"
        "x_k, y_k = knot_x.gather(1, k)[:, 0], knot_y.gather(1, k)[:, 0]\n"
        "w = knot_x.gather(1, k + 1)[:, 0] - x_k\n"
        "h = knot_y.gather(1, k + 1)[:, 0] - y_k\n"
        "d_k, d_k1 = derivatives.gather(1, k)[:, 0], derivatives.gather(1, k + 1)[:, 0]\n"
        "s = h / w\n"
        "a = h * (s - d_k) + (y - y_k) * (d_k1 + d_k - 2 * s)\n"
        "b = h * d_k - (y - y_k) * (d_k1 + d_k - 2 * s)\n"
        "c = -s * (y - y_k)\n"
        "return x_k + w * (-b + torch.sqrt(b * b - 4 * a * c)) / (2 * a)",
        "textbook root",
    ),
    "09_image_flows": Wrong(  # log |det W| without the H W copies
        "ex-09-conv1x1",
        "def conv1x1",
        "x = torch.einsum('ij,bjhw->bihw', weight, z)\n"
        "return x, torch.linalg.slogdet(weight)[1].expand(z.shape[0])",
        "H W copies of W",
    ),
    "10_continuous_flows": Wrong(  # the velocity of the straight path reversed
        "ex-10-straight-path",
        "def straight_path",
        "t = t[:, None]\nreturn (1 - t) * x0 + t * x1, x0 - x1",
        "not x_0 - x_1",
    ),
    "11_anomalies_and_compression": Wrong(  # ties counted as a whole pair
        "ex-11-auc",
        "def auc_from_pairs",
        "above = (scores_out[:, None] >= scores_in[None, :]).double()\nreturn above.mean()",
        "ties count as 1",
    ),
    "12_augmentation_and_inference": Wrong(  # the mean log-weight, the ELBO
        "ex-12-log-z", "def log_z_hat", "return log_w.mean()", "ELBO"
    ),
}


# --- the points file ------------------------------------------------------------------


def _statements(path: Path) -> list[tuple[str, str]]:
    nb = course_notebook(jupytext.read(path))
    return [found for cell in nb.cells if (found := statement(cell)) is not None]


def test_every_exercise_has_points_and_every_row_an_exercise():
    table = read_points()
    listed = {(a, label): title for (a, label), (title, _) in table.items()}
    found = {
        (p.stem, label): title
        for p in sorted(SOLUTIONS.glob("[0-9]*.md"))
        for label, title in _statements(p)
    }
    missing = sorted(set(found) - set(listed))
    stale = sorted(set(listed) - set(found))
    assert not missing, f"add these exercises to {POINTS.relative_to(ROOT)}: {missing}"
    assert not stale, f"{POINTS.relative_to(ROOT)} lists exercises that do not exist: {stale}"
    wrong_titles = {k: (listed[k], found[k]) for k in found if listed[k] != found[k]}
    assert not wrong_titles, f"titles in the points file differ (file, notebook): {wrong_titles}"


def test_points_file_is_read_in_notebook_order_with_positive_points():
    with open(POINTS, newline="", encoding="utf-8") as f:
        rows = [(r["assignment"], r["exercise"]) for r in csv.DictReader(f)]
    order = [
        (p.stem, label) for p in sorted(SOLUTIONS.glob("[0-9]*.md")) for label, _ in _statements(p)
    ]
    assert [r for r in rows if r in order] == [o for o in order if o in rows], (
        "keep the points file in the order of the notebooks, so the teachers' table reads well"
    )
    assert all(points > 0 for _, points in read_points().values())


DEMO = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
---

# Demo

```{code-cell} ipython3
from nfcourse.checks import planar as pc
```

```{exercise} A new exercise
:label: ex-99-new
```

```{code-cell} ipython3
def f(z, u, w, b):
    ### BEGIN SOLUTION
    return 0
    ### END SOLUTION
```

```{code-cell} ipython3
:tags: [check]

pc.check_planar_log_det(f)
```

```{code-cell} ipython3
:tags: [check]

print(f(1, 2, 3, 4))
```
"""


def test_new_exercises_are_found_and_get_default_points(tmp_path):
    path = tmp_path / "99_demo.md"
    path.write_text(DEMO, encoding="utf-8")
    warnings = []
    nb, exercises = classroom_notebook(path, points_table={}, hidden_seed=7, warn=warnings.append)
    (exercise,) = exercises
    assert (exercise.label, exercise.title, exercise.points) == (
        "ex-99-new",
        "A new exercise",
        DEFAULT_POINTS,
    )
    assert warnings and "ex-99-new" in warnings[0]
    meta = {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells}
    check = meta["ex-99-new-check"]
    assert check.metadata["nbgrader"]["points"] == DEFAULT_POINTS
    assert "pc.check_planar_log_det(f, seed=7)" in check.source  # the hidden test
    assert meta["ex-99-new-answer"].metadata["nbgrader"]["solution"]
    assert meta["ex-99-new-cell"].metadata["nbgrader"]["locked"]  # the plot-like cell
    assert not meta["ex-99-new-cell"].metadata["nbgrader"]["grade"]


def test_an_exercise_without_a_check_is_an_error(tmp_path):
    path = tmp_path / "99_demo.md"
    path.write_text(DEMO.replace("pc.check_planar_log_det(f)", "f(0, 0, 0, 0)"), encoding="utf-8")
    with pytest.raises(ValueError, match="ex-99-new has no graded check"):
        classroom_notebook(path, points_table={}, warn=lambda message: None)


def test_every_chapter_has_a_wrong_answer_for_the_grading_test():
    assert set(WRONG) == set(CHAPTERS), (
        f"define a realistic wrong answer in WRONG for: {sorted(set(CHAPTERS) - set(WRONG))}"
    )


# --- the course, graded end to end ----------------------------------------------------


def _nbgrader(course: Path, *commands: list[str]) -> None:
    """Run nbgrader commands in the course folder, at the same time, and wait for all."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
    runs = []
    for args in commands:
        log = tempfile.TemporaryFile(mode="w+")
        runs.append(
            (
                args,
                log,
                subprocess.Popen(
                    [*NBGRADER, *args], cwd=course, env=env, stdout=log, stderr=subprocess.STDOUT
                ),
            )
        )
    for args, log, run in runs:
        run.wait()
        log.seek(0)
        assert run.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{log.read()[-4000:]}"
        log.close()


def _fill(
    released: nbformat.NotebookNode, source: nbformat.NotebookNode, wrong: Wrong | None = None
) -> nbformat.NotebookNode:
    """The released notebook with every answer cell filled in from the source notebook."""
    nb = copy.deepcopy(released)
    solutions = {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in source.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }
    used = False
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("solution"):
            continue
        text = solutions[meta["grade_id"]]
        if wrong is not None and wrong.cell in text and not used:
            assert meta["grade_id"].startswith(wrong.exercise), (wrong, meta["grade_id"])
            cell.source = _replace_first_region(text, wrong.code)
            used = True
        else:
            cell.source = _replace_first_region(text, None)
    assert wrong is None or used, f"no answer cell contains {wrong.cell!r}"
    return nb


def _replace_first_region(source: str, code: str | None) -> str:
    """Drop the solution markers; with ``code``, the first region becomes that code."""
    out, inside, region = [], False, 0
    for line in source.split("\n"):
        if BEGIN in line:
            inside, region = True, region + 1
            if code is not None and region == 1:
                indent = re.match(r"\s*", line).group(0)
                out.extend(indent + w if w else w for w in code.split("\n"))
            continue
        if END in line:
            inside = False
            continue
        if inside and code is not None and region == 1:
            continue
        out.append(line)
    return "\n".join(out)


# The tests below run every exercise notebook three times (under nbgrader, not nbval): like
# the notebook tests, they run in `make test` and not in `make unit`.
graded = pytest.mark.notebook


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course folder in which nbgrader has released, autograded and given feedback on
    the three students' submissions of every chapter."""
    root = tmp_path_factory.mktemp("classroom")
    exercises = write_course(root, warn=lambda message: None)
    _nbgrader(root, ["generate_assignment", "*", "--force"])
    for chapter in CHAPTERS:
        released = nbformat.read(root / "release" / chapter / f"{chapter}.ipynb", 4)
        source = nbformat.read(root / "source" / chapter / f"{chapter}.ipynb", 4)
        submissions = {
            "solved": _fill(released, source),
            "untouched": released,
            "one_mistake": _fill(released, source, WRONG[chapter]),
        }
        for student, nb in submissions.items():
            folder = root / "submitted" / student / chapter
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / f"{chapter}.ipynb")
    # One autograde run per student, side by side: the machine's cores share the work.
    _nbgrader(
        root, *(["autograde", "*", f"--student={s}", "--create", "--force"] for s in STUDENTS)
    )
    # Feedback for the student whose mistakes the test reads it for; the export beside it.
    _nbgrader(
        root,
        ["generate_feedback", "*", "--student=one_mistake", "--force"],
        ["export", "--to", "grades.csv"],
    )
    return root, exercises


def _scores(root: Path) -> tuple[dict, dict]:
    """From the gradebook: ``{(chapter, student): {grade_id: score}}`` and
    ``{chapter: {grade_id: max_score}}``."""
    from nbgrader.api import Gradebook

    scores, maxima = {}, {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for chapter in CHAPTERS:
            for student in STUDENTS:
                nb = gb.find_submission_notebook(chapter, chapter, student)
                scores[chapter, student] = {g.name: g.score for g in nb.grades}
                maxima[chapter] = {g.name: g.max_score for g in nb.grades}
    return scores, maxima


@graded
def test_released_notebooks_are_the_exercises_cell_by_cell(course):
    root, _ = course
    for chapter in CHAPTERS:
        released = nbformat.read(root / "release" / chapter / f"{chapter}.ipynb", 4)
        exercise = jupytext.read(EXERCISES / f"{chapter}.md")
        exercise.cells[0].source = BANNER.sub("", exercise.cells[0].source)
        assert len(released.cells) == len(exercise.cells), chapter
        for i, (got, want) in enumerate(zip(released.cells, exercise.cells, strict=False)):
            where = f"{chapter}, cell {i}"
            assert got.cell_type == want.cell_type, where
            assert got.source.strip() == want.source.strip(), where
            assert set(got.metadata.get("tags", [])) == set(want.metadata.get("tags", [])), where
            assert not got.get("outputs"), where
            assert "HIDDEN TESTS" not in got.source, where


@graded
def test_solutions_get_full_marks(course):
    root, _ = course
    scores, maxima = _scores(root)
    for chapter in CHAPTERS:
        got, best = scores[chapter, "solved"], maxima[chapter]
        lost = {g: (got[g], best[g]) for g in best if got[g] != best[g]}
        assert not lost, f"{chapter}: the solutions lose points in {lost}"
        assert sum(best.values()) > 0


@graded
def test_untouched_notebooks_get_zero_and_run_to_the_end(course):
    root, _ = course
    scores, _ = _scores(root)
    for chapter in CHAPTERS:
        assert sum(scores[chapter, "untouched"].values()) == 0, chapter
        nb = nbformat.read(root / "autograded" / "untouched" / chapter / f"{chapter}.ipynb", 4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code), (
            f"{chapter}: autograde stopped before the last cell"
        )
        checks = [c for c in code if c.metadata["nbgrader"].get("grade")]
        assert all(any(o.output_type == "error" for o in c.outputs) for c in checks), chapter


@graded
def test_one_wrong_answer_loses_exactly_its_exercise(course):
    root, exercises = course
    scores, maxima = _scores(root)
    for chapter in CHAPTERS:
        exercise = next(ex for ex in exercises[chapter] if ex.label == WRONG[chapter].exercise)
        got, best = scores[chapter, "one_mistake"], maxima[chapter]
        lost = {g for g in best if got[g] != best[g]}
        assert lost == set(exercise.check_ids), chapter
        assert sum(best.values()) - sum(got.values()) == pytest.approx(exercise.points)


@graded
def test_feedback_names_the_mistake(course):
    root, exercises = course
    for chapter in CHAPTERS:
        wrong = WRONG[chapter]
        exercise = next(ex for ex in exercises[chapter] if ex.label == wrong.exercise)
        graded = nbformat.read(
            root / "autograded" / "one_mistake" / chapter / f"{chapter}.ipynb", 4
        )
        errors = [
            o
            for c in graded.cells
            if c.metadata.get("nbgrader", {}).get("grade_id") in exercise.check_ids
            for o in c.get("outputs", [])
            if o.output_type == "error"
        ]
        assert errors and errors[0].ename == "ExerciseError", chapter
        message = errors[0].evalue
        assert wrong.message in message, f"{chapter}: the check said {message!r}"
        page = (root / "feedback" / "one_mistake" / chapter / f"{chapter}.html").read_text(
            encoding="utf-8"
        )
        assert html.escape(message, quote=False) in page or html.escape(message) in page, (
            f"{chapter}: the feedback does not show {message!r}"
        )


@graded
def test_hidden_tests_are_graded_but_not_released(course):
    root, exercises = course
    for chapter in CHAPTERS:
        released = json.dumps(nbformat.read(root / "release" / chapter / f"{chapter}.ipynb", 4))
        graded = nbformat.read(root / "autograded" / "solved" / chapter / f"{chapter}.ipynb", 4)
        graded_source = "\n".join(c.source for c in graded.cells)
        for exercise in exercises[chapter]:
            for hidden in exercise.hidden_tests:
                assert hidden not in released, f"{chapter}: {hidden} is visible"
                assert hidden in graded_source, f"{chapter}: {hidden} was not graded"


@graded
def test_exported_grades_match_the_gradebook(course):
    root, _ = course
    scores, maxima = _scores(root)
    with open(root / "grades.csv", newline="", encoding="utf-8") as f:
        rows = {(r["assignment"], r["student_id"]): r for r in csv.DictReader(f)}
    assert set(rows) == {(c, s) for c in CHAPTERS for s in STUDENTS}
    for (chapter, student), row in rows.items():
        assert float(row["score"]) == pytest.approx(sum(scores[chapter, student].values()))
        assert float(row["max_score"]) == pytest.approx(sum(maxima[chapter].values()))
