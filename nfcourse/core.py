"""Transforms, their composition, base distributions and the flow model.

This module fixes the one convention used across the course (chapter 1):

* ``forward(z) -> (x, log_abs_det)`` maps a base sample ``z`` to a data point ``x = f(z)``
  and returns ``log |det df/dz|``;
* ``inverse(x) -> (z, log_abs_det)`` normalizes, ``z = f^{-1}(x)``, and returns
  ``log |det df^{-1}/dx| = -log |det df/dz|``.

Tensors are batch first, ``(B, *event_shape)``: points ``(B, D)``, images
``(B, C, H, W)``; a log-det is ``(B,)``. A conditional transform takes a context
``(B, C)`` as a second argument, ``forward(z, context)``, and ``Compose`` and ``Flow`` pass
it through: one protocol for flat, image and conditional flows. A flow model puts a base
distribution ``p_Z`` in front of a transform, and evaluates

    log p_X(x) = log p_Z(f^{-1}(x)) + log |det d f^{-1} / dx|.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from .distributions import BaseDistribution, DiagonalNormal, StandardNormal
from .validation import (
    check_batch,
    check_context,
    check_events,
    check_positive_int,
    check_shape,
    module_dtype,
)

__all__ = [
    "Transform",
    "Compose",
    "InverseTransform",
    "StandardNormal",
    "DiagonalNormal",
    "Flow",
    "NonFiniteSamples",
    "NonFiniteLogProb",
    "check_batch",
    "default_device",
    "to_torch_transform",
]


def default_device() -> torch.device:
    """The device the course trains on: CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Transform(nn.Module):
    """An invertible map ``x = f(z; c)`` with a tractable log-determinant.

    One sample on the data side has shape ``event_shape`` (``(D,)`` for points,
    ``(C, H, W)`` for images) and on the base side ``latent_shape`` (the same unless the
    layer reshapes, as a squeeze does); both hold ``dim`` numbers. A transform built with
    ``context_dim = C > 0`` is conditional: its parameters depend on a context ``c`` of
    shape ``(B, C)`` that is never transformed (chapter 12), and for a fixed ``c`` it is an
    ordinary transform of ``z``.

    Subclasses implement ``_forward`` and ``_inverse``: ``_forward(z)`` for a transform
    without context, ``_forward(z, context)`` for a conditional one (``_map`` routes the
    context to the layers that use it). The public ``forward`` and ``inverse`` check their
    input once (shape, dtype, finiteness, the context) and run the layers without further
    checks.

    Args:
        dim: the dimension ``D`` of flat samples, or ``None`` for a transform that works
            in any dimension.
        event_shape: the data-side shape of one sample, instead of ``dim``.
        latent_shape: the base-side shape of one sample; ``event_shape`` by default.
        context_dim: the size ``C`` of the context, 0 for none.
    """

    def __init__(
        self,
        dim: int | None = None,
        *,
        event_shape: Sequence[int] | None = None,
        latent_shape: Sequence[int] | None = None,
        context_dim: int = 0,
    ) -> None:
        super().__init__()
        if event_shape is not None:
            event_shape = check_shape(event_shape, "event_shape")
            if dim is not None and dim != math.prod(event_shape):
                raise ValueError(
                    f"dim={dim!r} but event_shape {event_shape} holds "
                    f"{math.prod(event_shape)} numbers; pass one of them"
                )
        elif dim is not None:
            event_shape = (check_positive_int(dim, "dim"),)
        if latent_shape is None:
            latent_shape = event_shape
        else:
            latent_shape = check_shape(latent_shape, "latent_shape")
            if event_shape is None or math.prod(latent_shape) != math.prod(event_shape):
                raise ValueError(
                    f"latent_shape {latent_shape} must hold as many numbers as "
                    f"event_shape {event_shape}: an invertible map keeps the "
                    "dimension"
                )
        if context_dim != 0:
            context_dim = check_positive_int(context_dim, "context_dim")
        self.event_shape: tuple[int, ...] | None = event_shape
        self.latent_shape: tuple[int, ...] | None = latent_shape
        self.dim: int | None = None if event_shape is None else math.prod(event_shape)
        self.context_dim: int = context_dim

    # -- public entry points: inputs checked once --------------------------------------
    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map base to data: returns ``x = f(z; c)`` of shape ``(B, *event_shape)`` and
        ``log |det df/dz|`` of shape ``(B,)``."""
        z = self._check_latent(z, "z")
        return self._map(z, self._check_context(context, z.shape[0]))

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data to base: returns ``z = f^{-1}(x; c)`` of shape ``(B, *latent_shape)``
        and ``log |det df^{-1}/dx|``."""
        x = self._check_data(x, "x")
        return self._map(x, self._check_context(context, x.shape[0]), inverse=True)

    def _owner(self) -> str:
        return type(self).__name__

    def _check_latent(self, z: Tensor, name: str) -> Tensor:
        return check_events(z, self.latent_shape, name, module_dtype(self), self._owner())

    def _check_data(self, x: Tensor, name: str) -> Tensor:
        return check_events(x, self.event_shape, name, module_dtype(self), self._owner())

    def _check_context(self, context: object, rows: int | None) -> Tensor | None:
        return check_context(context, self.context_dim, rows, module_dtype(self), self._owner())

    # -- the maps, without checks ---------------------------------------------------
    def _map(
        self, y: Tensor, context: Tensor | None = None, inverse: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``_inverse`` if ``inverse`` else ``_forward``, with the context passed only to a
        transform that takes one: the one place where the context is routed."""
        method = self._inverse if inverse else self._forward
        return method(y, context) if self.context_dim else method(y)

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
        super().__init__(
            event_shape=transform.latent_shape,
            latent_shape=transform.event_shape,
            context_dim=transform.context_dim,
        )
        self.transform = transform

    def _forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform._map(z, context, inverse=True)

    def _inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform._map(x, context)


def _chain_shapes(
    transforms: Sequence[Transform],
) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """The base-side shape of the first layer and the data-side shape of the last, after
    checking that each layer's output is the next layer's input. A layer without a fixed
    shape keeps the shape it is given."""
    latent = current = None
    names = [type(t).__name__ for t in transforms]
    for k, t in enumerate(transforms):
        if t.latent_shape is None:
            continue
        if current is not None and t.latent_shape != current:
            if len(current) == len(t.latent_shape) == 1:
                dims = sorted({t.dim for t in transforms if t.dim is not None})
                raise ValueError(f"all transforms must share one dimension, got dims {dims}")
            raise ValueError(
                f"transform {k} ({names[k]}) takes samples of shape {t.latent_shape} but "
                f"the transform before it outputs {current}; each layer's data side must "
                "be the next layer's base side"
            )
        latent = latent or t.latent_shape
        current = t.event_shape
    return latent, current


class Compose(Transform):
    """The composition ``f = f_K o ... o f_1``: ``forward`` applies ``f_1`` first.

    The log-determinants add (chapter 1):
    ``log |det df/dz| = sum_k log |det df_k/dz_{k-1}|``. ``inverse`` runs the layers in
    reverse order and adds their inverse log-determinants. The data side of ``f_k`` must
    be the base side of ``f_{k+1}`` (the same dimension for flat layers; image shapes for
    image layers). A context is passed to every layer that takes one; they must all take
    contexts of one size.

    Args:
        transforms: the layers ``f_1, ..., f_K`` (none: the identity).
    """

    def __init__(self, *transforms: Transform | Iterable[Transform]):
        if len(transforms) == 1 and not isinstance(transforms[0], Transform):
            transforms = tuple(transforms[0])
        for k, t in enumerate(transforms):
            if not isinstance(t, Transform):
                raise TypeError(
                    f"Compose takes nfcourse Transforms, got {type(t).__name__} at position "
                    f"{k}; an nn.Module whose forward returns a single tensor has no log-det"
                )
        latent, event = _chain_shapes(transforms)
        contexts = sorted({t.context_dim for t in transforms if t.context_dim})
        if len(contexts) > 1:
            raise ValueError(
                f"the layers take contexts of sizes {contexts}; build every conditional "
                f"layer with one context_dim"
            )
        super().__init__(
            event_shape=event, latent_shape=latent, context_dim=contexts[0] if contexts else 0
        )
        self.transforms = nn.ModuleList(transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, k: int) -> Transform:
        return self.transforms[k]

    def _forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = z.new_zeros(z.shape[0])
        for t in self.transforms:
            z, log_abs_det = t._map(z, context)
            total = total + log_abs_det
        return z, total

    def _inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for t in reversed(self.transforms):
            x, log_abs_det = t._map(x, context, inverse=True)
            total = total + log_abs_det
        return x, total

    def trajectory(self, z: Tensor, context: Tensor | None = None) -> list[Tensor]:
        """The points after each layer: ``[z, f_1(z), f_2(f_1(z)), ..., f(z)]``."""
        points = [self._check_latent(z, "z")]
        c = self._check_context(context, z.shape[0])
        for t in self.transforms:
            points.append(t._map(points[-1], c)[0])
        return points


class NonFiniteSamples(FloatingPointError):
    """Raised when a flow's samples overflow to inf or NaN: the map ``f`` left the range of
    the dtype (for example parameters grown too large in float32)."""


def _finite_samples(x: Tensor) -> Tensor:
    """``x`` if every sample is finite; else ``NonFiniteSamples`` naming the rows and the fix.
    A sample is never legitimately inf or NaN, so none is returned silently."""
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).flatten(1).any(dim=1).nonzero().flatten()
        raise NonFiniteSamples(
            f"the flow's samples overflowed to inf or NaN in rows {bad[:5].tolist()}"
            + (" ..." if len(bad) > 5 else "")
            + f" of {len(x)}: the map f left the range of {x.dtype}. Its parameters are too "
            "large for this dtype (convert the flow with .double(), or train with a smaller "
            "learning rate or with clip_grad_norm)"
        )
    return x


class NonFiniteLogProb(FloatingPointError):
    """Raised when ``log_prob`` of finite data overflows to inf or NaN: the normalizing
    map, its log-determinant or the base density left the range of the dtype."""


def _finite_log_prob(
    log_prob: Tensor, z: Tensor, log_abs_det: Tensor, bounded_base: bool
) -> Tensor:
    """``log_prob`` if every entry is finite, or ``-inf`` from a base of bounded support
    at a finite latent point outside it; else ``NonFiniteLogProb`` naming the rows."""
    if bool(torch.isfinite(log_prob).all()):
        return log_prob
    finite_map = torch.isfinite(z.flatten(1)).all(dim=1) & torch.isfinite(log_abs_det)
    allowed = (
        torch.isneginf(log_prob) & finite_map if bounded_base else torch.zeros_like(finite_map)
    )
    bad = (~torch.isfinite(log_prob) & ~allowed).nonzero().flatten()
    if len(bad) == 0:
        return log_prob
    where = (
        "the latent point z = f^{-1}(x)"
        if not bool(finite_map[bad].all())
        else "the base log-density (|z| too large to square)"
    )
    raise NonFiniteLogProb(
        f"log_prob overflowed to inf or NaN in rows {bad[:5].tolist()}"
        + (" ..." if len(bad) > 5 else "")
        + f" of {len(log_prob)}: {where} left the range of {log_prob.dtype}. The flow's "
        "parameters are too large for this dtype, or the data far from its scale: convert "
        "the flow and the data with .double(), or standardise the data"
    )


class Flow(nn.Module):
    """A normalizing flow: a base distribution ``p_Z`` pushed through ``x = f(z; c)``.

    ``log p_X(x | c) = log p_Z(f^{-1}(x; c)) + log |det df^{-1}/dx|`` (chapter 1; the
    context ``c`` only for a conditional transform, chapter 12). Data have the
    transform's ``event_shape`` (points ``(B, D)`` or images ``(B, C, H, W)``); the base is
    a distribution on flat vectors ``(B, D)``, reshaped to the transform's
    ``latent_shape``.

    The public methods check their input once (shape, dtype, finiteness, context,
    counts) and then run the layers and the base without further checks.

    Args:
        transform: the map ``f`` from base to data (a ``Transform``, or a list of them,
            which is composed with ``f_1`` applied first).
        base: the base distribution, a ``BaseDistribution`` (``nfcourse.distributions``).
            Defaults to ``StandardNormal(transform.dim)``.
    """

    def __init__(
        self, transform: Transform | Iterable[Transform], base: BaseDistribution | None = None
    ):
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
        self.dim: int = base.dim
        self.event_shape: tuple[int, ...] = transform.event_shape or (base.dim,)
        self.latent_shape: tuple[int, ...] = transform.latent_shape or (base.dim,)
        self.context_dim: int = transform.context_dim

    # -- checks at the entry points ----------------------------------------------------
    def _check(self, x: Tensor, name: str = "x") -> Tensor:
        return check_events(x, self.event_shape, name, module_dtype(self), "the flow")

    def _check_context(self, context: object, rows: int | None) -> Tensor | None:
        return check_context(context, self.context_dim, rows, module_dtype(self), "the flow")

    def _base_samples(
        self, n: object, context: object, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor | None]:
        """``n`` base samples, or ``n`` for each row of the context (a ``(C,)`` context is
        one row; ``(M, C)`` gives ``M * n`` samples, the ``n`` of row ``m`` together),
        shaped as the transform's base side."""
        n = check_positive_int(n, "n")
        if isinstance(context, Tensor) and context.dim() == 1 and self.context_dim:
            context = context.unsqueeze(0)
        c = self._check_context(context, None)
        if c is not None:
            c = c.repeat_interleave(n, dim=0)
            n = c.shape[0]
        z = self.base.sample(n, generator=generator)
        return z.reshape(n, *self.latent_shape), c

    def _base_log_prob(self, z: Tensor) -> Tensor:
        return self.base._log_prob(z.reshape(z.shape[0], -1))

    # -- the model -------------------------------------------------------------------
    def _log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        z, log_abs_det = self.transform._map(x, context, inverse=True)
        return self._base_log_prob(z) + log_abs_det

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact log-density of data ``x`` of shape ``(B, *event_shape)`` (given contexts
        ``(B, C)`` for a conditional flow); returns ``(B,)``."""
        x = self._check(x)
        z, log_abs_det = self.transform._map(
            x, self._check_context(context, x.shape[0]), inverse=True
        )
        return _finite_log_prob(
            self._base_log_prob(z) + log_abs_det,
            z,
            log_abs_det,
            getattr(self.base, "bounded_support", False),
        )

    def sample(
        self,
        n: int,
        context: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """Draw ``n`` samples ``x = f(T z; c)``, ``z ~ p_Z``, shape ``(n, *event_shape)``;
        for a conditional flow, ``n`` for each row of ``context``. A temperature ``T < 1``
        draws from the centre of the base (Kingma and Dhariwal 2018)."""
        if not (isinstance(temperature, (int, float)) and 0 < temperature < math.inf):
            raise ValueError(
                f"temperature must be a positive finite number, got "
                f"{temperature!r}; 1 samples the model itself"
            )
        z, c = self._base_samples(n, context, generator)
        return _finite_samples(
            self.transform._map(z * temperature if temperature != 1 else z, c)[0]
        )

    def sample_and_log_prob(
        self, n: int, context: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Samples and their log-density in one pass, without inverting ``f``:
        ``log q(x) = log p_Z(z) - log |det df/dz|``."""
        z, c = self._base_samples(n, context, generator)
        x, log_abs_det = self.transform._map(z, c)
        return _finite_samples(x), self._base_log_prob(z) - log_abs_det

    def encode(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The latent points ``z = f^{-1}(x; c)`` of data ``x``, flattened to ``(B, D)``."""
        x = self._check(x)
        z = self.transform._map(x, self._check_context(context, x.shape[0]), inverse=True)[0]
        return z.reshape(z.shape[0], -1)

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """The data ``x = f(z; c)`` of latent points ``z`` of shape ``(B, D)``."""
        z = check_batch(z, self.dim, "z", dtype=module_dtype(self), owner="the flow")
        c = self._check_context(context, z.shape[0])
        return self.transform._map(z.reshape(z.shape[0], *self.latent_shape), c)[0]

    def forward_kl(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Maximum-likelihood loss: the mean negative log-likelihood of the data batch
        ``x`` (``B >= 1`` samples; with their contexts for a conditional flow).

        Equals ``KL(p_data || q)`` up to the data entropy, which does not depend on the flow.
        """
        return -self.log_prob(x, context).mean()

    def reverse_kl(
        self,
        log_target: Callable[[Tensor], Tensor],
        n: int,
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
    codomain = torch.distributions.constraints.independent(torch.distributions.constraints.real, 1)

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
