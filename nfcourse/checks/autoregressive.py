"""Feedback for the exercises of chapter 7 (autoregressive flows).

* ``check_made_masks``: the two masks of a one-hidden-layer MADE from its degrees;
* ``check_maf_sample``: MAF sampling, the direction that takes ``D`` passes;
* ``check_iaf_sample_and_log_prob``: IAF samples and the density of those samples;
* ``check_fit_ring``: train a MAF on the ring of eight Gaussians to a KL goal;
* ``check_inverse_reverse_kl``: the reverse KL of a MAF's normalizing map read as a flow
  from the data to ``N(0, I)``, which equals the MAF's forward KL (the MAF-IAF duality);
* ``check_ordering``: the ordering under which one affine MAF layer represents a given
  three-dimensional density exactly.

The conditioner of the exercises, ``make_conditioner(dim)``, is a small random MADE with
the identity ordering: ``conditioner(u)`` returns the log-scales ``s`` and shifts ``t``,
each of shape ``(B, D)``, with ``s_i`` and ``t_i`` depending only on ``u_1, ..., u_{i-1}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..core import Flow
from ..densities import GaussianRing
from ..flows.autoregressive import AffineAutoregressive
from ..flows.made import MADE
from ..validation import check_positive_int
from ._toolkit import (
    ExerciseError,
    Slip,
    as_number,
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
    "ORDERING_REFERENCE",
    "RING_GOAL",
    "ExerciseConditioner",
    "check_fit_ring",
    "check_iaf_sample_and_log_prob",
    "check_inverse_reverse_kl",
    "check_made_masks",
    "check_maf_sample",
    "check_ordering",
    "make_conditioner",
    "ordering_target_log_prob",
    "ordering_target_sample",
]


class ExerciseConditioner(nn.Module):
    """A MADE (identity ordering) that returns ``(s, t)``, each ``(B, D)``."""

    def __init__(self, dim: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.made = MADE(dim, (16,), 2, seed=seed).to(dtype)
        g = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for p in self.made.parameters():
                p.add_(0.4 * torch.randn(p.shape, generator=g, dtype=dtype))

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """The log-scales ``s`` and shifts ``t`` for ``u`` of shape ``(B, D)``."""
        h = self.made._net(u.to(next(self.parameters()).dtype))
        return h[..., 0], h[..., 1]


def make_conditioner(dim: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A small random MADE for the exercises: ``conditioner(u) -> (s, t)``, each of shape
    ``(B, D)``; ``s_i`` and ``t_i`` depend on ``u_1, ..., u_{i-1}`` only."""
    if check_positive_int(dim, "dim") < 2:
        raise ValueError(f"dim must be at least 2 (a MADE needs two coordinates), got {dim}")
    return ExerciseConditioner(dim, seed, dtype)


# --------------------------------------------------------------------------------------
# MADE masks
# --------------------------------------------------------------------------------------


def _reference_masks(in_degrees: Tensor, hidden_degrees: Tensor) -> tuple[Tensor, Tensor]:
    hidden = (hidden_degrees[:, None] >= in_degrees[None, :]).double()
    out = (in_degrees[:, None] > hidden_degrees[None, :]).double()
    return hidden, out


_MASK_CASES = (
    (torch.tensor([1, 2, 3]), torch.tensor([1, 2, 1, 2])),
    (torch.tensor([3, 1, 4, 2]), torch.tensor([2, 1, 3, 3, 1, 2])),
    (torch.tensor([2, 5, 1, 4, 3]), torch.tensor([4, 1, 3, 2, 2, 1, 4])),
)


