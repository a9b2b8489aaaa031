"""The shared form of the exercise checks' tests.

Each ``tests/test_checks_*.py`` lists two tables: ``WRONG``, realistic wrong answers with
a regular expression that the check's message must match (the named mistake), and
``RIGHT``, right answers written in different ways, in float32 and float64. The tests
assert each row; ``tools/check_report.py`` counts them.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from nfcourse.checks import ExerciseError


@dataclass
class Wrong:
    check: Callable
    id: str
    answer: Any
    named: str  # regex on the message: the mistake it must name

    def param(self):
        return pytest.param(self, id=f"{self.check.__name__}-{self.id}")


@dataclass
class Right:
    check: Callable
    id: str
    answer: Any

    def param(self):
        return pytest.param(self, id=f"{self.check.__name__}-{self.id}")


def outcome(row) -> tuple[bool, str]:
    """``(raised ExerciseError, message or output)`` of running ``row.check`` on the
    answer, with the global RNG and default dtype restored afterwards."""
    dtype = torch.get_default_dtype()
    with torch.random.fork_rng(), contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            row.check(row.answer)
        except ExerciseError as error:
            return True, str(error)
        finally:
            torch.set_default_dtype(dtype)
    return False, out.getvalue()


def assert_wrong(row: Wrong) -> None:
    raised, message = outcome(row)
    assert raised, f"the check accepted a wrong answer: {message}"
    assert re.search(row.named, message, re.IGNORECASE | re.DOTALL), message


def assert_right(row: Right) -> None:
    raised, message = outcome(row)
    assert not raised, message
    assert "Correct" in message


def stub(*args, **kwargs):
    raise NotImplementedError()
