"""Transforms, their composition, base distributions and the flow model.

This module fixes the one convention used across the course (chapter 1):

* ``forward(z) -> (x, log_abs_det)`` maps a base sample ``z`` to a data point ``x = f(z)``
  and returns ``log |det df/dz|``;
* ``inverse(x) -> (z, log_abs_det)`` normalizes, ``z = f^{-1}(x)``, and returns
  ``log |det df^{-1}/dx| = -log |det df/dz|``.

Tensors are batch first, ``(B, D)``; a log-det is ``(B,)``. A flow model puts a base
distribution ``p_Z`` in front of a transform, and evaluates

    log p_X(x) = log p_Z(f^{-1}(x)) + log |det d f^{-1} / dx|.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from .distributions import BaseDistribution, DiagonalNormal, StandardNormal
from .validation import check_batch, module_dtype

__all__ = [
    "Transform",
    "Compose",
    "InverseTransform",
    "StandardNormal",
    "DiagonalNormal",
    "Flow",
    "check_batch",

    "default_device",
    "to_torch_transform",
]


def default_device() -> torch.device:
    """The device the course trains on: CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Transform(nn.Module):
    """An invertible map ``x = f(z)`` of ``R^D`` with a tractable log-determinant.

    Subclasses implement ``_forward`` and ``_inverse``; the public ``forward`` and
    ``inverse`` check their input first (shape ``(B, dim)``, floating point, finite).

    Args:
        dim: the dimension ``D``, or ``None`` for a transform that works in any dimension.
    """

    def __init__(self, dim: int | None = None):
        super().__init__()
        if dim is not None and (not isinstance(dim, int) or dim < 1):
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Map base to data: returns ``x = f(z)`` of shape ``(B, D)`` and
        ``log |det df/dz|`` of shape ``(B,)``."""
        return self._forward(self._check(z, "z"))

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map data to base: returns ``z = f^{-1}(x)`` and ``log |det df^{-1}/dx|``."""
        return self._inverse(self._check(x, "x"))

    def _check(self, x: Tensor, name: str) -> Tensor:
        return check_batch(x, self.dim, name, dtype=module_dtype(self), owner=type(self).__name__)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    def inv(self) -> InverseTransform:
        """The inverse map as a transform of its own (forward and inverse swapped)."""
        return InverseTransform(self)


class InverseTransform(Transform):
    """``f^{-1}`` as a transform: its forward is ``f.inverse`` and its inverse ``f.forward``."""

    def __init__(self, transform: Transform):
        super().__init__(transform.dim)
        self.transform = transform

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform._inverse(z)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform._forward(x)


class Compose(Transform):
    """The composition ``f = f_K o ... o f_1``: ``forward`` applies ``f_1`` first.

    The log-determinants add (chapter 1):
    ``log |det df/dz| = sum_k log |det df_k/dz_{k-1}|``. ``inverse`` runs the layers in
    reverse order and adds their inverse log-determinants.

    Args:
        transforms: the layers ``f_1, ..., f_K``, all of the same dimension.
    """

    def __init__(self, *transforms: Transform | Iterable[Transform]):
        if len(transforms) == 1 and not isinstance(transforms[0], Transform):
            transforms = tuple(transforms[0])
        for t in transforms:
            if not isinstance(t, Transform):
                raise TypeError(
                    f"Compose takes nfcourse Transforms, got {type(t).__name__}; "
                    "an nn.Module whose forward returns a single tensor has no log-det"
                )
        dims = {t.dim for t in transforms if t.dim is not None}
        if len(dims) > 1:
            raise ValueError(f"all transforms must share one dimension, got dims {sorted(dims)}")
        super().__init__(dims.pop() if dims else None)
        self.transforms = nn.ModuleList(transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, k: int) -> Transform:
        return self.transforms[k]

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        total = z.new_zeros(z.shape[0])
        for t in self.transforms:
            z, log_abs_det = t._forward(z)
            total = total + log_abs_det
        return z, total

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for t in reversed(self.transforms):
            x, log_abs_det = t._inverse(x)
            total = total + log_abs_det
        return x, total

    def trajectory(self, z: Tensor) -> list[Tensor]:
        """The points after each layer: ``[z, f_1(z), f_2(f_1(z)), ..., f(z)]``."""
        points = [self._check(z, "z")]
        for t in self.transforms:
            points.append(t._forward(points[-1])[0])
        return points


