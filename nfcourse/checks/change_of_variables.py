"""Feedback for the exercises of chapter 1, the change of variables.

Each check calls the student's function on a few inputs, compares the answer with an
independent reference (a ``torch.distributions`` density or the autograd Jacobian), and
when the answer is wrong it says where, by how much, and which mistake fits the numbers
(a missing absolute value, a Jacobian term with the wrong sign, a forgotten term).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import LogNormal, Normal

from .. import testing
from . import ExerciseError, call_student, check_close, check_transform

__all__ = [
    "check_affine_log_prob",
    "check_lognormal_log_prob",
    "check_polar_log_abs_det",
    "check_banana",
    "polar_to_cartesian",
]


def _quiet_check_close(got, expected, what: str, atol: float = 1e-6) -> None:
    """``check_close`` without its confirmation line (a check prints one line at the end)."""
    with contextlib.redirect_stdout(io.StringIO()):
        check_close(got, expected, what, atol=atol, rtol=1e-6)


def _same(got: Tensor, reference: Tensor, atol: float = 1e-6) -> bool:
    """Whether ``got`` matches ``reference`` everywhere (used to name a likely mistake)."""
    got = got.detach().to(torch.float64)
    return got.shape == reference.shape and bool(
        torch.isfinite(got).all() and ((got - reference).abs() <= atol).all()
    )


def _as_tensor_answer(got, what: str) -> Tensor:
    if not isinstance(got, Tensor):
        raise ExerciseError(f"{what} should be a torch.Tensor, got {type(got).__name__}")
    return got


def check_affine_log_prob(affine_log_prob: Callable[[Tensor, float, float], Tensor]) -> None:
    """Exercise 1: ``log p_X(x)`` for ``x = a z + b``, ``z ~ N(0, 1)``, against
    ``Normal(b, |a|)``, for a positive and a negative slope ``a``."""
    x = torch.linspace(-4.0, 4.0, 9, dtype=torch.float64)
    one = torch.tensor(1.0, dtype=torch.float64)
    standard = Normal(0 * one, one)
    for a, b in ((2.0, 1.0), (0.5, -1.0), (-3.0, 0.5)):
        what = f"your log-density for a = {a}, b = {b}"
        got = _as_tensor_answer(call_student(affine_log_prob, x.clone(), a, b,
                                             name="affine_log_prob"), what)
        expected = Normal(torch.tensor(b, dtype=torch.float64),
                          torch.tensor(abs(a), dtype=torch.float64)).log_prob(x)
        if got.shape == expected.shape and not torch.isfinite(got.detach()).all() and a < 0:
            raise ExerciseError(
                f"{what} contains NaN: for a negative slope, log(a) is undefined. The density "
                "is divided by |f'(z)| = |a|, so the log-density needs -log|a|, with an "
                "absolute value"
            )
        z = (x - b) / a
        hints = [
            (expected + 2 * math.log(abs(a)),
             "you added log|a| where it should be subtracted: where the map stretches "
             "(|a| > 1) the density must go down, p_X(x) = p_Z(z) / |a|"),
            (standard.log_prob(z),
             "the Jacobian term is missing: subtract log|a| from log p_Z(z)"),
            (standard.log_prob(x) - math.log(abs(a)),
             "evaluate the base density at z = (x - b) / a, the point that maps to x, "
             "not at x itself"),
        ]
        for wrong, hint in hints:
            if not _same(got, expected) and _same(got, wrong):
                raise ExerciseError(f"{what} is off: {hint}")
        _quiet_check_close(got, expected, what)
    print("Correct: your log-density matches torch's Normal(b, |a|) for a = 2, 0.5 and -3 "
          "(9 points each).")


def check_lognormal_log_prob(lognormal_log_prob: Callable[[Tensor, float, float], Tensor]
                             ) -> None:
    """Exercise 2: ``log p_X(x)`` for ``x = exp(mu + sigma z)`` against torch's ``LogNormal``."""
    x = torch.tensor([0.05, 0.2, 0.5, 1.0, 1.5, 2.5, 4.0, 8.0], dtype=torch.float64)
    for mu, sigma in ((0.0, 1.0), (0.5, 0.4)):
        what = f"your log-density for mu = {mu}, sigma = {sigma}"
        got = _as_tensor_answer(call_student(lognormal_log_prob, x.clone(), mu, sigma,
                                             name="lognormal_log_prob"), what)
        expected = LogNormal(torch.tensor(mu, dtype=torch.float64),
                             torch.tensor(sigma, dtype=torch.float64)).log_prob(x)
        log_x, log_sigma = torch.log(x), math.log(sigma)
        hints = [
            (expected + log_x,
             "the term -log x is missing: f'(z) = sigma exp(mu + sigma z) = sigma x, so "
             "log |f'(z)| includes log x"),
            (expected + log_sigma,
             "the term -log sigma is missing: f'(z) = sigma x, so log |f'(z)| includes "
             "log sigma"),
            (expected + log_x + log_sigma,
             "the whole Jacobian term -log |f'(z)| = -log(sigma x) is missing"),
            (expected + 2 * (log_x + log_sigma),
             "the Jacobian term has the wrong sign: log p_X(x) = log p_Z(z) - log(sigma x)"),
        ]
        for wrong, hint in hints:
            if not _same(got, expected) and _same(got, wrong):
                raise ExerciseError(f"{what} is off: {hint}")
        _quiet_check_close(got, expected, what)
    print("Correct: your log-density matches torch's LogNormal(mu, sigma) for two settings "
          "(8 points each).")


