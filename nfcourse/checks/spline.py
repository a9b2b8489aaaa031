"""Feedback for the exercises of chapter 8 (neural spline flows).

* ``check_spline_knots``: knots and knot derivatives from unconstrained outputs, with
  minimum widths, heights and derivatives;
* ``check_rq_forward``: the rational-quadratic spline in a bin and its log-derivative;
* ``check_rq_inverse``: its inverse by the stable root of the quadratic;
* ``check_cubic_increasing``: why not a cubic: where the cubic Hermite interpolant of a
  bin is increasing (a derivation the chapter does not print);
* ``check_knot_second_derivatives``: the second derivative at the knots from both sides
  (a derivation the chapter does not print);
* ``check_fit_moved_sine``: a spline flow trained on data far from the origin.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import Flow
from ..densities import MovedSine
from ..flows.actnorm import ActNorm
from ..flows.spline import _rational_quadratic_spline, _spline_parameters
from ..validation import check_positive_int
from ._toolkit import (
    ExerciseError,
    Slip,
    as_tensor,
    check_gradients,
    compare,
    run,
)
from ._training import (
    BELOW_ENTROPY,
    Goal,
    Measurement,
    check_fit,
    mean_nll,
)

__all__ = [
    "MINIMUMS",
    "MOVED_GOAL",
    "check_cubic_increasing",
    "check_fit_moved_sine",
    "check_knot_second_derivatives",
    "check_rq_forward",
    "check_rq_inverse",
    "check_spline_knots",
    "make_spline_outputs",
]

#: The minimums of the knot exercise: all different, so that no mix-up passes.
MINIMUMS = {"min_bin_width": 0.02, "min_bin_height": 0.03, "min_derivative": 0.05}


def make_spline_outputs(
    n: int, bins: int, seed: int = 0, scale: float = 2.0, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor, Tensor]:
    """Random unconstrained outputs ``(u_w, u_h, u_d)`` of shapes ``(n, K)``, ``(n, K)``
    and ``(n, K - 1)``, as a network would return them."""
    n, bins = check_positive_int(n, "n"), check_positive_int(bins, "bins")
    g = torch.Generator().manual_seed(seed)
    return tuple(
        scale * torch.randn(n, k, generator=g, dtype=dtype) for k in (bins, bins, bins - 1)
    )


def _unpack(out: object, name: str, n: int, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    if not (isinstance(out, tuple | list) and len(out) == 3):
        raise ExerciseError(
            f"{name} should return three tensors (knot_x, knot_y, "
            f"derivatives), got {type(out).__name__}"
        )
    axes = ("spline", "knot")
    return tuple(
        as_tensor(t, f"{what} of {name}", (n, bins + 1), axes)
        for t, what in zip(out, ("the knot_x", "the knot_y", "the derivatives"), strict=True)
    )


def _slip_knots(
    raw: Tensor,
    bound: float,
    minimum: float,
    *,
    rescale: bool = True,
    with_min: bool = True,
    renormalise: bool = True,
) -> Tensor:
    bins = raw.shape[-1]
    q = torch.softmax(raw, dim=-1)
    if with_min:
        q = minimum + (1 - bins * minimum) * q if renormalise else minimum + q
    cum = F.pad(torch.cumsum(q, dim=-1), (1, 0))
    return 2 * bound * cum - bound if rescale else cum


def check_spline_knots(fn: Callable, atol: float = 1e-8) -> None:
    """Check ``fn(u_w, u_h, u_d, bound, min_bin_width, min_bin_height, min_derivative)
    -> (knot_x, knot_y, derivatives)``, each ``(n, K + 1)``: knots from ``-B`` to ``B``
    with widths ``2B (m_w + (1 - K m_w) softmax(u_w))`` (heights likewise) and derivatives
    ``m_d + softplus(u_d + c)``, ``c = log(exp(1 - m_d) - 1)``, at the interior knots and 1
    at both ends."""
    name = getattr(fn, "__name__", "your function")
    for n, bins, bound, seed in ((5, 4, 3.0, 0), (7, 6, 2.0, 1)):
        uw, uh, ud = make_spline_outputs(n, bins, seed)
        uw[0] = uh[0] = 0.0  # one row of zeros: the identity
        ud[0] = 0.0
        leaves = [t.clone().requires_grad_() for t in (uw, uh, ud)]
        out = run(fn, *leaves, bound, *MINIMUMS.values(), name=name)
        knot_x, knot_y, deriv = _unpack(out, name, n, bins)
        m_w, m_h, m_d = MINIMUMS.values()
        ref_x, ref_y, ref_d = _spline_parameters(uw, uh, ud, bound, m_w, m_h, m_d)
        for got, ref, raw, m, what in (
            (knot_x, ref_x, uw, m_w, "knot_x"),
            (knot_y, ref_y, uh, m_h, "knot_y"),
        ):
            compare(
                got,
                ref,
                f"{what} (K = {bins}, B = {bound})",
                atol=atol,
                slips=[
                    Slip(
                        "the knots must run from -B to B: scale the cumulative fractions by "
                        "2B and subtract B (yours run from 0 to 1)",
                        _slip_knots(raw, bound, m, rescale=False),
                    ),
                    Slip(
                        "the minimum fraction is missing: the widths are "
                        "2B (m + (1 - K m) softmax(u))",
                        _slip_knots(raw, bound, m, with_min=False),
                    ),
                    Slip(
                        "adding the minimum m to the softmax makes the fractions sum to "
                        "1 + K m: multiply the softmax by (1 - K m)",
                        _slip_knots(raw, bound, m, renormalise=False),
                    ),
                    Slip(
                        "the minimum of the widths and of the heights are different "
                        "arguments: min_bin_width for knot_x, min_bin_height for knot_y",
                        _slip_knots(raw, bound, m_h if what == "knot_x" else m_w),
                    ),
                    Slip(
                        "the first knot is -B: put a zero in front of the cumulative sum "
                        "before rescaling (yours starts one bin late)",
                        torch.cat(
                            [
                                _slip_knots(raw, bound, m)[:, 1:],
                                torch.full((n, 1), float(bound), dtype=raw.dtype),
                            ],
                            1,
                        ),
                    ),
                ],
                advice="cumulative sum of the fractions with a zero in front, times 2B, minus B",
            )
        c = math.log(math.expm1(1 - m_d))

        def pad_ends(inner: Tensor) -> Tensor:
            return F.pad(inner, (1, 1), value=1.0)

        compare(
            deriv,
            ref_d,
            f"the derivatives (K = {bins})",
            atol=atol,
            slips=[
                Slip(
                    "without the shift c = log(exp(1 - m_d) - 1), zero outputs give the "
                    "derivative m_d + log 2, not 1: the identity needs derivative 1",
                    pad_ends(m_d + F.softplus(ud)),
                ),
                Slip(
                    "the minimum derivative m_d is missing: m_d + softplus(u + c)",
                    pad_ends(F.softplus(ud + c)),
                ),
                Slip(
                    "the derivatives come from softplus, which grows linearly, not from exp",
                    pad_ends(m_d + torch.exp(ud + math.log(1 - m_d))),
                ),
                Slip(
                    "the two end derivatives are 1 (the slope of the linear tails), not "
                    "learned or zero",
                    F.pad(m_d + F.softplus(ud + c), (1, 1), value=0.0),
                ),
            ],
            advice="interior derivatives m_d + softplus(u_d + c), and 1 at both ends",
        )
        check_gradients(
            knot_x.sum() + knot_y.sum() + deriv.sum(),
            {"u_w": leaves[0], "u_h": leaves[1], "u_d": leaves[2]},
            f"{name}'s output",
        )
    print(
        "Correct: widths, heights and derivatives keep their minimums, the knots run "
        "from -B to B, and zero outputs give the identity."
    )


def _spline_cases(
    seed: int,
    n: int = 40,
    bins: int = 5,
    bound: float = 3.0,
    dtype: torch.dtype = torch.float64,
    straight: bool = False,
) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor, Tensor, Tensor, Tensor, float]:
    """Knots of random splines, with points in every bin, at the knots and at +-B."""
    uw, uh, ud = make_spline_outputs(n, bins, seed, scale=1.5, dtype=dtype)
    if straight:  # equal widths and heights, unit derivatives: straight bins (a = 0)
        uw, uh, ud = uw * 0, uh * 0, ud * 0
    knot_x, knot_y, deriv = _spline_parameters(uw, uh, ud, bound, 1e-3, 1e-3, 1e-3)
    g = torch.Generator().manual_seed(seed + 100)
    u = torch.rand(n, generator=g, dtype=dtype)
    x = -bound + 2 * bound * u
    x[: bins + 1] = knot_x[torch.arange(bins + 1), torch.arange(bins + 1)]
    return (uw, uh, ud), knot_x, knot_y, deriv, x, bound


def _reference_in_bin(
    x: Tensor, knot_x: Tensor, knot_y: Tensor, deriv: Tensor
) -> tuple[Tensor, Tensor]:
    """The rational-quadratic spline at ``x`` and its log-derivative, bin by bin."""
    k = (x.unsqueeze(-1) >= knot_x[:, 1:-1]).sum(-1, keepdim=True)
    xk, xk1 = knot_x.gather(1, k)[:, 0], knot_x.gather(1, k + 1)[:, 0]
    yk, yk1 = knot_y.gather(1, k)[:, 0], knot_y.gather(1, k + 1)[:, 0]
    dk, dk1 = deriv.gather(1, k)[:, 0], deriv.gather(1, k + 1)[:, 0]
    w, h = xk1 - xk, yk1 - yk
    return xk, yk, w, h, h / w, dk, dk1, (x - xk) / w


def check_rq_forward(fn: Callable, atol: float = 1e-8) -> None:
    """Check ``fn(x, knot_x, knot_y, derivatives) -> (y, log_deriv)``: the
    rational-quadratic spline of every row's knots at ``x`` (shape ``(n,)``, inside
    ``[-B, B]``) and ``log g'(x)``, both ``(n,)``."""
    name = getattr(fn, "__name__", "your function")
    for seed in (0, 1):
        params, knot_x, knot_y, deriv, x, bound = _spline_cases(seed)
        n = len(x)
        xx = x.clone().requires_grad_()
        out = run(fn, xx, knot_x, knot_y, deriv, name=name)
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise ExerciseError(
                f"{name} should return the pair (y, log_deriv), got {type(out).__name__}"
            )
        y = as_tensor(out[0], f"the y of {name}", (n,), ("point",))
        log_d = as_tensor(out[1], f"the log_deriv of {name}", (n,), ("point",))
        ref_y, ref_ld = _rational_quadratic_spline(x, *params, False, bound, 1e-3, 1e-3, 1e-3)
        xk, yk, w, h, s, dk, dk1, xi = _reference_in_bin(x, knot_x, knot_y, deriv)
        t = xi * (1 - xi)
        beta = s + (dk1 + dk - 2 * s) * t
        num = dk1 * xi**2 + 2 * s * t + dk * (1 - xi) ** 2
        swapped = s + (dk1 + dk - 2 * s) * t
        compare(
            y,
            ref_y,
            "y = g(x)",
            atol=atol,
            slips=[
                Slip(
                    "the derivatives at the two knots are swapped: alpha uses d_k (the left "
                    "knot's), beta uses d_k + d_{k+1}",
                    yk + h * (s * xi**2 + dk1 * t) / swapped,
                ),
                Slip(
                    "y = y_k + h_k alpha / beta: you left out y_k", h * (s * xi**2 + dk * t) / beta
                ),
            ],
            advice="find the bin k of x among the knots, then y = y_k + h_k alpha(xi) / beta(xi)",
        )
        compare(
            log_d,
            ref_ld,
            "log_deriv",
            atol=atol,
            slips=[
                Slip(
                    "the slope s_k enters squared: g' = s_k^2 (...) / beta^2",
                    torch.log(s) + torch.log(num) - 2 * torch.log(beta),
                ),
                Slip(
                    "the denominator beta enters squared: g' = s_k^2 (...) / beta^2",
                    2 * torch.log(s) + torch.log(num) - torch.log(beta),
                ),
                Slip("this is log g' of the inverse, -log g'(x)", -ref_ld),
                Slip(
                    "the derivatives are swapped in the numerator: d_{k+1} goes with xi^2, "
                    "d_k with (1 - xi)^2",
                    2 * torch.log(s)
                    + torch.log(dk * xi**2 + 2 * s * t + dk1 * (1 - xi) ** 2)
                    - 2 * torch.log(beta),
                ),
                Slip("log_deriv is the logarithm of g', not g' itself", ref_ld.exp()),
            ],
            advice="log g' = 2 log s_k + log(d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k "
            "(1 - xi)^2) - 2 log beta",
        )
        check_gradients(y.sum() + log_d.sum(), {"x": xx}, f"{name}'s output")
    print("Correct: the spline and its log-derivative match at and between the knots.")


