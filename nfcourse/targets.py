"""Target densities given by an energy, ``p(z) = exp(-U(z)) / Z`` on the plane (chapter 3).

The four energy functions of Rezende and Mohamed (2015, Table 1), with
``w1(z) = sin(2 pi z1 / 4)``, ``w2(z) = 3 exp(-((z1 - 1) / 0.6)^2 / 2)`` and
``w3(z) = 3 sigmoid((z1 - 1) / 0.3)``:

* ``U1 = ((||z|| - 2) / 0.4)^2 / 2``
  ``- ln(exp(-((z1 - 2) / 0.6)^2 / 2) + exp(-((z1 + 2) / 0.6)^2 / 2))``
* ``U2 = ((z2 - w1) / 0.4)^2 / 2``
* ``U3 = -ln(exp(-((z2 - w1) / 0.35)^2 / 2) + exp(-((z2 - w1 + w2) / 0.35)^2 / 2))``
* ``U4 = -ln(exp(-((z2 - w1) / 0.4)^2 / 2) + exp(-((z2 - w1 + w3) / 0.35)^2 / 2))``

``exp(-U1)`` has a finite integral; ``exp(-U2)``, ``exp(-U3)`` and ``exp(-U4)`` do not decay
along ``z1``, so they are not densities on the plane. ``ENERGIES`` makes them proper by
adding the envelope ``z1^2 / (2 s^2)`` with ``s = ENVELOPE_SCALE = 2``. With a finite
normaliser ``Z``, computed by ``log_partition`` (midpoint quadrature on a box that holds all
but a negligible mass, see ``mass_outside_box``), the reverse KL of a flow is exact:
``KL(q || p) = E_q[log q + U] + log Z`` (``exact_reverse_kl``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .core import check_batch
from .validation import check_positive_int

__all__ = [
    "energy_u1",
    "energy_u2",
    "energy_u3",
    "energy_u4",
    "with_envelope",
    "ENVELOPE_SCALE",
    "ENERGIES",
    "QUADRATURE_BOX",
    "log_partition",
    "mass_outside_box",
    "exact_reverse_kl",
]

Energy = Callable[[Tensor], Tensor]
Box = Sequence[Sequence[float]]

ENVELOPE_SCALE = 2.0
QUADRATURE_BOX = ((-12.0, 12.0), (-12.0, 12.0))


def _w1(z: Tensor) -> Tensor:
    return torch.sin(2 * math.pi * z[:, 0] / 4)


def _w2(z: Tensor) -> Tensor:
    return 3 * torch.exp(-0.5 * ((z[:, 0] - 1) / 0.6) ** 2)


def _w3(z: Tensor) -> Tensor:
    return 3 * torch.sigmoid((z[:, 0] - 1) / 0.3)


def _neg_log_sum_exp(a: Tensor, b: Tensor) -> Tensor:
    """``-ln(exp(a) + exp(b))``, computed without overflow or underflow."""
    return -torch.logaddexp(a, b)


def energy_u1(z: Tensor) -> Tensor:
    """``U1``: a ring of radius 2 with two bumps at ``z1 = +-2``. Shape ``(B, 2) -> (B,)``."""
    check_batch(z, 2, "z")
    r = torch.linalg.vector_norm(z, dim=1)
    z1 = z[:, 0]
    return 0.5 * ((r - 2) / 0.4) ** 2 + _neg_log_sum_exp(
        -0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2
    )


def energy_u2(z: Tensor) -> Tensor:
    """``U2``: a sine-shaped ridge ``z2 = w1(z1)`` (improper on the plane)."""
    check_batch(z, 2, "z")
    return 0.5 * ((z[:, 1] - _w1(z)) / 0.4) ** 2


def energy_u3(z: Tensor) -> Tensor:
    """``U3``: the ridge of ``U2`` and a copy pulled down by a bump ``w2`` (improper)."""
    check_batch(z, 2, "z")
    d = z[:, 1] - _w1(z)
    return _neg_log_sum_exp(-0.5 * (d / 0.35) ** 2, -0.5 * ((d + _w2(z)) / 0.35) ** 2)


def energy_u4(z: Tensor) -> Tensor:
    """``U4``: the ridge of ``U2`` and a copy shifted by a step ``w3`` (improper)."""
    check_batch(z, 2, "z")
    d = z[:, 1] - _w1(z)
    return _neg_log_sum_exp(-0.5 * (d / 0.4) ** 2, -0.5 * ((d + _w3(z)) / 0.35) ** 2)


def with_envelope(energy: Energy, scale: float = ENVELOPE_SCALE) -> Energy:
    """``U(z) + z1^2 / (2 s^2)``: multiplies ``exp(-U)`` by a Gaussian factor in ``z1``
    of standard deviation ``s``, which makes the ridges of ``U2``-``U4`` integrable."""
    if scale <= 0:
        raise ValueError(f"the envelope scale must be positive, got {scale}")

    def enveloped(z: Tensor) -> Tensor:
        return energy(z) + 0.5 * (z[:, 0] / scale) ** 2

    enveloped.__name__ = f"{energy.__name__}_with_envelope"
    enveloped.__doc__ = f"{energy.__name__}(z) + z1^2 / (2 * {scale:g}^2)."
    return enveloped


ENERGIES: dict[str, Energy] = {
    "U1": energy_u1,
    "U2": with_envelope(energy_u2),
    "U3": with_envelope(energy_u3),
    "U4": with_envelope(energy_u4),
}


def _midpoints(lo: float, hi: float, n: int) -> Tensor:
    h = (hi - lo) / n
    return lo + h * (torch.arange(n, dtype=torch.float64) + 0.5)


def _log_sum_exp_on_grid(
    energy: Energy,
    g1: Tensor,
    g2: Tensor,
    keep: Callable[[Tensor], Tensor] | None = None,
    rows: int = 64,
) -> tuple[Tensor, Tensor]:
    """``log sum exp(-U)`` over the grid ``g1 x g2``, a block of rows of ``z2`` at a time:
    over all points, and over the points that ``keep(z)`` selects (all when ``None``)."""
    every, kept = [], []
    for block in g2.split(rows):
        z1, z2 = torch.meshgrid(g1, block, indexing="xy")
        z = torch.stack([z1.flatten(), z2.flatten()], dim=1)
        neg_u = -energy(z)
        every.append(torch.logsumexp(neg_u, dim=0))
        if keep is not None:
            neg_u = torch.where(keep(z), neg_u, torch.full_like(neg_u, -math.inf))
            kept.append(torch.logsumexp(neg_u, dim=0))
    total = torch.logsumexp(torch.stack(every), dim=0)
    return total, (torch.logsumexp(torch.stack(kept), dim=0) if kept else total)


@torch.no_grad()
def log_partition(energy: Energy, box: Box = QUADRATURE_BOX, resolution: int = 600) -> float:
    """``log Z = log of the integral of exp(-U)`` over ``box``, by the midpoint rule on a
    ``resolution x resolution`` grid of cells, in float64.

    For a smooth integrand that vanishes at the edges of the box the midpoint rule converges
    faster than any power of the cell size; check the mass outside the box with
    ``mass_outside_box``.
    """
    if check_positive_int(resolution, "resolution") < 2:
        raise ValueError(f"resolution must be at least 2, got {resolution}")
    (a, b), (c, d) = box
    if not (b > a and d > c):
        raise ValueError(f"box must be ((lo1, hi1), (lo2, hi2)) with lo < hi, got {box}")
    g1, g2 = _midpoints(a, b, resolution), _midpoints(c, d, resolution)
    cell = (b - a) * (d - c) / resolution**2
    return float(_log_sum_exp_on_grid(energy, g1, g2)[0]) + math.log(cell)


@torch.no_grad()
def mass_outside_box(
    energy: Energy, box: Box = QUADRATURE_BOX, factor: int = 2, resolution: int = 600
) -> float:
    """The fraction of the mass of ``exp(-U)`` on a box ``factor`` times larger (same
    centre, same cell size as ``log_partition(energy, box, resolution)``) that lies outside
    ``box``: the relative error of ``Z`` that the box leaves out, as far as the larger box
    can tell."""
    if check_positive_int(factor, "factor") < 2:
        raise ValueError(f"factor must be an integer of at least 2, got {factor}")
    check_positive_int(resolution, "resolution")
    (a, b), (c, d) = box
    ca, cc = (a + b) / 2, (c + d) / 2
    ha, hc = factor * (b - a) / 2, factor * (d - c) / 2
    g1 = _midpoints(ca - ha, ca + ha, factor * resolution)
    g2 = _midpoints(cc - hc, cc + hc, factor * resolution)

    def outside(z: Tensor) -> Tensor:
        return (z[:, 0] < a) | (z[:, 0] > b) | (z[:, 1] < c) | (z[:, 1] > d)

    log_all, log_out = _log_sum_exp_on_grid(energy, g1, g2, keep=outside)
    return float(torch.exp(log_out - log_all))


@torch.no_grad()
def exact_reverse_kl(
    flow, energy: Energy, log_z: float, n: int = 20_000, seed: int = 0
) -> tuple[float, float]:
    """``KL(q || p) = E_q[log q(x) + U(x)] + log Z`` by Monte Carlo with ``n`` samples of
    the flow ``q``; returns ``(estimate, standard error)``.

    Args:
        flow: an ``nfcourse.Flow`` (anything with ``sample_and_log_prob(n, generator)``).
        energy: ``U``, with ``p = exp(-U) / Z``.
        log_z: ``log Z`` (for example from ``log_partition``).
    """
    tensors = [*flow.parameters(), *flow.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    generator = torch.Generator(device=device).manual_seed(seed)
    x, log_q = flow.sample_and_log_prob(n, generator=generator)
    terms = (log_q + energy(x)).double() + log_z
    return float(terms.mean()), float(terms.std() / math.sqrt(n))
