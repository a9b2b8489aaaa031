"""Run every text notebook (MyST Markdown) of the course under nbval.

nbval collects ``.ipynb`` files, and the course commits its notebooks as text. With
``--notebooks``, each ``chapters/*.md``, ``solutions/*.md`` and ``exercises/*.md`` that
carries jupytext front matter is collected by nbval's own collector, reading the notebook
through jupytext instead of nbformat. The kernel starts in the notebook's folder, as in
JupyterLab, so ``pytest chapters/01_change_of_variables.md --notebooks --nbval-lax`` works.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent
NOTEBOOK_DIRS = ("chapters", "solutions", "exercises")


def pytest_addoption(parser):
    parser.addoption(
        "--notebooks",
        action="store_true",
        help="also run every text notebook of the course under nbval",
    )


def _is_text_notebook(path: Path) -> bool:
    if path.suffix != ".md" or path.parent.parent != ROOT or path.parent.name not in NOTEBOOK_DIRS:
        return False
    return "jupytext" in path.read_text(encoding="utf-8")[:400]


def _read_text_notebook(path, as_version=4):
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def pytest_collect_file(parent, file_path: Path):
    if not parent.config.getoption("--notebooks") or not _is_text_notebook(file_path):
        return None
    import nbval.plugin

    class TextNotebook(nbval.plugin.IPyNbFile):
        def collect(self):
            with mock.patch.object(nbval.plugin.nbformat, "read", _read_text_notebook):
                yield from super().collect()

    return TextNotebook.from_parent(parent, path=file_path)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _is_text_notebook(Path(str(item.path))):
            item.add_marker(pytest.mark.notebook)
