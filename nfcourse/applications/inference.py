"""Sampling and inference with flows (chapter 12).

Importance sampling with a flow ``q`` as the proposal for an unnormalised target
``p~ = exp(-U)``, ``Z = integral of p~``:

    w(x) = p~(x) / q(x),  x ~ q,    E_q[w] = Z,

so ``Z_hat = mean(w)`` is an unbiased estimate of ``Z`` (``log Z_hat`` is consistent, and
biased low by Jensen's inequality, ``E[log Z_hat] <= log Z``). The effective sample size
``ESS = (sum w)^2 / sum w^2`` is ``n`` for equal weights and 1 when one weight dominates.
Everything is computed from the log-weights with ``logsumexp``, which never overflows.

Amortised posterior inference: ``LinearGaussianSimulator`` is a simulator
``theta ~ N(0, s^2 I)``, ``x = A theta + sigma eps``, whose posterior ``p(theta | x)`` is
Gaussian in closed form, so that a conditional flow trained on simulated pairs
(``nfcourse.flows.maf_flow`` with ``context_dim``) can be measured against the truth.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor

from ..core import Flow
from ..validation import check_batch, check_positive_float, check_positive_int

__all__ = [
    "importance_log_weights",
    "effective_sample_size",
    "log_z_estimate",
    "two_modes_energy",
    "LinearGaussianSimulator",
    "posterior_kl",
]


def _check_log_weights(log_w: object) -> Tensor:
    if (
        not isinstance(log_w, Tensor)
        or log_w.dim() != 1
        or log_w.numel() == 0
        or not log_w.is_floating_point()
    ):
        what = (
            f"shape {tuple(log_w.shape)} and dtype {log_w.dtype}"
            if isinstance(log_w, Tensor)
            else type(log_w).__name__
        )
        raise ValueError(
            f"log_w must be a non-empty 1D float tensor of log-weights, one per sample, "
            f"got {what}; flatten it with log_w.reshape(-1)"
        )
    if bool(torch.isnan(log_w).any()) or bool((log_w == math.inf).any()):
        raise ValueError(
            "log_w contains NaN or +inf; a log-weight is log p~(x) - log q(x) "
            "and must be finite or -inf (zero weight)"
        )
    return log_w.double()


@torch.no_grad()
def importance_log_weights(
    flow: Flow,
    log_target: Callable[[Tensor], Tensor],
    n: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw ``n`` samples ``x ~ q`` of ``flow`` and return them with their log-weights
    ``log w = log p~(x) - log q(x)``, shapes ``(n, D)`` and ``(n,)``."""
    if not callable(log_target):
        raise TypeError(
            f"log_target must be a function from points (n, D) to "
            f"log-densities (n,), got {type(log_target).__name__}"
        )
    n = check_positive_int(n, "n")
    x, log_q = flow.sample_and_log_prob(n, generator=generator)
    log_p = log_target(x)
    if not isinstance(log_p, Tensor) or not log_p.is_floating_point():
        raise TypeError(
            f"log_target must return a float tensor of log-densities, one per point, got "
            f"{type(log_p).__name__}"
            + (f" of dtype {log_p.dtype}" if isinstance(log_p, Tensor) else "")
        )
    if tuple(log_p.shape) != (n,):
        hint = "; return log_p.reshape(-1) (or .squeeze(-1))" if log_p.numel() == n else ""
        raise ValueError(
            f"log_target must map points of shape ({n}, D) to log-densities of shape "
            f"({n},), got shape {tuple(log_p.shape)}{hint}"
        )
    bad = torch.isnan(log_p) | (log_p == math.inf)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()
        raise ValueError(
            f"log_target returned NaN or +inf at rows {rows[:5].tolist()}"
            + (" ..." if len(rows) > 5 else "")
            + f" (points {x[rows[:3]].tolist()}); a log-density must be finite or -inf "
            "(zero density): fix the target there"
        )
    return x, log_p.to(log_q.dtype) - log_q


