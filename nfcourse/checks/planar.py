"""Feedback for the exercises of chapter 3 (planar and radial flows).

Each check calls the student's function on random float64 inputs (several dimensions, a
planar layer with ``w^T u < -1`` that folds, points on its hyperplane, ``||w||`` below and
above one, ``m = -1`` at the edge of invertibility), compares it with the package's
reference (``nfcourse.flows.planar``, ``nfcourse.flows.radial``) and with the autograd
Jacobian where a log-determinant is asked for, and names the slip that fits the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import Flow
from ..densities import Banana, log_banana
from ..flows.planar import PlanarFlow, constrained_u, planar_forward, solve_planar_projection
from ..flows.radial import radial_forward
from ..testing import autograd_log_abs_det
from ._toolkit import (
    ExerciseError,
    Slip,
    as_tensor,
    compare,
    compare_gradients,
    run,
)
from ._training import (
    REVERSE_KL,
    Goal,
    check_fit,
    safe_value,
)

__all__ = [
    "BANANA_GOAL",
    "check_bisection",
    "check_fit_banana",
    "check_planar_log_det",
    "check_radial_log_det",
    "check_u_hat",
]

F64 = torch.float64


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _planar_cases(seed: int) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Random layers in D = 2 and 5, then a raw u with w^T u = -3 in D = 3 (a folding map,
    where 1 + u^T psi(z) < 0 near the hyperplane), with four points on the hyperplane."""
    g = _generator(seed)
    for dim in (2, 5, 3):
        z = 1.5 * torch.randn(12, dim, generator=g, dtype=F64)
        u = torch.randn(dim, generator=g, dtype=F64)
        w = torch.randn(dim, generator=g, dtype=F64)
        b = torch.randn((), generator=g, dtype=F64)
        if dim == 3:
            u = u - (w @ u + 3.0) * w / (w @ w)
            b = torch.zeros((), dtype=F64)
            z[:4] -= (z[:4] @ w / (w @ w)).unsqueeze(1) * w
        yield z, u, w, b


def _planar_log_det(z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> Tensor:
    return torch.log(torch.abs(1 + (1 - torch.tanh(z @ w + b) ** 2) * (w @ u)))


def check_planar_log_det(
    planar_log_det: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], seed: int = 0
) -> None:
    """Exercise: ``planar_log_det(z, u, w, b)`` returns ``log |1 + u^T psi(z)|``, shape
    ``(B,)``, with ``psi(z) = tanh'(w^T z + b) w``."""
    got, expected, labels, folding = [], [], [], []
    slips: dict[str, list[Tensor]] = {}
    answers = []
    for z, u, w, b in _planar_cases(seed):
        answer = as_tensor(
            run(planar_log_det, z.clone(), u.clone(), w.clone(), b.clone(), name="planar_log_det"),
            f"planar_log_det for z of shape {tuple(z.shape)}",
            (z.shape[0],),
            ("batch",),
        )
        answers.append(answer)
        got.append(answer.detach().to(F64))
        expected.append(autograd_log_abs_det(lambda v: planar_forward(v, u, w, b)[0], z))
        labels += [f"sample {k} (D = {z.shape[1]})" for k in range(len(z))]
        folding.append(torch.full((len(z),), bool(w @ u < -1)))
        h = torch.tanh(z @ w + b)
        wu = w @ u
        for message, value in {
            (
                "a sign error: J = I + u psi(z)^T, so det J = 1 + u^T psi(z) (a plus sign)"
            ): torch.log(torch.abs(1 - (1 - h**2) * wu)),
            (
                "psi(z) is missing the derivative tanh'(w^T z + b) = 1 - tanh^2(w^T z + b)"
            ): torch.log(torch.abs(1 + wu)).expand_as(h),
            (
                "psi(z) uses tanh(w^T z + b) where its derivative 1 - tanh^2(w^T z + b) belongs"
            ): torch.log(torch.abs(1 + h * wu)),
            "tanh'(a) = 1 - tanh^2(a), not tanh^2(a)": torch.log(torch.abs(1 + h**2 * wu)),
            "you return the determinant 1 + u^T psi(z) itself: take log |.| of it": 1
            + (1 - h**2) * wu,
            (
                "the absolute value is missing: with a raw u (w^T u < -1), 1 + u^T psi(z) is "
                "negative near the hyperplane and its log is NaN; take log |1 + u^T psi(z)|"
            ): torch.log(1 + (1 - h**2) * wu),
            "the bias b is missing from tanh'(w^T z + b)": torch.log(
                torch.abs(1 + (1 - torch.tanh(z @ w) ** 2) * wu)
            ),
            "u^T psi(z) = tanh'(w^T z + b) (w^T u): you used u^T u or w^T w": torch.log(
                torch.abs(1 + (1 - h**2) * (u @ u))
            ),
            "the log-det is log |1 + u^T psi(z)|, without the extra 1 - ... inside": torch.log(
                torch.abs((1 - h**2) * wu)
            ),
        }.items():
            slips.setdefault(message, []).append(value)
    compare(
        torch.cat(got),
        torch.cat(expected),
        "planar_log_det",
        like=answers,
        labels=labels,
        groups={"the layer with w^T u < -1 (a raw u, which folds)": torch.cat(folding)},
        nan_hint="with a raw u, 1 + u^T psi(z) can be negative, so take the absolute "
        "value before the log",
        slips=[Slip(m, torch.cat(v)) for m, v in slips.items()],
    )
    for z, u, w, b in list(_planar_cases(seed))[::2]:  # D = 2, and the folding layer
        compare_gradients(
            planar_log_det,
            _planar_log_det,
            [z, u, w, b],
            "planar_log_det",
            wrt={0: "z", 1: "u", 2: "w", 3: "b"},
            name="planar_log_det",
            advice="training differentiates the log-det with respect to u, w and b",
        )
    print(
        "Correct: planar_log_det matches log |det J| of the autograd Jacobian "
        "(D = 2, 3 and 5, 36 points, one layer with w^T u < -1)."
    )


