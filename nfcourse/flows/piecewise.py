"""Piecewise-linear flows on the unit interval (chapter 4).

``piecewise_linear`` is the monotone piecewise-linear map of ``[0, 1]`` onto itself with
``K`` bins of equal width ``1/K`` (Muller et al. 2019; Prince 2023, chapter 16). Bin ``k``
(``k = 0, ..., K-1``) covers ``[k/K, (k+1)/K)`` (the last bin also holds ``x = 1``) and
receives the mass ``q_k = softmax(logits)_k > 0``, with ``sum_k q_k = 1``. With the
cumulative masses ``c_k = q_0 + ... + q_{k-1}`` (``c_0 = 0``, ``c_K = 1``) and
``alpha = K x - k`` the position of ``x`` inside its bin,

    y = g(x) = c_k + alpha q_k = c_k + K q_k (x - k/K),        g'(x) = K q_k,

so the log-determinant is ``sum_i log(K q_{k_i})`` over the coordinates. A bin edge belongs
to the bin on its right, so there the log-det is that of the right-hand slope, in both
directions. The inverse finds the bin of ``y`` among the cumulative masses
(``torch.searchsorted``) and solves for ``alpha``: ``x = (k + (y - c_k) / q_k) / K``.

The map is the cumulative distribution function of the histogram density ``K q_k`` on
bin ``k``: used in the normalizing direction (data to base), it turns a piecewise-constant
density into the uniform one.

Domain rule: the map is defined on ``[0, 1]`` (both ends included). By default a
coordinate outside ``[0, 1]`` passes through unchanged (``y = x``, log-det ``0``): the tails
are the identity, which keeps the map a continuous, increasing bijection of the whole line
because ``g(0) = 0`` and ``g(1) = 1``. With ``strict=True`` a coordinate outside ``[0, 1]``
raises a ``ValueError`` instead.

Minimum bin mass: with ``min_mass = m > 0`` the masses are
``q_k = m + (1 - K m) softmax(logits)_k``, so that no bin is thinner than ``m`` however large
the logits grow (the spline libraries do the same). Every slope is then at least ``K m``, and
the inverse, which divides by ``q_k``, loses at most a factor ``1 / (K m)`` of precision; with
``m = 0`` (the default of ``piecewise_linear``) the masses are the softmax itself.

``PiecewiseLinear`` holds learnable logits of shape ``(D, K)`` and applies the map to each
of the ``D`` coordinates; its base distribution is ``nfcourse.distributions.Uniform01``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core import Transform
from ..validation import check_positive_int

__all__ = ["piecewise_linear", "PiecewiseLinear", "bin_masses"]


def _check_min_mass(min_mass: float, num_bins: int) -> float:
    min_mass = float(min_mass)
    if not 0 <= min_mass < 1 / num_bins:
        raise ValueError(
            f"min_mass must lie in [0, 1/K) = [0, {1 / num_bins:.4g}) for K = {num_bins} bins "
            f"(the K minimum masses must leave room to sum to one), got {min_mass}"
        )
    return min_mass


def bin_masses(logits: Tensor, min_mass: float = 0.0) -> tuple[Tensor, Tensor]:
    """The bin masses ``q = m + (1 - K m) softmax(logits)`` over the last axis (``K`` bins)
    and their logarithms; ``m = min_mass``, ``0 <= m < 1/K``."""
    if min_mass == 0:
        log_masses = torch.log_softmax(logits, dim=-1)
        return log_masses.exp(), log_masses
    num_bins = logits.shape[-1]
    masses = min_mass + (1.0 - num_bins * min_mass) * torch.softmax(logits, dim=-1)
    return masses, torch.log(masses)


def _check_arguments(inputs: Tensor, logits: Tensor, strict: bool, name: str) -> None:
    for what, t in ((name, inputs), ("logits", logits)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{what} must be a floating-point tensor, got {t.dtype}")
    if inputs.dim() < 1:
        raise ValueError(f"{name} must have shape (..., D), got a scalar")
    if logits.dim() < 2:
        raise ValueError(
            f"logits must have shape (..., D, K) (one row of K bin logits per coordinate), "
            f"got shape {tuple(logits.shape)}"
        )
    if logits.shape[-1] < 1:
        raise ValueError("logits must have at least one bin (K >= 1) in the last dimension")
    if inputs.dtype != logits.dtype:
        raise TypeError(
            f"{name} and logits must have the same dtype, got {inputs.dtype} and {logits.dtype}"
        )
    try:
        shape = torch.broadcast_shapes(inputs.shape, logits.shape[:-1])
    except RuntimeError:
        shape = None
    if shape != inputs.shape:
        raise ValueError(
            f"logits of shape {tuple(logits.shape)} do not fit {name} of shape "
            f"{tuple(inputs.shape)}: expected logits of shape (..., {inputs.shape[-1]}, K) "
            f"whose leading dimensions broadcast to {tuple(inputs.shape[:-1])}"
        )
    # A sum is finite only if every entry is: one cheap reduction in the common case.
    if not bool(torch.isfinite(inputs.sum())) and not bool(torch.isfinite(inputs).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    if not bool(torch.isfinite(logits.sum())) and not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contain non-finite values (NaN or inf)")
    if strict:
        _check_domain(inputs, name)


def _check_domain(inputs: Tensor, name: str) -> None:
    if not ((inputs >= 0) & (inputs <= 1)).all():
        raise ValueError(
            f"piecewise_linear is defined on [0, 1], but {name} range over "
            f"[{float(inputs.min()):.4g}, {float(inputs.max()):.4g}]; rescale the data into "
            "[0, 1] or use strict=False, where coordinates outside [0, 1] pass through "
            "unchanged (identity tails)"
        )


def piecewise_linear(
    inputs: Tensor,
    logits: Tensor,
    inverse: bool = False,
    *,
    strict: bool = False,
    min_mass: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Monotone piecewise-linear map of [0, 1] with K equal bins (Muller et al. 2019).

    Forward: ``y = g(x) = sum_{j<k} q_j + K q_k (x - k/K)`` for ``x`` in bin ``k``, with
    ``q = softmax(logits)`` over the ``K`` bins; its derivative is ``K q_k``. Inverse: the
    bin of ``y`` is located among the cumulative masses with ``torch.searchsorted``, then
    ``x = (k + (y - c_k) / q_k) / K``.

    Outside ``[0, 1]`` the tails are the identity (``y = x``, log-det ``0``); the map is
    continuous there because ``g(0) = 0`` and ``g(1) = 1``. With ``strict=True`` inputs
    outside ``[0, 1]`` raise a ``ValueError`` instead.

    Args:
        inputs: points of shape ``(..., D)``; ``x`` for the forward map, ``y`` for the inverse.
        logits: unnormalised log bin masses of shape ``(..., D, K)``; their leading
            dimensions broadcast against those of ``inputs`` (for example ``(D, K)`` for one
            set of masses shared by a batch, ``(B, D, K)`` for one per sample).
        inverse: apply the inverse map.
        strict: raise a ``ValueError`` for inputs outside ``[0, 1]``.
        min_mass: the smallest bin mass ``m``, ``0 <= m < 1/K``: the masses are
            ``q = m + (1 - K m) softmax(logits)``.

    Returns:
        ``(outputs, log_abs_det)``: outputs of shape ``(..., D)`` and the log-determinant
        summed over the last dimension, shape ``(...,)``. For the inverse the log-det is that
        of the inverse map, ``-sum log(K q_k)``.

    References:
        Muller et al. 2019, "Neural Importance Sampling"; Prince 2023, "Understanding Deep
        Learning", chapter 16.
    """
    name = "inputs (y)" if inverse else "inputs (x)"
    _check_arguments(inputs, logits, strict, name)
    min_mass = _check_min_mass(min_mass, logits.shape[-1])
    return _piecewise_linear(inputs, logits, inverse, min_mass)


