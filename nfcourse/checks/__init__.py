"""Feedback for the exercises: each check says what is wrong, not just that something is.

Generic checks live here; each chapter's checks live in a module named like the chapter's
flow module (``nfcourse.checks.change_of_variables``, ``nfcourse.checks.planar``, ...).

A check returns quietly with a short confirmation when the answer is right, and raises
``ExerciseError`` with a message a student can act on when it is not (for example "your
log-det differs from the autograd Jacobian by 0.7 at sample 3").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import testing

__all__ = ["ExerciseError", "call_student", "check_close", "check_transform"]


class ExerciseError(AssertionError):
    """The answer to an exercise is not right yet; the message says how."""


def call_student(fn: Callable, *args, name: str | None = None):
    """Call the student's function, turning the stub's ``NotImplementedError`` into a
    message that says which exercise is still open."""
    name = name or getattr(fn, "__name__", "your function")
    try:
        return fn(*args)
    except NotImplementedError:
        raise ExerciseError(
            f"{name} is not written yet: replace `raise NotImplementedError()` with your code"
        ) from None


def check_close(got, expected, what: str, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    """Compare the student's tensor ``got`` with ``expected`` element by element."""
    if not isinstance(got, Tensor):
        raise ExerciseError(f"{what} should be a torch.Tensor, got {type(got).__name__}")
    expected = torch.as_tensor(expected)
    if got.shape != expected.shape:
        raise ExerciseError(
            f"{what} has shape {tuple(got.shape)}; expected {tuple(expected.shape)}"
        )
    got_, exp_ = got.detach().to(torch.float64), expected.detach().to(torch.float64)
    if not torch.isfinite(got_).all():
        bad = int((~torch.isfinite(got_)).flatten().nonzero()[0])
        raise ExerciseError(f"{what} contains NaN or inf (first at flat index {bad})")
    diff = (got_ - exp_).abs()
    ok = diff <= atol + rtol * exp_.abs()
    if not bool(ok.all()):
        worst = int(diff.flatten().argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), diff.shape))
        where = f"sample {index[0]}" if len(index) == 1 else f"index {index}"
        raise ExerciseError(
            f"{what} differs from the expected value by {float(diff.flatten()[worst]):.3g} at "
            f"{where}: got {float(got_.flatten()[worst]):.6g}, "
            f"expected {float(exp_.flatten()[worst]):.6g}"
        )
    print(f"Correct: {what} matches ({got.numel()} values, largest difference "
          f"{float(diff.max()):.1e}).")


def check_transform(transform, dim: int, n: int = 8, atol: float = 1e-6,
                    invertible: bool = True, seed: int = 0) -> None:
    """Check a student's transform: batch shapes, log-det against the autograd Jacobian,
    and (when ``invertible``) the round trip, in float64 on random points."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=g, dtype=torch.float64)
    name = type(transform).__name__
    try:
        transform = transform.double()
        x, log_det = transform.forward(z)
        if x.shape != (n, dim) or log_det.shape != (n,):
            raise ExerciseError(
                f"{name}.forward on a batch of shape {(n, dim)} returned shapes "
                f"{tuple(x.shape)} and {tuple(log_det.shape)}; expected {(n, dim)} and {(n,)}"
            )
        err = testing.log_det_error(transform, z)
        if not bool((err <= atol).all()):
            k = int(err.argmax())
            raise ExerciseError(
                f"your log-det differs from the autograd Jacobian by {float(err[k]):.3g} at "
                f"sample {k}; recheck the derivative of each step"
            )
        if invertible:
            point_err, log_det_err = testing.round_trip_error(transform, z)
            if not bool((point_err <= atol).all()):
                k = int(point_err.argmax())
                raise ExerciseError(
                    f"inverse(forward(z)) misses z by {float(point_err[k]):.3g} at sample {k}"
                )
            if not bool((log_det_err <= atol).all()):
                k = int(log_det_err.argmax())
                raise ExerciseError(
                    f"the inverse log-det is not minus the forward log-det: they sum to "
                    f"{float(log_det_err[k]):.3g} at sample {k}"
                )
    except NotImplementedError:
        raise ExerciseError(
            f"{name} is not finished: replace `raise NotImplementedError()` with your code"
        ) from None
    print(f"Correct: {name} passes the shape, log-det"
          + (" and round-trip" if invertible else "") + f" checks on {n} points.")
