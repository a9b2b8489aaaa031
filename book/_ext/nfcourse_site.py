"""What the course website adds to Jupyter Book: exercises beside their chapter, notebook
downloads, launch buttons behind one setting, and search that keeps solutions to itself.

- Every chapter's student exercises (``exercises/NN_topic.md``) follow the chapter in the
  table of contents; the worked solutions (``solutions/NN_topic.md``) are a separate part.
  Both pages hold the same exercises, so here the solutions page gets its own labels
  (``ex-...`` becomes ``sol-ex-...``), the title "Solutions: ..." and the numbers of the
  student page (Exercise 3.1 is the first exercise of chapter 3 on both). The student page
  links to its solutions.
- Solutions pages are left out of the search index, so a search never shows solution text.
- Each notebook page offers its ``.ipynb`` for download (Jupyter Book only does so when a
  launch button is configured): the notebook without outputs, to run yourself.
- Launch buttons (Binder, Colab, JupyterHub) need the project's public repository address:
  while ``repository.url`` in ``_config.yml`` is empty, they are off.
- One search box, in the sidebar (the theme would put a second one in the header bar).

Theme options are set here rather than under ``sphinx: config:`` in ``_config.yml``, where
they would replace the ones Jupyter Book derives from its ``html:`` and ``repository:``
settings (download and launch buttons among them).
"""

from __future__ import annotations

import re
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)
EXERCISE_LABEL = re.compile(r"\bex-(\d\d-[A-Za-z0-9_-]+)")
NOTEBOOK_FOLDERS = ("chapters/", "exercises/", "solutions/")


def _theme_options(app: Sphinx, config) -> None:
    options = config.html_theme_options
    options["search_bar_text"] = "Search the course..."
    options["navbar_persistent"] = []
    if not str(options.get("repository_url") or "").strip():
        options["launch_buttons"] = {}
        for button in ("use_repository_button", "use_issues_button", "use_edit_page_button",
                       "use_source_button"):
            options[button] = False


def _chapter_number(docname: str) -> int | None:
    match = re.match(r"(?:exercises|solutions)/(\d\d)_", docname)
    return int(match.group(1)) if match else None


def _exercise_and_solution_pages(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname.startswith("solutions/"):
        source[0] = EXERCISE_LABEL.sub(r"sol-ex-\1", source[0])
        # The page is titled like its exercises page; say which of the two it is.
        source[0] = re.sub(r"^# Exercises:", "# Solutions:", source[0], count=1,
                           flags=re.MULTILINE)
    elif docname.startswith("exercises/"):
        solutions = "../solutions/" + docname.split("/", 1)[1]
        note = (f"\n\nWhen you have tried them, compare with "
                f"{{doc}}`the worked solutions <{solutions}>`.\n")
        # After the paragraph that opens the page (the first blank line after the title).
        text = source[0]
        title = re.search(r"^# .*$", text, flags=re.MULTILINE)
        if title is None:
            source[0] = text + note
            return
        paragraph_end = text.find("\n\n", text.find("\n\n", title.end()) + 2)
        if paragraph_end < 0:
            source[0] = text + note
        else:
            source[0] = text[:paragraph_end] + note.rstrip("\n") + text[paragraph_end:]


def _no_search_in_solutions(app: Sphinx, doctree) -> None:
    if app.env.docname.startswith("solutions/"):
        app.env.metadata[app.env.docname]["nosearch"] = ""


def _solutions_numbered_like_their_exercises(app: Sphinx, env) -> list[str]:
    """Runs after Sphinx numbered the figures and exercises of every page."""
    renumbered = []
    for docname, numbers in env.toc_fignumbers.items():
        chapter = _chapter_number(docname)
        if chapter is None or not docname.startswith("solutions/"):
            continue
        exercises = numbers.get("exercise", {})
        in_order = sorted(exercises, key=lambda ident: exercises[ident])
        for k, ident in enumerate(in_order, start=1):
            exercises[ident] = (chapter, k)
        renumbered.append(docname)
    return renumbered


def _notebook_download(app: Sphinx, pagename: str, templatename: str, context: dict,
                       doctree) -> None:
    if doctree is None or not pagename.startswith(NOTEBOOK_FOLDERS):
        return
    source = Path(app.env.doc2path(pagename))
    if source.suffix != ".md" or "jupytext" not in source.read_text(encoding="utf-8")[:400]:
        return
    import jupytext
    import nbformat

    notebook = jupytext.read(source)
    notebook.metadata.pop("jupytext", None)
    target = Path(app.outdir) / "_sources" / (pagename + ".ipynb")
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)
    context["ipynb_source"] = pagename + ".ipynb"


def setup(app: Sphinx) -> dict:
    # The site's own style and search script, in book/_assets: not in book/_static, which
    # would make Jupyter Book add every script of every static folder to every page, the
    # widget JavaScript included (which then loads, and draws each widget, twice).
    app.add_css_file("nfcourse.css")
    app.add_js_file("nfcourse.js")
    app.connect("config-inited", _theme_options)
    app.connect("source-read", _exercise_and_solution_pages)
    app.connect("doctree-read", _no_search_in_solutions)
    app.connect("env-get-updated", _solutions_numbered_like_their_exercises, priority=900)
    app.connect("html-page-context", _notebook_download, priority=500)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
