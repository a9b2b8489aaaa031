"""The prose of the chapters is held by the pages: each quote that a cell passes to
``nfcourse.claims.holds`` appears in the chapter's text, and each sentence of chapters
7-12 that states an empirical comparison contains such a quote, or is listed in
``tests/claims_unheld/<chapter>.txt`` with the reason it needs no run to be true (a derivation, a
citation, a number from a committed results file that a test re-evaluates).

How sentences are found: the text outside code cells, maths and directive options is cut
into sentences, and a sentence is a comparison when it holds one of the words of
``COMPARISON`` (worse, better, beats, smaller, larger, faster, "all three", "no flow",
"about <number>", ...)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))
HELD_FROM = 7  # chapters whose comparisons must all be held
UNHELD = ROOT / "tests" / "claims_unheld"

CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)
FENCE = re.compile(r"^(`{3,}|:{3,})[^\n]*\n.*?^\1\s*$", re.S | re.M)
DISPLAY_MATH = re.compile(r"\$\$.*?\$\$", re.S)
FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)
COMPARISON = re.compile(
    r"\b(worse|better|best|beats?|beaten|outperforms?|wins?|loses?|lower|higher|smaller|"
    r"larger|faster|slower|sharper|closer|fewer|less than|more than|all three|all four|"
    r"every (?:density|model|flow|seed|run|target)|no flow|none of|about \d|roughly \d|"
    r"twice|times (?:as|more|less|faster|slower)|as much as)\b",
    re.I,
)


def normalise(text: str) -> str:
    text = re.sub(r"\{[a-z]+\}`([^`]*)`", r"\1", text)  # roles: {cite}`x` -> x
    text = re.sub(r"[*_`]", "", text)
    text = text.replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", " ", text).strip().lower()


def split(path: Path) -> tuple[list[str], str]:
    """The code of the chapter's cells and its prose."""
    text = FRONT_MATTER.sub("", path.read_text())
    code = [m.group(1) for m in CODE_CELL.finditer(text)]
    prose = CODE_CELL.sub("\n\n", text)
    prose = FENCE.sub("\n\n", prose)
    prose = DISPLAY_MATH.sub(" ", prose)
    prose = re.sub(r"<!--.*?-->", " ", prose, flags=re.S)
    prose = "\n".join(
        line for line in prose.splitlines() if not line.lstrip().startswith(("#", "(", ":"))
    )
    return code, prose


def sentences(prose: str) -> list[str]:
    out = []
    for paragraph in re.split(r"\n\s*\n", prose):
        flat = normalise(paragraph)
        out += [s for s in re.split(r"(?<=[.!?])\s+(?=[a-z0-9(\"])", flat) if s]
    return out


def held_quotes(code: list[str]) -> list[str]:
    quotes = []
    for cell in code:
        try:
            tree = ast.parse(
                "\n".join(line for line in cell.splitlines() if not line.startswith(("%", "!")))
            )
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "holds"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                quotes.append(node.args[0].value)
    return quotes


def unheld() -> dict[str, set[str]]:
    """``tests/claims_unheld/<chapter>.txt``: ``words of the sentence | reason`` per line."""
    table: dict[str, set[str]] = {}
    for path in sorted(UNHELD.glob("*.txt")):
        for line in path.read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            quote, _, reason = (part.strip() for part in line.partition("|"))
            assert reason, f"{path.name}: give the reason why {quote!r} needs no run"
            table.setdefault(path.stem, set()).add(normalise(quote))
    return table


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_held_quote_is_in_the_chapter_text(path: Path) -> None:
    code, prose = split(path)
    text = normalise(prose)
    missing = [q for q in held_quotes(code) if normalise(q) not in text]
    assert not missing, f"{path.name}: holds() quotes words its text does not say: {missing}"


@pytest.mark.parametrize(
    "path", [p for p in CHAPTERS if int(p.stem[:2]) >= HELD_FROM], ids=lambda p: p.stem
)
def test_every_comparison_in_the_text_is_held_by_the_page(path: Path) -> None:
    code, prose = split(path)
    quotes = [normalise(q) for q in held_quotes(code)]
    allowed = unheld().get(path.stem, set())
    unchecked = [
        s
        for s in sentences(prose)
        if COMPARISON.search(s)
        and not any(q in s for q in quotes)
        and not any(a in s for a in allowed)
    ]
    assert not unchecked, (
        f"{path.name} states comparisons that no cell holds (hold each with "
        "nfcourse.claims.holds, or list it in tests/claims_unheld/<chapter>.txt with the "
        "reason it "
        "needs no run):\n- " + "\n- ".join(unchecked)
    )


def test_unheld_entries_are_still_in_their_chapters() -> None:
    prose = {p.stem: " ".join(sentences(split(p)[1])) for p in CHAPTERS}
    stale = [
        (stem, quote)
        for stem, quotes in unheld().items()
        for quote in quotes
        if quote not in prose.get(stem, "")
    ]
    assert not stale, f"tests/claims_unheld/ lists text the chapters no longer say: {stale}"
