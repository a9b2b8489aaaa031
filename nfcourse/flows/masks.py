"""Masks of coupling layers (chapter 5): ``(D,)`` booleans, ``True`` where a coupling layer
transforms a coordinate and ``False`` where it conditions on it.

* ``half_mask``: the second half ``[D//2, D)`` (or the first, ``flip``);
* ``alternating_mask``: every other coordinate;
* ``checkerboard_mask``: the spatial checkerboard of RealNVP on a flattened image.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["half_mask", "alternating_mask", "checkerboard_mask", "check_mask"]


def half_mask(dim: int, flip: bool = False) -> Tensor:
    """``(D,)`` boolean mask that transforms the second half ``[D//2, D)`` (the first half
    when ``flip``) and conditions on the rest."""
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"a coupling needs dim >= 2 to split, got {dim!r}")
    mask = torch.arange(dim) >= dim // 2
    return ~mask if flip else mask


def alternating_mask(dim: int, parity: int = 1) -> Tensor:
    """``(D,)`` boolean mask that transforms the coordinates with index ``i % 2 == parity``."""
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"a coupling needs dim >= 2 to split, got {dim!r}")
    if parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    return torch.arange(dim) % 2 == parity


def checkerboard_mask(height: int, width: int, parity: int = 1) -> Tensor:
    """``(H * W,)`` boolean mask of an image flattened row by row: transforms the pixels
    ``(r, c)`` with ``(r + c) % 2 == parity``, the spatial checkerboard of RealNVP."""
    if height < 1 or width < 1 or height * width < 2:
        raise ValueError(f"an image mask needs at least two pixels, got {height} x {width}")
    if parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    r = torch.arange(height).unsqueeze(1)
    c = torch.arange(width).unsqueeze(0)
    return ((r + c) % 2 == parity).flatten()


def check_mask(mask: Tensor | list[bool]) -> Tensor:
    """``mask`` as a ``(D,)`` boolean tensor that transforms some coordinates and conditions
    on the others; raises ``ValueError`` otherwise."""
    mask = torch.as_tensor(mask)
    if mask.dim() != 1:
        raise ValueError(f"mask must be a 1D tensor of shape (D,), got shape {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must hold booleans or 0/1 values (1 = transformed)")
        mask = mask.to(torch.bool)
    n_transformed = int(mask.sum())
    if n_transformed == 0 or n_transformed == len(mask):
        raise ValueError(
            f"mask must transform some coordinates and condition on the others; it marks "
            f"{n_transformed} of {len(mask)} as transformed"
        )
    return mask
