"""Elementwise non-linear bijections of the line (chapter 1, the change of variables).

``SinhArcsinh``: ``x = sinh(tau * (asinh(z) + eps))`` applied to each coordinate, with
skew ``eps`` and tail weight ``tau > 0`` (Jones and Pewsey 2009). Its derivative is
``f'(z) = tau cosh(tau (asinh z + eps)) / sqrt(1 + z^2) > 0``, so it is a smooth increasing
map of ``R`` onto ``R`` whose inverse is closed form: ``z = sinh(asinh(x) / tau - eps)``.
Because the map acts on each coordinate separately, its Jacobian is diagonal and
``log |det J| = sum_i log f'(z_i)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core import Transform

__all__ = ["SinhArcsinh", "sinh_arcsinh"]


def _log_cosh(u: Tensor) -> Tensor:
    """``log cosh(u) = |u| + log1p(exp(-2|u|)) - log 2``, which does not overflow for large
    ``|u|`` (``cosh`` itself does)."""
    a = u.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - math.log(2)


def sinh_arcsinh(
    z: Tensor, skew: Tensor, log_tail: Tensor, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """The map ``x = sinh(tau (asinh(z) + eps))``, ``tau = exp(log_tail)``, per coordinate.

    With ``a = asinh(z)`` and ``u = tau (a + eps) = asinh(x)``,
    ``log f'(z) = log cosh(u) + log tau - log cosh(a)``, since ``cosh(asinh z) = sqrt(1 + z^2)``.

    Args:
        z: points of shape ``(B, D)`` (or ``x`` when ``inverse`` is true).
        skew: ``eps``, shape ``(D,)``.
        log_tail: ``log tau``, shape ``(D,)``.
        inverse: evaluate ``z = sinh(asinh(x) / tau - eps)`` instead.

    Returns:
        ``(x, log |det J_f(z)|)`` for the forward map, or ``(z, log |det J_{f^{-1}}(x)|)``
        when ``inverse`` is true; the log-det has shape ``(B,)``.
    """
    tail = torch.exp(log_tail)
    if not inverse:
        a = torch.asinh(z)
        u = tail * (a + skew)
        out = torch.sinh(u)
        sign = 1.0
    else:
        u = torch.asinh(z)
        a = u / tail - skew
        out = torch.sinh(a)
        sign = -1.0
    log_derivative = _log_cosh(u) + log_tail - _log_cosh(a)
    return out, sign * log_derivative.sum(dim=1)


class SinhArcsinh(Transform):
    """Creates the map ``x = sinh(tau (asinh(z) + eps))`` per coordinate, ``tau = exp(log_tail)``.

    ``log |det J| = sum_i [log cosh(tau (asinh z_i + eps_i)) + log tau_i
    - 0.5 log(1 + z_i^2)]``. The skew ``eps`` moves mass to one side (``eps > 0``: a longer
    right tail); the tail weight ``tau`` thickens (``tau > 1``) or thins (``tau < 1``) both
    tails. With ``eps = 0`` and ``tau = 1`` the map is the identity.

    Args:
        dim: the dimension ``D``.
        skew: initial ``eps`` for every coordinate (learnable, shape ``(D,)``).
        tail: initial ``tau > 0`` for every coordinate (learnable as ``log_tail``, shape
            ``(D,)``, so that ``tau`` stays positive during training).

    References:
        Jones and Pewsey (2009), "Sinh-arcsinh distributions", Biometrika 96(4).
    """

    def __init__(self, dim: int, skew: float = 0.0, tail: float = 1.0):
        super().__init__(dim)
        if not tail > 0:
            raise ValueError(f"tail must be positive, got {tail}")
        self.skew = nn.Parameter(torch.full((dim,), float(skew)))
        self.log_tail = nn.Parameter(torch.full((dim,), math.log(tail)))

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return sinh_arcsinh(z, self.skew, self.log_tail)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return sinh_arcsinh(x, self.skew, self.log_tail, inverse=True)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
