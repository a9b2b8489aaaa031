"""Feedback for the exercises of chapter 12 (augmentation and inference).

* ``check_effective_sample_size``: ``(sum w)^2 / sum w^2`` from log-weights, without
  overflow;
* ``check_log_z_estimate``: ``log Z_hat = logsumexp(log w) - log n``;
* ``check_conditional_log_prob``: the log-density of a conditional affine layer;
* ``check_fit_posterior``: train a conditional flow on the linear-Gaussian simulator
  to a posterior-KL goal.

The conditioner of the third exercise, ``make_context_net(dim, context_dim)``, is a small
random network ``net(c) -> (s, t)``, each ``(B, D)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..applications.inference import LinearGaussianSimulator, posterior_kl
from ..core import Flow
from . import ExerciseError, Slip, as_number, as_tensor, check_gradients, compare, run
from ._training import Goal, Measurement, check_fit

__all__ = [
    "POSTERIOR_KL_GOAL",
    "POSTERIOR_STEPS",
    "check_conditional_log_prob",
    "check_effective_sample_size",
    "check_fit_posterior",
    "check_log_z_estimate",
    "make_context_net",
    "make_simulator",
]

F64 = torch.float64


# --------------------------------------------------------------------------------------
# Importance weights
# --------------------------------------------------------------------------------------


def _log_weight_cases() -> list[Tensor]:
    g = torch.Generator().manual_seed(12)
    return [
        torch.tensor([0.3, -1.2, 0.8, -0.1, 0.5], dtype=F64),  # moderate
        1.5 * torch.randn(50, generator=g, dtype=F64) - 2.0,  # spread
        torch.randn(40, generator=g, dtype=F64) + 800.0,  # exp overflows
        torch.randn(30, generator=g, dtype=F64) - 800.0,  # exp underflows
    ]


def _ess(lw: Tensor) -> Tensor:
    return torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0))


def _naive(fn: Callable[[Tensor], Tensor], lw: Tensor) -> Tensor:
    with torch.no_grad():
        return fn(torch.exp(lw))


def check_effective_sample_size(fn: Callable) -> None:
    """Check ``fn(log_w) -> ESS``: ``(sum w)^2 / sum w^2`` for log-weights ``(n,)``, one
    number, computed stably (the third case has log-weights near 800, the fourth near
    -800)."""
    name = getattr(fn, "__name__", "your function")
    for k, lw in enumerate(_log_weight_cases()):
        n = lw.numel()
        got = as_number(run(fn, lw.clone(), name=name), f"the ESS of case {k + 1}")
        ref = _ess(lw)
        stable = k < 2
        slips = [
            Slip(
                f"this is ESS / n, the fraction; return the count ESS = (sum w)^2 / "
                f"sum w^2 (between 1 and n = {n})",
                ref / n,
            ),
            Slip(
                "the ratio is upside down: ESS = (sum w)^2 / sum w^2, which is n for "
                "equal weights",
                1 / ref,
            ),
            Slip(
                "the log-weights were used as weights: exponentiate them first (in "
                "log space: 2 logsumexp(log w) - logsumexp(2 log w))",
                lw.sum() ** 2 / (lw**2).sum(),
            ),
        ]
        if not stable:
            slips.insert(
                0,
                Slip(
                    "exp(log w) overflows or underflows for log-weights this large or small: "
                    "work in log space, ESS = exp(2 logsumexp(log w) - logsumexp(2 log w))",
                    _naive(lambda w: w.sum() ** 2 / (w**2).sum(), lw),
                ),
            )
        compare(
            got,
            ref,
            f"the ESS of case {k + 1} (log-weights around {float(lw.mean()):.0f})",
            slips=slips,
            nan_hint="exp(log w) overflowed or underflowed: work with logsumexp",
        )
    print(
        "Correct: the ESS is (sum w)^2 / sum w^2, computed in log space so that "
        "log-weights near +-800 work too (checked on four sets of log-weights)."
    )


def check_log_z_estimate(fn: Callable) -> None:
    """Check ``fn(log_w) -> log Z_hat``: ``log mean(w) = logsumexp(log w) - log n``."""
    name = getattr(fn, "__name__", "your function")
    for k, lw in enumerate(_log_weight_cases()):
        n = lw.numel()
        got = as_number(run(fn, lw.clone(), name=name), f"log Z_hat of case {k + 1}")
        ref = torch.logsumexp(lw, 0) - math.log(n)
        slips = [
            Slip(
                "this is the mean of the log-weights, the ELBO, which lies below log Z "
                "by KL(q || p); log Z_hat is the log of the mean weight, "
                "logsumexp(log w) - log n",
                lw.mean(),
            ),
            Slip(
                f"the - log n is missing: the estimate of Z is the mean weight, not the "
                f"sum (n = {n})",
                torch.logsumexp(lw, 0),
            ),
            Slip(
                "the log n is added: log mean(w) = logsumexp(log w) - log n",
                torch.logsumexp(lw, 0) + math.log(n),
            ),
            Slip("this is the mean weight without the log", torch.exp(ref)),
        ]
        if k >= 2:
            slips.insert(
                0,
                Slip(
                    "exp(log w) overflows or underflows for log-weights this large or small: "
                    "use torch.logsumexp",
                    _naive(lambda w: torch.log(w.mean()), lw),
                ),
            )
        compare(
            got,
            ref,
            f"log Z_hat of case {k + 1} (log-weights around {float(lw.mean()):.0f})",
            slips=slips,
            nan_hint="exp(log w) overflowed or underflowed: use torch.logsumexp",
        )
    print(
        "Correct: log Z_hat = logsumexp(log w) - log n, stable for log-weights near "
        "+-800 (checked on four sets of log-weights)."
    )


# --------------------------------------------------------------------------------------
# A conditional layer's log-density
# --------------------------------------------------------------------------------------


class ContextNet(nn.Module):
    """``net(c) -> (s, t)``: a small random MLP from the context to a log-scale and a
    shift per coordinate."""

    def __init__(
        self, dim: int, context_dim: int, seed: int = 0, dtype: torch.dtype = F64
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(context_dim, 16, generator=g, dtype=dtype))
        self.b1 = nn.Parameter(0.3 * torch.randn(16, generator=g, dtype=dtype))
        self.w2 = nn.Parameter(0.3 * torch.randn(16, 2 * dim, generator=g, dtype=dtype))
        self.b2 = nn.Parameter(0.3 * torch.randn(2 * dim, generator=g, dtype=dtype))
        self.dim = dim

    def forward(self, c: Tensor) -> tuple[Tensor, Tensor]:
        """The log-scales ``s`` and shifts ``t`` for a context ``c`` of shape ``(B, C)``."""
        h = torch.tanh(c.to(self.w1.dtype) @ self.w1 + self.b1) @ self.w2 + self.b2
        return h[:, : self.dim], h[:, self.dim :]


def make_context_net(dim: int, context_dim: int, seed: int = 0) -> nn.Module:
    """A random ``net(c) -> (s, t)``, each of shape ``(B, dim)``, for the exercises."""
    return ContextNet(dim, context_dim, seed)


def _log_normal(z: Tensor) -> Tensor:
    return -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def check_conditional_log_prob(fn: Callable) -> None:
    """Check ``fn(x, c, net) -> log q(x | c)`` for the layer ``x = exp(s(c)) z + t(c)``,
    ``(s, t) = net(c)``, with a standard normal base: ``log N(z) - sum s``,
    ``z = (x - t) exp(-s)``."""
    name = getattr(fn, "__name__", "your function")
    for dim, cdim, n, seed in ((2, 3, 6, 0), (4, 1, 5, 1)):
        net = make_context_net(dim, cdim, seed)
        g = torch.Generator().manual_seed(seed + 30)
        x = 1.5 * torch.randn(n, dim, generator=g, dtype=F64)
        c = torch.randn(n, cdim, generator=g, dtype=F64)
        got = as_tensor(
            run(fn, x.clone(), c.clone(), net, name=name),
            f"the output of {name}",
            (n,),
            ("batch",),
        )
        with torch.no_grad():
            s, t = net(c)
            z = (x - t) * torch.exp(-s)
            ref = _log_normal(z) - s.sum(1)
            compare(
                got,
                ref,
                f"log q(x | c) for D = {dim}",
                slips=[
                    Slip(
                        "the sign of the log-det is flipped: normalizing divides by exp(s), "
                        "so log q = log N(z) - sum(s)",
                        _log_normal(z) + s.sum(1),
                    ),
                    Slip(
                        "z = (x - t) exp(-s): the inverse divides by the scale",
                        _log_normal((x - t) * torch.exp(s)) - s.sum(1),
                    ),
                    Slip(
                        "z = (x - t) exp(-s): subtract the shift before dividing",
                        _log_normal(x * torch.exp(-s) - t) - s.sum(1),
                    ),
                    Slip(
                        "the base log-density is of z = f^{-1}(x; c), not of x",
                        _log_normal(x) - s.sum(1),
                    ),
                    Slip(
                        "the constant -D/2 log(2 pi) of the base is missing",
                        ref + 0.5 * dim * math.log(2 * math.pi),
                    ),
                    Slip("the log-det term -sum(s) is missing", _log_normal(z)),
                ],
                terms={"sum(s)": s.sum(1)},
            )
        check_gradients(got.sum(), dict(net.named_parameters()), f"{name}'s output")
    print(
        "Correct: log q(x | c) = log N(z) - sum(s(c)) with z = (x - t(c)) exp(-s(c)) "
        "(checked for D = 2 and D = 4)."
    )


# --------------------------------------------------------------------------------------
# Build and train: a posterior flow
# --------------------------------------------------------------------------------------

POSTERIOR_STEPS = 600
POSTERIOR_KL_GOAL = 0.1


def make_simulator() -> LinearGaussianSimulator:
    """The linear-Gaussian simulator of the chapter: ``theta ~ N(0, I_2)``,
    ``x = A theta + 0.5 eps`` in ``R^3``."""
    return LinearGaussianSimulator(torch.tensor([[1.0, 0.5], [0.0, 1.0], [1.0, -1.0]]), noise=0.5)


def check_fit_posterior(
    fit_posterior: Callable[[Tensor, Tensor], tuple[Flow, list[float]]], seed: int = 0
) -> None:
    """Exercise: ``fit_posterior(theta, x)`` trains a conditional ``Flow`` ``q(theta | x)``
    on 20,000 simulated pairs (float32) within 600 steps and returns ``(flow, history)``;
    the mean ``KL(p(theta | x) || q(theta | x))`` over five fresh observations must be
    below 0.1 nats (the prior scores about 2)."""
    simulator = make_simulator()
    g = torch.Generator().manual_seed(seed)
    theta = simulator.sample_prior(20_000, generator=g)
    x = simulator.simulate(theta, generator=g)
    x_obs = simulator.simulate(simulator.sample_prior(5, generator=g), generator=g)
    goal = Goal(
        POSTERIOR_KL_GOAL,
        steps=POSTERIOR_STEPS,
        n=len(x_obs),
        phrases=(
            "{subject} KL = {value:.{digits}f}{error} nats of the true posterior on average over "
            "{n} fresh observations",
            "your flow's posteriors are KL = {value:.4g} nats from the truth on average over "
            "{n} fresh observations",
        ),
    )

    def measure(flow: Flow) -> Measurement:
        try:
            kls = [
                posterior_kl(
                    flow, simulator, x_obs[k], generator=torch.Generator().manual_seed(100 + k)
                )
                for k in range(len(x_obs))
            ]
        except Exception as failure:  # the flow cannot evaluate these points
            raise ExerciseError(
                f"evaluating your flow's posterior failed: {type(failure).__name__}: {failure}"
            ) from None
        return Measurement(
            sum(kl for kl, _ in kls) / len(kls),
            math.sqrt(sum(error**2 for _, error in kls)) / len(kls),
        )

    def loss(flow: Flow) -> float:
        dtype = next(flow.parameters()).dtype
        return float(-flow.log_prob(theta.to(dtype), x.to(dtype)).mean())

    def diagnose(flow: Flow, history: list[float], measured: Measurement) -> str | None:
        if flow.dim == 3 and flow.context_dim == 2:
            return (
                "the roles are swapped: the flow models theta given x (dim=2, "
                "context_dim=3), not x given theta"
            )
        return None

    check_fit(
        fit_posterior,
        theta.float(),
        x.float(),
        name="fit_posterior",
        goal=goal,
        seed=seed,
        model_hint="the conditional nfcourse.Flow you trained",
        measure=measure,
        loss=loss,
        diagnose=diagnose,
        subject="your posterior flow is within",
    )