def _piecewise_linear(
    inputs: Tensor, logits: Tensor, inverse: bool, min_mass: float
) -> tuple[Tensor, Tensor]:
    """``piecewise_linear`` without the argument checks (the layers check on entry)."""
    num_bins = logits.shape[-1]
    logits = logits.expand(*inputs.shape, num_bins)
    masses, log_masses = bin_masses(logits, min_mass)
    # Cumulative masses c_1, ..., c_K; the bin edges are c_0 = 0, c_1, ..., c_K = 1, with the
    # two ends set exactly so that g(0) = 0 and g(1) = 1 hold in floating point.
    cumulative = torch.cumsum(masses, dim=-1)
    inside = (inputs >= 0) & (inputs <= 1)
    clamped = inputs.clamp(0, 1)
    if not inverse:
        scaled = clamped * num_bins
        k = torch.floor(scaled).clamp(0, num_bins - 1).long().unsqueeze(-1)
        alpha = scaled - k.squeeze(-1).to(inputs.dtype)
    else:
        # k = number of inner edges c_1, ..., c_{K-1} at or below y, so c_k <= y < c_{k+1}.
        k = torch.searchsorted(cumulative, clamped.unsqueeze(-1), right=True)
        k = k.clamp_max(num_bins - 1)
    k_ = k.squeeze(-1)
    left = torch.where(
        k_ == 0, 0.0, torch.gather(cumulative, -1, (k - 1).clamp_min(0)).squeeze(-1)
    )
    right = torch.where(k_ == num_bins - 1, 1.0, torch.gather(cumulative, -1, k).squeeze(-1))
    mass = torch.gather(masses, -1, k).squeeze(-1)
    log_slope = math.log(num_bins) + torch.gather(log_masses, -1, k).squeeze(-1)
    if not inverse:
        raw = left + alpha * mass
        exact = torch.where(alpha == 1, right, torch.clamp(raw, left, right))
        log_abs_det = log_slope
    else:
        alpha = (clamped - left) / mass
        raw = (k.squeeze(-1).to(inputs.dtype) + alpha) / num_bins
        exact = torch.where(
            clamped == 1,
            torch.ones_like(raw),
            (k.squeeze(-1).to(inputs.dtype) + alpha.clamp(0, 1)) / num_bins,
        )
        log_abs_det = -log_slope
    # Rounding can push a value a hair past its bin's image; the value is clamped back
    # (which keeps the map monotone and g(1) = 1 exact) while the gradient stays that of
    # the linear formula, so autograd agrees with the log-det everywhere.
    outputs = raw + (exact - raw).detach()
    outputs = torch.where(inside, outputs, inputs)
    log_abs_det = torch.where(inside, log_abs_det, torch.zeros_like(log_abs_det))
    return outputs, log_abs_det.sum(dim=-1)