def check_u_hat(u_hat: Callable[[Tensor, Tensor], Tensor], seed: int = 0) -> None:
    """Exercise: ``u_hat(u, w)`` returns ``u + (m(w^T u) - w^T u) w / ||w||^2`` with
    ``m(a) = -1 + softplus(a)``, for vectors ``u, w`` of shape ``(D,)``: 40 random pairs
    with ``||w||`` below and above one, and two with ``w^T u`` around +-800."""
    g = _generator(seed)
    got, expected, labels, small_w, large = [], [], [], [], []
    answers, pairs = [], []
    slips: dict[str, list[Tensor]] = {}
    for trial in range(42):
        dim = 2 + trial % 4
        scale = 0.3 if trial % 2 else 3.0  # ||w|| below and above one
        u = 3.0 * torch.randn(dim, generator=g, dtype=F64)
        w = scale * torch.randn(dim, generator=g, dtype=F64)
        if trial >= 40:  # a huge w^T u, of both signs: exp(w^T u) overflows
            u = (800.0 if trial == 40 else -800.0) * w / (w @ w)
        answer = as_tensor(
            run(u_hat, u.clone(), w.clone(), name="u_hat"),
            f"u_hat(u, w) for D = {dim}",
            (dim,),
            ("coordinates",),
        )
        answers.append(answer)
        got.append(answer.detach().to(F64))
        pairs.append((u, w))
        expected.append(constrained_u(u, w))
        labels += [
            f"trial {trial} (D = {dim}, w^T u = {float(w @ u):.3g}), coordinate {i}"
            for i in range(dim)
        ]
        small_w.append(torch.full((dim,), float(w.norm()) < 1))
        large.append(torch.full((dim,), abs(float(w @ u)) > 100))
        a = w @ u
        for message, value in {
            "u_hat divides by ||w||; divide by ||w||^2 = w^T w, so that "
            "w^T u_hat = w^T u + (m - w^T u) w^T w / ||w||^2 = m exactly": u
            + (-1 + F.softplus(a) - a) * w / w.norm(),
            "u_hat uses m(a) = -1 + log(1 + softplus(a)); the paper's m is "
            "m(a) = -1 + softplus(a) = -1 + log(1 + exp(a))": u
            + (-1 + torch.log1p(F.softplus(a)) - a) * w / (w @ w),
            "m(a) = -1 + softplus(a): the -1 is missing (w^T u_hat must be able to reach "
            "down to -1)": u + (F.softplus(a) - a) * w / (w @ w),
            "the correction is (m(w^T u) - w^T u) w / ||w||^2; you have its sign reversed, "
            "(w^T u - m(w^T u))": u - (-1 + F.softplus(a) - a) * w / (w @ w),
            "the correction moves u along w: it is (m - w^T u) w / ||w||^2, not along u": u
            + (-1 + F.softplus(a) - a) * u / (w @ w),
            "u_hat is u + (m(w^T u) - w^T u) w / ||w||^2; you left out the - w^T u": u
            + (-1 + F.softplus(a)) * w / (w @ w),
            "m(a) uses softplus(a) = log(1 + exp(a)), not exp(a)": u
            + (-1 + torch.exp(a) - a) * w / (w @ w),
            "exp(w^T u) overflows for a large w^T u: log(1 + exp(a)) is inf; use "
            "F.softplus(a), which is stable": u
            + (-1 + torch.log(1 + torch.exp(a)) - a) * w / (w @ w),
        }.items():
            slips.setdefault(message, []).append(value)
    try:
        compare(
            torch.cat(got),
            torch.cat(expected),
            "u_hat",
            like=answers,
            labels=labels,
            groups={
                "the pairs with ||w|| < 1": torch.cat(small_w),
                "the pairs with a huge w^T u": torch.cat(large),
            },
            large=torch.cat(large),
            slips=[Slip(m, torch.cat(v)) for m, v in slips.items()],
        )
    except ExerciseError as error:
        if "is not right:" in str(error) or "NaN" in str(error) or "inf" in str(error):
            raise
        raise ExerciseError(f"{error}. {_u_hat_anatomy(pairs, got)}") from None
    for u, w in pairs[:2]:  # ||w|| above and below one
        compare_gradients(
            u_hat,
            constrained_u,
            [u, w],
            "u_hat",
            wrt={0: "u", 1: "w"},
            name="u_hat",
            advice="training reaches the parameters u and w through u_hat, so w^T u, "
            "softplus and ||w||^2 must all stay torch operations on u and w",
        )
    print(
        "Correct: u_hat matches the paper's formula on 42 (u, w), ||w|| below and above "
        "one, w^T u = +-800 included, and so do its gradients."
    )


