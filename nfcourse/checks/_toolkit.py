"""The shared machinery of the exercise checks.

A check feeds the student's function inputs chosen so that no wrong answer can be right
by luck, and when the answer is wrong it says *which* mistake fits the numbers:

* ``run`` calls the student's code, turns the errors a student meets (the stub's
  ``NotImplementedError``, ``math.log`` of a negative number, unpacking ``torch.split``,
  shapes that do not line up, mixed dtypes) into messages that say what happened, and
  notices an input modified in place;
* ``as_tensor`` / ``as_number`` accept the answer or say what came back instead (a Python
  number, a numpy array, a tuple, ``None``) and which axis a wrong shape points to;
* ``compare`` measures the answer against the reference with a tolerance that follows the
  answer's dtype (float32 answers get float32 tolerances); when they differ it first tries
  every known slip of the exercise (``Slip``: a small function that makes the mistake on
  the same inputs) and names the one that matches, then describes the structure of the
  difference: NaN or inf, overflow on large inputs, a sign flip, a constant offset (a
  missing constant term), a constant factor, errors only at edge points or in one group of
  samples;
* ``check_gradients`` says which input or parameter gradients do not reach;
* ``compare_gradients`` compares the answer's gradients with the reference's (and
  ``compare_gradients_numerically`` with finite differences) and names a computation cut
  from the autograd graph (detach / no_grad / .item() / numpy) whose values are right.
"""

from __future__ import annotations

import math
import re
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ExerciseError",
    "Slip",
    "tolerances",
    "matches",
    "run",
    "as_tensor",
    "as_number",
    "compare",
    "describe_difference",
    "check_gradients",
    "compare_gradients",
    "compare_gradients_numerically",
    "known_constants",
]

F64 = torch.float64
_PACKAGE = str(Path(__file__).resolve().parents[1])


class ExerciseError(AssertionError):
    """The answer to an exercise is not right yet; the message says how."""


# --- tolerances ---------------------------------------------------------------------------


def tolerances(*values: object) -> tuple[float, float]:
    """``(atol, rtol)`` for the least precise floating dtype among ``values``: tight for
    float64, float32's resolution for float32, wide for half precision."""
    dtypes = [v.dtype for v in values if isinstance(v, Tensor) and v.is_floating_point()]
    eps = max((torch.finfo(d).eps for d in dtypes), default=torch.finfo(F64).eps)
    if eps <= torch.finfo(F64).eps:
        return 1e-7, 1e-7
    if eps <= torch.finfo(torch.float32).eps:
        return 2e-4, 1e-4
    return 5e-2, 2e-2


def _f64(t: object) -> Tensor:
    """``t`` as a detached float64 tensor."""
    return torch.as_tensor(t).detach().to(F64)


def matches(got: Tensor, expected: Tensor, atol: float, rtol: float) -> bool:
    """Elementwise closeness, where NaN matches NaN and an infinity matches itself
    (so that a slip that gives NaN somewhere can still be recognised)."""
    got, expected = _f64(got), _f64(expected)
    if got.shape != expected.shape:
        return False
    same_special = (got.isnan() & expected.isnan()) | (got.isinf() & (got == expected))
    finite = torch.isfinite(got) & torch.isfinite(expected)
    close = (got - expected).abs() <= atol + rtol * expected.abs()
    return bool((same_special | (finite & close)).all())


# --- calling the student's code -----------------------------------------------------------


def _student_line(error: BaseException) -> str:
    """The last line of the traceback that is the student's code (not torch, not us)."""
    frames = traceback.extract_tb(error.__traceback__)
    for frame in reversed(frames):
        name = frame.filename
        if "site-packages" in name or name.startswith(_PACKAGE) or "/torch/" in name:
            continue
        if frame.line:
            return f' (in the line "{frame.line.strip()}")'
    return ""


