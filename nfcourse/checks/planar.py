"""Feedback for the exercises of chapter 3 (planar and radial flows).

Each check calls the student's function on random float64 inputs, compares it with the
package's reference (``nfcourse.flows.planar``, ``nfcourse.flows.radial``) and with the
autograd Jacobian where a log-determinant is asked for, and recognises the common slips
(a sign error, a missing derivative, dividing by ``||w||`` instead of ``||w||^2``, ...) so
that the message says what to fix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..flows.planar import constrained_u, planar_forward, solve_planar_projection
from ..flows.radial import radial_forward
from ..testing import autograd_log_abs_det
from . import ExerciseError, call_student

__all__ = [
    "check_planar_log_det",
    "check_u_hat",
    "check_bisection",
    "check_radial_log_det",
]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _close(a: Tensor, b: Tensor, atol: float = 1e-8) -> bool:
    return a.shape == b.shape and bool(torch.isfinite(a).all()) and bool(
        ((a - b).abs() <= atol + 1e-8 * b.abs()).all())


def _as_result(got, what: str, shape: tuple[int, ...]) -> Tensor:
    if not isinstance(got, Tensor):
        raise ExerciseError(f"{what} should return a torch.Tensor, got {type(got).__name__}")
    if got.shape != shape:
        hint = ""
        if got.numel() == math.prod(shape):
            hint = " (same numbers, wrong shape: squeeze or reshape it)"
        raise ExerciseError(
            f"{what} returned shape {tuple(got.shape)}; expected {shape}{hint}")
    return got.detach().to(torch.float64)


def _planar_cases(seed: int):
    """Random layers in D = 2 and 5, then a raw u with w^T u = -3 in D = 3 (a folding map,
    where 1 + u^T psi(z) < 0 near the hyperplane), with four points on the hyperplane."""
    g = _generator(seed)
    for dim in (2, 5, 3):
        z = 1.5 * torch.randn(12, dim, generator=g, dtype=torch.float64)
        u = torch.randn(dim, generator=g, dtype=torch.float64)
        w = torch.randn(dim, generator=g, dtype=torch.float64)
        b = torch.randn((), generator=g, dtype=torch.float64)
        if dim == 3:
            u = u - (w @ u + 3.0) * w / (w @ w)
            b = torch.zeros((), dtype=torch.float64)
            z[:4] -= (z[:4] @ w / (w @ w)).unsqueeze(1) * w
        yield z, u, w, b


def check_planar_log_det(planar_log_det, seed: int = 0) -> None:
    """Exercise: ``planar_log_det(z, u, w, b)`` returns ``log |1 + u^T psi(z)|``, shape
    ``(B,)``, with ``psi(z) = tanh'(w^T z + b) w``."""
    for z, u, w, b in _planar_cases(seed):
        got = _as_result(call_student(planar_log_det, z, u, w, b, name="planar_log_det"),
                         "planar_log_det", (z.shape[0],))
        expected = autograd_log_abs_det(lambda v: planar_forward(v, u, w, b)[0], z)
        if _close(got, expected):
            continue
        h = torch.tanh(z @ w + b)
        slips = {
            "a sign error: J = I + u psi(z)^T, so det J = 1 + u^T psi(z) (a plus sign)":
                torch.log(torch.abs(1 - (1 - h**2) * (w @ u))),
            "psi(z) is missing the derivative tanh'(w^T z + b) = 1 - tanh^2(w^T z + b)":
                torch.log(torch.abs(1 + w @ u)).expand_as(h),
            "psi(z) uses tanh(w^T z + b) where its derivative 1 - tanh^2(w^T z + b) belongs":
                torch.log(torch.abs(1 + h * (w @ u))),
            "you return the determinant 1 + u^T psi(z) itself: take log |.| of it":
                1 + (1 - h**2) * (w @ u),
        }
        for message, value in slips.items():
            if _close(got, value):
                raise ExerciseError(f"planar_log_det: {message}")
        if not bool(torch.isfinite(got).all()):
            raise ExerciseError(
                "planar_log_det returned NaN or inf: with a raw u, 1 + u^T psi(z) can be "
                "negative, so take the absolute value before the log")
        k = int((got - expected).abs().argmax())
        raise ExerciseError(
            f"planar_log_det differs from log |det J| of the autograd Jacobian by "
            f"{float((got - expected).abs()[k]):.3g} at sample {k} (D = {z.shape[1]}): got "
            f"{float(got[k]):.6g}, expected {float(expected[k]):.6g}")
    print("Correct: planar_log_det matches log |det J| of the autograd Jacobian "
          "(D = 2, 3 and 5, 36 points, one layer with w^T u < -1).")