def _u_hat_anatomy(pairs: list[tuple[Tensor, Tensor]], got: Tensor) -> str:
    """Split each answer into its parts along and across w: which of the two is wrong."""
    across_wrong, along = 0, []
    for (u, w), answer in zip(pairs, got, strict=False):
        unit = w / w.norm()
        if float((answer - (answer @ unit) * unit - (u - (u @ unit) * unit)).abs().max()) > 1e-6:
            across_wrong += 1
        along.append((float(w @ answer), float(-1 + F.softplus(w @ u)), float(w @ u)))
    if across_wrong:
        return (
            f"In {across_wrong} of {len(pairs)} trials your u_hat also changes the part of "
            "u across w: the correction must move u along w only, u_hat = u + c w"
        )
    k = max(range(len(along)), key=lambda i: abs(along[i][0] - along[i][1]))
    below = sum(a < -1 - 1e-9 for a, _, _ in along)
    return (
        f"The part of u across w is right; the part along w is not: w^T u_hat should be "
        f"m(w^T u) = -1 + softplus(w^T u), e.g. {along[k][1]:.6g} for w^T u = "
        f"{along[k][2]:.4g}, and yours is {along[k][0]:.6g}"
        + (
            f"; in {below} trials w^T u_hat < -1, where the layer is not invertible"
            if below
            else ""
        )
    )


def _bisect_variant(y: Tensor, m: Tensor, b: Tensor, kind: str, n_iter: int = 80) -> Tensor:
    """The bisection with one of the usual slips, to recognise it in an answer."""
    width = m if kind == "no_abs" else m.abs()
    lo, hi = y - width, y + width
    shift = -b if kind == "minus_b" else b
    for _ in range(n_iter):
        mid = (lo + hi) / 2
        value = mid + m * torch.tanh(mid + shift) - (0 if kind == "no_y" else y)
        positive = value > 0
        if kind == "swapped":
            lo, hi = torch.where(positive, mid, lo), torch.where(positive, hi, mid)
        else:
            hi, lo = torch.where(positive, mid, hi), torch.where(positive, lo, mid)
    return (lo + hi) / 2