_ERROR_HINTS: list[tuple[type | tuple[type, ...], str, str]] = [
    (
        ValueError,
        r"math domain error",
        "math.log or math.sqrt was given a negative number (or math.log a zero). A Python "
        "math function works on one number; here the quantity can be negative, so take the "
        "absolute value before the logarithm, and use torch functions on tensors",
    ),
    (
        ValueError,
        r"Expected parameter .* to satisfy the constraint",
        "a torch.distributions parameter is outside its range: a scale must be positive, so "
        "pass the absolute value (or the exponential of a log-scale)",
    ),
    (
        TypeError,
        r"must be real number, not Tensor|only (one|integer) element tensors",
        "a math function (math.log, math.exp, ...) was given a tensor of several values: use "
        "the torch function (torch.log, torch.exp, ...), which works elementwise",
    ),
    (
        (RuntimeError, ValueError),  # the error's type depends on the torch version
        r"only one element tensors|a Tensor with \d+ elements cannot be converted",
        "a tensor of several values was turned into one Python number (float(), .item() or a "
        "math function): use torch functions, which work elementwise",
    ),
    (
        ValueError,
        r"too many values to unpack|not enough values to unpack",
        "unpacking into two halves failed: torch.split(z, 2) cuts pieces of SIZE 2 (and along "
        "dim 0, the batch, by default), not two pieces. Use z.chunk(2, dim=1), or "
        "torch.split(z, d, dim=1) with d the size of a half, or index z[:, :d] and z[:, d:]",
    ),
    (
        RuntimeError,
        r"expected (scalar type|both vectors to have same dtype|m1 and m2 to "
        r"have the same dtype)|found dtype|dtype",
        "float32 and float64 tensors were mixed: create new tensors with the input's dtype "
        "(torch.zeros(n, dtype=x.dtype), torch.rand(shape, dtype=x.dtype))",
    ),
    (
        RuntimeError,
        r"leaf Variable that requires grad|modified by an inplace operation",
        "an in-place operation (+=, [...] =, .add_, ...) changed a tensor that autograd needs: "
        "build a new tensor instead (x = x + 1, torch.cat, torch.where)",
    ),
    (
        RuntimeError,
        r"size of tensor a|must match the size|shapes cannot be multiplied|"
        r"mat1 and mat2|inconsistent tensor size|size mismatch|"
        r"expected .*size|invalid for input of size|shape .* is invalid",
        "two tensors with shapes that do not line up met in one operation. Points are "
        "(B, D), batch first: reduce over the coordinates with dim=1 (or dim=-1), and "
        "check which operand needs unsqueeze(1) or unsqueeze(0) to broadcast",
    ),
    (
        IndexError,
        r"out of (bounds|range)",
        "an index is out of range: an index computed from the data reaches one past the end "
        "(floor(K * x) = K at x = 1, for example)",
    ),
    (
        IndexError,
        r"too many indices|Dimension out of range",
        "a tensor was indexed with more axes than it has: check whether it is (B,) or (B, D)",
    ),
    (
        TypeError,
        r"not subscriptable|not iterable|cannot unpack",
        "something that is not a tensor or a tuple was indexed or unpacked: check what each "
        "call returns (a Transform returns a pair (x, log_det))",
    ),
    (
        RecursionError,
        r"",
        "a function calls itself without end: in a Transform, write _forward and _inverse "
        "(forward and inverse call them)",
    ),
]