def check_u_hat(u_hat, seed: int = 0) -> None:
    """Exercise: ``u_hat(u, w)`` returns ``u + (m(w^T u) - w^T u) w / ||w||^2`` with
    ``m(a) = -1 + softplus(a)``, for vectors ``u, w`` of shape ``(D,)``."""
    g = _generator(seed)
    for trial in range(40):
        dim = 2 + trial % 4
        scale = 0.3 if trial % 2 else 3.0  # ||w|| below and above one
        u = 3.0 * torch.randn(dim, generator=g, dtype=torch.float64)
        w = scale * torch.randn(dim, generator=g, dtype=torch.float64)
        got = _as_result(call_student(u_hat, u.clone(), w.clone(), name="u_hat"), "u_hat",
                         (dim,))
        expected = constrained_u(u, w)
        if _close(got, expected, atol=1e-10):
            continue
        a = w @ u
        wrong_norm = u + (-1 + F.softplus(a) - a) * w / w.norm()
        wrong_m = u + (-1 + torch.log1p(F.softplus(a)) - a) * w / (w @ w)
        if _close(got, wrong_norm, atol=1e-10):
            raise ExerciseError(
                "u_hat divides by ||w||; divide by ||w||^2 = w^T w, so that "
                "w^T u_hat = w^T u + (m - w^T u) w^T w / ||w||^2 = m exactly")
        if _close(got, wrong_m, atol=1e-10):
            raise ExerciseError(
                "u_hat uses m(a) = -1 + log(1 + softplus(a)); the paper's m is "
                "m(a) = -1 + softplus(a) = -1 + log(1 + exp(a))")
        m_got = float(w @ got)
        if m_got < -1 - 1e-12:
            raise ExerciseError(
                f"w^T u_hat = {m_got:.4g} < -1 for u = {u.tolist()}, w = {w.tolist()}: the "
                "layer would not be invertible")
        raise ExerciseError(
            f"u_hat is not the paper's u + (m(w^T u) - w^T u) w / ||w||^2: for "
            f"u = {[round(v, 3) for v in u.tolist()]}, w = {[round(v, 3) for v in w.tolist()]} "
            f"you return w^T u_hat = {m_got:.6g}, expected m(w^T u) = "
            f"{float(-1 + F.softplus(a)):.6g}")
    print("Correct: u_hat matches the paper's formula on 40 random (u, w), and "
          "w^T u_hat >= -1 on all of them.")