def effective_sample_size(log_w: Tensor) -> float:
    """``(sum w)^2 / sum w^2`` from the log-weights: ``exp(2 lse(log w) - lse(2 log w))``,
    between 1 and ``n``."""
    log_w = _check_log_weights(log_w)
    if bool((log_w == -math.inf).all()):
        return 0.0
    return float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))


def log_z_estimate(log_w: Tensor) -> tuple[float, float]:
    """``log Z_hat = log mean(w) = lse(log w) - log n`` and its standard error by the delta
    method, ``std(w) / (sqrt(n) mean(w))`` (the relative standard error of ``Z_hat``;
    ``inf`` for a single sample). Raises ``ValueError`` when every weight is zero
    (all log-weights ``-inf``): then no sample carries information about ``Z``."""
    log_w = _check_log_weights(log_w)
    n = log_w.numel()
    if bool((log_w == -math.inf).all()):
        raise ValueError(
            f"every one of the {n} log-weights is -inf: no sample has positive weight, so "
            "the samples say nothing about Z (log Z_hat would be -inf with an undefined "
            "error); draw more samples or use a proposal that covers the target's mass"
        )
    log_z = float(torch.logsumexp(log_w, 0) - math.log(n))
    w = torch.exp(log_w - log_z)  # weights divided by their mean
    se = float(w.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.inf
    return log_z, se


def two_modes_energy(separation: float, scale: float = 0.5) -> Callable[[Tensor], Tensor]:
    """``U(x) = -log(N(x; m, s^2 I) / 2 + N(x; -m, s^2 I) / 2)`` in the plane with
    ``m = (separation / 2, 0)``: two equal round modes ``separation`` apart, normalised,
    so that ``log Z = 0`` exactly."""
    if (
        isinstance(separation, bool)
        or not isinstance(separation, numbers.Real)
        or not 0 <= float(separation) < math.inf
    ):
        raise ValueError(
            f"separation must be a finite non-negative number (the distance between the "
            f"modes), got {separation!r}; pass for example separation=4.0"
        )
    scale = check_positive_float(
        scale, "scale", "the standard deviation of each mode, for example 0.5"
    )
    half = 0.5 * float(separation)
    log_norm = -math.log(2 * math.pi * scale**2) - math.log(2.0)

    def energy(x: Tensor) -> Tensor:
        check_batch(x, 2, "x")
        r2 = x[:, 1] ** 2
        a = -0.5 * ((x[:, 0] - half) ** 2 + r2) / scale**2
        b = -0.5 * ((x[:, 0] + half) ** 2 + r2) / scale**2
        return -(torch.logaddexp(a, b) + log_norm)

    energy.__name__ = f"two_modes_{separation:g}"
    return energy


class LinearGaussianSimulator:
    """``theta ~ N(0, prior_scale^2 I_k)``, ``x = A theta + noise eps``, ``eps ~ N(0, I_m)``.

    The posterior is Gaussian (complete the square in ``theta``):

        Sigma = (I / prior_scale^2 + A^T A / noise^2)^{-1},
        mu(x) = Sigma A^T x / noise^2.

    Args:
        matrix: ``A``, shape ``(m, k)``.
        noise: the noise standard deviation ``sigma > 0``.
        prior_scale: the prior standard deviation.
    """

    def __init__(self, matrix: Tensor, noise: float, prior_scale: float = 1.0) -> None:
        if not isinstance(matrix, Tensor) or matrix.dim() != 2 or 0 in matrix.shape:
            raise ValueError(
                f"matrix must be a non-empty 2D tensor A of shape (m, k), got {matrix!r}"
            )
        if not matrix.is_floating_point() or not bool(torch.isfinite(matrix).all()):
            raise ValueError(
                f"matrix must hold finite floating-point numbers, got dtype {matrix.dtype}"
                f"{'' if not matrix.is_floating_point() else ' with NaN or inf entries'}; "
                "convert it with .double() and check its entries"
            )
        self.noise = check_positive_float(noise, "noise", "the noise standard deviation")
        self.prior_scale = check_positive_float(
            prior_scale, "prior_scale", "the prior standard deviation"
        )
        self.matrix = matrix.double()
        self.obs_dim, self.param_dim = matrix.shape
        k = self.param_dim
        precision = (
            torch.eye(k, dtype=torch.float64) / self.prior_scale**2
            + self.matrix.T @ self.matrix / self.noise**2
        )
        self.posterior_cov = torch.linalg.inv(precision)
        self._chol = torch.linalg.cholesky(self.posterior_cov)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` parameters from the prior, ``(n, k)`` in float64."""
        n = check_positive_int(n, "n")
        return self.prior_scale * torch.randn(
            n, self.param_dim, generator=generator, dtype=torch.float64
        )

    def simulate(self, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One observation per parameter, ``(n, k) -> (n, m)``."""
        theta = check_batch(theta, self.param_dim, "theta").double()
        eps = torch.randn(theta.shape[0], self.obs_dim, generator=generator, dtype=torch.float64)
        return theta @ self.matrix.T + self.noise * eps

    def posterior_mean(self, x: Tensor) -> Tensor:
        """``mu(x)`` for observations ``(B, m)``, shape ``(B, k)``."""
        x = check_batch(x, self.obs_dim, "x").double()
        return x @ self.matrix @ self.posterior_cov.T / self.noise**2

    def posterior_log_prob(self, theta: Tensor, x: Tensor) -> Tensor:
        """``log p(theta | x)`` row by row, ``(B, k)`` and ``(B, m)`` to ``(B,)``."""
        theta = check_batch(theta, self.param_dim, "theta").double()
        x = check_batch(x, self.obs_dim, "x")
        if x.shape[0] != theta.shape[0]:
            raise ValueError(
                f"theta has {theta.shape[0]} rows but x has {x.shape[0]}; pass one "
                f"observation per parameter, x of shape ({theta.shape[0]}, {self.obs_dim})"
            )
        d = theta - self.posterior_mean(x)
        y = torch.linalg.solve_triangular(self._chol, d.T, upper=False).T
        log_det = 2 * torch.log(torch.diagonal(self._chol)).sum()
        return -0.5 * (y**2).sum(1) - 0.5 * log_det - 0.5 * self.param_dim * math.log(2 * math.pi)

    def posterior_sample(
        self, x: Tensor, n: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` samples of ``p(theta | x)`` for one observation ``x`` of shape ``(m,)``
        or ``(1, m)``; shape ``(n, k)``."""
        x = self._one_observation(x)
        mean = self.posterior_mean(x)
        n = check_positive_int(n, "n")
        eps = torch.randn(n, self.param_dim, generator=generator, dtype=torch.float64)
        return mean + eps @ self._chol.T

    def _one_observation(self, x: object) -> Tensor:
        """One observation of shape ``(m,)`` or ``(1, m)`` as ``(1, m)``."""
        if isinstance(x, Tensor) and x.dim() == 1:
            x = x.reshape(1, -1)
        x = check_batch(x, self.obs_dim, "x")
        if x.shape[0] != 1:
            raise ValueError(
                f"x must be one observation, shape ({self.obs_dim},) or (1, {self.obs_dim}), "
                f"got {x.shape[0]} rows; loop over the observations"
            )
        return x


@torch.no_grad()
def posterior_kl(
    flow: Flow,
    simulator: LinearGaussianSimulator,
    x: Tensor,
    n: int = 4000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """``KL(p(theta | x) || q(theta | x))`` for one observation ``x`` by Monte Carlo over
    ``n`` samples of the true posterior, ``E_p[log p - log q]``, with its standard error.
    Zero only when the flow's posterior is the true one."""
    n = check_positive_int(n, "n")
    x = simulator._one_observation(x)
    theta = simulator.posterior_sample(x, n, generator=generator)
    dtype = next(flow.parameters()).dtype
    context = x.reshape(1, -1).to(dtype).expand(n, -1)
    terms = (
        simulator.posterior_log_prob(theta, context.double())
        - flow.log_prob(theta.to(dtype), context).double()
    )
    return float(terms.mean()), float(terms.std() / math.sqrt(n))