def explain_error(error: Exception, name: str, hint: str = "") -> str:
    """A message for a Python error raised by the student's ``name``: the error, the
    student's line that raised it, and what such an error usually means."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = f"{type(error).__name__}: {first}"
    explained = None
    for kind, pattern, explanation in _ERROR_HINTS:
        if isinstance(error, kind) and re.search(pattern, str(error), re.IGNORECASE):
            explained = explanation
            break
    return (
        f"{name} raised {text}{_student_line(error)}. "
        + (explained or "read the line above and the shapes of the tensors it uses")
        + (f". {hint}" if hint else "")
    )


def run(
    fn: Callable[..., Any],
    *args: Any,
    name: str | None = None,
    hint: str = "",
    passthrough: tuple[type[BaseException], ...] = (),
    **kwargs: Any,
) -> Any:
    """Call the student's ``fn``; explain the errors it raises (except those of the types in
    ``passthrough``, which the caller diagnoses itself), and refuse an answer that modified
    one of its tensor inputs in place."""
    name = name or getattr(fn, "__name__", "your function")
    before = [a.detach().clone() if isinstance(a, Tensor) else None for a in args]
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError:
        raise ExerciseError(
            f"{name} is not written yet: replace `raise NotImplementedError()` with your code"
        ) from None
    except (ExerciseError, *passthrough):
        raise
    except Exception as error:  # a bare Python error reaches the student otherwise
        raise ExerciseError(explain_error(error, name, hint)) from None
    for i, (arg, copy) in enumerate(zip(args, before, strict=False)):
        if copy is not None and (arg.shape != copy.shape or not matches(arg, copy, 0, 0)):
            raise ExerciseError(
                f"{name} modified its input in place (argument {i + 1}, shape "
                f"{tuple(copy.shape)}): an operation such as x += ..., x[...] = ..., "
                "x.mul_(...) or x.clamp_(...) changed the caller's tensor. Compute a new "
                "tensor instead (x = x + ..., torch.clamp(x, ...))"
            )
    return out


# --- coercion -----------------------------------------------------------------------------


def _kind(value: object) -> str:
    """What ``value`` is, in words, for a message about an answer of the wrong kind."""
    if value is None:
        return "None (is a `return` missing?)"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int | float):
        return f"a Python number ({value!r})"
    if type(value).__module__ == "numpy" or type(value).__module__.startswith("numpy"):
        return f"a numpy {type(value).__name__}"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def _shape_hint(got: tuple, expected: tuple, axes: Sequence[str] | None) -> str:
    """Why an answer of shape ``got`` may have come out instead of ``expected``."""
    if math.prod(got) == math.prod(expected) and len(got) != len(expected):
        if got == (*expected, 1) or got == (1, *expected):
            return (
                "the same numbers with an extra axis of length 1: drop keepdim=True, "
                "or squeeze that axis"
            )
        return "the same number of values with another shape: reshape or squeeze it"
    if len(got) == 2 and got == expected[::-1] and len(expected) == 2:
        return "it is transposed"
    if len(expected) == 1 and got == ():
        return (
            "one number for the whole batch: the sum (or mean) also ran over the batch "
            "axis; reduce over the coordinates only, with dim=1 or dim=-1"
        )
    if len(expected) == 1 and len(got) == 2 and got[0] == expected[0]:
        return (
            "one value per coordinate: reduce over the coordinates, dim=1, to get one "
            "value per sample"
        )
    if len(expected) == 1 and len(got) == 2 and got[1] == expected[0]:
        return "one value per coordinate of the wrong axis: reduce over dim=0 instead"
    if len(expected) == 1 and len(got) == 1:
        return (
            "if a sum or mean made it, that reduction ran over the wrong axis: to keep "
            "one value per sample, reduce over the coordinates (dim=1), not over the "
            "batch (dim=0)"
        )
    if len(expected) == 1 and len(got) == 2 and got[0] == got[1] == expected[0]:
        return (
            "a (B,) tensor was broadcast against a (B, 1) or (1, B) one, giving (B, B): "
            "keep both operands of shape (B,)"
        )
    if len(got) == 2 and len(expected) == 2 and got[0] == expected[0]:
        return (
            "the batch axis is right, the other is not: check how the halves are split and joined"
        )
    return ""


def as_tensor(
    got: object,
    what: str,
    shape: Sequence[int] | None = None,
    axes: Sequence[str] | None = None,
    allow_number: bool = False,
) -> Tensor:
    """The answer as a tensor of ``shape``, or an ``ExerciseError`` that says what came back
    instead and, for a wrong shape, which reduction or axis it points to."""
    if isinstance(got, int | float) and not isinstance(got, bool) and allow_number:
        got = torch.tensor(float(got), dtype=F64)
    if not isinstance(got, Tensor):
        if type(got).__module__.startswith("numpy"):
            raise ExerciseError(
                f"{what} should be a torch.Tensor, got {_kind(got)}: .numpy() (or a numpy "
                "function) left torch; stay with torch operations so that autograd follows"
            )
        if isinstance(got, int | float) and not isinstance(got, bool):
            raise ExerciseError(
                f"{what} should be a torch.Tensor, got {_kind(got)}: .item(), float() or a "
                "math function turned the result into a plain number; keep it a tensor "
                "(torch.log instead of math.log on tensors, no .item())"
            )
        if isinstance(got, tuple | list) and got and all(isinstance(v, Tensor) for v in got):
            raise ExerciseError(f"{what} should be one tensor, got {_kind(got)}")
        raise ExerciseError(f"{what} should be a torch.Tensor, got {_kind(got)}")
    if not (got.is_floating_point() or got.is_complex()):
        if got.dtype == torch.bool:
            raise ExerciseError(f"{what} is a tensor of booleans; expected numbers")
        got = got.to(F64)
    if shape is not None and tuple(got.shape) != tuple(shape):
        hint = _shape_hint(tuple(got.shape), tuple(shape), axes)
        raise ExerciseError(
            f"{what} has shape {tuple(got.shape)}; expected {tuple(shape)}"
            + (f" ({', '.join(axes)})" if axes else "")
            + (f": {hint}" if hint else "")
        )
    return got


def as_number(got: object, what: str) -> Tensor:
    """A single number, from a Python number or a one-element tensor, as a 0-d tensor that
    keeps the answer's dtype (so that its tolerance follows it)."""
    if isinstance(got, bool) or got is None:
        raise ExerciseError(f"{what} should be a number, got {_kind(got)}")
    if isinstance(got, int | float):
        return torch.tensor(float(got), dtype=F64)
    if type(got).__module__.startswith("numpy"):
        try:
            return torch.as_tensor(got).to(F64).reshape(())
        except (RuntimeError, TypeError, ValueError):
            pass
    if not isinstance(got, Tensor):
        raise ExerciseError(f"{what} should be a number, got {_kind(got)}")
    if got.numel() != 1:
        raise ExerciseError(
            f"{what} should be one number, got a tensor of shape {tuple(got.shape)}: a sum "
            "over the coordinates is missing (.sum())"
        )
    if not got.is_floating_point():
        got = got.to(F64)
    return got.reshape(())