def check_bisection(bisect_projection, seed: int = 0) -> None:
    """Exercise: ``bisect_projection(y, m, b)`` solves ``alpha + m tanh(alpha + b) = y`` for
    ``alpha`` (elementwise, ``y`` of shape ``(B,)``, scalar tensors ``m >= -1`` and ``b``)."""
    g = _generator(seed)
    cases = []
    for m in (-1.0, -0.9, 0.0, 0.5, 4.0):
        y = 3.0 * torch.randn(50, generator=g, dtype=torch.float64)
        b = torch.randn((), generator=g, dtype=torch.float64)
        cases.append((y, torch.tensor(m, dtype=torch.float64), b))
    for y, m, b in cases:
        got = _as_result(call_student(bisect_projection, y.clone(), m, b,
                                      name="bisect_projection"), "bisect_projection",
                         tuple(y.shape))
        if not bool(torch.isfinite(got).all()):
            raise ExerciseError(f"bisect_projection returned NaN or inf for m = {float(m):g}")
        residual = (got + m * torch.tanh(got + b) - y).abs()
        k = int(residual.argmax())
        if float(residual[k]) > 1e-9:
            lo, hi = float(y[k] - m.abs()), float(y[k] + m.abs())
            inside = lo - 1e-12 <= float(got[k]) <= hi + 1e-12
            hint = (
                "it stopped before the bracket was small enough: run more halvings "
                "(each one halves the width 2|m|)" if inside else
                f"it left the bracket [y - |m|, y + |m|] = [{lo:.4g}, {hi:.4g}]: keep the half "
                "where g(alpha) = alpha + m tanh(alpha + b) - y changes sign"
            )
            raise ExerciseError(
                f"bisect_projection does not solve alpha + m tanh(alpha + b) = y: the residual "
                f"is {float(residual[k]):.3g} at point {k} (m = {float(m):g}, "
                f"y = {float(y[k]):.4g}, alpha = {float(got[k]):.6g}); {hint}")
        expected = solve_planar_projection(y, m, b)
        check = (got - expected).abs().max()
        if float(check) > 1e-6:
            raise ExerciseError(
                f"bisect_projection found a root that differs from the reference by "
                f"{float(check):.3g}; for m >= -1 the root is unique, so recheck the update")
    print("Correct: bisect_projection solves alpha + m tanh(alpha + b) = y to 1e-9 for "
          "m = -1, -0.9, 0, 0.5 and 4 (250 points).")


def check_radial_log_det(radial_log_det, seed: int = 0) -> None:
    """Exercise: ``radial_log_det(z, z0, alpha, beta)`` returns
    ``(D - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r)``, shape ``(B,)``."""
    g = _generator(seed)
    for dim in (1, 2, 5):
        z = 1.5 * torch.randn(12, dim, generator=g, dtype=torch.float64)
        z0 = torch.randn(dim, generator=g, dtype=torch.float64)
        alpha = torch.tensor(0.3 + float(torch.rand((), generator=g)), dtype=torch.float64)
        beta = -alpha + torch.tensor(1.5, dtype=torch.float64) * torch.rand(
            (), generator=g, dtype=torch.float64)
        got = _as_result(call_student(radial_log_det, z, z0, alpha, beta,
                                      name="radial_log_det"), "radial_log_det", (12,))
        expected = autograd_log_abs_det(lambda v: radial_forward(v, z0, alpha, beta)[0], z)
        if _close(got, expected):
            continue
        r = (z - z0).norm(dim=1)
        h = 1 / (alpha + r)
        across, along = torch.log1p(beta * h), torch.log1p(beta * alpha * h**2)
        slips = {
            "the factor 1 + beta h appears D - 1 times (the directions across the ray), "
            "not D times": dim * across + along,
            "the eigenvalue along the ray is 1 + beta h + beta h'(r) r with "
            "h'(r) = -1 / (alpha + r)^2 (a minus sign)": (dim - 1) * across
            + torch.log1p(beta * h + beta * r * h**2),
            "the eigenvalue along the ray needs the term beta h'(r) r": dim * across,
        }
        for message, value in slips.items():
            if _close(got, value):
                raise ExerciseError(f"radial_log_det (D = {dim}): {message}")
        k = int((got - expected).abs().argmax())
        raise ExerciseError(
            f"radial_log_det differs from log |det J| of the autograd Jacobian by "
            f"{float((got - expected).abs()[k]):.3g} at sample {k} (D = {dim}): got "
            f"{float(got[k]):.6g}, expected {float(expected[k]):.6g}")
    print("Correct: radial_log_det matches log |det J| of the autograd Jacobian "
          "(D = 1, 2 and 5, 36 points).")


# --- Exercise: fit a banana by reverse KL ---------------------------------------------------

import math  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from . import ExerciseError  # noqa: E402
from ._training import describe_shortfall, run_training  # noqa: E402

