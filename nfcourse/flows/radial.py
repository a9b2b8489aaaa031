"""Radial flows (chapter 3), after Rezende and Mohamed (2015).

``RadialFlow``: ``x = f(z) = z + beta h(alpha, r) (z - z0)`` with ``r = ||z - z0||`` and
``h(alpha, r) = 1 / (alpha + r)``, ``alpha > 0``. The map moves each point along the ray
from ``z0`` through it, so its Jacobian is

    J = (1 + beta h) I + beta h'(r) (z - z0)(z - z0)^T / r,

with eigenvalue ``1 + beta h + beta h'(r) r = 1 + beta alpha h^2`` along the ray and
``1 + beta h`` (``D - 1`` times) across it:

    log |det J| = (D - 1) log(1 + beta h) + log(1 + beta alpha h^2).

Both factors are positive, and the map invertible, when ``beta >= -alpha``; the module keeps
``alpha = softplus(raw_alpha)`` and ``beta = -alpha + softplus(raw_beta)``.

The inverse is closed form: ``x - z0 = (1 + beta / (alpha + r)) (z - z0)`` gives
``rho = ||x - z0|| = r (1 + beta / (alpha + r))``, a quadratic
``r^2 + (alpha + beta - rho) r - alpha rho = 0`` with one root ``r >= 0``; then
``z = z0 + (x - z0) / (1 + beta / (alpha + r))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Transform

__all__ = ["RadialFlow", "radial_forward", "radial_inverse", "radial_log_abs_det"]


def radial_log_abs_det(r: Tensor, alpha: Tensor, beta: Tensor, dim: int) -> Tensor:
    """``(D - 1) log(1 + beta h) + log(1 + beta alpha h^2)`` with ``h = 1 / (alpha + r)``."""
    h = 1.0 / (alpha + r)
    return (dim - 1) * torch.log1p(beta * h) + torch.log1p(beta * alpha * h**2)


def radial_forward(z: Tensor, z0: Tensor, alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """The forward map ``x = z + beta (z - z0) / (alpha + r)`` and its log-determinant.

    Args:
        z: points of shape ``(B, D)``; ``z0``: the centre, shape ``(D,)``.
        alpha, beta: scalar tensors with ``alpha > 0`` and ``beta >= -alpha``.

    Returns:
        ``x`` of shape ``(B, D)`` and ``log |det J|`` of shape ``(B,)``.
    """
    d = z - z0
    r = torch.linalg.vector_norm(d, dim=1)
    x = z + (beta / (alpha + r)).unsqueeze(1) * d
    return x, radial_log_abs_det(r, alpha, beta, z.shape[1])


def radial_inverse(x: Tensor, z0: Tensor, alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """The inverse map, in closed form, and ``log |det J_{f^{-1}}(x)| = -log |det J_f(z)|``.

    The radius ``r = ||z - z0||`` is the non-negative root of
    ``r^2 + c r - alpha rho = 0`` with ``c = alpha + beta - rho``, ``rho = ||x - z0||``,
    computed without cancellation: ``r = 2 alpha rho / (s + c)`` when ``c >= 0`` and
    ``(s - c) / 2`` otherwise, ``s = sqrt(c^2 + 4 alpha rho)``.
    """
    d = x - z0
    rho = torch.linalg.vector_norm(d, dim=1)
    c = alpha + beta - rho
    t = torch.sqrt(c**2 + 4.0 * alpha * rho) + c.abs()
    t = t.clamp_min(torch.finfo(t.dtype).tiny)
    r = torch.where(c >= 0, 2.0 * alpha * rho / t, 0.5 * t)
    z = z0 + d / (1.0 + beta / (alpha + r)).unsqueeze(1)
    return z, -radial_log_abs_det(r, alpha, beta, x.shape[1])


class RadialFlow(Transform):
    """Creates the radial map ``x = z + beta (z - z0) / (alpha + ||z - z0||)`` of ``R^D``.

    ``log |det J| = (D - 1) log(1 + beta h) + log(1 + beta alpha h^2)``,
    ``h = 1 / (alpha + r)``; ``alpha = softplus(raw_alpha) > 0`` and
    ``beta = -alpha + softplus(raw_beta) > -alpha`` keep the map invertible.

    Args:
        dim: the dimension ``D``.
        init_scale: the scale of the random initial centre ``z0``. The layer starts as the
            identity: ``raw_alpha = raw_beta = 0`` gives ``alpha = log 2`` and ``beta = 0``.
        generator: the random generator of the initial ``z0`` (default: torch's global one).

    Attributes:
        z0, raw_alpha, raw_beta: the parameters, shapes ``(D,)``, ``()`` and ``()``.

    Reference: Rezende and Mohamed, "Variational inference with normalizing flows", 2015.
    """

    def __init__(
        self, dim: int, init_scale: float = 1.0, generator: torch.Generator | None = None
    ):
        super().__init__(dim)
        self.z0 = nn.Parameter(init_scale * torch.randn(dim, generator=generator))
        self.raw_alpha = nn.Parameter(torch.zeros(()))
        self.raw_beta = nn.Parameter(torch.zeros(()))

    @property
    def alpha(self) -> Tensor:
        return F.softplus(self.raw_alpha)

    @property
    def beta(self) -> Tensor:
        return -self.alpha + F.softplus(self.raw_beta)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return radial_forward(z, self.z0, self.alpha, self.beta)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return radial_inverse(x, self.z0, self.alpha, self.beta)