# --- comparison and diagnosis -------------------------------------------------------------


@dataclass
class Slip:
    """A known mistake: ``fn`` computes what the mistaken answer returns on the check's
    inputs (a tensor, or a callable that makes it); ``message`` names the mistake."""

    message: str
    value: Tensor | Callable[[], Tensor]

    def evaluate(self) -> Tensor | None:
        """The slip's answer in float64, or ``None`` when it cannot be computed here."""
        try:
            value = self.value() if callable(self.value) else self.value
        except Exception:  # a slip that cannot even run on these inputs is not this answer
            return None
        return None if value is None else _f64(value)


def known_constants(dim: int | None = None) -> dict[float, str]:
    """Constants whose absence or surplus is a common slip, with their names."""
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    table = {
        half_log_2pi: "0.5 log(2 pi), the normalising constant of a standard normal",
        2 * half_log_2pi: "log(2 pi)",
        math.log(2): "log 2",
        1.0: "1",
        math.log(math.pi): "log(pi)",
    }
    if dim and dim > 1:
        table[dim * half_log_2pi] = (
            f"(D/2) log(2 pi) with D = {dim}, the normalising "
            "constant of a D-dimensional standard normal"
        )
    return table


_FACTORS = {
    2.0: "2",
    0.5: "1/2",
    1 / math.log(2): "1/ln 2 (nats turned into bits)",
    math.log(2): "ln 2 (bits turned into nats)",
    -1.0: "-1",
}


def _name_constant(value: float, constants: Mapping[float, str], tol: float) -> str | None:
    for c, label in constants.items():
        for sign, word in ((1, "extra"), (-1, "missing")):
            if abs(value - sign * c) <= tol * max(1.0, abs(c)):
                return f"{word} {label}" if c != 1.0 else f"{word} constant 1"
    return None


def _nice(c: float) -> str:
    for den in (1, 2, 3, 4):
        if abs(c * den - round(c * den)) < 1e-6:
            num = round(c * den)
            return f"{num}" if den == 1 else f"{num}/{den}"
    return f"{c:.4g}"


def _fit_terms(diff: Tensor, terms: Mapping[str, Tensor], tol: float) -> str | None:
    """Express ``diff`` as ``c1 * term1 (+ c2 * term2) (+ const)`` exactly, if possible:
    which term of the formula is missing, extra, or has a wrong coefficient."""
    import itertools

    names = list(terms)
    cols = {n: _f64(terms[n]).reshape(-1) for n in names}
    y = diff.reshape(-1)
    ones = torch.ones_like(y)
    best = None
    for size in (1, 2):
        for combo in itertools.combinations(names, size):
            for with_const in (False, True):
                a = torch.stack([cols[n] for n in combo] + ([ones] if with_const else []), 1)
                if a.shape[0] <= a.shape[1]:
                    continue
                sol = torch.linalg.lstsq(a, y.unsqueeze(1)).solution[:, 0]
                if bool(((a @ sol - y).abs() <= tol).all()):
                    coefs = [float(c) for c in sol]
                    if any(abs(c) < 1e-6 for c in coefs[:size]):
                        continue
                    best = (combo, coefs, with_const)
                    break
            if best:
                break
        if best:
            break
    if best is None:
        return None
    combo, coefs, with_const = best
    parts = [f"{_nice(c)} x ({n})" for n, c in zip(combo, coefs, strict=False)]
    if with_const and abs(coefs[-1]) > tol:
        parts.append(f"the constant {coefs[-1]:.6g}")
    return " + ".join(parts)


