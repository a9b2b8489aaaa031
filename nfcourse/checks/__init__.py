"""Feedback for the exercises: each check says what is wrong, not just that something is.

Generic checks live here; each chapter's checks live in a module named like the chapter's
flow module (``nfcourse.checks.change_of_variables``, ``nfcourse.checks.planar``, ...).

A check returns quietly with a short confirmation when the answer is right, and raises
``ExerciseError`` with a message a student can act on when it is not (for example "your
log-det differs from the autograd Jacobian by 0.7 at sample 3").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .. import testing
from ..validation import check_positive_int
from ._toolkit import (
    ExerciseError,
    Slip,
    as_number,
    as_tensor,
    check_gradients,
    compare,
    describe_difference,
    run,
    tolerances,
)

__all__ = [
    "ExerciseError",
    "Slip",
    "as_number",
    "as_tensor",
    "call_student",
    "check_close",
    "check_gradients",
    "check_transform",
    "compare",
    "describe_difference",
    "run",
    "tolerances",
]


def call_student(fn: Callable[..., Any], *args: Any, name: str | None = None) -> Any:
    """Call the student's function; the stub's ``NotImplementedError`` and the usual Python
    errors become messages that say what happened (see ``run``)."""
    return run(fn, *args, name=name)


def check_close(
    got: object, expected: object, what: str, atol: float = 1e-6, rtol: float = 1e-5
) -> None:
    """Compare the student's tensor ``got`` with ``expected`` element by element, with at
    least the tolerance of ``got``'s dtype, and describe the structure of a mismatch."""
    expected = torch.as_tensor(expected)
    got = as_tensor(got, what, tuple(expected.shape))
    largest = compare(got, expected, what, atol=atol, rtol=rtol)
    print(f"Correct: {what} matches ({got.numel()} values, largest difference {largest:.1e}).")


def _pair(out: object, name: str, first: str) -> tuple[Any, Any]:
    """The pair a transform returns, or an ``ExerciseError`` that says what came back."""
    if not (isinstance(out, tuple | list) and len(out) == 2):
        kind = type(out).__name__ + (
            f" of shape {tuple(out.shape)}" if isinstance(out, Tensor) else ""
        )
        raise ExerciseError(f"{name} should return a pair ({first}, log_det), got a {kind}")
    return tuple(out)


def check_transform(
    transform: nn.Module,
    dim: int,
    n: int = 8,
    atol: float = 1e-6,
    invertible: bool = True,
    seed: int = 0,
    scale: float = 1.0,
    quiet: bool = False,
    log_det_slips: Callable[[Tensor, Tensor], list[Slip]] | None = None,
) -> None:
    """Check a student's transform in float64 on ``n`` random points of ``R^dim`` (times
    ``scale``): the shapes (B, D) and (B,), the log-det against the autograd Jacobian, and
    (when ``invertible``) the round trip and the inverse's log-det, naming the usual slips
    (the inverse's log-det reported by the forward pass, a log-det with a constant missing,
    a per-coordinate log-det, an input modified in place). ``log_det_slips(z, expected)``
    may add the exercise's own slips of the forward log-det."""
    dim, n = check_positive_int(dim, "dim"), check_positive_int(n, "n")
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, dim, generator=g, dtype=torch.float64)
    name = type(transform).__name__
    transform = transform.double()
    x, log_det = _pair(run(transform.forward, z, name=f"{name}.forward"), f"{name}.forward", "x")
    x = as_tensor(x, f"the x of {name}.forward", (n, dim), ("batch", "coordinates"))
    log_det = as_tensor(log_det, f"the log-det of {name}.forward", (n,), ("batch",))
    expected = testing.autograd_log_abs_det(lambda v: transform.forward(v)[0], z)
    compare(
        log_det,
        expected,
        f"the log-det of {name}.forward",
        atol=atol,
        slips=[
            Slip(
                "it is minus log|det J| of the forward map, the inverse's log-det; the "
                "forward pass returns log|det dx/dz|, which is positive where the map "
                "stretches",
                -expected,
            ),
            Slip("it is |det J| itself; return its logarithm", expected.exp()),
            *(log_det_slips(z, expected) if log_det_slips else []),
        ],
        advice="Derive log|det dx/dz| step by step; autograd's Jacobian is the reference",
    )
    if invertible:
        x_ref = x.detach().to(torch.float64)
        z_back, log_det_inv = _pair(
            run(transform.inverse, x_ref, name=f"{name}.inverse"), f"{name}.inverse", "z"
        )
        z_back = as_tensor(z_back, f"the z of {name}.inverse", (n, dim), ("batch", "coordinates"))
        log_det_inv = as_tensor(log_det_inv, f"the log-det of {name}.inverse", (n,), ("batch",))
        compare(
            z_back,
            z,
            f"inverse(forward(z)) of {name}",
            atol=atol,
            like=(x,),
            advice="Undo the forward steps in reverse order, each with its own inverse",
        )
        compare(
            log_det_inv,
            -expected,
            f"the log-det of {name}.inverse",
            atol=atol,
            like=(x,),
            slips=[
                Slip(
                    "the inverse's log-det is the forward one; it must be its negative "
                    "(the inverse shrinks where the forward map stretches)",
                    expected,
                ),
            ],
        )
    if not quiet:
        print(
            f"Correct: {name} passes the shape, log-det"
            + (" and round-trip" if invertible else "")
            + f" checks on {n} points."
        )