def check_rq_inverse(fn: Callable) -> None:
    """Check ``fn(y, knot_x, knot_y, derivatives) -> x``, the inverse of the spline of
    every row at ``y`` (shape ``(n,)``, inside ``[-B, B]``), including bins where the
    spline is a straight line (where the quadratic's ``a`` is zero) and points next to
    the knots."""
    name = getattr(fn, "__name__", "your function")
    for seed, straight in ((0, False), (1, False), (2, True)):
        params, knot_x, knot_y, deriv, x_true, bound = _spline_cases(seed, straight=straight)
        y, _ = _rational_quadratic_spline(x_true, *params, False, bound, 1e-3, 1e-3, 1e-3)
        y[-1] = knot_y[-1, 2] + 1e-9  # just right of a knot
        x_ref, _ = _rational_quadratic_spline(y, *params, True, bound, 1e-3, 1e-3, 1e-3)
        n = len(y)
        out = run(fn, y.clone(), knot_x, knot_y, deriv, name=name)
        x = as_tensor(out, f"the x of {name}", (n,), ("point",))
        xk, yk, w, h, s, dk, dk1, _ = _reference_in_bin(x_ref, knot_x, knot_y, deriv)
        dy = y - yk
        a = h * (s - dk) + dy * (dk1 + dk - 2 * s)
        b = h * dk - dy * (dk1 + dk - 2 * s)
        c = -s * dy
        root = torch.sqrt((b * b - 4 * a * c).clamp_min(0))
        where = "straight bins (d_k = d_{k+1} = s_k)" if straight else "curved bins"
        if straight and bool(torch.isnan(x).any()):
            raise ExerciseError(
                "x is NaN in straight bins, where d_k = d_{k+1} = s_k makes the "
                "quadratic's a zero: the textbook root (-b + sqrt(b^2 - 4ac)) / (2a) "
                "divides 0 by 0. Use the stable form 2c / (-b - sqrt(b^2 - 4ac))"
            )
        # judged by the backward error |g(x) - y|: where the spline is nearly flat, a
        # correct float32 answer may sit far from x_ref in x but not in y
        residual = math.inf
        if bool(torch.isfinite(x).all()):
            x_in = x.detach().double().clamp(-bound, bound)  # a rounding beyond +-B
            y_back, _ = _rational_quadratic_spline(x_in, *params, False, bound, 1e-3, 1e-3, 1e-3)
            residual = float((y_back - y).abs().max())
            tol = 1e-9 if x.dtype == torch.float64 else 2e-5
            if residual <= tol and float((x_in - x.double()).abs().max()) <= 1e-6:
                continue
        compare(
            x,
            x_ref,
            f"x = g^-1(y) in {where}",
            atol=1e-8,
            slips=[
                Slip(
                    "this is the other root of the quadratic, outside the bin: take "
                    "2c / (-b - sqrt(b^2 - 4ac))",
                    xk + w * (-b - root) / (2 * a),
                ),
                Slip(
                    "x = x_k + xi w_k: you returned xi, the position inside the bin",
                    2 * c / (-b - root),
                ),
            ],
            advice="find the bin of y among knot_y, solve a xi^2 + b xi + c = 0 with the "
            "stable root, and return x_k + xi w_k",
        )
        raise ExerciseError(
            f"x = g^-1(y) in {where} is close to the inverse, but g(x) "
            f"misses y by up to {residual:.2g}: "
            "use the stable root 2c / (-b - sqrt(b^2 - 4ac))"
        )
    print("Correct: the inverse is exact in curved and straight bins and next to the knots.")


