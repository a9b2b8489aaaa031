"""Permutations of the coordinates (chapter 5): between coupling layers they change which
coordinates condition and which are transformed. A permutation matrix has ``|det P| = 1``,
so the log-determinant is zero in both directions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import Transform
from ..validation import check_positive_int

__all__ = ["Permutation", "ReversePermutation"]


class Permutation(Transform):
    """Reorders the coordinates: ``x_i = z_{pi(i)}``. A permutation matrix has
    ``|det P| = 1``, so ``log |det J| = 0``; the inverse applies ``pi^{-1}``.

    Args:
        permutation: ``(D,)`` integers, a rearrangement of ``0, ..., D - 1``.
    """

    def __init__(self, permutation: Tensor | list[int]):
        perm = torch.as_tensor(permutation)
        if perm.dim() != 1 or perm.dtype in (torch.bool,) or perm.is_floating_point():
            raise ValueError(f"permutation must be a 1D integer tensor, got {perm!r}")
        perm = perm.to(torch.long)
        if not torch.equal(perm.sort().values, torch.arange(len(perm))):
            raise ValueError(
                f"permutation must contain each of 0, ..., {len(perm) - 1} exactly once, "
                f"got {perm.tolist()}"
            )
        super().__init__(len(perm))
        self.register_buffer("permutation", perm)
        self.register_buffer("inverse_permutation", torch.argsort(perm))

    @classmethod
    def random(cls, dim: int, seed: int | None = 0) -> Permutation:
        """A uniformly random permutation of ``dim`` coordinates; an integer ``seed`` makes
        it repeat, ``None`` draws it from torch's global random state."""
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return cls(torch.randperm(dim, generator=generator))

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z.index_select(1, self.permutation), z.new_zeros(z.shape[0])

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.index_select(1, self.inverse_permutation), x.new_zeros(x.shape[0])


class ReversePermutation(Permutation):
    """Reverses the order of the coordinates, ``x_i = z_{D-1-i}``; ``log |det J| = 0``.
    In two dimensions it swaps ``z_1`` and ``z_2``."""

    def __init__(self, dim: int):
        dim = check_positive_int(dim, "dim")
        super().__init__(torch.arange(dim - 1, -1, -1))