def describe_difference(
    got: Tensor,
    expected: Tensor,
    what: str,
    *,
    terms: Mapping[str, Tensor] | None = None,
    labels: Sequence[str] | None = None,
    groups: Mapping[str, Tensor] | None = None,
    large: Tensor | None = None,
    constants: Mapping[float, str] | None = None,
    nan_hint: str = "",
    atol: float = 1e-7,
    rtol: float = 1e-7,
) -> str:
    """One sentence on the structure of the mismatch between ``got`` and ``expected``
    (same shape; the first axis indexes the samples)."""
    g, e = _f64(got), _f64(expected)
    n = g.shape[0] if g.dim() else 1
    flat_g, flat_e = g.reshape(n, -1), e.reshape(n, -1)

    def where(k: int) -> str:
        return labels[k] if labels else f"sample {k}"

    bad_special = ~torch.isfinite(flat_g) & torch.isfinite(flat_e)
    if bool(bad_special.any()):
        rows = bad_special.any(dim=1)
        k = int(rows.nonzero()[0])
        kind = "NaN" if bool(flat_g[k].isnan().any()) else "inf"
        text = (
            f"{what} is {kind} at {where(k)} ({int(rows.sum())} of {n} samples), where "
            f"the right value is finite"
        )
        if (
            large is not None
            and bool(rows.any())
            and bool(large[rows].all())
            and not bool(large.all())
        ):
            return (
                text + ": only on the large inputs, so something overflows there "
                "(exp of a large number, or log of a product); use a stable form "
                "(torch.logsumexp, F.softplus, a sum of logs)"
            )
        if groups:
            for group, mask in groups.items():
                if torch.equal(rows, mask.to(torch.bool)):
                    return text + f": exactly for {group}. " + nan_hint
        return text + (": " + nan_hint if nan_hint else "")
    ok = torch.isfinite(flat_g) & torch.isfinite(flat_e)
    close = (flat_g - flat_e).abs() <= atol + rtol * flat_e.abs()
    wrong_rows = ~(close | (~ok & (flat_g == flat_e))).all(dim=1)
    diff = flat_g - flat_e
    scale = max(1.0, float(flat_e[ok].abs().max()) if bool(ok.any()) else 1.0)
    tol = max(10 * atol, 10 * rtol * scale, 1e-9)
    varies = bool((flat_e - flat_e.flatten()[0]).abs().gt(tol).any())
    if bool(ok.all()) and not varies and bool(((flat_g - flat_g.flatten()[0]).abs() <= tol).all()):
        return (
            f"{what} is {float(flat_g.flatten()[0]):.6g} at every point, where the right "
            f"value is {float(flat_e.flatten()[0]):.6g} (the same at every point)"
        )
    if bool(ok.all()) and varies:
        if bool((flat_e.abs() > 10 * tol).any()) and bool(((flat_g + flat_e).abs() <= tol).all()):
            return f"{what} has the wrong sign everywhere: it is minus the right value"
        nonzero = flat_e.abs() > 1e-3
        if int(nonzero.sum()) >= 2:
            ratio = flat_g[nonzero] / flat_e[nonzero]
            r = float(ratio.mean())
            if (
                abs(r - 1) > 1e-3
                and bool(((ratio - r).abs() <= 1e-6 * max(1, abs(r))).all())
                and bool(((flat_g - r * flat_e).abs() <= tol).all())
            ):
                named = next(
                    (
                        label
                        for c, label in _FACTORS.items()
                        if abs(r - c) <= 1e-6 * max(1, abs(c))
                    ),
                    None,
                )
                return (
                    f"{what} is {r:.6g} times the right value everywhere"
                    + (f" (a factor {named})" if named else "")
                    + ": a factor is applied twice, squared, or missing"
                )
        if diff.numel() >= 2:
            c = float(diff.mean())
            if abs(c) > tol and bool(((diff - c).abs() <= tol).all()):
                named = _name_constant(c, {**known_constants(), **(constants or {})}, 1e-6)
                return (
                    f"{what} is off by the same constant {c:+.6g} at every point"
                    + (
                        f": a {named}"
                        if named and named.startswith("m")
                        else f": an {named}"
                        if named
                        else ": a constant term is missing, extra or with the wrong sign"
                    )
                    + (
                        " (it is the right value minus that term)"
                        if named and named.startswith("m")
                        else ""
                    )
                )
        if terms:
            fit = _fit_terms(diff, terms, tol)
            if fit:
                return (
                    f"{what} equals the right value plus {fit}: a term of the formula "
                    "is missing, extra, or has a wrong coefficient or sign (a coefficient "
                    "-1 means the term is missing, +1 that it is counted twice, -2 that "
                    "its sign is flipped)"
                )
    if bool(wrong_rows.any()) and not bool(wrong_rows.all()):
        count = int(wrong_rows.sum())
        if groups:
            for group, mask in groups.items():
                mask = mask.to(torch.bool)
                if torch.equal(wrong_rows, mask):
                    k = int(wrong_rows.nonzero()[0])
                    return (
                        f"{what} is right except exactly for {group} ({count} of {n} "
                        f"samples; e.g. at {where(k)}: got {float(flat_g[k, 0]):.6g}, "
                        f"expected {float(flat_e[k, 0]):.6g})"
                    )
            for group, mask in groups.items():
                mask = mask.to(torch.bool)
                if count >= 2 and bool((wrong_rows <= mask).all()):
                    k = int(wrong_rows.nonzero()[0])
                    return (
                        f"{what} is wrong only for some of {group} ({count} of {n} "
                        f"samples, e.g. at {where(k)}: got {float(flat_g[k, 0]):.6g}, "
                        f"expected {float(flat_e[k, 0]):.6g}); the other samples are right"
                    )
        k = int(wrong_rows.nonzero()[0])
        if count > n / 2:
            right = (~wrong_rows).nonzero()[:, 0]
            shown = "; ".join(where(int(i)) for i in right[:4])
            return (
                f"{what} is wrong for {count} of {n} samples and right only for "
                f"{shown}{'; ...' if len(right) > 4 else ''}: look for a term of the "
                "formula that vanishes at those points (e.g. at x = 0, at a bin's left "
                f"edge, at r = 1) and is wrong elsewhere. At {where(k)}: got "
                f"{float(flat_g[k, 0]):.8g}, expected {float(flat_e[k, 0]):.8g}"
            )
        shown = ", ".join(where(int(i)) for i in wrong_rows.nonzero()[:4, 0])
        return (
            f"{what} is right for {n - count} of {n} samples and wrong for {count} "
            f"({shown}{', ...' if count > 4 else ''}): got {float(flat_g[k, 0]):.8g}, "
            f"expected {float(flat_e[k, 0]):.8g} at {where(k)}. Look for a case your "
            "code treats differently"
        )
    err = diff.abs().where(ok, torch.full_like(diff, float("inf")))
    k = int(err.amax(dim=1).argmax())
    j = int(err[k].argmax())
    at = where(k) + (f", coordinate {j}" if flat_g.shape[1] > 1 else "")
    return (
        f"{what} differs from the right value at every sample; the largest difference "
        f"is {float(err[k, j]):.3g} at {at}: got {float(flat_g[k, j]):.6g}, expected "
        f"{float(flat_e[k, j]):.6g}"
    )