MOVED_GOAL = Goal(0.1, steps=400)


def check_fit_moved_sine(
    fit: Callable[[Tensor, torch.Generator], tuple[Flow, list[float]]], seed: int = 0
) -> None:
    """Exercise: ``fit(data, generator)`` trains a flow on 10,000 float32 samples of
    ``nfcourse.densities.MovedSine`` in at most 400 steps and returns ``(flow, history)``;
    the flow must reach ``KL(p || q) < 0.1`` nats on 20,000 fresh points."""
    target = MovedSine()
    data = target.sample(10_000, seed=seed)

    def diagnose(flow: Flow, history: list[float], measured: Measurement) -> str | None:
        standardised = any(isinstance(m, ActNorm) and bool(m.initialized) for m in flow.modules())
        if not standardised and (not math.isfinite(measured.value) or measured.value > 5):
            return (
                "the data lie around (-30, 12) with scales near 5 and 0.1, far outside "
                "the box [-B, B] where the splines act, so every spline is the identity "
                "there. Standardise the data first (spline_flow does it with an ActNorm "
                "layer, standardize=True)"
            )
        return None

    check_fit(
        fit,
        data.clone(),
        torch.Generator().manual_seed(seed),
        name="fit_moved_sine",
        goal=MOVED_GOAL,
        target=target,
        seed=seed,
        floor=(target.entropy(), BELOW_ENTROPY),
        diagnose=diagnose,
        loss=lambda flow: mean_nll(flow, data),
    )


