"""Base distributions of flows, behind one interface.

A flow pushes a base distribution ``p_Z`` through its transform (chapter 1). Every base
distribution here is a ``BaseDistribution``: a module (so that ``flow.to(device)`` and
``flow.double()`` move it with the flow) with

* ``dim``, the dimension ``D``;
* ``log_prob(z)``, the log-density of points ``z`` of shape ``(B, D)``, shape ``(B,)``;
* ``sample(n, generator=None)``, ``n`` points of shape ``(n, D)``.

``log_prob`` and ``sample`` check their arguments; a ``Flow`` calls the unchecked
``_log_prob`` after checking its own input once.

The Gaussian log-densities are also pure functions on the last axis
(``standard_normal_log_prob``, ``diagonal_normal_log_prob``), so that any leading batch
shape ``(*, D)`` works; the VAE of chapter 6 uses them on ``(S, B, D)`` samples.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .validation import check_batch, check_positive_int, module_dtype

__all__ = [
    "BaseDistribution",
    "StandardNormal",
    "DiagonalNormal",
    "Uniform01",
    "standard_normal_log_prob",
    "diagonal_normal_log_prob",
]

_LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I) = -0.5 ||z||^2 - (D/2) log(2 pi)``, summed over the last axis:
    shape ``(*, D) -> (*,)``."""
    return -0.5 * (z**2).sum(dim=-1) - 0.5 * z.shape[-1] * _LOG_2PI


def diagonal_normal_log_prob(z: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """``log N(z; mu, diag sigma^2)`` with ``sigma = exp(log_scale)``, summed over the last
    axis: ``-0.5 ||(z - mu) / sigma||^2 - sum_i log sigma_i - (D/2) log(2 pi)``. The
    arguments broadcast against each other; the result has shape ``(*,)``."""
    u = (z - loc) * torch.exp(-log_scale)
    return (-0.5 * u**2 - log_scale).sum(dim=-1) - 0.5 * z.shape[-1] * _LOG_2PI


class BaseDistribution(nn.Module):
    """A base distribution ``p_Z`` on ``R^D`` (or a subset), the interface every flow uses.

    Subclasses implement ``_log_prob(z)`` (no checks) and ``_sample(n, generator)``, and
    hold at least one floating-point parameter or buffer, whose dtype and device their
    samples take.

    Args:
        dim: the dimension ``D``, a positive integer.
    """

    #: ``True`` for a base whose log-density is ``-inf`` outside a bounded support: there
    #: ``Flow.log_prob`` returns ``-inf`` instead of reporting an overflow.
    bounded_support = False

    def __init__(self, dim: int):
        super().__init__()
        self.dim = check_positive_int(dim, "dim")

    def log_prob(self, z: Tensor) -> Tensor:
        """``log p_Z(z)`` for ``z`` of shape ``(B, D)``; returns shape ``(B,)``."""
        return self._log_prob(
            check_batch(z, self.dim, "z", dtype=module_dtype(self), owner=type(self).__name__)
        )

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` points drawn from ``p_Z``, shape ``(n, D)``."""
        return self._sample(check_positive_int(n, "n"), generator)

    def _log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class StandardNormal(BaseDistribution):
    """The standard normal ``N(0, I_D)``, the default base distribution.

    It holds a buffer so that ``flow.to(device)`` and ``flow.double()`` move it with the
    flow; its samples take the buffer's dtype and device.
    """

    def __init__(self, dim: int):
        super().__init__(dim)
        self.register_buffer("_zero", torch.zeros(()))

    def _log_prob(self, z: Tensor) -> Tensor:
        return standard_normal_log_prob(z)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        return torch.randn(
            n, self.dim, device=self._zero.device, dtype=self._zero.dtype, generator=generator
        )


class DiagonalNormal(BaseDistribution):
    """A Gaussian ``N(mu, diag(sigma^2))`` with learnable ``mu`` (``loc``) and ``log sigma``
    (``log_scale``), both of shape ``(D,)``, starting at ``N(0, I)``."""

    def __init__(self, dim: int):
        super().__init__(dim)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def _log_prob(self, z: Tensor) -> Tensor:
        return diagonal_normal_log_prob(z, self.loc, self.log_scale)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        eps = torch.randn(
            n, self.dim, device=self.loc.device, dtype=self.loc.dtype, generator=generator
        )
        return self.loc + torch.exp(self.log_scale) * eps


class Uniform01(BaseDistribution):
    """The uniform distribution on the unit cube ``[0, 1]^D``: ``log p(z) = 0`` inside and
    ``-inf`` outside; the base of the flows on ``[0, 1]^D`` of chapter 4.

    Args:
        dim: the dimension ``D``.
    """

    bounded_support = True

    def __init__(self, dim: int):
        super().__init__(dim)
        self.register_buffer("_zero", torch.zeros(()))

    def _log_prob(self, z: Tensor) -> Tensor:
        inside = ((z >= 0) & (z <= 1)).all(dim=1)
        return torch.where(inside, torch.zeros_like(z[:, 0]), torch.full_like(z[:, 0], -math.inf))

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        return torch.rand(
            n, self.dim, device=self._zero.device, dtype=self._zero.dtype, generator=generator
        )