class PiecewiseLinear(Transform):
    """Creates the elementwise map ``x_i = c_k + K q_{ik} (z_i - k/K)`` for ``z_i`` in bin
    ``k``, with learnable bin masses ``q_i = softmax(logits_i)`` for each coordinate ``i``
    (``q_i = m + (1 - K m) softmax(logits_i)`` with a minimum mass ``m > 0``).

    ``log |det J| = sum_i log(K q_{i k_i})``. The map sends ``[0, 1]^D`` onto itself; outside
    ``[0, 1]`` each coordinate passes through unchanged (or, with ``strict=True``, raises a
    ``ValueError``). Its inverse (``.inv()``, the normalizing direction) is the
    cumulative-distribution view: it turns the histogram density ``K q_k`` into the uniform.

    Args:
        dim: the dimension ``D``.
        num_bins: the number of equal bins ``K``.
        init_scale: standard deviation of the initial logits; ``0`` (the default) starts at
            equal masses, the identity map.
        strict: raise for inputs outside ``[0, 1]`` instead of using identity tails.
        min_mass: the smallest bin mass ``m``, ``0 <= m < 1/K`` (default ``0``).
        generator: the random generator of the initial logits (default: torch's global one).

    References:
        Muller et al. 2019, "Neural Importance Sampling".
    """

    def __init__(
        self,
        dim: int,
        num_bins: int,
        init_scale: float = 0.0,
        strict: bool = False,
        min_mass: float = 0.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__(dim)
        num_bins = check_positive_int(num_bins, "num_bins")
        if init_scale < 0:
            raise ValueError(f"init_scale must be non-negative, got {init_scale}")
        self.num_bins = num_bins
        self.strict = strict
        self.min_mass = _check_min_mass(min_mass, num_bins)
        self.logits = nn.Parameter(init_scale * torch.randn(dim, num_bins, generator=generator))

    def bin_masses(self) -> Tensor:
        """The masses ``q`` of shape ``(D, K)``; each row sums to one."""
        return bin_masses(self.logits, self.min_mass)[0]

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if self.strict:  # a domain check, which only strict mode asks for
            _check_domain(z, "inputs (x)")
        return _piecewise_linear(z, self.logits, False, self.min_mass)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.strict:
            _check_domain(x, "inputs (y)")
        return _piecewise_linear(x, self.logits, True, self.min_mass)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_bins={self.num_bins}, strict={self.strict}, "
            f"min_mass={self.min_mass}"
        )