def check_made_masks(fn: Callable) -> None:
    """Check ``fn(in_degrees, hidden_degrees) -> (hidden_mask, out_mask)``: the hidden mask
    ``(H, D)`` with ``1`` where ``m_hidden(k) >= m_in(j)``, and the output mask ``(D, H)``
    with ``1`` where ``m_in(i) > m_hidden(k)`` (strictly)."""
    name = getattr(fn, "__name__", "your function")
    for in_deg, hid_deg in _MASK_CASES:
        d, h = len(in_deg), len(hid_deg)
        out = run(fn, in_deg.clone(), hid_deg.clone(), name=name)
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise ExerciseError(
                f"{name} should return a pair (hidden_mask, out_mask), got {type(out).__name__}"
            )
        ref_hidden, ref_out = _reference_masks(in_deg, hid_deg)
        for got, ref, what, shape in (
            (out[0], ref_hidden, "hidden_mask", (h, d)),
            (out[1], ref_out, "out_mask", (d, h)),
        ):
            if isinstance(got, Tensor) and tuple(got.shape) == shape[::-1] and h != d:
                raise ExerciseError(
                    f"{what} has shape {tuple(got.shape)}; expected {shape}: it is "
                    "transposed. Masks follow nn.Linear.weight, (units of this layer, units "
                    "of the layer below)"
                )
            if isinstance(got, Tensor) and got.dtype == torch.bool:
                got = got.double()  # a boolean mask is a right answer too
            got = as_tensor(got, f"{name}'s {what}", shape)
            got = got.to(torch.float64)
            if what == "hidden_mask":
                slips = [
                    Slip(
                        "a hidden unit may see inputs of degree up to *and including* its "
                        "own: use >=, not >",
                        (hid_deg[:, None] > in_deg[None, :]).double(),
                    ),
                    Slip(
                        "the inequality is reversed: a hidden unit of degree k sees the "
                        "inputs of degree at most k",
                        (hid_deg[:, None] <= in_deg[None, :]).double(),
                    ),
                ]
            else:
                slips = [
                    Slip(
                        "this mask lets x_i see itself: output i may only use hidden units "
                        "of degree strictly below m(i) (use >, not >=); with >= the "
                        "Jacobian is no longer triangular with exp(s_i) on its diagonal",
                        (in_deg[:, None] >= hid_deg[None, :]).double(),
                    ),
                    Slip(
                        "the inequality is reversed: output i sees the hidden units of "
                        "degree below m(i)",
                        (in_deg[:, None] < hid_deg[None, :]).double(),
                    ),
                ]
            compare(
                got,
                ref,
                f"{what} for input degrees {in_deg.tolist()} and hidden "
                f"degrees {hid_deg.tolist()}",
                slips=slips,
            )
    print(
        "Correct: both masks follow the degrees, and the strict inequality of the output "
        "mask keeps every x_i from seeing itself (checked for D = 3, 4, 5)."
    )


# --------------------------------------------------------------------------------------
# MAF sampling: D passes
# --------------------------------------------------------------------------------------


def _reference_maf_sample(
    z: Tensor, conditioner: nn.Module, passes: int | None = None
) -> tuple[Tensor, Tensor]:
    x = torch.zeros_like(z)
    s = torch.zeros_like(z)
    for _ in range(z.shape[1] if passes is None else passes):
        s, t = conditioner(x)
        x = z * torch.exp(s) + t
    return x, s.sum(dim=1)


def _pair(out: object, name: str, what: str, n: int, dim: int) -> tuple[Tensor, Tensor]:
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise ExerciseError(
            f"{name} should return a pair ({what}, log_det), got {type(out).__name__}"
        )
    first = as_tensor(out[0], f"the {what} of {name}", (n, dim), ("batch", "coordinates"))
    second = as_tensor(out[1], f"the second output of {name}", (n,), ("batch",))
    return first, second