class Flow(nn.Module):
    """A normalizing flow: a base distribution ``p_Z`` pushed through ``x = f(z)``.

    ``log p_X(x) = log p_Z(f^{-1}(x)) + log |det df^{-1}/dx|`` (chapter 1).

    The public methods check their input once (shape, dtype, finiteness, counts) and then
    run the layers and the base without further checks.

    Args:
        transform: the map ``f`` from base to data (a ``Transform``, or a list of them,
            which is composed with ``f_1`` applied first).
        base: the base distribution, a ``BaseDistribution`` (``nfcourse.distributions``).
            Defaults to ``StandardNormal(transform.dim)``.
    """

    def __init__(self, transform: Transform | Iterable[Transform],
                 base: BaseDistribution | None = None):
        super().__init__()
        if not isinstance(transform, Transform):
            transform = Compose(*transform)
        if base is None:
            if transform.dim is None:
                raise ValueError("pass a base distribution for a transform without a fixed dim")
            base = StandardNormal(transform.dim)
        if not isinstance(base, BaseDistribution):
            raise TypeError(
                f"base must be an nfcourse BaseDistribution (StandardNormal, DiagonalNormal, "
                f"Uniform01 or a subclass), got {type(base).__name__}; subclass "
                "nfcourse.distributions.BaseDistribution and implement _log_prob and _sample"
            )
        if transform.dim is not None and transform.dim != base.dim:
            raise ValueError(
                f"the transform works in dimension {transform.dim} but the base in "
                f"dimension {base.dim}; build the base with dim={transform.dim}"
            )
        self.transform = transform
        self.base = base
        self.dim = base.dim

    def _check(self, x: Tensor, name: str = "x") -> Tensor:
        return check_batch(x, self.dim, name, dtype=module_dtype(self), owner="the flow")

    def _log_prob(self, x: Tensor) -> Tensor:
        z, log_abs_det = self.transform._inverse(x)
        return self.base._log_prob(z) + log_abs_det

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density of data points ``x`` of shape ``(B, D)``; returns ``(B,)``."""
        return self._log_prob(self._check(x))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples ``x = f(z)``, ``z ~ p_Z``, shape ``(n, D)``."""
        return self.transform._forward(self.base.sample(n, generator=generator))[0]

    def sample_and_log_prob(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Samples and their log-density in one pass, without inverting ``f``:
        ``log q(x) = log p_Z(z) - log |det df/dz|``."""
        z = self.base.sample(n, generator=generator)
        x, log_abs_det = self.transform._forward(z)
        return x, self.base._log_prob(z) - log_abs_det

    def forward_kl(self, x: Tensor) -> Tensor:
        """Maximum-likelihood loss: the mean negative log-likelihood of the data batch
        ``x`` (shape ``(B, D)``, ``B >= 1``).

        Equals ``KL(p_data || q)`` up to the data entropy, which does not depend on the flow.
        """
        return -self.log_prob(x).mean()

    def reverse_kl(
        self, log_target: Callable[[Tensor], Tensor], n: int,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Reverse-KL loss to an unnormalised log-density ``log p~``:
        ``E_q[log q(x) - log p~(x)] = KL(q || p) - log Z``, estimated with ``n >= 1``
        samples."""
        if not callable(log_target):
            raise TypeError(
                f"log_target must be a function from points (n, D) to log-densities (n,), "
                f"got {type(log_target).__name__}"
            )
        x, log_q = self.sample_and_log_prob(n, generator=generator)
        return (log_q - log_target(x)).mean()


class _TorchTransform(torch.distributions.Transform):
    """Adapter: an nfcourse ``Transform`` as a ``torch.distributions.Transform``."""

    bijective = True
    domain = torch.distributions.constraints.independent(torch.distributions.constraints.real, 1)
    codomain = torch.distributions.constraints.independent(
        torch.distributions.constraints.real, 1
    )

    def __init__(self, transform: Transform):
        super().__init__(cache_size=1)
        self.transform = transform

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _TorchTransform) and other.transform is self.transform

    def _call(self, z: Tensor) -> Tensor:
        return self.transform(z)[0]

    def _inverse(self, x: Tensor) -> Tensor:
        return self.transform.inverse(x)[0]

    def log_abs_det_jacobian(self, z: Tensor, x: Tensor) -> Tensor:
        return self.transform(z)[1]


def to_torch_transform(transform: Transform) -> torch.distributions.Transform:
    """Wrap a transform for ``torch.distributions.TransformedDistribution``.

    The base distribution must have event shape ``(D,)``, for example
    ``Independent(Normal(zeros(D), ones(D)), 1)``.
    """
    return _TorchTransform(transform)
