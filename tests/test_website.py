"""The built website, opened page by page in headless Chromium, as a reader would see it.

Runs after ``make book`` (``make test`` builds the book first). Chromium is driven over its
DevTools protocol on a pipe (no network port, no Python package beyond the standard
library), in a 1280 x 1000 window. For every page the test saves a screenshot under
``book/_build/screenshots/`` and fails where the rendered page shows raw TeX, a broken
image, fewer figures than its notebook produced, a widget that did not render, a resource
fetched from outside the site, a display equation, code cell or output wider than the text
column, a figure shown below 70 % of its pixel width, or a slider that does not change its
figure when moved. Chapter pages must link to their exercises, and the download buttons of
notebook pages must lead to the page's ``.md`` and ``.ipynb``.

``layout.json`` beside the screenshots records, per page, how many elements failed each
layout check (``NFCOURSE_SITE`` points the test at another built site).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import html
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.website

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("NFCOURSE_SITE", ROOT / "book" / "_build" / "html")).parent
SITE = BUILD / "html"
EXECUTED = BUILD / "jupyter_execute"
CACHE = BUILD / ".jupyter_cache"
SHOTS = BUILD / "screenshots"
REQUIRED = os.environ.get("NFCOURSE_REQUIRE_WEBSITE") == "1"
SKIP_PAGES = {"genindex.html", "search.html"}
WIDTH, HEIGHT = 1280, 1000
#: A figure shown narrower than this fraction of its pixel width has unreadable text.
MIN_FIGURE_SCALE = 0.7

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
    _need(
        _chromium() is not None,
        "Chromium not found: install it (`apt-get install chromium`, as .ci/run does)",
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(SITE),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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


class Chromium:
    """Headless Chromium driven over the DevTools protocol through a pipe.

    Chromium reads commands on file descriptor 3 and writes replies on 4, one JSON message
    each, ended by a NUL byte (``--remote-debugging-pipe``): no port is opened."""

    def __init__(self, profile: str):
        # Keep the parent's ends of the pipes away from 3 and 4, which the child needs.
        def high(fd: int) -> int:
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            return moved

        to_chrome_r, to_chrome_w = (high(fd) for fd in os.pipe())
        from_chrome_r, from_chrome_w = (high(fd) for fd in os.pipe())

        def child_fds():
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.process = subprocess.Popen(
            [
                _chromium(),
                "--headless",
                "--remote-debugging-pipe",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
                f"--user-data-dir={profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                "about:blank",
            ],
            preexec_fn=child_fds,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._write, self._read_fd = to_chrome_w, from_chrome_r
        self._buffer = b""
        self._next_id = 0
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.page("Page.enable")
        self.page(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )

    def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float = 60,
    ) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"Chromium {method}: {reply['error']}")
                return reply.get("result", {})

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read_fd], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def page(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        return self.send(method, params, session=self.session, timeout=timeout)

    def js(self, expression: str, timeout: float = 60):
        result = self.page(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Load ``url`` and wait until MathJax has typeset and the widgets have rendered."""
        self.page("Page.navigate", {"url": url})
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            if self.js("document.readyState") == "complete":
                break
            time.sleep(0.1)
        self.js(
            "(async () => { if (window.MathJax && MathJax.startup && MathJax.startup.promise)"
            " await MathJax.startup.promise; return true; })()"
        )
        expected = self.js(
            "document.querySelectorAll("
            "'script[type=\"application/vnd.jupyter.widget-view+json\"]').length"
        )
        stable, last = 0, -1
        while expected and time.monotonic() < deadline and stable < 4:
            count = self.js("document.querySelectorAll('.jupyter-widgets').length")
            stable = stable + 1 if count == last and count > 0 else 0
            last = count
            time.sleep(0.25)
        time.sleep(0.3)

    def screenshot(self, path: Path, clip: dict | None = None) -> bytes:
        params = {"format": "png"}
        if clip:
            params.update(clip=dict(clip, scale=1), captureBeyondViewport=False)
        data = base64.b64decode(self.page("Page.captureScreenshot", params)["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def drag(self, x0: float, y0: float, x1: float, y1: float) -> None:
        mouse = "Input.dispatchMouseEvent"
        self.page(mouse, {"type": "mouseMoved", "x": x0, "y": y0})
        self.page(
            mouse,
            {
                "type": "mousePressed",
                "x": x0,
                "y": y0,
                "button": "left",
                "buttons": 1,
                "clickCount": 1,
            },
        )
        for t in (0.25, 0.5, 0.75, 1.0):
            self.page(
                mouse,
                {
                    "type": "mouseMoved",
                    "x": x0 + t * (x1 - x0),
                    "y": y0 + t * (y1 - y0),
                    "button": "left",
                    "buttons": 1,
                },
            )
        self.page(
            mouse,
            {
                "type": "mouseReleased",
                "x": x1,
                "y": y1,
                "button": "left",
                "buttons": 0,
                "clickCount": 1,
            },
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close", timeout=5)
        with contextlib.suppress(Exception):
            self.process.wait(timeout=10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read_fd)


# Measured in the page: every display equation, code cell, output and figure of the
# article, against the text column (the article's content box).
LAYOUT_JS = r"""
(() => {
  const article = document.querySelector("article.bd-article") ||
                  document.querySelector('[role="main"]');
  if (!article) return null;
  const style = getComputedStyle(article), box = article.getBoundingClientRect();
  const left = box.left + parseFloat(style.paddingLeft);
  const right = box.right - parseFloat(style.paddingRight);
  const shown = (el) => { const r = el.getBoundingClientRect();
                          return r.width > 0 && r.height > 0 && el.offsetParent !== null; };
  const overflows = (el) => { const r = el.getBoundingClientRect();
    return el.scrollWidth > el.clientWidth + 1 || r.right > right + 1 || r.left < left - 1; };
  // A display equation may hide its overflow inside MathJax's own boxes: look at the parts.
  const partsStickOut = (el) => [...el.querySelectorAll("*")].some((part) => {
    if (part.closest("mjx-assistive-mml")) return false;
    const r = part.getBoundingClientRect();
    return r.width > 0 && (r.right > right + 1 || r.left < left - 1);
  });
  const say = (el) => (el.textContent || el.getAttribute("src") || "").replace(/\s+/g, " ")
                        .trim().slice(0, 70);
  const report = {column: Math.round(right - left), equations: [], code: [], outputs: [],
                  tables: [], figures: []};
  for (const el of article.querySelectorAll('mjx-container[display="true"]'))
    if (shown(el) && (overflows(el) || partsStickOut(el))) report.equations.push(say(el));
  for (const el of article.querySelectorAll("div.highlight pre")) {
    if (!shown(el) || !overflows(el)) continue;
    (el.closest(".cell_output") ? report.outputs : report.code).push(say(el));
  }
  for (const el of article.querySelectorAll(".cell_output > .output, .cell_output table, " +
                                              ".cell_output .jupyter-widgets"))
    if (shown(el) && el.getBoundingClientRect().right > right + 1) report.outputs.push(say(el));
  for (const table of article.querySelectorAll("table")) {
    if (!shown(table) || table.closest(".cell_output")) continue;
    // Fits, or sits in a box that scrolls it as a whole.
    let box = table.parentElement;
    const scrolls = box && ["auto", "scroll"].includes(getComputedStyle(box).overflowX) &&
                    box.getBoundingClientRect().right <= right + 1;
    if (!scrolls && table.getBoundingClientRect().right > right + 1)
      report.tables.push(say(table));
    for (const cell of table.querySelectorAll("td, th")) {
      const text = cell.textContent.trim();
      if (!/^[-+]?[\d.,]+(e[-+]?\d+)?%?$/i.test(text)) continue;
      // The lines the number itself is set on (a tall row alone, made by a neighbour's
      // wrapped text, is no wrapped number).
      const tops = new Set();
      const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        if (!node.textContent.trim()) continue;
        const range = document.createRange();
        range.selectNodeContents(node);
        for (const r of range.getClientRects()) if (r.width > 0) tops.add(Math.round(r.top));
      }
      if (tops.size > 1) report.tables.push("wrapped number " + text);
    }
  }
  report.broken = [...document.querySelectorAll("img")].filter(
      (img) => img.complete && img.naturalWidth === 0 && img.getAttribute("src"))
      .map((img) => img.getAttribute("src").slice(0, 80));
  for (const img of article.querySelectorAll("img")) {
    if (!shown(img) || !img.naturalWidth || img.naturalWidth < 50) continue;
    const scale = img.getBoundingClientRect().width / img.naturalWidth;
    if (scale < MIN_SCALE) report.figures.push(say(img).slice(0, 40) + " at " +
                                               Math.round(100 * scale) + "%");
  }
  report.downloads = [...document.querySelectorAll(".dropdown-download-buttons a, " +
                      "a.btn-download-source-button, a.btn-download-notebook-button")]
                      .map((a) => a.href);
  report.links = [...article.querySelectorAll("a[href]")].map((a) => a.href);
  return report;
})()
"""

# The sliders of the page, each with the figure it drives: the pictures shown in the
# same notebook output.
SLIDERS_JS = r"""
(() => {
  const out = [];
  document.querySelectorAll(".cell_output").forEach((cell, c) => {
    cell.querySelectorAll(".widget-hslider, .widget-vslider")
        .forEach((slider, s) => out.push({cell: c, slider: s}));
  });
  return out;
})()
"""

SLIDER_STATE_JS = r"""
((c, s, scroll) => {
  const cell = document.querySelectorAll(".cell_output")[c];
  const slider = cell.querySelectorAll(".widget-hslider, .widget-vslider")[s];
  if (scroll) { cell.scrollIntoView({block: "center"});
                if (document.activeElement) document.activeElement.blur(); }
  const handle = slider.querySelector(".noUi-handle") || slider.querySelector("input");
  const track = slider.querySelector(".noUi-target") || slider;
  const imgs = [...cell.querySelectorAll("img")].filter(
      (img) => img.offsetParent !== null && img.getBoundingClientRect().width > 0);
  const rect = (el) => { const r = el.getBoundingClientRect();
                         return {x: r.left, y: r.top, width: r.width, height: r.height}; };
  let figure = null;
  for (const img of imgs) {
    const r = img.getBoundingClientRect();
    figure = figure ? {left: Math.min(figure.left, r.left), top: Math.min(figure.top, r.top),
                       right: Math.max(figure.right, r.right),
                       bottom: Math.max(figure.bottom, r.bottom)}
                    : {left: r.left, top: r.top, right: r.right, bottom: r.bottom};
  }
  const box = cell.getBoundingClientRect();
  return {handle: rect(handle), track: rect(track),
          widget: {x: box.left + scrollX, y: box.top + scrollY, width: box.width,
                   height: box.height},
          vertical: slider.classList.contains("widget-vslider"),
          label: (slider.querySelector(".widget-label") || {}).textContent || "",
          readout: (slider.querySelector(".widget-readout") || {}).textContent || "",
          sources: imgs.map((img) => img.src.slice(-64) + ":" + img.src.length),
          figure: figure && {x: figure.left + scrollX, y: figure.top + scrollY,
                             width: figure.right - figure.left,
                             height: figure.bottom - figure.top}};
})
"""


def _shot_name(page: str, suffix: str = "") -> Path:
    return SHOTS / (page.replace("/", "__").removesuffix(".html") + suffix + ".png")


def _move_sliders(browser: Chromium, page: str) -> list[dict]:
    """Drag every slider of the page from where it is to the far end of its track and
    report whether the figure beside it changed (its pictures and its screenshot)."""
    results = []
    for spot in browser.js(SLIDERS_JS) or []:
        call = f"{SLIDER_STATE_JS}({spot['cell']}, {spot['slider']}, %s)"
        before = browser.js(call % "true")
        name = f"__slider{spot['cell']}-{spot['slider']}"
        browser.screenshot(_shot_name(page, name + "-before"), before["widget"])
        shot_before = (
            browser.screenshot(_shot_name(page, "__figure"), before["figure"])
            if before["figure"]
            else b""
        )
        h, t = before["handle"], before["track"]
        x0, y0 = h["x"] + h["width"] / 2, h["y"] + h["height"] / 2
        if before["vertical"]:
            x1 = x0
            y1 = t["y"] + 2 if y0 > t["y"] + t["height"] / 2 else t["y"] + t["height"] - 2
        else:
            y1 = y0
            x1 = t["x"] + 2 if x0 > t["x"] + t["width"] / 2 else t["x"] + t["width"] - 2
        browser.drag(x0, y0, x1, y1)
        time.sleep(0.4)
        after = browser.js(call % "false")
        browser.screenshot(_shot_name(page, name + "-after"), before["widget"])
        shot_after = (
            browser.screenshot(_shot_name(page, "__figure"), before["figure"])
            if before["figure"]
            else b""
        )
        results.append(
            {
                "slider": before["label"].strip() or name,
                "from": before["readout"],
                "to": after["readout"],
                "moved": before["readout"] != after["readout"],
                "changed": before["sources"] != after["sources"] or shot_before != shot_after,
                "track_px": round(t["height"] if before["vertical"] else t["width"]),
            }
        )
    _shot_name(page, "__figure").unlink(missing_ok=True)
    return results


def _visit(browser: Chromium, url: str, page: str) -> dict:
    browser.open(url + page)
    browser.screenshot(_shot_name(page))
    layout = browser.js(LAYOUT_JS.replace("MIN_SCALE", str(MIN_FIGURE_SCALE))) or {}
    dom = browser.js("document.documentElement.outerHTML")
    sliders = _move_sliders(browser, page)
    return {"dom": dom, "layout": layout, "sliders": sliders}


@pytest.fixture(scope="module")
def visits(site_url):
    """Every page, visited once: its DOM after scripts ran, its layout and its sliders."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*__slider*.png"):  # from an earlier run, maybe of other widgets
        old.unlink()
    with tempfile.TemporaryDirectory() as profile:
        browser = Chromium(profile)
        try:
            result = {page: _visit(browser, site_url, page) for page in _pages()}
        finally:
            browser.close()
    counts = {
        page: {
            "equations": len(v["layout"].get("equations", [])),
            "code": len(v["layout"].get("code", [])),
            "outputs": len(v["layout"].get("outputs", [])),
            "tables": len(v["layout"].get("tables", [])),
            "shrunk figures": len(v["layout"].get("figures", [])),
            "sliders": len(v["sliders"]),
            "frozen sliders": sum(not s["changed"] for s in v["sliders"]),
            "narrowest slider track px": min((s["track_px"] for s in v["sliders"]), default=None),
        }
        for page, v in result.items()
    }
    (SHOTS / "layout.json").write_text(
        json.dumps(
            {
                "counts": counts,
                "details": {
                    p: {"layout": v["layout"], "sliders": v["sliders"]} for p, v in result.items()
                },
            },
            indent=1,
        )
    )
    return result


@pytest.fixture(scope="module")
def rendered(visits):
    return {page: visit["dom"] for page, visit in visits.items()}


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
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if mime in out.get("data", {})
    )


@pytest.mark.parametrize("page", _pages())
def test_page_shows_no_raw_tex(rendered, page):
    dom = rendered[page]
    assert dom, f"{page}: Chromium returned no DOM"
    text = _visible_text(dom)
    hits = sorted({m.group(0) for m in RAW_TEX.finditer(text)})
    if hits:
        where = RAW_TEX.search(text).start()
        pytest.fail(f"{page} shows raw TeX {hits}: ...{text[max(0, where - 80) : where + 80]}...")
    static = (SITE / page).read_text(encoding="utf-8")
    if 'class="math' in static:
        assert "<mjx-container" in dom, f"{page} has math that MathJax did not render"


@pytest.mark.parametrize("page", _pages())
def test_page_images_load_and_figures_are_all_there(rendered, visits, page):
    dom = rendered[page]
    srcs = re.findall(r'<img\b[^>]*?\bsrc="([^"]+)"', dom)
    for src in srcs:
        src = html.unescape(src)
        if src.startswith("blob:"):  # a widget's picture, made in the page from its state
            continue
        if src.startswith("data:"):
            payload = src.split(",", 1)[1]
            assert len(base64.b64decode(payload)) > 100, f"{page}: empty inline image"
            continue
        assert not src.startswith(("http:", "https:")) or "127.0.0.1" in src, (
            f"{page} loads an image from outside the site: {src}"
        )
        target = (SITE / page).parent / urllib.parse.unquote(src.split("?")[0].split("#")[0])
        assert target.resolve().is_file() and target.stat().st_size > 0, (
            f"{page}: broken image {src}"
        )
    broken = visits[page]["layout"].get("broken", [])
    assert not broken, f"{page}: images that did not load: {broken[:3]}"
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
    assert re.search(r'class="lm-Widget[^"]*\bjupyter-widgets\b', dom), (
        f"{page} has a widget in its notebook that the widget JavaScript did not render"
    )
    if "widget-slider" in _source_widgets(page):
        assert re.search(r'class="[^"]*widget-(hslider|vslider|slider)', dom), (
            f"{page} has sliders in its notebook but none rendered"
        )


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


def _notebook_pages() -> list[str]:
    return [p for p in _pages() if p.startswith(("chapters/", "exercises/", "solutions/"))]


def _chapters_with_exercises() -> list[str]:
    return [
        p
        for p in _pages()
        if p.startswith("chapters/")
        and (ROOT / "exercises" / Path(p).name).with_suffix(".md").exists()
    ]


@pytest.mark.parametrize("page", _pages())
def test_equations_code_and_outputs_fit_the_column(visits, page):
    layout = visits[page]["layout"]
    assert layout, f"{page}: no article to measure"
    wide = {
        kind: layout[kind] for kind in ("equations", "code", "outputs", "tables") if layout[kind]
    }
    assert not wide, (
        f"{page}: wider than the {layout['column']} px column at {WIDTH} px: "
        + "; ".join(f"{len(v)} {k}: {v[:3]}" for k, v in wide.items())
    )


@pytest.mark.parametrize("page", _pages())
def test_figures_are_shown_at_nearly_their_size(visits, page):
    shrunk = visits[page]["layout"]["figures"]
    assert not shrunk, (
        f"{page}: {len(shrunk)} figures shown below "
        f"{MIN_FIGURE_SCALE:.0%} of their pixel width: {shrunk[:3]}"
    )


@pytest.mark.parametrize("page", _pages())
def test_every_slider_moves_its_figure_on_the_static_page(visits, page):
    for slider in visits[page]["sliders"]:
        assert slider["moved"], f"{page}: slider {slider['slider']} did not move when dragged"
        assert slider["changed"], (
            f"{page}: slider {slider['slider']} moved from "
            f"{slider['from']} to {slider['to']}, the figure did not"
        )
        assert slider["track_px"] >= 100, (
            f"{page}: slider {slider['slider']} has a "
            f"{slider['track_px']} px track, too short to use"
        )


@pytest.mark.parametrize("page", _chapters_with_exercises())
def test_chapter_links_to_its_exercises(visits, page):
    target = "exercises/" + Path(page).name
    links = [urllib.parse.urlparse(u).path for u in visits[page]["layout"]["links"]]
    assert any(path.endswith(target) for path in links), (
        f"{page} has no link to its exercises, {target}"
    )


@pytest.mark.parametrize("page", _notebook_pages())
def test_download_buttons_give_the_markdown_and_the_notebook(visits, site_url, page):
    links = visits[page]["layout"]["downloads"]
    kinds = {Path(urllib.parse.urlparse(u).path).suffix for u in links}
    assert {".md", ".ipynb"} <= kinds, f"{page}: download buttons {links}, want .md and .ipynb"
    for link in links:
        if not link.endswith((".md", ".ipynb")):
            continue
        with urllib.request.urlopen(link, timeout=10) as response:
            body = response.read()
        assert body, f"{page}: download {link} is empty"
        if link.endswith(".ipynb"):
            notebook = json.loads(body)
            assert notebook.get("cells"), f"{page}: {link} is not a notebook with cells"


def test_search_shows_no_tex_and_no_solutions(site_url):
    """Search for words that the chapters, the exercises and the solutions all use: the
    results show prose snippets without TeX source, and no solutions page."""
    with tempfile.TemporaryDirectory() as profile:
        browser = Chromium(profile)
        try:
            browser.open(site_url + "search.html?q=log+determinant")
            deadline = time.monotonic() + 30
            results = []
            while time.monotonic() < deadline:
                results = browser.js(
                    "[...document.querySelectorAll('#search-results li')].map((li) => "
                    "({href: (li.querySelector('a') || {}).href || '', "
                    "snippet: (li.querySelector('p.context') || {}).textContent || null}))"
                )
                if results and all(r["snippet"] is not None for r in results):
                    break
                time.sleep(0.3)
            browser.screenshot(SHOTS / "search.png")
        finally:
            browser.close()
    assert results, "searching the website for 'log determinant' found nothing"
    pages = {urllib.parse.urlparse(r["href"]).path for r in results}
    assert any("/exercises/" in p for p in pages), f"no exercise page among {sorted(pages)}"
    assert not any("/solutions/" in p for p in pages), (
        f"search shows solutions pages: {sorted(p for p in pages if '/solutions/' in p)}"
    )
    for result in results:
        tex = sorted({m.group(0) for m in RAW_TEX.finditer(result["snippet"] or "")})
        assert not tex, f"search snippet for {result['href']} shows TeX {tex}: {result['snippet']}"
