"""The built website, opened page by page in headless Chromium, as a reader would see it.

Runs after ``make book`` (``make test`` builds the book first). For every page it saves a
screenshot under ``book/_build/screenshots/`` and fails where the rendered page shows raw
TeX, a broken image, fewer figures than its notebook produced, a widget that did not render,
or a resource fetched from outside the site.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.website

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "book" / "_build" / "html"
EXECUTED = ROOT / "book" / "_build" / "jupyter_execute"
CACHE = ROOT / "book" / "_build" / ".jupyter_cache"
SHOTS = ROOT / "book" / "_build" / "screenshots"
REQUIRED = os.environ.get("NFCOURSE_REQUIRE_WEBSITE") == "1"
SKIP_PAGES = {"genindex.html", "search.html"}

RAW_TEX = re.compile(
    r"\$|\\\(|\\\)|\\\[|\\\]|\\(?:frac|log|det|sum|prod|mathbb|mathrm|mathbf|left|right|"
    r"begin|end|partial|int|sigma|mu|theta|nabla|top|sqrt|cdot|quad)\b"
)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _need(condition: bool, message: str):
    if not condition:
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def site_url():
    _need((SITE / "index.html").exists(), f"no website at {SITE}: run `make book` first")
    _need(_chromium() is not None,
          "Chromium not found: install it (`apt-get install chromium`, as .ci/run does)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(SITE)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url + "index.html", timeout=1):
                    break
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def _pages() -> list[str]:
    if not SITE.exists():
        return ["index.html"]
    pages = []
    for p in sorted(SITE.rglob("*.html")):
        rel = p.relative_to(SITE).as_posix()
        if rel in SKIP_PAGES or rel.startswith(("_static/", "_sources/", "_images/")):
            continue
        pages.append(rel)
    return pages


def _chrome(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--window-size=1280,1000",
             "--virtual-time-budget=15000", *args],
            capture_output=True, text=True, timeout=120,
        )


def _render(url: str, page: str) -> str:
    """Screenshot the page and return its DOM after scripts (MathJax, widgets) ran."""
    shot = SHOTS / (page.replace("/", "__").removesuffix(".html") + ".png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    _chrome(f"--screenshot={shot}", url + page)
    return _chrome("--dump-dom", url + page).stdout


@pytest.fixture(scope="module")
def rendered(site_url):
    pages = _pages()
    with ThreadPoolExecutor(max_workers=3) as pool:
        doms = list(pool.map(lambda p: _render(site_url, p), pages))
    return dict(zip(pages, doms))


def _visible_text(dom: str) -> str:
    dom = re.sub(r"(?is)<(script|style|pre|code|textarea|mjx-container|svg)\b.*?</\1>", " ", dom)
    return html.unescape(re.sub(r"(?s)<[^>]+>", " ", dom))


def _executed_notebook(page: str):
    """The executed notebook behind a page: from the execution cache when the book used it
    (myst-nb then leaves the copy in ``jupyter_execute/`` without outputs), else that copy."""
    import jupytext
    import nbformat

    source = ROOT / "book" / (page.removesuffix(".html") + ".md")
    if not source.exists():
        return None
    with contextlib.suppress(Exception):
        from jupyter_cache import get_cache

        cache = get_cache(str(CACHE))
        record = cache.match_cache_notebook(jupytext.read(source))
        return cache.get_cache_bundle(record.pk).nb
    copy = EXECUTED / (page.removesuffix(".html") + ".ipynb")
    return nbformat.read(copy, as_version=4) if copy.exists() else None


def _outputs(page: str, mime: str) -> int:
    nb = _executed_notebook(page)
    if nb is None:
        return 0
    return sum(
        1 for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", []) if mime in out.get("data", {})
    )


@pytest.mark.parametrize("page", _pages())
def test_page_shows_no_raw_tex(rendered, page):
    dom = rendered[page]
    assert dom, f"{page}: Chromium returned no DOM"
    text = _visible_text(dom)
    hits = sorted({m.group(0) for m in RAW_TEX.finditer(text)})
    if hits:
        where = RAW_TEX.search(text).start()
        pytest.fail(f"{page} shows raw TeX {hits}: ...{text[max(0, where - 80):where + 80]}...")
    static = (SITE / page).read_text(encoding="utf-8")
    if 'class="math' in static:
        assert "<mjx-container" in dom, f"{page} has math that MathJax did not render"


@pytest.mark.parametrize("page", _pages())
def test_page_images_load_and_figures_are_all_there(rendered, page):
    dom = rendered[page]
    srcs = re.findall(r'<img\b[^>]*?\bsrc="([^"]+)"', dom)
    for src in srcs:
        src = html.unescape(src)
        if src.startswith("data:"):
            payload = src.split(",", 1)[1]
            assert len(base64.b64decode(payload)) > 100, f"{page}: empty inline image"
            continue
        assert not src.startswith(("http:", "https:")) or "127.0.0.1" in src, \
            f"{page} loads an image from outside the site: {src}"
        target = (SITE / page).parent / urllib.parse.unquote(src.split("?")[0].split("#")[0])
        assert target.resolve().is_file() and target.stat().st_size > 0, \
            f"{page}: broken image {src}"
    figures = _outputs(page, "image/png")
    shown = sum("_images/" in s or s.startswith("data:image") for s in srcs)
    assert shown >= figures, f"{page} shows {shown} figures; its notebook made {figures}"
    if page.startswith("chapters/"):
        assert figures > 0, f"{page}: a chapter without a single figure"


@pytest.mark.parametrize("page", _pages())
def test_page_shows_no_python_traceback(rendered, page):
    text = html.unescape(re.sub(r"(?s)<[^>]+>", " ", rendered[page]))
    assert "Traceback (most recent call last)" not in text, f"{page} shows a Python traceback"


@pytest.mark.parametrize("page", _pages())
def test_widgets_render_without_network(rendered, page):
    if _outputs(page, "application/vnd.jupyter.widget-view+json") == 0:
        return
    static = (SITE / page).read_text(encoding="utf-8")
    assert "lm-Widget" not in static
    dom = rendered[page]
    assert re.search(r'class="lm-Widget[^"]*\bjupyter-widgets\b', dom), \
        f"{page} has a widget in its notebook that the widget JavaScript did not render"
    if "widget-slider" in _source_widgets(page):
        assert re.search(r'class="[^"]*widget-(hslider|vslider|slider)', dom), \
            f"{page} has sliders in its notebook but none rendered"


def _source_widgets(page: str) -> str:
    nb = _executed_notebook(page)
    state = nb.metadata.get("widgets", {}) if nb is not None else {}
    models = state.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    names = {m.get("model_name", "") for m in models.values()}
    return " ".join("widget-slider" if "Slider" in n else n for n in sorted(names))


@pytest.mark.parametrize("page", _pages())
def test_page_loads_nothing_from_outside(page):
    static = (SITE / page).read_text(encoding="utf-8")
    external = re.findall(r'<(?:script|link|img)\b[^>]*?(?:src|href)="(https?://[^"]+)"', static)
    external = [u for u in external if not u.startswith("https://example.invalid")]
    assert not external, f"{page} fetches from the network: {external[:3]}"


def test_every_page_has_a_screenshot(rendered):
    for page in rendered:
        shot = SHOTS / (page.replace("/", "__").removesuffix(".html") + ".png")
        assert shot.is_file() and shot.stat().st_size > 1000, f"no screenshot of {page}"