# --- why not a cubic: when is the cubic Hermite interpolant of a bin increasing? ---------


def _cubic_parts(alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For the cubic through (0, 0) and (1, 1) with end slopes ``alpha, beta``, whose
    derivative is ``p'(xi) = 3 a xi^2 + 2 (3 - 2 alpha - beta) xi + alpha`` with
    ``a = alpha + beta - 2``: ``a``, the vertex ``xi* = (2 alpha + beta - 3) / (3 a)`` of
    ``p'`` and its value ``p'(xi*)`` (both meaningful where ``a != 0``)."""
    a = alpha + beta - 2
    safe = torch.where(a == 0, torch.ones_like(a), a)
    vertex = (2 * alpha + beta - 3) / (3 * safe)
    lowest = alpha - (2 * alpha + beta - 3) ** 2 / (3 * safe)
    return a, vertex, lowest


def _cubic_increasing(alpha: Tensor, beta: Tensor) -> Tensor:
    """Whether ``p'(xi) >= 0`` on all of ``[0, 1]``: at the ends ``p' = alpha, beta > 0``,
    so only a minimum of ``p'`` inside the bin (``a > 0``, ``0 < xi* < 1``) can be negative."""
    a, vertex, lowest = _cubic_parts(alpha, beta)
    inside = (a > 0) & (vertex > 0) & (vertex < 1)
    return ~inside | (lowest >= 0)


def _cubic_cases(seed: int = 0, n: int = 3000) -> tuple[Tensor, Tensor]:
    """End slopes ``(alpha, beta)`` in ``(0, 7)^2``, away from the boundary of the region
    where the cubic is increasing (so that an answer that samples ``xi`` finely, or
    computes in float32, is not judged on a tie), with pairs chosen on both sides of
    Fritsch and Carlson's sufficient conditions (the circle ``alpha^2 + beta^2 <= 9`` and
    the box ``alpha, beta <= 3``)."""
    g = torch.Generator().manual_seed(seed)
    ab = 0.02 + 6.98 * torch.rand(n, 2, generator=g, dtype=torch.float64)
    extra = torch.tensor(
        [[1.0, 1.0], [0.5, 3.0], [3.5, 0.2], [3.5, 3.5], [4.0, 0.5], [0.3, 4.2], [2.0, 2.5]],
        dtype=torch.float64,
    )
    ab = torch.cat([extra, ab])
    alpha, beta = ab[:, 0], ab[:, 1]
    a, vertex, lowest = _cubic_parts(alpha, beta)
    inside = (a > 0) & (vertex > 0) & (vertex < 1)
    near_tie = inside & (lowest.abs() < 0.02)
    near_edge = (a > 0) & (((vertex - 0).abs() < 0.01) | ((vertex - 1).abs() < 0.01))
    keep = ~(near_tie | near_edge | (a.abs() < 0.01))
    return alpha[keep], beta[keep]


def check_cubic_increasing(fn: Callable) -> None:
    """Check ``fn(alpha, beta) -> increasing``: for end slopes ``alpha = d_k / s_k`` and
    ``beta = d_{k+1} / s_k`` (tensors ``(n,)``, all positive), whether the cubic Hermite
    interpolant of a bin, ``p(0) = 0, p(1) = 1, p'(0) = alpha, p'(1) = beta``, is
    increasing on ``[0, 1]``; a bool tensor ``(n,)``."""
    name = getattr(fn, "__name__", "your function")
    alpha, beta = _cubic_cases()
    n = len(alpha)
    out = run(fn, alpha.clone(), beta.clone(), name=name)
    if isinstance(out, Tensor) and out.dtype == torch.bool:
        out = out.double()  # as_tensor takes numbers; 1.0 is True
    got = as_tensor(out, f"the output of {name}", (n,), ("pair",))
    values = got.detach().double()
    if not bool(((values == 0) | (values == 1)).all()):
        raise ExerciseError(
            f"{name} should return True or False for every pair (a bool tensor), "
            f"got values such as {float(values[(values != 0) & (values != 1)][0]):.4g}: "
            "compare the lowest value of p' on [0, 1] with zero"
        )
    got = values == 1
    ref = _cubic_increasing(alpha, beta)
    if bool((got == ref).all()):
        print(
            "Correct: the cubic is increasing exactly where the minimum of p' on [0, 1] is "
            "not negative; the rational-quadratic spline is increasing for every pair."
        )
        return
    a, vertex, lowest = _cubic_parts(alpha, beta)
    wrong_vertex = (2 * alpha + beta - 3) / (-3 * torch.where(a == 0, torch.ones_like(a), a))
    no_three = (2 * alpha + beta - 3) / torch.where(a == 0, torch.ones_like(a), a)
    slips = [
        (
            ~ref,
            "it is the opposite of the answer: True should mean that the cubic is "
            "increasing on the whole bin",
        ),
        (
            torch.ones_like(ref),
            "p' is positive at both ends (p'(0) = alpha, p'(1) = beta), but p' is a "
            "quadratic in xi whose minimum can lie inside the bin and be negative",
        ),
        (
            (a <= 0) | (lowest >= 0),
            "the vertex of p' can lie outside [0, 1]; then the minimum over the bin is at "
            "an end, where p' > 0. Check 0 < xi* < 1 before using p'(xi*)",
        ),
        (
            alpha**2 + beta**2 <= 9,
            "alpha^2 + beta^2 <= 9 (Fritsch and Carlson's circle) is sufficient but not "
            "necessary: it rejects cubics that are increasing",
        ),
        (
            (alpha <= 3) & (beta <= 3),
            "alpha, beta <= 3 is sufficient but not necessary: it rejects cubics that are "
            "increasing",
        ),
        (
            ~((a > 0) & (wrong_vertex > 0) & (wrong_vertex < 1)) | (lowest >= 0),
            "the sign of the vertex: p'(xi) = A xi^2 + B xi + C has its vertex at "
            "xi* = -B / (2A), here (2 alpha + beta - 3) / (3 (alpha + beta - 2))",
        ),
        (
            ~((a > 0) & (no_three > 0) & (no_three < 1)) | (lowest >= 0),
            "the derivative of xi^3 is 3 xi^2: the vertex of p' is "
            "(2 alpha + beta - 3) / (3 (alpha + beta - 2))",
        ),
    ]
    for value, message in slips:
        if bool((got == value).all()):
            raise ExerciseError(f"{name} is not right: {message}")
    bad = (got != ref).nonzero()[:, 0]
    i = int(bad[0])
    truth = "increasing" if bool(ref[i]) else "not increasing"
    where = (
        f" (p' has its minimum {float(lowest[i]):.3g} at xi = {float(vertex[i]):.3g})"
        if not bool(ref[i])
        else ""
    )
    raise ExerciseError(
        f"{name} is wrong for {len(bad)} of {n} pairs, for example alpha = "
        f"{float(alpha[i]):.3f}, beta = {float(beta[i]):.3f}, where the cubic is {truth}"
        f"{where}. Write p(xi) = c3 xi^3 + c2 xi^2 + c1 xi from the four conditions, "
        "then find the smallest value of the quadratic p' on [0, 1]"
    )


# --- is the spline twice differentiable? ---------------------------------------------------


def _knot_second_derivatives(
    knot_x: Tensor, knot_y: Tensor, derivatives: Tensor, *, chain: bool = True, two: bool = True
) -> tuple[Tensor, Tensor]:
    """``g''`` at every interior knot from the bin on its left (``xi = 1``) and from the bin
    on its right (``xi = 0``). With ``g' = s^2 N / beta^2``,
    ``N = d_{k+1} xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2``, the quotient rule gives
    ``g'' = (s^2 / w) (N' beta - 2 N beta') / beta^3``, so

        g''(xi = 0) = 2 (s^2 + s d_k - d_k^2 - d_k d_{k+1}) / (w s),
        g''(xi = 1) = 2 (d_{k+1}^2 + d_k d_{k+1} - s d_{k+1} - s^2) / (w s).

    ``chain=False`` leaves out the factor ``1 / w`` of ``d xi / dx``; ``two=False`` writes
    ``N' beta - N beta'`` (slips)."""
    w, h = knot_x.diff(dim=1), knot_y.diff(dim=1)
    s = h / w
    d0, d1 = derivatives[:, :-1], derivatives[:, 1:]
    delta = d1 + d0 - 2 * s
    k = 2.0 if two else 1.0
    # at xi = 0: N = d0, N' = 2 s - 2 d0, beta = s, beta' = delta
    start = s**2 * ((2 * s - 2 * d0) * s - k * d0 * delta) / s**3
    # at xi = 1: N = d1, N' = 2 d1 - 2 s, beta = s, beta' = -delta
    end = s**2 * ((2 * d1 - 2 * s) * s + k * d1 * delta) / s**3
    if chain:
        start, end = start / w, end / w
    return end[:, :-1], start[:, 1:]


def check_knot_second_derivatives(fn: Callable, atol: float = 1e-8) -> None:
    """Check ``fn(knot_x, knot_y, derivatives) -> (left, right)``, each ``(n, K - 1)``: the
    second derivative ``g''`` of the rational-quadratic spline at every interior knot,
    from the bin on its left and from the bin on its right."""
    name = getattr(fn, "__name__", "your function")
    for seed in (0, 1):
        _, knot_x, knot_y, deriv, _, _ = _spline_cases(seed, n=12, bins=5)
        n, inner = knot_x.shape[0], knot_x.shape[1] - 2
        out = run(fn, knot_x.clone(), knot_y.clone(), deriv.clone(), name=name)
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise ExerciseError(
                f"{name} should return the pair (left, right), got {type(out).__name__}"
            )
        axes = ("spline", "interior knot")
        left = as_tensor(out[0], f"the left of {name}", (n, inner), axes)
        right = as_tensor(out[1], f"the right of {name}", (n, inner), axes)
        ref_left, ref_right = _knot_second_derivatives(knot_x, knot_y, deriv)
        no_chain = _knot_second_derivatives(knot_x, knot_y, deriv, chain=False)
        no_two = _knot_second_derivatives(knot_x, knot_y, deriv, two=False)
        w = knot_x.diff(dim=1)
        s = knot_y.diff(dim=1) / w
        for got, ref, side, other, i in (
            (left, ref_left, "left", ref_right, 0),
            (right, ref_right, "right", ref_left, 1),
        ):
            own = slice(0, -1) if side == "left" else slice(1, None)
            across = slice(1, None) if side == "left" else slice(0, -1)
            compare(
                got,
                ref,
                f"g'' at the interior knots, from the {side}",
                atol=atol,
                slips=[
                    Slip(
                        "left and right are swapped: left is the end (xi = 1) of the bin "
                        "before the knot, right the start (xi = 0) of the bin after it",
                        other,
                    ),
                    Slip(
                        "d/dx = (1 / w_k) d/dxi: divide the derivative in xi by the bin's "
                        "width once more for g''",
                        no_chain[i],
                    ),
                    Slip(
                        "the quotient rule on N / beta^2 gives (N' beta - 2 N beta') / "
                        "beta^3: the factor 2 of beta^2 is missing",
                        no_two[i],
                    ),
                    Slip(
                        "each side uses its own bin's width: w_{k-1} on the left of knot "
                        "k, w_k on its right",
                        ref * w[:, own] / w[:, across],
                    ),
                    Slip(
                        "g' = s_k^2 N / beta^2 carries s_k squared (you have one s_k)",
                        ref / s[:, own],
                    ),
                    Slip(
                        "these are first derivatives: g' equals d_k on both sides of the "
                        "knot, g'' does not",
                        deriv[:, 1:-1],
                    ),
                ],
                advice="differentiate g'(x) = s^2 N(xi) / beta(xi)^2 once more in x, "
                "with d xi / dx = 1 / w, and evaluate at xi = 1 (left) and xi = 0 (right)",
            )
    jump = (ref_right - ref_left).abs().max()
    print(
        f"Correct: g'' jumps at the knots (by up to {float(jump):.3g} here): the spline is "
        "continuously differentiable but not twice."
    )