def compare(
    got: Tensor,
    expected: Tensor,
    what: str,
    *,
    slips: Iterable[Slip] = (),
    terms: Mapping[str, Tensor] | None = None,
    labels: Sequence[str] | None = None,
    groups: Mapping[str, Tensor] | None = None,
    large: Tensor | None = None,
    constants: Mapping[float, str] | None = None,
    nan_hint: str = "",
    advice: str = "",
    atol: float | None = None,
    rtol: float | None = None,
    like: Sequence[Tensor] = (),
) -> float:
    """Raise an ``ExerciseError`` naming the mistake unless ``got`` matches ``expected``
    within the tolerance of ``got``'s dtype (and of the tensors in ``like``, the answers
    it was computed from); return the largest difference otherwise."""
    a, r = tolerances(got, *like)
    atol, rtol = max(a, atol or 0.0), max(r, rtol or 0.0)
    g, e = _f64(got), _f64(expected)
    if g.shape != e.shape:
        raise ExerciseError(f"{what} has shape {tuple(g.shape)}; expected {tuple(e.shape)}")
    if matches(g, e, atol, rtol) and bool(torch.isfinite(g).all() == torch.isfinite(e).all()):
        finite = torch.isfinite(e)
        return float((g - e)[finite].abs().max()) if bool(finite.any()) else 0.0
    for slip in slips:
        value = slip.evaluate()
        if (
            value is not None
            and value.shape == g.shape
            and not matches(value, e, atol, rtol)
            and matches(g, value, max(atol, 1e-6), max(rtol, 1e-6))
        ):
            raise ExerciseError(f"{what} is not right: {slip.message}")
    text = describe_difference(
        g,
        e,
        what,
        terms=terms,
        labels=labels,
        groups=groups,
        large=large,
        constants=constants,
        nan_hint=nan_hint,
        atol=atol,
        rtol=rtol,
    )
    raise ExerciseError(text + _advice(advice))


# --- gradients ----------------------------------------------------------------------------


def check_gradients(output: Tensor, inputs: Mapping[str, Tensor], what: str) -> None:
    """Every tensor in ``inputs`` (which must require grad) receives a gradient from
    ``output``; otherwise name the ones that do not and the usual causes."""
    if not isinstance(output, Tensor) or not output.requires_grad:
        raise ExerciseError(
            f"{what} carries no gradient: it was computed under torch.no_grad(), detached "
            "(.detach(), .data, .item(), .numpy()), or rebuilt with torch.tensor(...); "
            "compute it with torch operations on the inputs so that training can "
            "differentiate it"
        )
    leaves = list(inputs.values())
    grads = torch.autograd.grad(output.sum(), leaves, allow_unused=True, retain_graph=True)
    missing = [
        name
        for name, grad in zip(inputs, grads, strict=False)
        if grad is None or not bool(grad.abs().gt(0).any())
    ]
    if missing:
        raise ExerciseError(
            f"no gradient reaches {', '.join(missing)} through {what}: somewhere on the way "
            "it is detached (.detach(), .data, .item(), torch.no_grad(), torch.tensor(...) "
            "of a computed value) or not used at all"
        )