_BISECTION_SLIPS = {
    "swapped": "the update keeps the wrong half: when g(mid) = mid + m tanh(mid + b) - y "
    "> 0 the root lies below mid, so set hi = mid (and lo = mid otherwise); "
    "yours moves the other end, and the bracket closes on its end point",
    "no_abs": "the bracket is [y - |m|, y + |m|]: for a negative m, y - m > y + m, and the "
    "halving runs on an upside-down interval",
    "minus_b": "the equation is alpha + m tanh(alpha + b) = y: you used tanh(alpha - b)",
    "no_y": "the sign test must use g(alpha) = alpha + m tanh(alpha + b) - y: the - y is missing",
}


def _truncated_bisection(got: Tensor, y: Tensor, m: Tensor, error: Tensor) -> int | None:
    """The number n of halvings if every answer is the midpoint of one of the 2^n equal
    sub-brackets of [y - |m|, y + |m|] and lies within half a sub-bracket of the root (a
    right update rule stopped early); None otherwise."""
    width = 2 * m.abs()
    if float(width) == 0:
        return None
    position = (got - (y - m.abs())) / width
    for n in range(1, 40):
        t = position * 2**n - 0.5
        if bool(((t - t.round()).abs() < 1e-6).all()) and bool(
            (error <= float(width) / 2 ** (n + 1) * (1 + 1e-6) + 1e-12).all()
        ):
            return n
    return None


def check_bisection(
    bisect_projection: Callable[[Tensor, Tensor, Tensor], Tensor], seed: int = 0
) -> None:
    """Exercise: ``bisect_projection(y, m, b)`` solves ``alpha + m tanh(alpha + b) = y`` for
    ``alpha`` (elementwise, ``y`` of shape ``(B,)``, scalar tensors ``m >= -1`` and ``b``),
    for ``m = -1`` (the edge), ``-0.9``, ``0``, ``0.5`` and ``4``."""
    g = _generator(seed)
    # positive m first: a bracket built without |m| is right there and fails only for a
    # negative m, where it behaves like a swapped update
    for m_value in (0.5, 4.0, 0.0, -1.0, -0.9):
        y = 3.0 * torch.randn(50, generator=g, dtype=F64)
        b = torch.randn((), generator=g, dtype=F64)
        m = torch.tensor(m_value, dtype=F64)
        answer = as_tensor(
            run(bisect_projection, y.clone(), m.clone(), b.clone(), name="bisect_projection"),
            f"bisect_projection for m = {m_value:g}",
            tuple(y.shape),
            ("points",),
        )
        got = answer.detach().to(F64)
        expected = solve_planar_projection(y, m, b)
        what = f"bisect_projection for m = {m_value:g}"
        if not bool(torch.isfinite(got).all()):
            raise ExerciseError(
                f"{what} returned NaN or inf: check the bracket "
                "[y - |m|, y + |m|] and the midpoint (lo + hi) / 2"
            )
        atol, _ = (2e-4, 0) if answer.dtype != F64 else (1e-9, 0)
        if bool(((got - expected).abs() <= atol * (1 + expected.abs())).all()):
            continue
        kinds = sorted(_BISECTION_SLIPS, key=lambda kind: kind != "no_abs" or m_value > 0)
        for kind in kinds:
            message = _BISECTION_SLIPS[kind]
            slip = _bisect_variant(y, m, b, kind)
            if not bool(torch.allclose(slip, expected, atol=1e-6)) and bool(
                torch.allclose(got, slip, atol=1e-6, equal_nan=True)
            ):
                raise ExerciseError(f"{what} is not right: {message}")
        error = (got - expected).abs()
        residual = (got + m * torch.tanh(got + b) - y).abs()
        k = int(error.argmax())
        inside = bool(((got >= y - m.abs() - 1e-12) & (got <= y + m.abs() + 1e-12)).all())
        halvings = _truncated_bisection(got, y, m, error) if inside else None
        if halvings is not None:
            raise ExerciseError(
                f"{what} is a correct bisection stopped after {halvings} halvings: every "
                "answer is the midpoint of its bracket, with an error up to "
                f"{float(error.max()):.3g}. The update rule is right; run more halvings "
                "(60 reach float64 precision)"
            )
        if not inside:
            raise ExerciseError(
                f"{what} left the bracket [y - |m|, y + |m|] at point {k} (y = "
                f"{float(y[k]):.4g}, alpha = {float(got[k]):.6g}): the root lies inside it, "
                "because |m tanh(.)| <= |m|; keep the half where g(alpha) = "
                "alpha + m tanh(alpha + b) - y changes sign"
            )
        raise ExerciseError(
            f"{what} does not solve alpha + m tanh(alpha + b) = y: the residual is "
            f"{float(residual[k]):.3g} at point {k} (y = {float(y[k]):.4g}, alpha = "
            f"{float(got[k]):.6g}, root {float(expected[k]):.6g}), far more than a few "
            "missing halvings explain: recheck which end of the bracket moves (hi = mid "
            "where g(mid) > 0) and that g includes every term"
        )
    print(
        "Correct: bisect_projection solves alpha + m tanh(alpha + b) = y for "
        "m = -1, -0.9, 0, 0.5 and 4 (250 points)."
    )