def polar_to_cartesian(z: Tensor) -> Tensor:
    """The map of exercise 3: ``z = (r, theta) -> x = (r cos theta, r sin theta)``, ``(B, 2)``."""
    r, theta = z[:, 0], z[:, 1]
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)


def check_polar_log_abs_det(polar_log_abs_det: Callable[[Tensor], Tensor], n: int = 8,
                            seed: int = 0) -> None:
    """Exercise 3: ``log |det J|`` of the polar map against the autograd Jacobian, on ``n``
    random points with ``r`` in ``(0.2, 3)`` and ``theta`` in ``(-pi, pi)``."""
    g = torch.Generator().manual_seed(seed)
    r = 0.2 + 2.8 * torch.rand(n, generator=g, dtype=torch.float64)
    theta = math.pi * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1)
    z = torch.stack([r, theta], dim=1)
    what = "your log-det"
    got = _as_tensor_answer(call_student(polar_log_abs_det, z.clone(),
                                         name="polar_log_abs_det"), what)
    if got.shape != (n,):
        raise ExerciseError(
            f"{what} has shape {tuple(got.shape)} for a batch of {n} points; expected ({n},): "
            "one log-determinant per point (sum or select over the last axis, no keepdim)"
        )
    expected = testing.autograd_log_abs_det(polar_to_cartesian, z)
    if _same(got, torch.log(r) * 2):
        raise ExerciseError(f"{what} is twice the right value: |det J| = r, not r^2")
    if _same(got, r):
        raise ExerciseError(f"{what} equals |det J| = r itself: return its logarithm")
    got = got.detach().to(torch.float64)
    if not bool(torch.isfinite(got).all()):
        k = int((~torch.isfinite(got)).nonzero()[0])
        raise ExerciseError(
            f"{what} is {float(got[k])} at sample {k} (r = {float(r[k]):.3f}, theta = "
            f"{float(theta[k]):.3f}); expected {float(expected[k]):.6g}. Is a logarithm taken "
            "of a quantity that can be negative?"
        )
    err = (got - expected).abs()
    if bool((err > 1e-6).any()):
        k = int(err.argmax())
        raise ExerciseError(
            f"{what} differs from the autograd Jacobian by {float(err[k]):.3g} at sample {k} "
            f"(r = {float(r[k]):.3f}, theta = {float(theta[k]):.3f}): got "
            f"{float(got[k]):.6g}, expected {float(expected[k]):.6g}"
        )
    print(f"Correct: your log-det matches the autograd Jacobian on {n} points "
          f"(largest difference {float(err.max()):.1e}).")


def _banana(z: Tensor, curvature: float, log_scale: float) -> Tensor:
    return torch.stack([z[:, 0], math.exp(log_scale) * z[:, 1] + curvature * z[:, 0] ** 2],
                       dim=1)


def check_banana(banana_class, curvature: float = 0.5, log_scale: float = -0.7) -> None:
    """Exercise 4: ``Banana(curvature, log_scale)`` maps ``z`` to
    ``x = (z_1, exp(s) z_2 + c z_1^2)``; its log-det and inverse are checked by
    ``check_transform`` (autograd Jacobian, round trip)."""
    try:
        banana = banana_class(curvature=curvature, log_scale=log_scale)
    except NotImplementedError:
        raise ExerciseError("Banana.__init__ is not finished: replace "
                            "`raise NotImplementedError()` with your code") from None
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 2, generator=g, dtype=torch.float64)
    x = call_student(lambda v: banana.double().forward(v)[0], z, name="Banana.forward")
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            check_close(x, _banana(z, curvature, log_scale),
                        f"forward(z) for c = {curvature}, s = {log_scale}", atol=1e-8)
        except ExerciseError as e:
            raise ExerciseError(f"{e}; the map is x1 = z1, x2 = exp(s) z2 + c z1^2") from None
        check_transform(banana, dim=2, n=8, atol=1e-8)
    print("Correct: Banana maps z as stated and passes the shape, log-det (autograd "
          "Jacobian) and round-trip checks on 8 points.")


# --- Exercise: fit a skewed density by maximum likelihood ----------------------------------

import math  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from . import ExerciseError  # noqa: E402
from ._training import describe_shortfall, run_training  # noqa: E402

SKEWED_STEPS = 400
SKEWED_KL_GOAL = 0.03