# --- gradients compared with the reference's ----------------------------------------------

CUT_FROM_GRAPH = (
    "part of the computation is cut from the autograd graph (detach / no_grad / .item() / "
    "numpy: .detach(), .data, torch.no_grad() over part of it, .item() or float(), "
    ".numpy(), torch.tensor(...) of a computed value), so training would follow a wrong "
    "gradient"
)


def _names(labels: Sequence[str]) -> str:
    shown = ", ".join(labels[:3])
    return shown + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")


def _advice(advice: str) -> str:
    return f". {advice[:1].upper()}{advice[1:]}" if advice else ""


def _projected_grads(
    output: object, weights: Tensor, leaves: Sequence[Tensor]
) -> list[Tensor | None]:
    """Gradients of ``sum(weights * output)`` with respect to ``leaves`` (``None`` for those
    it does not reach, all ``None`` when ``output`` carries no graph)."""
    if not isinstance(output, Tensor) or not output.requires_grad:
        return [None] * len(leaves)
    if output.shape != weights.shape:
        output = output.reshape(weights.shape)
    value = (output.to(F64) * weights).sum()
    return list(torch.autograd.grad(value, list(leaves), allow_unused=True, retain_graph=True))


def _zero_if_none(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like, dtype=F64) if grad is None else grad.detach().to(F64)


def compare_gradients(
    student: Callable[..., object],
    reference: Callable[..., Tensor],
    inputs: Sequence[Tensor | object],
    what: str,
    *,
    wrt: Mapping[int, str] | None = None,
    params: Mapping[str, Tensor] | None = None,
    pick: Callable[[object], object] | None = None,
    terms: Mapping[str, Callable[..., Tensor]] | None = None,
    name: str | None = None,
    advice: str = "",
    seed: int = 0,
) -> None:
    """Compare the GRADIENTS of the student's answer with the reference's, for an answer
    whose values are already known to be right.

    ``student(*inputs)`` and ``reference(*inputs)`` are called on fresh float64 copies of
    ``inputs`` that require grad (those whose positions ``wrt`` names, ``{index: name}``;
    by default every floating-point tensor, named "argument i"); ``params`` are further
    leaves both use (a conditioner's parameters, say). ``pick`` takes the checked output
    out of the student's return value (``lambda out: out[1]`` for a log-det). The output
    is projected on fixed random weights (so that no symmetry hides a wrong gradient) and
    differentiated. When a gradient differs or is missing, the message says that part of
    the computation is cut from the autograd graph; ``terms`` (reference functions of the
    formula's terms) let it say which term: the answer's gradient is the reference's
    without that term's."""
    name = name or getattr(student, "__name__", "your function")
    if wrt is None:
        wrt = {
            i: f"argument {i + 1}"
            for i, v in enumerate(inputs)
            if isinstance(v, Tensor) and v.is_floating_point()
        }
    params = dict(params or {})

    def leaves_of(args: Sequence[Tensor | object]) -> list[Tensor]:
        return [args[i] for i in wrt] + list(params.values())

    def fresh() -> list[Tensor | object]:
        return [
            v.detach().to(F64).clone().requires_grad_() if i in wrt else v
            for i, v in enumerate(inputs)
        ]

    args = fresh()
    with torch.enable_grad():
        expected = reference(*args)
        g = torch.Generator().manual_seed(seed)
        weights = 1.0 + torch.rand(expected.shape, generator=g, dtype=F64)
        weights = weights * torch.where(
            torch.rand(expected.shape, generator=g, dtype=F64) < 0.5, -1.0, 1.0
        ).to(F64)
        ref_grads = [
            _zero_if_none(gr, leaf)
            for gr, leaf in zip(
                _projected_grads(expected, weights, leaves_of(args)), leaves_of(args), strict=True
            )
        ]
        student_args = fresh()
        out = run(student, *student_args, name=name)
        out = pick(out) if pick else out
        got_grads = [
            _zero_if_none(gr, leaf)
            for gr, leaf in zip(
                _projected_grads(out, weights, leaves_of(student_args)),
                leaves_of(student_args),
                strict=True,
            )
        ]
        term_grads: dict[str, list[Tensor]] = {}
        for term, fn in (terms or {}).items():
            t_args = fresh()
            try:
                t_out = fn(*t_args)
                t_out = torch.as_tensor(t_out).expand(expected.shape)
                grads = _projected_grads(t_out, weights, leaves_of(t_args))
            except Exception:
                continue
            term_grads[term] = [
                _zero_if_none(gr, leaf) for gr, leaf in zip(grads, leaves_of(t_args), strict=True)
            ]
    atol, rtol = tolerances(out if isinstance(out, Tensor) else expected)
    labels = [*wrt.values(), *params]
    scale = max([1.0] + [float(r.abs().max()) for r in ref_grads if r.numel()])
    tol = 10 * max(atol, 1e-6) + 10 * rtol * scale

    def close(a: list[Tensor], b: list[Tensor]) -> list[bool]:
        pairs = zip(a, b, strict=True)
        return [bool(((x - y).abs() <= tol + 10 * rtol * y.abs()).all()) for x, y in pairs]

    same = close(got_grads, ref_grads)
    if all(same):
        return
    wrong = [label for label, ok in zip(labels, same, strict=True) if not ok]
    for term, t_grads in term_grads.items():
        without = [r - t for r, t in zip(ref_grads, t_grads, strict=True)]
        if all(close(got_grads, without)) and not all(close(without, ref_grads)):
            raise ExerciseError(
                f"{what} has the right values but the wrong gradient with respect to "
                f"{_names(wrong)}: its gradient is that of the right answer without "
                f"{term}, so that term is cut from the autograd graph (.detach(), "
                "torch.no_grad(), .item(), .numpy() or torch.tensor(...) of a computed "
                "value), and training would not see it" + _advice(advice)
            )
    if not (isinstance(out, Tensor) and out.requires_grad) or all(
        not bool(gr.abs().gt(0).any()) for gr in got_grads
    ):
        raise ExerciseError(
            f"{what} has the right values but carries no gradient back to "
            f"{_names(wrong)}: it is cut from the autograd graph (detach / no_grad / "
            ".item() / numpy: .detach(), .data, torch.no_grad(), .item() or float(), "
            ".numpy(), torch.tensor(...) of a computed value), so training cannot follow "
            "it. Compute it with torch operations on the inputs" + _advice(advice)
        )
    k = labels.index(wrong[0])
    diff = (got_grads[k] - ref_grads[k]).abs().reshape(-1)
    j = int(diff.argmax())
    raise ExerciseError(
        f"{what} has the right values but the wrong gradient with respect to "
        f"{_names(wrong)} (at entry {j} of {labels[k]}: got "
        f"{float(got_grads[k].reshape(-1)[j]):.6g}, expected "
        f"{float(ref_grads[k].reshape(-1)[j]):.6g}): {CUT_FROM_GRAPH}" + _advice(advice)
    )