def _radial_log_det(z: Tensor, z0: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    h = 1 / (alpha + (z - z0).norm(dim=1))
    return (z.shape[1] - 1) * torch.log1p(beta * h) + torch.log1p(beta * alpha * h**2)


def check_radial_log_det(
    radial_log_det: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], seed: int = 0
) -> None:
    """Exercise: ``radial_log_det(z, z0, alpha, beta)`` returns
    ``(D - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r)``, shape ``(B,)``, for
    ``D = 1, 2, 5`` and ``beta`` of both signs."""
    g = _generator(seed)
    got, expected, labels, answers = [], [], [], []
    terms_across, terms_one, terms_along = [], [], []
    slips: dict[str, list[Tensor]] = {}
    for dim, sign in ((1, 1.0), (2, -1.0), (5, 1.0), (3, -1.0)):
        z = 1.5 * torch.randn(12, dim, generator=g, dtype=F64)
        z0 = torch.randn(dim, generator=g, dtype=F64)
        alpha = torch.tensor(0.3 + float(torch.rand((), generator=g)), dtype=F64)
        beta = (
            torch.tensor(sign * 0.9, dtype=F64) * alpha
            if sign < 0
            else torch.tensor(1.7, dtype=F64)
        )
        answer = as_tensor(
            run(
                radial_log_det,
                z.clone(),
                z0.clone(),
                alpha.clone(),
                beta.clone(),
                name="radial_log_det",
            ),
            f"radial_log_det for z of shape {tuple(z.shape)}",
            (12,),
            ("batch",),
        )
        answers.append(answer)
        got.append(answer.detach().to(F64))
        expected.append(autograd_log_abs_det(lambda v: radial_forward(v, z0, alpha, beta)[0], z))
        labels += [f"sample {k} (D = {dim}, beta = {float(beta):.3g})" for k in range(12)]
        r = (z - z0).norm(dim=1)
        h = 1 / (alpha + r)
        across, along = torch.log1p(beta * h), torch.log1p(beta * alpha * h**2)
        terms_across.append((dim - 1) * across)
        terms_one.append(across)
        terms_along.append(along)
        r2 = ((z - z0) ** 2).sum(dim=1)
        h2 = 1 / (alpha + r2)
        for message, value in {
            "the factor 1 + beta h appears D - 1 times (the directions across the ray), "
            "not D times": dim * across + along,
            "the eigenvalue along the ray is 1 + beta h + beta h'(r) r with "
            "h'(r) = -1 / (alpha + r)^2 (a minus sign)": (dim - 1) * across
            + torch.log1p(beta * h + beta * r * h**2),
            "the eigenvalue along the ray needs the term beta h'(r) r": dim * across,
            "r is the distance ||z - z0||, with a square root; you used r^2 = ||z - z0||^2": (
                dim - 1
            )
            * torch.log1p(beta * h2)
            + torch.log1p(beta * alpha * h2**2),
            "h'(r) = -1 / (alpha + r)^2, squared: 1 + beta h + beta h' r = 1 + beta alpha h^2": (
                dim - 1
            )
            * across
            + torch.log1p(beta * alpha * h),
            "the factor across the ray is raised to the power D - 1: multiply its log by "
            "D - 1, not D - 2 or 1": across + along,
            "the log-det is a sum of logs: (D - 1) log(1 + beta h) + log(1 + beta h + "
            "beta h' r), not their product": (dim - 1) * across * along,
        }.items():
            slips.setdefault(message, []).append(value)
    terms = {
        "the term (D - 1) log(1 + beta h)": torch.cat(terms_across),
        "log(1 + beta h)": torch.cat(terms_one),
        "the term log(1 + beta h + beta h'(r) r)": torch.cat(terms_along),
    }
    compare(
        torch.cat(got),
        torch.cat(expected),
        "radial_log_det",
        like=answers,
        labels=labels,
        terms=terms,
        slips=[Slip(m, torch.cat(v)) for m, v in slips.items()],
    )
    compare_gradients(
        radial_log_det,
        _radial_log_det,
        [z, z0, alpha, beta],
        "radial_log_det",
        wrt={0: "z", 1: "z0", 2: "alpha", 3: "beta"},
        name="radial_log_det",
        advice="training differentiates the log-det with respect to z0, alpha and beta",
    )
    print(
        "Correct: radial_log_det matches log |det J| of the autograd Jacobian "
        "(D = 1, 2, 3 and 5, beta of both signs, 48 points)."
    )