def check_maf_sample(fn: Callable) -> None:
    """Check ``fn(z, conditioner) -> (x, log_det)``: MAF sampling,
    ``x_i = exp(s_i(x_<i)) z_i + t_i(x_<i)``, built over ``D`` passes, and
    ``log |det dx/dz| = sum_i s_i``."""
    name = getattr(fn, "__name__", "your function")
    for dim, n, seed in ((3, 5, 0), (5, 7, 1)):
        conditioner = make_conditioner(dim, seed)
        z = 1.3 * torch.randn(
            n, dim, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64
        )
        x, log_det = _pair(run(fn, z.clone(), conditioner, name=name), name, "x", n, dim)
        with torch.no_grad():
            x_ref, log_det_ref = _reference_maf_sample(z, conditioner)
            s_z, t_z = conditioner(z)
            s0, t0 = conditioner(torch.zeros_like(z))
            slips = [
                Slip(
                    "this is one pass with the parameters computed from z: that is IAF, "
                    "x_i = exp(s_i(z_<i)) z_i + t_i(z_<i). In MAF the parameters come "
                    "from x_<i, which is not known yet: build x over D passes",
                    z * torch.exp(s_z) + t_z,
                ),
                Slip(
                    "only the first coordinate is right: one pass from x = 0 computes x_1, "
                    "the next pass x_2, and so on; sampling needs D passes",
                    _reference_maf_sample(z, conditioner, 1)[0],
                ),
                Slip(
                    f"{dim - 1} passes are one too few: pass k makes coordinate k exact, "
                    f"so D = {dim} passes are needed",
                    _reference_maf_sample(z, conditioner, dim - 1)[0],
                ),
                Slip(
                    "the inverse formula is applied: sampling maps z to x with x = exp(s) z + t",
                    (z - t0) * torch.exp(-s0),
                ),
            ]
            compare(
                x,
                x_ref,
                f"x for D = {dim}",
                slips=slips,
                labels=[f"sample {k}" for k in range(n)],
                advice="start from x = 0 and repeat x = exp(s(x)) z + t(x) D times",
            )
            s_ref = torch.log((x_ref - conditioner(x_ref)[1]) / z)
            compare(
                log_det,
                log_det_ref,
                f"log_det for D = {dim}",
                slips=[
                    Slip(
                        "this is the log-det of the normalizing direction, -sum(s); sampling "
                        "stretches by exp(s), so its log-det is +sum(s)",
                        -log_det_ref,
                    ),
                    Slip(
                        "the log-det uses the s of the first pass, from x = 0; use the s of "
                        "the last pass, computed from the finished x",
                        s0.sum(dim=1),
                    ),
                    Slip(
                        "the log-det sums s computed from z; in MAF s comes from x", s_z.sum(dim=1)
                    ),
                    Slip(
                        "log |det J| is the sum of s, not of exp(s)", torch.exp(s_ref).sum(dim=1)
                    ),
                ],
            )
        check_gradients(
            x.sum() + log_det.sum(),
            {f"the conditioner's {k}": v for k, v in conditioner.named_parameters()},
            f"{name}'s output",
        )
    print(
        "Correct: x is built over D passes, each making one more coordinate exact, and "
        "the log-det is +sum(s) (checked for D = 3 and D = 5)."
    )


# --------------------------------------------------------------------------------------
# IAF: samples and their density
# --------------------------------------------------------------------------------------