def compare_gradients_numerically(
    value: Callable[[], object],
    wrt: Mapping[str, Tensor],
    what: str,
    *,
    seed: int = 0,
    step: float | None = None,
    advice: str = "",
) -> None:
    """Compare the autograd gradient of ``value()`` (a tensor computed from the leaves in
    ``wrt``, typically a module's parameters) with central finite differences along a
    random direction, in float64: a part of the computation cut from the graph gives a
    gradient that disagrees with how the value actually changes."""
    g = torch.Generator().manual_seed(seed)
    leaves = list(wrt.values())
    directions = [torch.randn(p.shape, generator=g, dtype=F64).to(p.dtype) for p in leaves]
    with torch.enable_grad():
        out = value()
        if not isinstance(out, Tensor):
            raise ExerciseError(f"{what} should be a tensor, got {_kind(out)}")
        weights = 1.0 + torch.rand(out.shape, generator=g, dtype=F64)
        grads = _projected_grads(out, weights, leaves)
    autograd = sum(
        float((_zero_if_none(gr, p) * d.to(F64)).sum())
        for gr, p, d in zip(grads, leaves, directions, strict=True)
    )

    def shifted(sign: float) -> float:
        assert step is not None
        with torch.no_grad():
            for p, d in zip(leaves, directions, strict=True):
                p.add_(sign * step * d)
            try:
                result = value()
            finally:
                for p, d in zip(leaves, directions, strict=True):
                    p.sub_(sign * step * d)
            return float((_f64(result) * weights).sum())

    atol, rtol = tolerances(out)
    step = step or (1e-5 if rtol < 1e-6 else 1e-2)  # float32 values need a longer step
    numeric = (shifted(1.0) - shifted(-1.0)) / (2 * step)
    tol = (1e-5 if rtol < 1e-6 else 3e-2) * max(1.0, abs(numeric))
    if abs(autograd - numeric) <= tol:
        return
    reaches = isinstance(out, Tensor) and out.requires_grad
    raise ExerciseError(
        f"{what} changes with the parameters {', '.join(wrt)} (directional derivative "
        f"{numeric:.6g} by finite differences) but its autograd gradient says {autograd:.6g}"
        + ("" if reaches else " (it carries no gradient at all)")
        + f": {CUT_FROM_GRAPH}"
        + _advice(advice)
    )
