"""The page holds its prose: a chapter checks each empirical sentence of its text against
the numbers it has just printed.

Training results are not bit-identical across CPUs, so a sentence written from one run
("the MAF's test score is worse") can be false on the reader's machine. A chapter states
such a sentence only next to a cell that calls :func:`holds` with the sentence's words
and the condition that makes it true; a run that contradicts the text stops the build
there, instead of printing a page whose prose disagrees with its numbers.

``tests/test_claims.py`` reads every chapter: each quote passed to ``holds`` must appear
in the chapter's text, and each sentence that states an empirical comparison must contain
a quote that a cell holds.
"""

from __future__ import annotations

__all__ = ["ClaimContradicted", "holds"]


class ClaimContradicted(AssertionError):
    """A sentence of the text is contradicted by the numbers the page printed."""


def holds(claim: str, condition: object, printed: str = "") -> None:
    """Check that ``condition`` is true, the condition under which the text's sentence
    ``claim`` (quoted word for word from the chapter) describes this run.

    Args:
        claim: the words of the chapter's sentence that state the result.
        condition: a bool (or a one-element tensor or array) computed from the numbers the
            page printed.
        printed: those numbers, for the message when the claim fails.

    Raises:
        TypeError: when ``claim`` is not a non-empty string.
        ClaimContradicted: when ``condition`` is false.
    """
    if not isinstance(claim, str) or not claim.strip():
        raise TypeError(
            f"claim must be the words of the text that state the result, a non-empty "
            f"string; got {claim!r}"
        )
    if not bool(condition):
        detail = f" The page printed: {printed}." if printed else ""
        raise ClaimContradicted(
            f'The text says "{claim}", but this run contradicts it.{detail} Run the '
            "chapter again from the top (its seeds are fixed); if the numbers still "
            "disagree, the sentence has to change with them."
        )