def _standard_normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * (z**2).sum(dim=1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def check_iaf_sample_and_log_prob(fn: Callable) -> None:
    """Check ``fn(z, conditioner) -> (x, log_q)``: IAF samples
    ``x = exp(s(z)) z + t(z)`` in one pass, and the log-density of the flow at them,
    ``log q(x) = log N(z; 0, I) - sum_i s_i``."""
    name = getattr(fn, "__name__", "your function")
    for dim, n, seed in ((3, 6, 2), (4, 5, 3)):
        conditioner = make_conditioner(dim, seed)
        z = 1.2 * torch.randn(
            n, dim, generator=torch.Generator().manual_seed(seed + 20), dtype=torch.float64
        )
        x, log_q = _pair(run(fn, z.clone(), conditioner, name=name), name, "x", n, dim)
        with torch.no_grad():
            s, t = conditioner(z)
            x_ref = z * torch.exp(s) + t
            log_p = _standard_normal_log_prob(z)
            log_q_ref = log_p - s.sum(dim=1)
            compare(
                x,
                x_ref,
                f"x for D = {dim}",
                slips=[
                    Slip("the scale is exp(s): x = exp(s) z + t", z * s + t),
                    Slip(
                        "exp(-s) belongs to the inverse: x = exp(s) z + t", z * torch.exp(-s) + t
                    ),
                    Slip("x = exp(s) z + t: shift after scaling", (z + t) * torch.exp(s)),
                ],
            )
            compare(
                log_q,
                log_q_ref,
                f"log_q for D = {dim}",
                slips=[
                    Slip(
                        "the sign of the log-det is flipped: the layer stretches by exp(s), "
                        "which spreads probability thin, so log q(x) = log p_Z(z) - sum(s), "
                        "not + sum(s)",
                        log_p + s.sum(dim=1),
                    ),
                    Slip(
                        "log q(x) needs the base log-density log N(z; 0, I), not N(x; 0, I)",
                        _standard_normal_log_prob(x_ref) - s.sum(dim=1),
                    ),
                    Slip(
                        "the base log-density's constant -D/2 log(2 pi) is missing",
                        log_q_ref + 0.5 * dim * math.log(2 * math.pi),
                    ),
                    Slip("the log-det term -sum(s) is missing", log_p),
                ],
                terms={"sum(s)": s.sum(1), "log N(z)": log_p},
            )
        check_gradients(
            x.sum() + log_q.sum(),
            {f"the conditioner's {k}": v for k, v in conditioner.named_parameters()},
            f"{name}'s output",
        )
    print(
        "Correct: one pass gives the IAF sample, and log q(x) = log p_Z(z) - sum(s) "
        "(checked for D = 3 and D = 4)."
    )


# --------------------------------------------------------------------------------------
# Build and train
# --------------------------------------------------------------------------------------

RING_GOAL = Goal(1.2, steps=400)


def check_fit_ring(
    fit_ring: Callable[[Tensor, torch.Generator], tuple[Flow, list[float]]], seed: int = 0
) -> None:
    """Exercise: the student's ``fit_ring(data, generator)`` trains an autoregressive flow
    on 10,000 samples of ``nfcourse.densities.GaussianRing`` and returns
    ``(flow, history)``; the flow must reach ``KL(p || q) < 1.2`` nats on 20,000 fresh
    samples within 400 steps (the best Gaussian scores about 1.87; a MAF with the same
    ordering in every layer about 1.6)."""
    target = GaussianRing()
    data = target.sample(10_000, seed=seed)

    def inspect(flow: Flow) -> None:
        if not any(isinstance(m, AffineAutoregressive) for m in flow.modules()):
            raise ExerciseError(
                "the exercise asks for an autoregressive flow: build it with "
                "nfcourse.flows.maf_flow (or MAF / IAF layers)"
            )

    def diagnose(flow: Flow, history: list[float], measured: Measurement) -> str | None:
        orders = [m.order.tolist() for m in flow.modules() if isinstance(m, AffineAutoregressive)]
        if len(orders) > 1 and all(o == orders[0] for o in orders):
            return (
                "every layer uses the same ordering, so x_1 is an affine function of z_1 "
                "alone and the flow cannot split the ring's columns; alternate the "
                "ordering (maf_flow's default, order='reverse')"
            )
        return None

    check_fit(
        fit_ring,
        data.clone(),
        torch.Generator().manual_seed(seed),
        name="fit_ring",
        goal=RING_GOAL,
        target=target,
        seed=seed,
        floor=(target.entropy(), BELOW_ENTROPY),
        inspect=inspect,
        diagnose=diagnose,
        loss=lambda flow: mean_nll(flow, data),
    )


# --------------------------------------------------------------------------------------
# Maximum likelihood for a MAF is reverse KL for its inverse
# --------------------------------------------------------------------------------------


def _duality_case(dim: int, n: int, seed: int):
    """A random two-layer MAF in float64, a correlated Gaussian data density and ``n`` of
    its samples: ``(flow, normalize, log_pi, x)``."""
    from ..flows.autoregressive import maf_flow

    flow = maf_flow(dim, n_layers=2, hidden=(16,), seed=seed).double()
    g = torch.Generator().manual_seed(seed + 30)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    mean = torch.randn(dim, generator=g, dtype=torch.float64)
    scale = torch.randn(dim, dim, generator=g, dtype=torch.float64).tril(-1) * 0.5
    scale = scale + torch.diag(0.5 + torch.rand(dim, generator=g, dtype=torch.float64))
    pi = torch.distributions.MultivariateNormal(mean, scale_tril=scale)
    x = mean + torch.randn(n, dim, generator=g, dtype=torch.float64) @ scale.T

    def normalize(x: Tensor) -> tuple[Tensor, Tensor]:
        """``(u, log_det)``: ``u = g(x)`` and ``log |det dg/dx|``, one number per row."""
        return flow.transform.inverse(x.to(torch.float64))

    def log_pi(x: Tensor) -> Tensor:
        """The data's log-density, one number per row."""
        return pi.log_prob(x.to(torch.float64))

    return flow, normalize, log_pi, x


def check_inverse_reverse_kl(fn: Callable) -> None:
    """Check ``fn(normalize, log_pi, x) -> number``: the reverse KL of the normalizing map
    ``g`` read as a flow from the data ``pi`` to ``N(0, I)``,
    ``KL(q_g || N) = E_pi[log pi(x) - log |det dg/dx| - log N(g(x))]``, estimated on the
    samples ``x``; its value and its gradients with respect to the flow's weights."""
    name = getattr(fn, "__name__", "your function")
    for dim, n, seed in ((3, 400, 0), (4, 300, 1)):
        flow, normalize, log_pi, x = _duality_case(dim, n, seed)
        got = as_number(run(fn, normalize, log_pi, x.clone(), name=name), f"{name}'s value")
        u, log_det = normalize(x)
        log_n_u = _standard_normal_log_prob(u)
        lp = log_pi(x)
        ref = (lp - log_det - log_n_u).mean()
        with torch.no_grad():
            constant = 0.5 * dim * math.log(2 * math.pi)
            slips = [
                Slip(
                    "the log-det enters with a minus: u = g(x) spreads the density of x "
                    "over |det dg/dx| times the volume, so log q_g(u) = log pi(x) - "
                    "log |det dg/dx|",
                    (lp + log_det - log_n_u).mean(),
                ),
                Slip(
                    "this is E[-log q(x)], the MAF's negative log-likelihood (the "
                    "maximum-likelihood loss); the KL also holds E[log pi(x)], the "
                    "data's own log-density: log q_g(u) = log pi(x) - log |det dg/dx|",
                    (-log_det - log_n_u).mean(),
                ),
                Slip(
                    "the terms are the other way round: KL(q_g || N) = E[log q_g(u) - "
                    "log N(u)], which is never negative",
                    -ref,
                ),
                Slip(
                    "the target's log-density is missing its constant -D/2 log(2 pi)",
                    ref - constant,
                ),
                Slip(
                    "the target's log-density is taken at x; the target N(0, I) is the "
                    "density of u = g(x), so it is log N(g(x))",
                    (lp - log_det - _standard_normal_log_prob(x)).mean(),
                ),
                Slip(
                    "this is a sum over the samples; the expectation is their mean",
                    (lp - log_det - log_n_u).sum(),
                ),
                Slip(
                    "the log-det term is missing: the density of u = g(x) is pi(x) / |det dg/dx|",
                    (lp - log_n_u).mean(),
                ),
            ]
            compare(got, ref.detach(), f"the reverse KL for D = {dim}", slips=slips)
        params = [p for p in flow.parameters() if p.requires_grad]
        if not got.requires_grad:
            raise ExerciseError(
                f"{name}'s value carries no gradient: it was computed under "
                "torch.no_grad(), detached or turned into a number; the KL is a training "
                "loss, so keep it a tensor computed from normalize's outputs"
            )
        grads = torch.autograd.grad(got, params, allow_unused=True, retain_graph=True)
        got_grad = torch.cat(
            [
                (torch.zeros_like(p) if gr is None else gr).reshape(-1).to(torch.float64)
                for p, gr in zip(params, grads, strict=True)
            ]
        )

        def flat(value: Tensor) -> Tensor:
            gs = torch.autograd.grad(value, params, allow_unused=True, retain_graph=True)
            return torch.cat(
                [
                    (torch.zeros_like(p) if gr is None else gr).reshape(-1)
                    for p, gr in zip(params, gs, strict=True)
                ]
            )

        compare(
            got_grad,
            flat(ref),
            f"the gradient of the reverse KL with respect to the flow's weights for D = {dim}",
            slips=[
                Slip(
                    "the value is right but the log-det is cut from the graph (detach, "
                    "no_grad or .item()): training needs its gradient, which is the only "
                    "thing that keeps the map from collapsing",
                    flat((lp - log_det.detach() - log_n_u).mean()),
                ),
                Slip(
                    "the value is right but u = g(x) is cut from the graph (detach, no_grad "
                    "or .item()): the gradient of log N(g(x)) is missing",
                    flat((lp - log_det - _standard_normal_log_prob(u.detach())).mean()),
                ),
            ],
            like=[got],
        )
        with torch.no_grad():
            forward_kl = float((lp - flow.log_prob(x)).mean())
        values = (float(got.detach()), forward_kl)
        print(
            f"D = {dim}: your KL(q_g || N) = {values[0]:.6f} nats; the MAF's forward KL, "
            f"mean(log pi(x) - log q(x)) on the same samples, = {values[1]:.6f}"
        )
    print(
        "Correct (values and gradients, D = 3 and D = 4). The two numbers agree because "
        "log q(x) = log N(g(x)) + log |det dg/dx| makes the two expectations equal term by "
        "term: training a MAF by maximum likelihood is fitting its inverse, a flow with "
        "IAF's structure whose base is the data, to N(0, I) by reverse KL."
    )


# --------------------------------------------------------------------------------------
# An ordering for one affine MAF layer
# --------------------------------------------------------------------------------------


def ordering_target_log_prob(x: Tensor) -> Tensor:
    """The density of the ordering exercise, in three dimensions:
    ``log p(x) = log N(x_1; 0, 1) + log N(x_2; 1.5 sin(2 x_1), 0.3^2)
    + log N(x_0; x_2^2 / 2 - 1, 0.3^2)``."""
    x = torch.as_tensor(x)
    normal = torch.distributions.Normal(torch.zeros((), dtype=x.dtype), 1.0)
    x0, x1, x2 = x[..., 0], x[..., 1], x[..., 2]
    return (
        normal.log_prob(x1)
        + normal.log_prob((x2 - 1.5 * torch.sin(2 * x1)) / 0.3)
        - math.log(0.3)
        + normal.log_prob((x0 - 0.5 * x2**2 + 1) / 0.3)
        - math.log(0.3)
    )


def ordering_target_sample(n: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """``n`` samples of the density of ``ordering_target_log_prob``, shape ``(n, 3)``."""
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(n, 3, generator=g, dtype=dtype)
    x1 = e[:, 0]
    x2 = 1.5 * torch.sin(2 * x1) + 0.3 * e[:, 1]
    x0 = 0.5 * x2**2 - 1 + 0.3 * e[:, 2]
    return torch.stack([x0, x1, x2], dim=1)


ORDERING_REFERENCE = (2, 0, 1)  # order[j] = position of x_j: x_1 first, then x_2, then x_0


def _fit_one_layer(order: Sequence[int], data: Tensor, steps: int = 300) -> float:
    from ..flows.autoregressive import maf_flow
    from ..training import fit_maximum_likelihood

    flow = maf_flow(3, n_layers=1, hidden=(32, 32), order=[list(order)], seed=0).double()
    fit_maximum_likelihood(
        flow, data, steps, batch_size=256, lr=1e-2, seed=0, schedule="cosine", progress=False
    )
    test = ordering_target_sample(20_000, seed=1)
    with torch.no_grad():
        return float((ordering_target_log_prob(test) - flow.log_prob(test)).mean())


def check_ordering(fn: Callable) -> None:
    """Check ``fn() -> order``: the ordering (``order[j]`` = position of ``x_j``) under
    which ONE affine MAF layer can represent the density of ``ordering_target_log_prob``
    exactly; when it is right, train one layer with it and with the natural ordering and
    print both KL divergences."""
    from ..flows.made import check_order

    name = getattr(fn, "__name__", "your function")
    got = run(fn, name=name)
    if isinstance(got, Tensor):
        got = got.tolist()
    try:
        order = tuple(int(v) for v in check_order(got, 3).tolist())
    except (TypeError, ValueError) as error:
        raise ExerciseError(
            f"{name} should return a permutation of 0, 1, 2 (a list or a tensor of "
            f"integers), got {got!r}: {error}"
        ) from None
    if order != ORDERING_REFERENCE:
        sequence = sorted(range(3), key=lambda j: order[j])  # coordinates in their order
        if tuple(sequence) == ORDERING_REFERENCE:
            message = (
                f"you listed the coordinates in the order they come, {list(order)}; "
                "order[j] is the *position* of x_j in the ordering (MADE's convention), "
                "so invert your permutation"
            )
        elif sequence[0] != 1:
            message = (
                f"your ordering puts x_{sequence[0]} first. One affine layer gives the first "
                "coordinate e^s z + t with constants s and t, a Gaussian; only x_1 has a "
                "Gaussian marginal (integrate x_0 out, then x_2: each integral is of a "
                f"Gaussian in that variable). The marginal of x_{sequence[0]} is not one"
            )
        else:
            message = (
                "x_1 comes first, but then x_0 comes before x_2: given x_1 alone, x_0 is "
                "not Gaussian, since its mean x_2^2 / 2 - 1 depends on x_2, which is not "
                "known yet. Each coordinate must come after everything its conditional "
                "mean depends on"
            )
        raise ExerciseError(f"{name}'s ordering {list(order)} is not right: {message}")
    data = ordering_target_sample(10_000, seed=0)
    kl_yours = _fit_one_layer(order, data)
    kl_natural = _fit_one_layer((0, 1, 2), data)
    print(
        f"Correct: with the ordering x_1, x_2, x_0 (order = {list(order)}) every conditional "
        "is a Gaussian whose mean and scale depend on earlier coordinates only, which is "
        "exactly what one affine layer computes. One layer trained for 300 steps reaches "
        f"KL(p || q) = {kl_yours:.3f} nats with it, and {kl_natural:.3f} with the natural "
        "ordering x_0, x_1, x_2."
    )
