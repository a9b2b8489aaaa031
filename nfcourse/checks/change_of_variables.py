"""Feedback for the exercises of chapter 1, the change of variables.

Each check calls the student's function on inputs that leave a wrong answer no room to be
right by luck (negative and positive slopes, points below and above one, radii below and
above one, angles of both signs), compares the answer with an independent reference (a
``torch.distributions`` density or the autograd Jacobian) and, when it is wrong, names
the slip that fits the numbers (see ``nfcourse.checks._toolkit``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import LogNormal, Normal

from .. import testing
from ..core import Flow, Transform
from ..densities import MirroredGumbel
from ..flows.elementwise import SinhArcsinh
from . import check_transform
from ._toolkit import (
    ExerciseError,
    Slip,
    as_tensor,
    compare,
    compare_gradients,
    compare_gradients_numerically,
    run,
)
from ._training import (
    Goal,
    check_fit,
    mean_nll,
    safe_value,
)

__all__ = [
    "SKEWED_GOAL",
    "check_affine_log_prob",
    "check_banana",
    "check_fit_skewed",
    "check_lognormal_log_prob",
    "check_polar_log_abs_det",
    "polar_to_cartesian",
]

F64 = torch.float64
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _std_log_pdf(z: Tensor) -> Tensor:
    return -0.5 * z**2 - HALF_LOG_2PI


def check_affine_log_prob(affine_log_prob: Callable[[Tensor, float, float], Tensor]) -> None:
    """Exercise 1: ``log p_X(x)`` for ``x = a z + b``, ``z ~ N(0, 1)``, against
    ``Normal(b, |a|)``, for slopes ``a`` above and below one in size, of both signs."""
    x = torch.linspace(-4.0, 4.0, 9, dtype=F64)
    settings = ((2.0, 1.0), (0.5, -1.0), (-3.0, 0.5), (-0.4, -0.3))
    got, expected, slope, shift, labels = [], [], [], [], []
    for a, b in settings:
        answer = run(affine_log_prob, x.clone(), a, b, name="affine_log_prob")
        got.append(as_tensor(answer, f"affine_log_prob(x, {a}, {b})", x.shape, ("points",)))
        expected.append(
            Normal(torch.tensor(b, dtype=F64), torch.tensor(abs(a), dtype=F64)).log_prob(x)
        )
        slope.append(torch.full_like(x, a))
        shift.append(torch.full_like(x, b))
        labels += [f"x = {float(v):g}, a = {a}, b = {b}" for v in x]
    dtype = got[0].dtype if all(g.dtype == got[0].dtype for g in got) else F64
    got = torch.cat([g.detach().to(dtype) for g in got])
    expected, a, b = torch.cat(expected), torch.cat(slope), torch.cat(shift)
    xs = x.repeat(len(settings))
    z = (xs - b) / a
    log_abs_a = torch.log(a.abs())
    compare(
        got,
        expected,
        "your log-density",
        labels=labels,
        groups={"the negative slopes a < 0": a < 0, "the slopes with |a| < 1": a.abs() < 1},
        terms={
            "the term -z^2 / 2 with z = (x - b) / a": -0.5 * z**2,
            "the term -log|a|": -log_abs_a,
            "x": xs,
            "x^2": xs**2,
            "the term -0.5 log(2 pi)": torch.full_like(xs, -HALF_LOG_2PI),
        },
        nan_hint="for a negative slope, log(a) is undefined: the density is divided by "
        "|f'(z)| = |a|, so the log-density needs -log|a|, with an absolute value",
        slips=[
            Slip(
                "log(a) of a negative slope is NaN: the density is divided by |f'(z)| = |a|, "
                "so subtract log|a|, with an absolute value",
                _std_log_pdf(z) - torch.log(a),
            ),
            Slip(
                "you added log|a| where it should be subtracted: where the map stretches "
                "(|a| > 1) the density must go down, p_X(x) = p_Z(z) / |a|",
                _std_log_pdf(z) + log_abs_a,
            ),
            Slip("the Jacobian term is missing: subtract log|a| from log p_Z(z)", _std_log_pdf(z)),
            Slip(
                "evaluate the base density at z = (x - b) / a, the point that maps to x, "
                "not at x itself",
                _std_log_pdf(xs) - log_abs_a,
            ),
            Slip(
                "the inverse map is z = (x - b) / a: you multiplied by a instead of dividing",
                _std_log_pdf((xs - b) * a) - log_abs_a,
            ),
            Slip(
                "the inverse map is z = (x - b) / a: subtract b before dividing, not after "
                "(x / a - b)",
                _std_log_pdf(xs / a - b) - log_abs_a,
            ),
            Slip(
                "the inverse map is z = (x - b) / a: you added b",
                _std_log_pdf((xs + b) / a) - log_abs_a,
            ),
            Slip(
                "log|a| is subtracted twice (or log a^2 used): the density is divided by "
                "|a| once, so subtract log|a| once",
                _std_log_pdf(z) - 2 * log_abs_a,
            ),
            Slip(
                "you divided the density by |a| outside the logarithm: log(p_Z(z) / |a|) "
                "= log p_Z(z) - log|a|, not log p_Z(z) / |a|",
                _std_log_pdf(z) / a.abs(),
            ),
            Slip(
                "the base density is exp(-z^2 / 2) / sqrt(2 pi): its log is "
                "-z^2 / 2 - 0.5 log(2 pi), with the square and a minus sign",
                -0.5 * z.abs() - HALF_LOG_2PI - log_abs_a,
            ),
        ],
    )
    compare_gradients(
        affine_log_prob,
        lambda x, a, b: _std_log_pdf((x - b) / a) - math.log(abs(a)),
        [x, -0.4, -0.3],
        "your log-density",
        wrt={0: "the points x"},
        name="affine_log_prob",
        terms={
            "the base term log p_Z(z), z = (x - b) / a": lambda x, a, b: _std_log_pdf((x - b) / a)
        },
        advice="A maximum-likelihood fit differentiates the log-density, so every term must "
        "stay a torch operation on x",
    )
    print(
        "Correct: your log-density matches torch's Normal(b, |a|) for a = 2, 0.5, -3 and "
        "-0.4 (9 points each), and so does its gradient."
    )


def check_lognormal_log_prob(lognormal_log_prob: Callable[[Tensor, float, float], Tensor]) -> None:
    """Exercise 2: ``log p_X(x)`` for ``x = exp(mu + sigma z)`` against torch's
    ``LogNormal``, for points below and above one and three ``(mu, sigma)``."""
    x = torch.tensor([0.05, 0.2, 0.5, 1.0, 1.5, 2.5, 4.0, 8.0], dtype=F64)
    settings = ((0.0, 1.0), (0.5, 0.4), (-1.0, 2.5))
    got, expected, labels = [], [], []
    mu_all, sigma_all = [], []
    for mu, sigma in settings:
        answer = run(lognormal_log_prob, x.clone(), mu, sigma, name="lognormal_log_prob")
        got.append(
            as_tensor(answer, f"lognormal_log_prob(x, {mu}, {sigma})", x.shape, ("points",))
        )
        expected.append(
            LogNormal(torch.tensor(mu, dtype=F64), torch.tensor(sigma, dtype=F64)).log_prob(x)
        )
        mu_all.append(torch.full_like(x, mu))
        sigma_all.append(torch.full_like(x, sigma))
        labels += [f"x = {float(v):g}, mu = {mu}, sigma = {sigma}" for v in x]
    dtype = got[0].dtype if all(g.dtype == got[0].dtype for g in got) else F64
    got = torch.cat([g.detach().to(dtype) for g in got])
    expected, mu, sigma = torch.cat(expected), torch.cat(mu_all), torch.cat(sigma_all)
    xs = x.repeat(len(settings))
    log_x, log_sigma = torch.log(xs), torch.log(sigma)
    z = (log_x - mu) / sigma
    compare(
        got,
        expected,
        "your log-density",
        labels=labels,
        terms={
            "the term -log x": -log_x,
            "the term -log sigma": -log_sigma,
            "the term -z^2 / 2 with z = (log x - mu) / sigma": -0.5 * z**2,
            "x": xs,
            "the term -(log x - mu)^2 / 2, z without the division by sigma": -0.5
            * (log_x - mu) ** 2,
        },
        slips=[
            Slip(
                "the term -log x is missing: f'(z) = sigma exp(mu + sigma z) = sigma x, so "
                "log |f'(z)| includes log x",
                expected + log_x,
            ),
            Slip(
                "the term -log sigma is missing: f'(z) = sigma x, so log |f'(z)| includes "
                "log sigma",
                expected + log_sigma,
            ),
            Slip(
                "the whole Jacobian term -log |f'(z)| = -log(sigma x) is missing",
                expected + log_x + log_sigma,
            ),
            Slip(
                "the Jacobian term has the wrong sign: log p_X(x) = log p_Z(z) - log(sigma x)",
                expected + 2 * (log_x + log_sigma),
            ),
            Slip(
                "-log x has the wrong sign: log p_X(x) = log p_Z(z) - log sigma - log x",
                expected + 2 * log_x,
            ),
            Slip(
                "-log sigma has the wrong sign: log p_X(x) = log p_Z(z) - log sigma - log x",
                expected + 2 * log_sigma,
            ),
            Slip(
                "the term -0.5 log(2 pi) of the standard normal log-density is missing",
                expected + HALF_LOG_2PI,
            ),
            Slip(
                "the inverse map is z = (log x - mu) / sigma: take the log of x first",
                _std_log_pdf((xs - mu) / sigma) - log_sigma - log_x,
            ),
            Slip(
                "the inverse map is z = (log x - mu) / sigma: you multiplied by sigma",
                _std_log_pdf((log_x - mu) * sigma) - log_sigma - log_x,
            ),
            Slip(
                "the base density is evaluated at log x; it belongs at z = (log x - mu) / sigma",
                _std_log_pdf(log_x) - log_sigma - log_x,
            ),
            Slip(
                "the Jacobian term uses exp(z) where the derivative of exp(mu + sigma z) is "
                "sigma x = sigma exp(mu + sigma z)",
                _std_log_pdf(z) - log_sigma - z,
            ),
        ],
    )
    compare_gradients(
        lognormal_log_prob,
        lambda x, mu, sigma: (
            _std_log_pdf((torch.log(x) - mu) / sigma) - math.log(sigma) - torch.log(x)
        ),
        [x, -1.0, 2.5],
        "your log-density",
        wrt={0: "the points x"},
        name="lognormal_log_prob",
        terms={
            "the Jacobian term -log|f'(z)| = -log(sigma x)": lambda x, mu, sigma: (
                -torch.log(x) - math.log(sigma)
            ),
            "the base term log p_Z(z), z = (log x - mu) / sigma": lambda x, mu, sigma: (
                _std_log_pdf((torch.log(x) - mu) / sigma)
            ),
        },
        advice="A maximum-likelihood fit differentiates the log-density, so every term must "
        "stay a torch operation on x",
    )
    print(
        "Correct: your log-density matches torch's LogNormal(mu, sigma) for three settings "
        "(8 points each), and so does its gradient."
    )


def polar_to_cartesian(z: Tensor) -> Tensor:
    """The map of exercise 3: ``z = (r, theta) -> x = (r cos theta, r sin theta)``, ``(B, 2)``."""
    r, theta = z[:, 0], z[:, 1]
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)


def check_polar_log_abs_det(
    polar_log_abs_det: Callable[[Tensor], Tensor], n: int = 8, seed: int = 0
) -> None:
    """Exercise 3: ``log |det J|`` of the polar map against the autograd Jacobian, on ``n``
    random points with ``r`` in ``(0.2, 3)`` (below and above one) and ``theta`` in
    ``(-pi, pi)`` (both signs)."""
    g = torch.Generator().manual_seed(seed)
    r = 0.2 + 2.8 * torch.rand(n, generator=g, dtype=F64)
    r[:2] = torch.tensor([0.3, 2.5], dtype=F64)
    theta = math.pi * (2 * torch.rand(n, generator=g, dtype=F64) - 1)
    theta[:2] = torch.tensor([-2.0, 1.0], dtype=F64)
    z = torch.stack([r, theta], dim=1)
    got = as_tensor(
        run(polar_log_abs_det, z.clone(), name="polar_log_abs_det"),
        "your log-det",
        (n,),
        ("batch",),
    )
    expected = testing.autograd_log_abs_det(polar_to_cartesian, z)
    labels = [
        f"sample {k} (r = {float(r[k]):.3f}, theta = {float(theta[k]):.3f})" for k in range(n)
    ]
    compare(
        got,
        expected,
        "your log-det",
        labels=labels,
        groups={"the points with theta < 0": theta < 0, "the points with r < 1": r < 1},
        terms={
            "log r": torch.log(r),
            "log|cos theta|": torch.log(torch.cos(theta).abs()),
            "log|sin theta|": torch.log(torch.sin(theta).abs()),
            "theta": theta,
            "r": r,
        },
        nan_hint="is a logarithm taken of a quantity that can be negative (theta, cos "
        "theta)? |det J| = r",
        slips=[
            Slip(
                "it is twice the right value: |det J| = r, not r^2 (the Jacobian's "
                "determinant is r cos^2 theta + r sin^2 theta = r)",
                2 * torch.log(r),
            ),
            Slip("it equals |det J| = r itself: return its logarithm", r),
            Slip(
                "the sign is flipped: log|det J| = +log r for the map (r, theta) -> x; "
                "-log r is the log-det of the inverse map",
                -torch.log(r),
            ),
            Slip(
                "you took the log of theta, the second coordinate; |det J| = r, the first",
                torch.log(theta),
            ),
            Slip(
                "the determinant is r cos^2 theta + r sin^2 theta = r; you have a "
                "sign slip in it (r cos^2 theta - r sin^2 theta)",
                torch.log((r * torch.cos(2 * theta)).abs()),
            ),
            Slip(
                "the determinant is r cos^2 theta + r sin^2 theta = r; you dropped the r",
                torch.zeros_like(r),
            ),
            Slip(
                "you returned log r + log|theta| or a log of both coordinates; only r enters",
                torch.log(r) + torch.log(theta.abs()),
            ),
        ],
    )
    compare_gradients(
        polar_log_abs_det,
        lambda z: torch.log(z[:, 0].abs()),
        [z],
        "your log-det",
        wrt={0: "the points z = (r, theta)"},
        name="polar_log_abs_det",
    )
    print(
        f"Correct: your log-det matches the autograd Jacobian on {n} points, and so does "
        "its gradient."
    )


def _banana(z: Tensor, curvature: float, log_scale: float) -> Tensor:
    return torch.stack([z[:, 0], math.exp(log_scale) * z[:, 1] + curvature * z[:, 0] ** 2], dim=1)


def check_banana(
    banana_class: Callable[[float, float], Transform],
    curvature: float = 0.5,
    log_scale: float = -0.7,
) -> None:
    """Exercise 4: ``Banana(curvature, log_scale)`` maps ``z`` to
    ``x = (z_1, exp(s) z_2 + c z_1^2)``; its map, log-det and inverse are checked (the
    log-det against the autograd Jacobian), for the given ``(c, s)`` and a second pair."""
    for c, s in ((curvature, log_scale), (-1.3, 0.4)):
        try:
            banana = banana_class(curvature=c, log_scale=s)
        except NotImplementedError:
            raise ExerciseError(
                "Banana.__init__ is not finished: replace "
                "`raise NotImplementedError()` with your code"
            ) from None
        banana = banana.double()
        g = torch.Generator().manual_seed(1)
        z = 1.5 * torch.randn(8, 2, generator=g, dtype=F64)
        out = run(banana.forward, z.clone(), name="Banana.forward")
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ExerciseError(
                f"Banana.forward should return a pair (x, log_det), got a {type(out).__name__}"
            )
        x = as_tensor(
            out[0], f"forward(z) for c = {c}, s = {s}", z.shape, ("batch", "coordinates")
        )
        z1, z2, e = z[:, 0], z[:, 1], math.exp(s)

        def pair(a: Tensor, b: Tensor) -> Tensor:
            return torch.stack([a, b], dim=1)

        compare(
            x,
            _banana(z, c, s),
            f"forward(z) for c = {c}, s = {s}",
            advice="the map is x1 = z1, x2 = exp(s) z2 + c z1^2",
            slips=[
                Slip(
                    "x2 uses s where the scale is exp(s): x2 = exp(s) z2 + c z1^2",
                    pair(z1, s * z2 + c * z1**2),
                ),
                Slip(
                    "the curvature term belongs to x2 and uses z1: c z1^2, not c z2^2",
                    pair(z1, e * z2 + c * z2**2),
                ),
                Slip("the curvature term is c z1^2, squared", pair(z1, e * z2 + c * z1)),
                Slip("x1 = z1 passes through unchanged", pair(e * z1, e * z2 + c * z1**2)),
                Slip(
                    "exp(s) scales z2 only, not the curvature term", pair(z1, e * (z2 + c * z1**2))
                ),
                Slip(
                    "the coordinates are swapped: x1 = z1, x2 = exp(s) z2 + c z1^2",
                    pair(e * z2 + c * z1**2, z1),
                ),
            ],
        )

        compare_gradients(
            lambda v: banana.forward(v)[0],
            lambda v: _banana(v, c, s),
            [z],
            f"forward(z) for c = {c}, s = {s}",
            wrt={0: "the points z"},
            name="Banana.forward",
        )

        def log_det_slips(points: Tensor, expected: Tensor, s: float = s) -> list[Slip]:
            return [
                Slip(
                    "the log-det is 0, but the map scales z2 by exp(s): log|det J| = s "
                    "(the curvature term does not enter the triangular Jacobian's diagonal)",
                    torch.zeros_like(expected),
                ),
                Slip(
                    "the log-det is exp(s), the scale itself; log|det J| = s",
                    torch.full_like(expected, math.exp(s)),
                ),
                Slip(
                    "the curvature term does not enter the log-det: the Jacobian is "
                    "triangular with diagonal (1, exp(s)), so log|det J| = s",
                    expected + torch.log((2 * c * points[:, 0]).abs()),
                ),
            ]

        check_transform(
            banana,
            dim=2,
            n=8,
            atol=1e-8,
            seed=2,
            scale=1.5,
            quiet=True,
            log_det_slips=log_det_slips,
        )
        params = {k: p for k, p in banana.named_parameters() if p.requires_grad}
        if params:
            compare_gradients_numerically(
                lambda banana=banana, z=z: banana.forward(z)[1],
                params,
                f"the log-det of Banana for c = {c}, s = {s}",
            )
    print(
        "Correct: Banana maps z as stated and passes the shape, log-det (autograd "
        "Jacobian) and round-trip checks on 8 points, for two (c, s)."
    )


# --- Exercise: fit a skewed density by maximum likelihood ----------------------------------


SKEWED_GOAL = Goal(0.03, steps=400)
SKEWED_FLOOR = (
    MirroredGumbel().entropy(),
    "an honest negative log-likelihood cannot go below the entropy of the data; "
    "is the sign of the log-det right, and the sign of the loss?",
)


def _skewed_slips(flow: Flow, x: Tensor) -> list[tuple[float, str]]:
    """What the loss of each slip of the exercise evaluates to at the trained flow."""
    t, base = flow.transform, flow.base
    return [
        (
            safe_value(lambda: -(base.log_prob(t.inverse(x)[0]) - t.inverse(x)[1]).mean()),
            "your loss has the sign of the log-det flipped: log p_X(x) = log p_Z(z) + "
            "log|det J_{f^-1}(x)|, with the log-det of the inverse map added",
        ),
        (
            safe_value(lambda: -base.log_prob(t.inverse(x)[0]).mean()),
            "your loss leaves out the log-det: -log p_Z(z) alone is smallest when every "
            "point is squeezed onto z = 0, which is not a density fit",
        ),
        (
            safe_value(lambda: -(base.log_prob(t(x)[0]) + t(x)[1]).mean()),
            "your flow maps in the wrong direction: you pushed the data through the forward "
            "map f (base to data), so you trained f as the normalizing map. Flow.log_prob "
            "calls the inverse (data to base): use flow.transform.inverse(x)",
        ),
        (
            safe_value(lambda: (base.log_prob(t.inverse(x)[0]) + t.inverse(x)[1]).mean()),
            "your loss is the mean log-likelihood, not its negative: minimising it makes the "
            "data as unlikely as possible",
        ),
    ]


def check_fit_skewed(
    fit_skewed: Callable[[Tensor], tuple[Flow, list[float]]], seed: int = 0
) -> None:
    """Exercise: the student's ``fit_skewed(data)`` builds a flow, trains it by maximum
    likelihood on 1,000 points of ``nfcourse.densities.MirroredGumbel`` and returns
    ``(flow, history)``; the flow must reach ``KL(p || q) < 0.03`` nats on 20,000 fresh
    points within 400 steps."""
    target = MirroredGumbel()
    data = target.sample(1000, seed=seed, dtype=torch.get_default_dtype())

    def limitation(flow: Flow) -> str | None:
        if any(isinstance(m, SinhArcsinh) for m in flow.modules()):
            return None
        return (
            "your flow has no SinhArcsinh layer: an affine map of a Gaussian is "
            "Gaussian, and a Gaussian cannot lean to one side"
        )

    check_fit(
        fit_skewed,
        data.clone(),
        name="fit_skewed",
        goal=SKEWED_GOAL,
        target=target,
        seed=seed,
        floor=SKEWED_FLOOR,
        loss=lambda flow: mean_nll(flow, data),
        slips=lambda flow, loss: _skewed_slips(flow, data.to(next(flow.parameters()).dtype)),
        went_up="is the sign of your loss right (the negative log-likelihood, minimised)?",
        limitation=limitation,
    )