def skewed_sample(n: int, seed: int = 0, dtype=None) -> Tensor:
    """``n`` draws, shape ``(n, 1)``, of the mirrored Gumbel ``x = -(1 + 0.5 g)``,
    ``g ~ Gumbel(0, 1)``: skewed to the left, with a long left tail and a short right one."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 1, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    x = -(1.0 - 0.5 * torch.log(-torch.log(u)))
    return x.to(dtype or torch.get_default_dtype())


def skewed_log_prob(x: Tensor) -> Tensor:
    """The exact log-density of :func:`skewed_sample`, shape ``(B,)`` for ``x`` ``(B, 1)``."""
    g = (-x[:, 0].double() - 1.0) / 0.5
    return -g - torch.exp(-g) - math.log(0.5)


def _kl_to(log_p: Callable[[Tensor], Tensor], sample: Tensor, model) -> float:
    """``KL(p || q)`` as the mean of ``log p - log q`` over samples of ``p``."""
    ref = next(iter(model.parameters()), None)
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    with torch.no_grad():
        log_q = model.log_prob(sample.to(dtype)).double()
    return float((log_p(sample) - log_q).mean())


def _safe(fn: Callable[[], Tensor]) -> float:
    """A candidate loss value, or NaN when the slip cannot even be evaluated."""
    try:
        with torch.no_grad():
            return float(fn())
    except Exception:  # a candidate that fails to evaluate matches nothing
        return math.nan


def check_fit_skewed(fit_skewed: Callable, seed: int = 0) -> None:
    """Exercise: the student's ``fit_skewed(data)`` builds a flow, trains it by maximum
    likelihood on 1,000 points and returns ``(flow, history)``; the flow must reach
    ``KL(p || q) < 0.03`` nats on 20,000 fresh points within 400 steps."""
    from ..core import Flow
    from ..flows.elementwise import SinhArcsinh

    data = skewed_sample(1000, seed=seed)
    flow, history = run_training(
        fit_skewed, data.clone(), name="fit_skewed", budget=SKEWED_STEPS, model_type=Flow,
        model_hint="the nfcourse.Flow you trained", seed=seed,
        floor=(float(-skewed_log_prob(skewed_sample(20_000, seed=1)).mean()),
               "an honest negative log-likelihood cannot go below the entropy of the data; "
               "is the sign of the log-det right, and the sign of the loss?"))
    test = skewed_sample(20_000, seed=10_000 + seed, dtype=torch.float64)
    kl = _kl_to(skewed_log_prob, test, flow)
    if math.isfinite(kl) and 0 <= kl < SKEWED_KL_GOAL:
        print(f"Correct: your flow reaches KL(p || q) = {kl:.4f} nats on 20,000 fresh "
              f"points (goal: below {SKEWED_KL_GOAL}) after {len(history)} steps.")
        return
    x = data.to(next(flow.parameters()).dtype)
    t, base = flow.transform, flow.base
    correct = _safe(lambda: -(base.log_prob(t.inverse(x)[0]) + t.inverse(x)[1]).mean())
    slips = [
        (_safe(lambda: -(base.log_prob(t.inverse(x)[0]) - t.inverse(x)[1]).mean()),
         "your loss has the sign of the log-det flipped: log p_X(x) = log p_Z(z) + "
         "log|det J_{f^-1}(x)|, with the log-det of the inverse map added"),
        (_safe(lambda: -base.log_prob(t.inverse(x)[0]).mean()),
         "your loss leaves out the log-det: -log p_Z(z) alone is smallest when every "
         "point is squeezed onto z = 0, which is not a density fit"),
        (_safe(lambda: -(base.log_prob(t(x)[0]) + t(x)[1]).mean()),
         "your flow maps in the wrong direction: you pushed the data through the forward "
         "map f (base to data), so you trained f as the normalizing map. Flow.log_prob "
         "calls the inverse (data to base): use flow.transform.inverse(x)"),
        (_safe(lambda: (base.log_prob(t.inverse(x)[0]) + t.inverse(x)[1]).mean()),
         "your loss is the mean log-likelihood, not its negative: minimising it makes the "
         "data as unlikely as possible"),
    ]
    has_shape = any(isinstance(m, SinhArcsinh) for m in flow.modules())
    reason = describe_shortfall(
        history, flow, budget=SKEWED_STEPS, loss_value=correct, slips=slips,
        floor=(float(-skewed_log_prob(test).mean()),
               "an honest negative log-likelihood cannot go below the entropy of the data; "
               "is the sign of the log-det right?"),
        went_up="is the sign of your loss right (the negative log-likelihood, minimised)?",
        model_hint=None if has_shape else (
            "your flow has no SinhArcsinh layer: an affine map of a Gaussian is Gaussian, "
            "and a Gaussian cannot lean to one side"))
    kl_text = f"{kl:.4f}" if math.isfinite(kl) else str(kl)
    if math.isfinite(kl) and kl < 0:
        reason = ("a KL divergence cannot be negative: your flow's log_prob does not "
                  "integrate to one. " + reason)
    raise ExerciseError(
        f"your flow reaches KL(p || q) = {kl_text} nats on fresh points; the goal is below "
        f"{SKEWED_KL_GOAL}. Likely cause: {reason}")


__all__ += ["check_fit_skewed", "skewed_sample", "skewed_log_prob"]
