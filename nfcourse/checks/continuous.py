"""Feedback for the exercises of chapter 10 (continuous-time flows).

* ``check_divergence``: the exact divergence ``tr(dv/dz)`` of a field, by autograd, with a
  graph that training can differentiate;
* ``check_hutchinson``: Hutchinson's estimate ``eps^T (dv/dz) eps`` with one probe per
  point, drawn from the generator: unbiased, with the variance of its probes;
* ``check_probe_variance``: the variance of Hutchinson's estimate for probes with
  independent coordinates of any fourth moment, derived from the pairings of four probes;
* ``check_straight_path``: the point ``x_t`` of the straight path and its velocity;
* ``check_gaussian_target``: the flow-matching target ``E[x_1 - x_0 | x_t = x]`` when the
  data are Gaussian;
* ``check_marginal_field``: the same target when the data are a finite set of weighted
  points, the posterior-weighted average of the conditional velocities;
* ``check_fit_ring``: a velocity field trained by flow matching to a KL goal on the ring.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..core import Flow
from ..densities import GaussianRing
from ..flows.continuous import ContinuousFlow, GaussianPathField, LinearField, VelocityField
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
    Goal,
    Measurement,
    check_fit,
    fresh_kl,
)

__all__ = [
    "RING_GOAL",
    "check_divergence",
    "check_fit_ring",
    "check_gaussian_target",
    "check_hutchinson",
    "check_marginal_field",
    "check_probe_variance",
    "check_straight_path",
    "make_field",
]

F64 = torch.float64


def make_field(dim: int, seed: int = 0, dtype: torch.dtype = F64) -> VelocityField:
    """A small random velocity field ``v(z, t)`` in ``dim`` dimensions for the exercises,
    called as ``field(t, z)``; its Jacobian is far from symmetric and from diagonal."""
    dim = check_positive_int(dim, "dim")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        field = VelocityField(dim, hidden=(16, 16)).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in field.parameters():
            p.copy_(0.8 * torch.randn(p.shape, generator=g, dtype=F64).to(dtype))
    return field


def _jacobians(field: nn.Module, t: float, z: Tensor) -> Tensor:
    """The Jacobian ``dv/dz`` at every row of ``z``, ``(B, D, D)``, in float64."""
    field = copy.deepcopy(field).double()
    rows = []
    for point in z.detach().to(F64):
        rows.append(
            torch.autograd.functional.jacobian(lambda p: field(t, p.unsqueeze(0))[0], point)
        )
    return torch.stack(rows)


_GRAD_HINT = (
    "the divergence differentiates the field with respect to z: make z a leaf "
    "that requires gradients (z = z.detach().requires_grad_(True)) and compute v "
    "from it, then torch.autograd.grad(..., create_graph=True)"
)


def check_divergence(fn: Callable) -> None:
    """Check ``fn(field, t, z) -> (B,)``: the exact divergence ``tr(dv/dz)`` of
    ``v = field(t, z)`` at every row of ``z`` ``(B, D)``, by automatic differentiation,
    keeping the graph (``create_graph=True``) so that a loss built on it trains the
    field."""
    name = getattr(fn, "__name__", "your function")
    cases = [(make_field(3, seed=1), 0.3, 5), (make_field(4, seed=2), 0.8, 7)]
    matrix = torch.tensor([[0.5, -2.0], [1.5, -1.25]], dtype=F64)
    cases.append((LinearField(matrix, torch.tensor([0.3, -0.2], dtype=F64)), 0.0, 6))
    for field, t, n in cases:
        dim = field.dim
        g = torch.Generator().manual_seed(dim + n)
        z = 1.5 * torch.randn(n, dim, generator=g, dtype=F64)
        got = as_tensor(
            run(fn, field, t, z.clone(), name=name, hint=_GRAD_HINT),
            f"the divergence returned by {name}",
            (n,),
            ("batch",),
        )
        jac = _jacobians(field, t, z)
        trace = torch.diagonal(jac, dim1=1, dim2=2).sum(1)
        kind = type(field).__name__ + f" in {dim} dimensions"
        compare(
            got.detach(),
            trace,
            f"the divergence of the {kind}",
            labels=[f"point {k}" for k in range(n)],
            slips=[
                Slip(
                    "this is the sum of ALL entries of the Jacobian, the gradient of v.sum() "
                    "summed over the coordinates; the divergence keeps only the diagonal "
                    "dv_i/dz_i: take the gradient of v[:, i].sum() and keep its column i",
                    jac.sum(dim=(1, 2)),
                ),
                Slip(
                    "the divergence is +tr(dv/dz); the minus sign belongs to d log p / dt", -trace
                ),
                Slip(
                    "you kept only dv_0/dz_0: sum dv_i/dz_i over every coordinate i", jac[:, 0, 0]
                ),
                Slip(
                    "you summed dv_0/dz_j over j (the gradient of v[:, 0] alone): the "
                    "divergence keeps the diagonal, dv_i/dz_i, one coordinate i at a time",
                    jac[:, 0, :].sum(1),
                ),
            ],
        )
        if dim > 2:
            params = {
                f"the field's {k}": p for k, p in field.named_parameters() if k.endswith("weight")
            }
            if not got.requires_grad:
                raise ExerciseError(
                    f"the divergence returned by {name} carries no gradient to the field's "
                    "parameters: pass create_graph=True to torch.autograd.grad, so that a "
                    "loss built on the divergence (the log-likelihood) can be trained"
                )
            check_gradients(got, params, f"the divergence returned by {name}")
    print(
        "Correct: your divergence is the trace of the autograd Jacobian for two neural "
        "fields and a linear one (where it is tr A at every point), and gradients reach "
        "the field's weights."
    )


def check_hutchinson(fn: Callable) -> None:
    """Check ``fn(field, t, z, generator) -> (B,)``: one Hutchinson estimate
    ``eps^T (dv/dz) eps`` per row of ``z``, with its own probe ``eps`` drawn from
    ``generator`` (random signs or standard normal: any ``eps`` with
    ``E[eps eps^T] = I``)."""
    name = getattr(fn, "__name__", "your function")
    dim, n, t = 4, 20_000, 0.4
    field = make_field(dim, seed=3)
    point = torch.tensor([[0.7, -0.4, 1.1, 0.2]], dtype=F64)
    z = point.expand(n, dim).clone()
    jac = _jacobians(field, t, point)[0]
    trace = float(torch.trace(jac))
    fro2, cross = float((jac**2).sum()), float(torch.trace(jac @ jac))
    diag2 = float((torch.diagonal(jac) ** 2).sum())
    var_gauss, var_rad = fro2 + cross, fro2 + cross - 2 * diag2

    got = (
        as_tensor(
            run(
                fn,
                field,
                t,
                z.clone(),
                torch.Generator().manual_seed(0),
                name=name,
                hint=_GRAD_HINT,
            ),
            f"the estimates returned by {name}",
            (n,),
            ("batch",),
        )
        .detach()
        .to(F64)
    )
    if not bool(torch.isfinite(got).all()):
        raise ExerciseError(f"{name} returned NaN or inf")
    mean, std = float(got.mean()), float(got.std())
    if std < 1e-9:
        if abs(mean - trace) < 1e-6 * (1 + abs(trace)):
            raise ExerciseError(
                "every estimate equals the exact trace: this is the exact divergence, not "
                "Hutchinson's estimator. Draw a random probe eps for each point and return "
                "eps^T (dv/dz) eps, from one vector-Jacobian product"
            )
        raise ExerciseError(
            "all 20,000 points (the same point repeated) got the same estimate: every point "
            "got the same probe. Draw one independent probe per point, of shape (B, D): "
            "torch.randint(0, 2, z.shape, generator=generator) * 2 - 1, or torch.randn"
        )
    se = std / math.sqrt(n)
    if abs(mean - trace) > 5 * se:
        shrink = (mean / trace) if abs(trace) > 1e-9 else math.nan
        # E[eps_i eps_j] is 1/3 on the diagonal and 1/4 off it for eps ~ U[0, 1)
        uniform01 = trace / 12 + float(jac.sum()) / 4
        if abs(mean - uniform01) < 5 * se:
            why = (
                "your probes look uniform on [0, 1) (torch.rand): their mean is not zero "
                "and E[eps eps^T] is not the identity. Use random signs or torch.randn"
            )
        elif abs(shrink - 1 / 3) < 0.1:
            why = (
                "the estimates average a third of the trace: probes uniform on [-1, 1] "
                "have variance 1/3, not 1. Use random signs (+-1) or torch.randn"
            )
        elif abs(mean + trace) < 5 * se:
            why = "the estimates average minus the trace: drop the minus sign"
        else:
            why = (
                "the probes must satisfy E[eps eps^T] = I (random signs or standard "
                "normal), and the estimate is the sum over i of eps_i (eps^T J)_i"
            )
        raise ExerciseError(
            f"your estimator is biased: the mean of 20,000 estimates at one point is "
            f"{mean:.4f} ± {se:.4f}, the exact trace is {trace:.4f}. {why}"
        )
    var = std**2
    if not (abs(var - var_rad) < 0.1 * var_rad or abs(var - var_gauss) < 0.1 * var_gauss):
        raise ExerciseError(
            f"the estimates average the trace but their variance is {var:.3f}; one probe "
            f"per point gives {var_rad:.3f} with random signs and {var_gauss:.3f} with "
            "standard normal probes. Use one probe per point (not an average of several, "
            "and not a probe scaled by anything)"
        )
    again = (
        as_tensor(
            run(fn, field, t, z.clone(), torch.Generator().manual_seed(0), name=name),
            f"the estimates returned by {name}",
            (n,),
        )
        .detach()
        .to(F64)
    )
    if not torch.equal(again, got):
        raise ExerciseError(
            "two calls with generators seeded alike gave different probes: "
            "draw them from the generator argument (generator=generator), "
            "not from torch's global random state"
        )
    small = z[:6].clone()
    out = run(fn, field, t, small, torch.Generator().manual_seed(1), name=name)
    check_gradients(
        out,
        {f"the field's {k}": p for k, p in field.named_parameters() if k.endswith("weight")},
        f"the estimates returned by {name}",
    )
    probes = "of random signs" if abs(var - var_rad) < 0.1 * var_rad else "standard normal"
    print(
        f"Correct: the mean of your 20,000 estimates is {mean:.4f} ± {se:.4f}, the exact "
        f"trace is {trace:.4f}, and their variance {var:.3f} is that of one probe "
        f"{probes} per point."
    )


def _probe_cases() -> list[tuple[Tensor, float]]:
    """Jacobians far from symmetric, with a diagonal and a trace of their own, and fourth
    moments that separate the usual slips (3 is the Gaussian's, 1 the random signs')."""
    g = torch.Generator().manual_seed(11)
    cases = []
    for dim, kappa in ((3, 1.0), (4, 3.0), (4, 1.8), (2, 5.0), (5, 2.5)):
        jac = torch.randn(dim, dim, generator=g, dtype=F64)
        jac = jac + torch.diag(1.0 + torch.rand(dim, generator=g, dtype=F64))
        jac[0, -1] += 1.5  # an asymmetric pair
        cases.append((jac, kappa))
    return cases


def check_probe_variance(fn: Callable) -> None:
    """Check ``fn(jac, kappa) -> number``: the variance of ``eps^T J eps`` for a probe
    ``eps`` with independent coordinates of mean 0, variance 1 and fourth moment
    ``E[eps_i^4] = kappa``: ``2 ||S||_F^2 + (kappa - 3) sum_i S_ii^2``, with
    ``S = (J + J^T) / 2``."""
    name = getattr(fn, "__name__", "your function")
    cases = _probe_cases()
    got = []
    for k, (jac, kappa) in enumerate(cases):
        out = run(fn, jac.clone(), kappa, name=name)
        got.append(
            as_tensor(out, f"the variance returned by {name} for case {k}", (), allow_number=True)
            .detach()
            .to(F64)
        )
    got = torch.stack(got)

    def formula(rule):
        return torch.stack([torch.as_tensor(rule(j, k), dtype=F64) for j, k in cases])

    def sym(j):
        return (j + j.T) / 2

    def fro2(m):
        return (m**2).sum()

    def diag2(m):
        return (torch.diagonal(m) ** 2).sum()

    expected = formula(lambda j, k: 2 * fro2(sym(j)) + (k - 3) * diag2(sym(j)))
    labels = [
        f"case {k} (D = {j.shape[0]}, kappa = {kappa:g})" for k, (j, kappa) in enumerate(cases)
    ]
    compare(
        got,
        expected,
        "the variance",
        labels=labels,
        slips=[
            Slip(
                "this is the variance for standard normal probes (kappa = 3) at every "
                "kappa: the terms with i = j = k = l bring E[eps_i^4] = kappa, so the "
                "answer must depend on kappa",
                formula(lambda j, k: fro2(j) + torch.trace(j @ j)),
            ),
            Slip(
                "this is the variance for random signs (kappa = 1) at every kappa: the "
                "terms with i = j = k = l bring E[eps_i^4] = kappa, so the answer must "
                "depend on kappa",
                formula(lambda j, k: fro2(j) + torch.trace(j @ j) - 2 * diag2(j)),
            ),
            Slip(
                "you used J where its symmetric part belongs: eps^T J eps = eps^T S eps "
                "with S = (J + J^T) / 2, and the two pairings i = k, j = l and i = l, "
                "j = k give sum_ij J_ij (J_ij + J_ji) = 2 ||S||_F^2, not 2 ||J||_F^2",
                formula(lambda j, k: 2 * fro2(j) + (k - 3) * diag2(j)),
            ),
            Slip(
                "you kept one pairing of the four probes, i = k and j = l; the pairing "
                "i = l, j = k gives the terms J_ij J_ji as well (tr(J^2))",
                formula(lambda j, k: fro2(j) + (k - 2) * diag2(j)),
            ),
            Slip(
                "this is the second moment E[(eps^T J eps)^2]: subtract the square of the "
                "mean, tr(J)^2",
                formula(
                    lambda j, k: 2 * fro2(sym(j)) + (k - 3) * diag2(sym(j)) + torch.trace(j) ** 2
                ),
            ),
            Slip(
                "the diagonal terms: S_ii^2 eps_i^4 has mean kappa S_ii^2, but the square of "
                "the mean removes S_ii^2 once, so the diagonal weighs kappa - 1, not kappa",
                formula(lambda j, k: 2 * (fro2(sym(j)) - diag2(sym(j))) + k * diag2(sym(j))),
            ),
            Slip(
                "the diagonal is counted twice: 2 ||S||_F^2 already holds 2 sum_i S_ii^2, "
                "so add (kappa - 3) sum_i S_ii^2, not (kappa - 1) sum_i S_ii^2",
                formula(lambda j, k: 2 * fro2(sym(j)) + (k - 1) * diag2(sym(j))),
            ),
            Slip(
                "this is the standard deviation; the exercise asks for the variance",
                formula(lambda j, k: (2 * fro2(sym(j)) + (k - 3) * diag2(sym(j))).sqrt()),
            ),
        ],
        advice="expand E[(sum_ij S_ij eps_i eps_j)^2] over the index patterns i = j = k = l, "
        "i = j != k = l, i = k != j = l and i = l != j = k",
    )
    print(
        "Correct: Var(eps^T J eps) = 2 ||S||_F^2 + (kappa - 3) sum_i S_ii^2 with "
        "S = (J + J^T) / 2. Since kappa = E[eps_i^4] >= (E[eps_i^2])^2 = 1, with equality "
        "only for random signs, Rademacher probes have the smallest variance of all probes "
        "with independent coordinates: 2 sum_{i != j} S_ij^2."
    )


def check_straight_path(fn: Callable) -> None:
    """Check ``fn(x0, x1, t) -> (x_t, velocity)`` with ``x0``, ``x1`` ``(B, D)`` and ``t``
    ``(B,)``: ``x_t = (1 - t) x_0 + t x_1`` and its velocity ``d x_t / dt = x_1 - x_0``."""
    name = getattr(fn, "__name__", "your function")
    for n, dim, seed in ((7, 3, 0), (5, 2, 1)):
        g = torch.Generator().manual_seed(seed)
        x0 = torch.randn(n, dim, generator=g, dtype=F64)
        x1 = 2.0 + torch.randn(n, dim, generator=g, dtype=F64)
        t = torch.rand(n, generator=g, dtype=F64)
        t[0], t[1] = 0.0, 1.0
        out = run(
            fn,
            x0.clone(),
            x1.clone(),
            t.clone(),
            name=name,
            hint="t has shape (B,): use t[:, None] (or t.unsqueeze(1)) to multiply "
            "the rows of x0 and x1",
        )
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise ExerciseError(
                f"{name} should return the pair (x_t, velocity), got {type(out).__name__}"
            )
        xt = as_tensor(out[0], f"x_t of {name}", (n, dim), ("batch", "coordinates"))
        u = as_tensor(out[1], f"the velocity of {name}", (n, dim), ("batch", "coordinates"))
        tc = t[:, None]
        expected = (1 - tc) * x0 + tc * x1
        labels = [f"point {k} (t = {float(t[k]):.2f})" for k in range(n)]
        compare(
            xt,
            expected,
            "x_t",
            labels=labels,
            slips=[
                Slip(
                    "time runs the other way: x_t is the base point x_0 at t = 0 and the data "
                    "point x_1 at t = 1, so x_t = (1 - t) x_0 + t x_1",
                    tc * x0 + (1 - tc) * x1,
                ),
                Slip("x_t = (1 - t) x_0 + t x_1: the weight of x_0 is 1 - t, not 1", x0 + tc * x1),
                Slip(
                    "x_t = (1 - t) x_0 + t x_1: you added t x_0 instead of t x_1",
                    (1 - tc) * x0 + tc * x0,
                ),
            ],
        )
        compare(
            u,
            x1 - x0,
            "the velocity",
            labels=labels,
            slips=[
                Slip(
                    "the velocity points from the base to the data: x_1 - x_0, not x_0 - x_1",
                    x0 - x1,
                ),
                Slip(
                    "the velocity is the derivative of x_t in t, x_1 - x_0; you returned x_1", x1
                ),
                Slip(
                    "the velocity is the derivative of x_t in t, x_1 - x_0; you returned x_t",
                    expected,
                ),
                Slip(
                    "the velocity of a straight path at constant speed does not depend on t: "
                    "x_1 - x_0, not t (x_1 - x_0)",
                    tc * (x1 - x0),
                ),
            ],
        )
    print(
        "Correct: x_t runs straight from x_0 at t = 0 to x_1 at t = 1, with the "
        "constant velocity x_1 - x_0."
    )


def check_gaussian_target(fn: Callable) -> None:
    """Check ``fn(x, t, mean, std) -> (B, D)``: the flow-matching target
    ``u(x, t) = E[x_1 - x_0 | x_t = x]`` for ``x_0 ~ N(0, I)`` and data
    ``x_1 ~ N(mean, diag(std^2))``, with ``x`` ``(B, D)`` and ``t`` ``(B, 1)``."""
    name = getattr(fn, "__name__", "your function")
    g = torch.Generator().manual_seed(5)
    mean = torch.tensor([1.5, -0.5, 0.25], dtype=F64)
    std = torch.tensor([0.4, 1.7, 1.0], dtype=F64)
    n = 9
    x = 1.5 * torch.randn(n, 3, generator=g, dtype=F64)
    t = torch.rand(n, 1, generator=g, dtype=F64)
    t[0, 0], t[1, 0] = 0.0, 1.0
    got = as_tensor(
        run(fn, x.clone(), t.clone(), mean.clone(), std.clone(), name=name),
        f"the target velocity of {name}",
        (n, 3),
        ("batch", "coordinates"),
    )
    field = GaussianPathField(mean, std)
    expected = field(t, x)
    var = (1 - t) ** 2 + t**2 * std**2
    cov = t * std**2 - (1 - t)
    labels = [f"point {k} (t = {float(t[k, 0]):.2f})" for k in range(n)]
    compare(
        got,
        expected,
        "the target velocity",
        labels=labels,
        slips=[
            Slip(
                "divide by the variance of x_t, sigma_t^2 = (1 - t)^2 + t^2 s^2, not by its "
                "standard deviation",
                mean + cov / var.sqrt() * (x - t * mean),
            ),
            Slip(
                "the regression is on x - E[x_t] = x - t m, not on x - m",
                mean + cov / var * (x - mean),
            ),
            Slip(
                "E[x_1 - x_0] = m must be added: the target is m + Cov / Var (x - t m)",
                cov / var * (x - t * mean),
            ),
            Slip(
                "Cov(x_1 - x_0, x_t) = t s^2 - (1 - t): the base point enters with a minus sign",
                mean + (t * std**2 + (1 - t)) / var * (x - t * mean),
            ),
            Slip(
                "the variance of x_t is (1 - t)^2 + t^2 s^2: both terms are squared",
                mean + cov / ((1 - t) + t * std**2) * (x - t * mean),
            ),
            Slip(
                "that is the target of x_1 alone, E[x_1 | x_t]; the velocity is "
                "E[x_1 - x_0 | x_t]",
                mean + t * std**2 / var * (x - t * mean),
            ),
        ],
        advice="u(x, t) = m + (t s^2 - (1 - t)) / ((1 - t)^2 + t^2 s^2) (x - t m)",
    )
    print(
        "Correct: your target velocity is the conditional mean of x_1 - x_0 given x_t, "
        "linear in x_t: m - x at t = 0 (every particle heads for the mean of the data) "
        "and x at t = 1."
    )


def _marginal_reference(x, t, points, weights):
    log_w = torch.log(weights) - ((x[:, None, :] - t[:, :, None] * points) ** 2).sum(2) / (
        2 * (1 - t) ** 2
    )
    post = torch.softmax(log_w, dim=1)
    return ((points[None] - x[:, None, :]) * post[:, :, None]).sum(1) / (1 - t)


def check_marginal_field(fn: Callable) -> None:
    """Check ``fn(x, t, points, weights) -> (B, D)``: the flow-matching target
    ``u(x, t) = E[x_1 - x_0 | x_t = x]`` when ``x_0 ~ N(0, I)`` and the data ``x_1`` take
    the values ``points`` ``(K, D)`` with probabilities ``weights`` ``(K,)``; ``x``
    ``(B, D)``, ``t`` ``(B, 1)`` in ``[0, 1)``."""
    name = getattr(fn, "__name__", "your function")
    g = torch.Generator().manual_seed(6)
    points = torch.tensor(
        [[2.0, 0.0], [-1.0, 1.5], [0.5, -2.0], [-2.5, -1.0], [1.0, 2.5]], dtype=F64
    )
    weights = torch.tensor([0.4, 0.1, 0.25, 0.05, 0.2], dtype=F64)
    n = 10
    x = 1.5 * torch.randn(n, 2, generator=g, dtype=F64)
    t = torch.tensor([0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.97], dtype=F64)[:, None]
    x[-1] = torch.tensor([6.0, -5.0], dtype=F64)  # far out, late: exp underflows to 0 / 0
    got = as_tensor(
        run(fn, x.clone(), t.clone(), points.clone(), weights.clone(), name=name),
        f"the marginal field of {name}",
        (n, 2),
        ("batch", "coordinates"),
    )
    expected = _marginal_reference(x, t, points, weights)
    labels = [f"point {k} (t = {float(t[k, 0]):.2f})" for k in range(n)]
    sq = ((x[:, None, :] - t[:, :, None] * points) ** 2).sum(2)

    def average(log_w, velocity):
        post = torch.softmax(log_w, dim=1)
        return (velocity * post[:, :, None]).sum(1)

    conditional = (points[None] - x[:, None, :]) / (1 - t)[:, :, None]
    log_prior = torch.log(weights)
    compare(
        got,
        expected,
        "the marginal field",
        labels=labels,
        slips=[
            Slip(
                "the posterior of x_1 = y_k multiplies the likelihood N(x; t y_k, (1 - t)^2 I) "
                "by the prior weight w_k: you left out the weights",
                average(-sq / (2 * (1 - t) ** 2), conditional),
            ),
            Slip(
                "the weights must depend on x: they are the posterior of x_1 given x_t = x, "
                "proportional to w_k N(x; t y_k, (1 - t)^2 I), not the prior w_k alone",
                average(log_prior.expand(n, -1), conditional),
            ),
            Slip(
                "given x_1 = y_k, x_t = (1 - t) x_0 + t y_k has mean t y_k, not y_k",
                average(
                    log_prior - ((x[:, None, :] - points) ** 2).sum(2) / (2 * (1 - t) ** 2),
                    conditional,
                ),
            ),
            Slip(
                "given x_1 = y_k, the variance of x_t = (1 - t) x_0 + t y_k is (1 - t)^2, "
                "not 1 - t",
                average(log_prior - sq / (2 * (1 - t)), conditional),
            ),
            Slip(
                "the conditional velocity is x_1 - x_0 written with x_t = x: x_0 = "
                "(x - t y_k) / (1 - t), so x_1 - x_0 = (y_k - x) / (1 - t); you left out "
                "the division by 1 - t",
                average(log_prior - sq / (2 * (1 - t) ** 2), points[None] - x[:, None, :]),
            ),
            Slip(
                "the conditional velocity is y_k - x_0 = (y_k - x) / (1 - t), not y_k - x "
                "/ (1 - t): put the difference in brackets",
                average(
                    log_prior - sq / (2 * (1 - t) ** 2),
                    points[None] - x[:, None, :] / (1 - t)[:, :, None],
                ),
            ),
            Slip(
                "this is E[x_1 | x_t = x], the posterior mean of the data point; the field "
                "is the velocity E[x_1 - x_0 | x_t = x] = (E[x_1 | x_t = x] - x) / (1 - t)",
                average(log_prior - sq / (2 * (1 - t) ** 2), points[None].expand(n, -1, -1)),
            ),
        ],
        nan_hint="at t = 0.97, far from the data, every exp(-|x - t y_k|^2 / (2 (1 - t)^2)) "
        "underflows to zero and the weights become 0 / 0: compute the log-weights "
        "log w_k - |x - t y_k|^2 / (2 (1 - t)^2) and normalise them with torch.softmax",
        advice="u(x, t) = sum_k pi_k(x, t) (y_k - x) / (1 - t), with posterior weights "
        "pi_k proportional to w_k exp(-|x - t y_k|^2 / (2 (1 - t)^2))",
    )
    at_zero = expected[0]
    print(
        "Correct: your field is the posterior-weighted average of the conditional "
        "velocities (y_k - x) / (1 - t). At t = 0 it is E[x_1] - x "
        f"({at_zero[0]:.3f}, {at_zero[1]:.3f} at the first point); as t -> 1 the posterior "
        "concentrates on the nearest point y_k, and the field carries every particle onto "
        "one of the data points."
    )


# --- Exercise: train a field by flow matching to a KL goal ------------------------------------

RING_GOAL = Goal(0.3, steps=2000, n=5000, digits=3)


def check_fit_ring(
    fit_ring: Callable[[Tensor, torch.Generator], tuple[VelocityField, list[float]]], seed: int = 0
) -> None:
    """Exercise: ``fit_ring(data, generator)`` trains a ``VelocityField`` by flow matching
    on 20,000 samples of ``nfcourse.densities.GaussianRing`` within 2,000 steps and returns
    ``(field, history)``. The check integrates the field (dopri5, tolerance 1e-5) and asks
    for ``KL(p || q) < 0.3`` nats on 5,000 fresh points."""
    target = GaussianRing()
    data = target.sample(20_000, seed=seed)

    def measure(field: VelocityField) -> Measurement:
        model = Flow(ContinuousFlow(field, rtol=1e-5, atol=1e-5))
        return Measurement(
            *fresh_kl(
                target, model, seed=20_000 + seed, n=RING_GOAL.n, action="integrating your field"
            )
        )

    def diagnose(field: VelocityField, history: list[float], measured: Measurement) -> str | None:
        # Which target did the field learn: the velocity x_1 - x_0, or its opposite?
        dtype = next(field.parameters()).dtype
        g = torch.Generator().manual_seed(1)
        x1 = target.sample(4000, seed=30_000 + seed, dtype=dtype)
        x0 = torch.randn(x1.shape, generator=g, dtype=dtype)
        t = torch.rand(4000, 1, generator=g, dtype=dtype)
        with torch.no_grad():
            v = field(t, (1 - t) * x0 + t * x1)
        forward_loss = float(((v - (x1 - x0)) ** 2).sum(1).mean())
        backward_loss = float(((v + (x1 - x0)) ** 2).sum(1).mean())
        if backward_loss < forward_loss:
            return (
                "your field points from the data to the base: it matches x_0 - x_1 "
                "better than x_1 - x_0. The target velocity is x_1 - x_0, with x_0 the "
                "base point (t = 0) and x_1 the data point (t = 1)"
            )
        return None

    check_fit(
        fit_ring,
        data.clone(),
        torch.Generator().manual_seed(seed),
        name="fit_ring",
        goal=RING_GOAL,
        seed=seed,
        model_type=VelocityField,
        model_hint="the VelocityField you trained",
        measure=measure,
        diagnose=diagnose,
        went_up="is the loss the squared distance between v(x_t, t) and x_1 - x_0, "
        "and the learning rate not too large?",
        subject="integrating your field gives",
    )