# --- Exercise: fit a banana by reverse KL ---------------------------------------------------


BANANA_GOAL = Goal(0.15, steps=300, phrases=REVERSE_KL)
BANANA_FLOOR = (
    -Banana.log_z,
    "the reverse KL cannot be negative, so the loss cannot go "
    "below -log Z; is the sign of the log-det right (log q(x) = "
    "log p_Z(z) - log|det J_f(z)|), and the sign of the loss?",
)


def _reverse_kl_loss(flow: Flow, seed: int, sign_log_det: float = 1.0, sign: float = 1.0) -> float:
    """The reverse-KL loss ``E_q[log q(x) - log p~(x)]`` at the trained flow on 4,096 of its
    samples, with the signs of the log-det and of the loss as a slip would have them."""
    g = torch.Generator().manual_seed(20_000 + seed)
    z = flow.base.sample(4096, generator=g)
    x, log_det = flow.transform(z)
    log_q = flow.base.log_prob(z) - sign_log_det * log_det
    return float(sign * (log_q - log_banana(x)).mean())


def check_fit_banana(
    fit_banana: Callable[[Callable[[Tensor], Tensor], torch.Generator], tuple[Flow, list[float]]],
    seed: int = 0,
) -> None:
    """Exercise: the student's ``fit_banana(log_target, generator)`` fits a planar flow to
    ``nfcourse.densities.log_banana`` by reverse KL and returns ``(flow, history)``; the
    flow must reach the exact ``KL(q || p) < 0.15`` nats within 300 steps."""

    def slips(flow: Flow, loss: float) -> list[tuple[float, str]]:
        return [
            (
                safe_value(lambda: _reverse_kl_loss(flow, seed, sign_log_det=-1.0)),
                "your log q(x) adds the log-det of f: for samples x = f(z), "
                "log q(x) = log p_Z(z) - log|det J_f(z)|, the density spreads where f stretches",
            ),
            (
                -loss,
                "your loss is E[log p~(x) - log q(x)], the reverse KL with its sign flipped: the "
                "optimiser minimises, so the loss is E_q[log q(x) - log p~(x)]",
            ),
        ]

    def limitation(flow: Flow) -> str | None:
        if any(isinstance(m, PlanarFlow) for m in flow.modules()):
            return None
        return "your flow has no planar layers: a Gaussian cannot bend into a banana"

    check_fit(
        fit_banana,
        log_banana,
        torch.Generator().manual_seed(seed),
        name="fit_banana",
        goal=BANANA_GOAL,
        target=log_banana,
        log_z=Banana.log_z,
        seed=seed,
        floor=BANANA_FLOOR,
        loss=lambda flow: _reverse_kl_loss(flow, seed),
        slips=slips,
        went_up=(
            "with the reverse KL the gradient must pass through the samples "
            "x = f(z): did you detach them or draw them under torch.no_grad()? "
            "(A learning rate that is too large also makes the loss climb.)"
        ),
        limitation=limitation,
    )
