"""Images as data for a density model: dequantization and bits per dimension (chapter 5).

Pixels are integers ``0, ..., L - 1`` (``L = 17`` levels for scikit-learn's 8 x 8 digits,
256 for 8-bit images). A continuous density ``q`` on ``[0, 1)^D`` is fitted to the
dequantized points ``y = (x + u) / L``, ``u ~ U[0, 1)^D``. The discrete model
``P(x) = integral of q over the cube of side 1/L at x / L`` then satisfies, by Jensen's
inequality,

    -log P(x) <= E_u[-log q((x + u) / L)] + D log L,

so the continuous negative log-likelihood plus ``D log L`` bounds the discrete one
(Theis et al. 2016). In bits per dimension: ``(NLL_nats + D ln L) / (D ln 2)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["dequantize", "bits_per_dim"]


def dequantize(x: Tensor, levels: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantization ``y = (x + u) / L``, ``u ~ U[0, 1)``, of integer-valued pixels
    ``x`` in ``{0, ..., L - 1}`` (stored in a floating-point tensor). Returns points in
    ``[0, 1)`` of the same shape and dtype."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor holding integer pixel values")
    if not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    if bool((x != x.round()).any()) or bool((x < 0).any()) or bool((x > levels - 1).any()):
        raise ValueError(
            f"x must hold integers 0..{levels - 1}; got values in "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}] (already dequantized or rescaled?)"
        )
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + u) / levels


def bits_per_dim(nll_nats: Tensor | float, dim: int, levels: int) -> Tensor | float:
    """Bits per dimension of the discrete data from the negative log-likelihood (in nats,
    per image) of the dequantized data ``y = (x + u) / L``: ``(NLL + D ln L) / (D ln 2)``.

    The uniform model on ``[0, 1)^D`` has ``NLL = 0``, hence ``log2 L`` bits per dimension.
    """
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    return (nll_nats + dim * math.log(levels)) / (dim * math.log(2))