BANANA_STEPS = 300
BANANA_KL_GOAL = 0.15
BANANA_LOG_Z = math.log(math.pi)  # the integral of exp(log_banana) is 2 pi * 1 * 0.5
_BANANA_FLOOR = (-BANANA_LOG_Z, "the reverse KL cannot be negative, so the loss cannot go "
                                "below -log Z; is the sign of the log-det right (log q(x) = "
                                "log p_Z(z) - log|det J_f(z)|), and the sign of the loss?")


def log_banana(x: Tensor) -> Tensor:
    """The unnormalised log-density of the banana: ``x1 ~ N(0, 1)`` and
    ``x2 | x1 ~ N(x1^2 / 2, 0.5^2)``, without the normaliser (``log Z = log pi``).
    ``x`` of shape ``(B, 2)``; returns ``(B,)``."""
    x1, x2 = x[:, 0], x[:, 1]
    return -0.5 * x1**2 - 0.5 * ((x2 - 0.5 * x1**2) / 0.5) ** 2


def check_fit_banana(fit_banana: Callable, seed: int = 0) -> None:
    """Exercise: the student's ``fit_banana(log_target, generator)`` fits a planar flow to
    ``log_banana`` by reverse KL and returns ``(flow, history)``; the flow must reach the
    exact ``KL(q || p) < 0.15`` nats within 300 steps."""
    from ..core import Flow
    from ..flows.planar import PlanarFlow
    from ..targets import exact_reverse_kl

    generator = torch.Generator().manual_seed(seed)
    flow, history = run_training(
        fit_banana, log_banana, generator, name="fit_banana", budget=BANANA_STEPS,
        model_type=Flow, model_hint="the nfcourse.Flow you trained", seed=seed,
        floor=_BANANA_FLOOR)

    def energy(x):
        return -log_banana(x)

    try:
        kl, _ = exact_reverse_kl(flow, energy, BANANA_LOG_Z, n=20_000, seed=10_000 + seed)
    except Exception as error:  # a broken flow cannot even be sampled
        kl = math.nan
        broken = f" (sampling it failed: {type(error).__name__}: {error})"
    else:
        broken = ""
    if math.isfinite(kl) and kl < BANANA_KL_GOAL:
        print(f"Correct: your flow reaches KL(q || p) = {kl:.4f} nats (goal: below "
              f"{BANANA_KL_GOAL}) after {len(history)} steps.")
        return
    t, base = flow.transform, flow.base

    def estimate(sign_log_det: float, sign: float) -> float:
        try:
            with torch.no_grad():
                g = torch.Generator().manual_seed(20_000 + seed)
                z = base.sample(4096, generator=g)
                x, log_det = t(z)
                log_q = base.log_prob(z) - sign_log_det * log_det
                return float(sign * (log_q - log_banana(x)).mean())
        except Exception:  # the slip cannot be evaluated: it matches nothing
            return math.nan

    slips = [
        (estimate(-1.0, 1.0),
         "your log q(x) adds the log-det of f: for samples x = f(z), "
         "log q(x) = log p_Z(z) - log|det J_f(z)|, the density spreads where f stretches"),
        (estimate(1.0, -1.0),
         "your loss is E[log p~(x) - log q(x)], the reverse KL with its sign flipped: the "
         "optimiser minimises, so the loss is E_q[log q(x) - log p~(x)]"),
    ]
    has_layers = any(isinstance(m, PlanarFlow) for m in flow.modules())
    reason = describe_shortfall(
        history, flow, budget=BANANA_STEPS, loss_value=estimate(1.0, 1.0), slips=slips,
        floor=_BANANA_FLOOR,
        went_up=("with the reverse KL the gradient must pass through the samples "
                 "x = f(z): did you detach them or draw them under torch.no_grad()? "
                 "(A learning rate that is too large also makes the loss climb.)"),
        model_hint=None if has_layers else (
            "your flow has no planar layers: a Gaussian cannot bend into a banana"))
    raise ExerciseError(
        f"your flow reaches KL(q || p) = {kl:.4g} nats{broken}; the goal is below "
        f"{BANANA_KL_GOAL}. Likely cause: {reason}")


__all__ += ["check_fit_banana", "log_banana", "BANANA_LOG_Z"]
