"""Affine flows (chapter 2, ``chapters/02_affine_flows.md``).

``ElementwiseAffine``: ``x = exp(s) * z + b`` per coordinate, ``log |det J| = sum_i s_i``.
The scale is ``exp(s)``, positive for any real ``s``: the log-det needs no log of a
possibly negative number and the map is invertible for every parameter value.

``TriangularAffine``: ``x = T z + b`` with ``T`` lower (or upper) triangular and diagonal
``exp(s)``. The determinant of a triangular matrix is the product of its diagonal, so
``log |det J| = sum_i s_i`` costs ``O(D)``; the inverse is one triangular solve, ``O(D^2)``.

``LUAffine``: a full affine map ``x = P L U z + b`` in the LU parameterisation of Glow
(Kingma and Dhariwal 2018): ``P`` a fixed permutation, ``L`` unit lower triangular, ``U``
upper triangular with diagonal ``exp(s)`` (Glow fixes the signs of that diagonal at
initialisation; here they are all positive). Again ``log |det J| = sum_i s_i``, against
``O(D^3)`` for the determinant of a general ``D x D`` matrix.

A composition of affine maps is affine: none of these layers can turn a Gaussian into
anything but another Gaussian.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..core import Transform

__all__ = [
    "ElementwiseAffine",
    "elementwise_affine",
    "TriangularAffine",
    "triangular_affine",
    "LUAffine",
    "lu_affine",
    "triangular_from_entries",
]


def elementwise_affine(
    z: Tensor, log_scale: Tensor, shift: Tensor, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """``x = exp(s) z + b`` and ``sum(s)``, or the inverse ``z = (x - b) exp(-s)`` and
    ``-sum(s)``; the log-det is broadcast to the batch, shape ``(B,)``."""
    log_abs_det = (
        log_scale.sum(dim=-1).expand(z.shape[0]) if log_scale.dim() == 1 else log_scale.sum(dim=-1)
    )
    if not inverse:
        return torch.exp(log_scale) * z + shift, log_abs_det
    return (z - shift) * torch.exp(-log_scale), -log_abs_det


class ElementwiseAffine(Transform):
    """Creates the map ``x = exp(s) * z + b`` with learnable ``s, b`` of shape ``(D,)``.

    Args:
        dim: the dimension ``D``.
        scale: initial scale ``exp(s)`` (positive).
        shift: initial shift ``b``.
    """

    def __init__(self, dim: int, scale: float = 1.0, shift: float = 0.0):
        super().__init__(dim)
        if scale <= 0:
            raise ValueError(
                f"scale must be positive, got {scale}; a negative scale is a "
                "reflection, which the log-scale parameterisation excludes"
            )
        self.log_scale = nn.Parameter(torch.full((dim,), math.log(scale)))
        self.shift = nn.Parameter(torch.full((dim,), float(shift)))

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return elementwise_affine(z, self.log_scale, self.shift)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return elementwise_affine(x, self.log_scale, self.shift, inverse=True)


def triangular_from_entries(off_diagonal: Tensor, diagonal: Tensor, upper: bool = False) -> Tensor:
    """The ``D x D`` triangular matrix with the given diagonal ``(D,)`` and the
    ``D (D - 1) / 2`` entries strictly below (or, when ``upper``, above) it, filled row by
    row; every other entry is zero."""
    d = diagonal.shape[-1]
    if off_diagonal.shape[-1] != d * (d - 1) // 2:
        raise ValueError(
            f"a {d} x {d} triangular matrix has {d * (d - 1) // 2} off-diagonal "
            f"entries, got {off_diagonal.shape[-1]}"
        )
    rows, cols = (
        torch.triu_indices(d, d, offset=1, device=diagonal.device)
        if upper
        else torch.tril_indices(d, d, offset=-1, device=diagonal.device)
    )
    matrix = torch.diag_embed(diagonal)
    return matrix.index_put((rows, cols), off_diagonal)


def _log_abs_diagonal(matrix: Tensor, batch: int) -> Tensor:
    return torch.log(torch.diagonal(matrix).abs()).sum().expand(batch)


def triangular_affine(
    z: Tensor, matrix: Tensor, shift: Tensor, upper: bool = False, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """``x = T z + b`` and ``log |det T| = sum_i log |T_ii|`` for a triangular ``T``
    (``(D, D)``, lower unless ``upper``), or the inverse ``z = T^{-1} (x - b)`` by a
    triangular solve and ``-log |det T|``. Points are rows: ``z`` has shape ``(B, D)``,
    the log-det shape ``(B,)``."""
    log_abs_det = _log_abs_diagonal(matrix, z.shape[0])
    if not inverse:
        return z @ matrix.T + shift, log_abs_det
    x = z
    z = torch.linalg.solve_triangular(matrix, (x - shift).T, upper=upper).T
    return z, -log_abs_det


def lu_affine(
    z: Tensor,
    lower: Tensor,
    upper: Tensor,
    shift: Tensor,
    permutation: Tensor | None = None,
    inverse: bool = False,
) -> tuple[Tensor, Tensor]:
    """``x = P L U z + b`` and ``log |det(P L U)| = sum_i log |U_ii|``, or the inverse
    ``z = U^{-1} L^{-1} P^T (x - b)`` (two triangular solves) and minus the log-det.

    Args:
        z: points ``(B, D)`` (``x`` when ``inverse``).
        lower: ``L``, ``(D, D)`` lower triangular with unit diagonal.
        upper: ``U``, ``(D, D)`` upper triangular with non-zero diagonal.
        shift: ``b``, ``(D,)``.
        permutation: ``P`` as indices, ``(P v)_i = v_{perm_i}``; ``None`` for ``P = I``.
    """
    log_abs_det = _log_abs_diagonal(upper, z.shape[0])
    if not inverse:
        x = z @ upper.T @ lower.T
        if permutation is not None:
            x = x[:, permutation]
        return x + shift, log_abs_det
    h = z - shift
    if permutation is not None:
        h = h[:, torch.argsort(permutation)]
    h = torch.linalg.solve_triangular(lower, h.T, upper=False, unitriangular=True)
    z = torch.linalg.solve_triangular(upper, h, upper=True).T
    return z, -log_abs_det


class TriangularAffine(Transform):
    """Creates the map ``x = T z + b`` with ``T`` triangular and diagonal ``exp(s)``:
    ``log |det J| = sum_i s_i``.

    Starts at the identity (``T = I``, ``b = 0``).

    Args:
        dim: the dimension ``D``.
        upper: ``T`` upper instead of lower triangular.

    Parameters: ``off_diagonal`` ``(D (D - 1) / 2,)``, ``log_diag`` ``s`` ``(D,)`` and
    ``shift`` ``b`` ``(D,)``.
    """

    def __init__(self, dim: int, upper: bool = False):
        super().__init__(dim)
        self.upper = bool(upper)
        self.off_diagonal = nn.Parameter(torch.zeros(dim * (dim - 1) // 2))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def matrix(self) -> Tensor:
        """The triangular matrix ``T``, shape ``(D, D)``."""
        return triangular_from_entries(self.off_diagonal, torch.exp(self.log_diag), self.upper)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return triangular_affine(z, self.matrix(), self.shift, self.upper)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return triangular_affine(x, self.matrix(), self.shift, self.upper, inverse=True)


class LUAffine(Transform):
    """Creates the full affine map ``x = W z + b`` with ``W = P L U``: ``P`` a fixed
    permutation, ``L`` unit lower triangular, ``U`` upper triangular with diagonal
    ``exp(s)``. ``log |det J| = sum_i s_i``, in ``O(D)``; the inverse takes two
    triangular solves.

    Starts at the identity (``L = U = I``, ``b = 0``). ``det W`` has the sign of ``P``
    whatever the parameters, so ``W`` stays invertible while training.

    Args:
        dim: the dimension ``D``.
        permutation: the indices of ``P`` (``(P v)_i = v_{perm_i}``), a permutation of
            ``0, ..., D - 1``; ``None`` for ``P = I``.

    Parameters: ``lower_entries`` and ``upper_entries`` ``(D (D - 1) / 2,)`` (the entries
    strictly below the diagonal of ``L`` and above that of ``U``), ``log_diag`` ``s``
    ``(D,)``, ``shift`` ``b`` ``(D,)``.

    References:
        Kingma and Dhariwal, "Glow: generative flow with invertible 1x1 convolutions",
        NeurIPS 2018, section 3.2.
    """

    def __init__(self, dim: int, permutation: Sequence[int] | Tensor | None = None):
        super().__init__(dim)
        n_off = dim * (dim - 1) // 2
        self.lower_entries = nn.Parameter(torch.zeros(n_off))
        self.upper_entries = nn.Parameter(torch.zeros(n_off))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.shift = nn.Parameter(torch.zeros(dim))
        if permutation is not None:
            permutation = torch.as_tensor(permutation)
            if (
                permutation.is_floating_point()
                or permutation.shape != (dim,)
                or not torch.equal(torch.sort(permutation).values, torch.arange(dim))
            ):
                raise ValueError(
                    f"permutation must hold each of 0, ..., {dim - 1} once, got "
                    f"{permutation.tolist()}"
                )
            permutation = permutation.long()
        self.register_buffer("permutation", permutation)

    def factors(self) -> tuple[Tensor, Tensor]:
        """``(L, U)``, each of shape ``(D, D)``."""
        ones = torch.ones_like(self.log_diag)
        lower = triangular_from_entries(self.lower_entries, ones)
        upper = triangular_from_entries(self.upper_entries, torch.exp(self.log_diag), upper=True)
        return lower, upper

    def weight(self) -> Tensor:
        """The assembled matrix ``W = P L U``, shape ``(D, D)``."""
        lower, upper = self.factors()
        w = lower @ upper
        return w if self.permutation is None else w[self.permutation]

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return lu_affine(z, *self.factors(), self.shift, self.permutation)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return lu_affine(x, *self.factors(), self.shift, self.permutation, inverse=True)
