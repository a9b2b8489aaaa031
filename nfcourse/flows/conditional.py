"""Conditional flows (chapter 12): a density ``q(x | c)`` for every context ``c``.

A conditional flow is a flow whose transform takes a second input, the context ``c`` (a
class label as a one-hot vector, an observation of a simulator), that the conditioners
see but that is never transformed:

    x = f(z; c),    log q(x | c) = log p_Z(f^{-1}(x; c)) + log |det d f^{-1}(x; c) / dx|.

For a fixed ``c`` the map ``f(.; c)`` is an ordinary flow, so everything of chapters 1-7
holds context by context; the parameters are shared across contexts, which is what lets
the model learn from all of them at once (and, for inference, *amortise*: one network
gives the posterior of every observation).

Here the context enters through MADE's context input (``nfcourse.flows.made``): every
hidden unit of the MADE may see it, so each coordinate's log-scale and shift depend on the
coordinates before it *and* on ``c``. The Jacobian in ``x`` stays triangular with
``exp(s_i(x_<i, c))`` on its diagonal.

The course convention holds with a context: ``forward(z, context) -> (x, log_abs_det)``
maps base to data, ``inverse(x, context)`` normalizes. Points are ``(B, D)``, contexts
``(B, C)``, log-dets ``(B,)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from ..core import Transform
from ..distributions import BaseDistribution, StandardNormal
from ..seeding import generator, seeded
from ..validation import check_batch, check_positive_int, module_dtype
from .actnorm import ActNorm
from .autoregressive import layer_orders
from .coupling import soft_clamp
from .made import MADE

__all__ = [
    "ConditionalMAF",
    "ConditionalFlow",
    "conditional_maf_flow",
    "check_context",
    "fit_conditional",
]


def check_context(context: object, context_dim: int, rows: int | None, dtype: torch.dtype | None,
                  owner: str = "the conditional flow") -> Tensor:
    """Check a context batch once, at a public entry point: a float tensor of shape
    ``(rows, context_dim)`` (any number of rows when ``rows`` is ``None``) of the model's
    dtype. A missing context gets a ``ValueError`` that says what to pass."""
    if context is None:
        raise ValueError(
            f"{owner} is conditional (context_dim={context_dim}) and needs a context: pass "
            f"context=... of shape (B, {context_dim}), one row per point"
        )
    context = check_batch(context, context_dim, "context", dtype=dtype, owner=owner)
    if rows is not None and context.shape[0] != rows:
        raise ValueError(
            f"context has {context.shape[0]} rows but the points have {rows}; pass one "
            f"context row per point, shape ({rows}, {context_dim})"
        )
    return context


class ConditionalMAF(nn.Module):
    """A conditional masked autoregressive layer:
    ``x_i = exp(s_i(x_<i, c)) z_i + t_i(x_<i, c)``, ``s = b tanh(h / b)``.

    ``inverse(x, context)`` (the density) is one MADE pass,
    ``z = (x - t) exp(-s)`` with log-det ``-sum s``; ``forward(z, context)`` (sampling)
    takes ``D`` passes and returns ``+sum s``.

    Args:
        dim: the dimension ``D`` of ``x``.
        context_dim: the dimension ``C`` of the context (at least 1).
        hidden: the MADE's hidden widths.
        order: the autoregressive ordering (``None``: ``x_1`` first).
        scale_bound: the largest log-scale ``b``.
        seed: initial weights (see ``nfcourse.seeding``).

    References: Papamakarios, Pavlakou and Murray, "Masked Autoregressive Flow for Density
    Estimation", NeurIPS 2017 (section 3.4, conditional MAF).
    """

    def __init__(self, dim: int, context_dim: int, hidden: Sequence[int] = (64, 64),
                 order: Tensor | Sequence[int] | None = None, scale_bound: float = 3.0,
                 seed: int | None = None) -> None:
        super().__init__()
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) \
                or context_dim < 1:
            raise ValueError(
                f"context_dim must be a positive integer (the size of the context), got "
                f"{context_dim!r}; for a flow without context use nfcourse.flows.MAF"
            )
        if not scale_bound > 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound!r}")
        self.conditioner = MADE(dim, hidden, 2, order=order, context_dim=context_dim,
                                seed=seed)
        self.dim, self.context_dim = dim, context_dim
        self.scale_bound = float(scale_bound)

    def _one_pass(self, u: Tensor, y: Tensor, c: Tensor,
                  inverse: bool) -> tuple[Tensor, Tensor]:
        h = self.conditioner._net(u, c)
        s, t = soft_clamp(h[..., 0], self.scale_bound), h[..., 1]
        if inverse:
            return (y - t) * torch.exp(-s), -s.sum(dim=1)
        return y * torch.exp(s) + t, s.sum(dim=1)

    def _inverse(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        return self._one_pass(x, x, c, inverse=True)

    def _forward(self, z: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        # Pass p makes the coordinate at position p exact (chapter 7): D passes in all.
        x = torch.zeros_like(z)
        log_abs_det = z.new_zeros(z.shape[0])
        for _ in range(self.dim):
            x, log_abs_det = self._one_pass(x, z, c, inverse=False)
        return x, log_abs_det

    def _checked(self, x: Tensor, context: object, name: str) -> tuple[Tensor, Tensor]:
        dtype = module_dtype(self)
        x = check_batch(x, self.dim, name, dtype=dtype, owner="ConditionalMAF")
        c = check_context(context, self.context_dim, x.shape[0], dtype, "ConditionalMAF")
        return x, c

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Base to data: ``x = f(z; c)`` and ``log |det df/dz|``, shapes ``(B, D)`` and
        ``(B,)``."""
        return self._forward(*self._checked(z, context, "z"))

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to base: ``z = f^{-1}(x; c)`` and ``log |det df^{-1}/dx|``."""
        return self._inverse(*self._checked(x, context, "x"))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, context_dim={self.context_dim}, "
                f"scale_bound={self.scale_bound}")


class ConditionalFlow(nn.Module):
    """A conditional normalizing flow ``q(x | c)``: a base distribution pushed through
    layers ``f_1, ..., f_K`` applied in this order from base to data. A layer is a
    ``ConditionalMAF`` (it sees the context) or an ordinary ``Transform`` such as
    ``ActNorm`` (it does not).

    Args:
        layers: the layers, ``f_1`` first.
        context_dim: the size ``C`` of the context.
        base: the base distribution; ``StandardNormal(dim)`` by default.
    """

    def __init__(self, layers: Iterable[nn.Module], context_dim: int,
                 base: BaseDistribution | None = None) -> None:
        super().__init__()
        layers = list(layers)
        if not layers:
            raise ValueError("a conditional flow needs at least one layer")
        for layer in layers:
            if not isinstance(layer, (ConditionalMAF, Transform)):
                raise TypeError(
                    f"layers must be ConditionalMAF layers or nfcourse Transforms, got "
                    f"{type(layer).__name__}"
                )
            if isinstance(layer, ConditionalMAF) and layer.context_dim != context_dim:
                raise ValueError(
                    f"a layer takes contexts of size {layer.context_dim} but the flow "
                    f"was given context_dim={context_dim}; build every layer with "
                    f"context_dim={context_dim}"
                )
        dims = {layer.dim for layer in layers if layer.dim is not None}
        if len(dims) != 1:
            raise ValueError(f"all layers must share one dimension, got dims {sorted(dims)}")
        dim = dims.pop()
        base = StandardNormal(dim) if base is None else base
        if not isinstance(base, BaseDistribution) or base.dim != dim:
            raise ValueError(
                f"base must be an nfcourse BaseDistribution of dimension {dim}, got {base!r}"
            )
        self.layers = nn.ModuleList(layers)
        self.base = base
        self.dim, self.context_dim = dim, context_dim

    # -- the maps, without checks ---------------------------------------------------
    def _forward(self, z: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        total = z.new_zeros(z.shape[0])
        for layer in self.layers:
            z, log_abs_det = (layer._forward(z, c) if isinstance(layer, ConditionalMAF)
                              else layer._forward(z))
            total = total + log_abs_det
        return z, total

    def _inverse(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for layer in reversed(self.layers):
            x, log_abs_det = (layer._inverse(x, c) if isinstance(layer, ConditionalMAF)
                              else layer._inverse(x))
            total = total + log_abs_det
        return x, total

    def _log_prob(self, x: Tensor, c: Tensor) -> Tensor:
        z, log_abs_det = self._inverse(x, c)
        return self.base._log_prob(z) + log_abs_det

    # -- public entry points: inputs checked once ----------------------------------------
    def _points(self, x: Tensor, context: object, name: str) -> tuple[Tensor, Tensor]:
        dtype = module_dtype(self)
        x = check_batch(x, self.dim, name, dtype=dtype, owner="the conditional flow")
        return x, check_context(context, self.context_dim, x.shape[0], dtype)

    def _contexts(self, n: object, context: object) -> tuple[int, Tensor]:
        """``n`` samples per context row: a ``(C,)`` context is one row; ``(M, C)``
        gives ``n`` samples for each of the ``M`` rows, ``M * n`` in all, row-major."""
        n = check_positive_int(n, "n")
        if isinstance(context, Tensor) and context.dim() == 1:
            context = context.unsqueeze(0)
        c = check_context(context, self.context_dim, None, module_dtype(self))
        return n, c.repeat_interleave(n, dim=0)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Base to data: ``x = f(z; c)`` and ``log |det df/dz|``."""
        return self._forward(*self._points(z, context, "z"))

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to base: ``z = f^{-1}(x; c)`` and ``log |det df^{-1}/dx|``."""
        return self._inverse(*self._points(x, context, "x"))

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``log q(x | c)`` for points ``(B, D)`` and contexts ``(B, C)``; returns
        ``(B,)``."""
        return self._log_prob(*self._points(x, context, "x"))

    def sample(self, n: int, context: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples of ``q(x | c)`` for each row of ``context`` (a ``(C,)`` tensor is
        one row): shape ``(M * n, D)``, the ``n`` samples of row ``m`` in rows
        ``m * n, ..., m * n + n - 1``."""
        n, c = self._contexts(n, context)
        z = self.base.sample(c.shape[0], generator=generator)
        return self._forward(z, c)[0]

    def sample_and_log_prob(self, n: int, context: Tensor | None = None,
                            generator: torch.Generator | None = None
                            ) -> tuple[Tensor, Tensor]:
        """Samples as ``sample`` and their ``log q(x | c)``, without inverting ``f``."""
        n, c = self._contexts(n, context)
        z = self.base.sample(c.shape[0], generator=generator)
        x, log_abs_det = self._forward(z, c)
        return x, self.base._log_prob(z) - log_abs_det

    def forward_kl(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The maximum-likelihood loss, ``-mean log q(x | c)`` over the batch."""
        return -self.log_prob(x, context).mean()


def conditional_maf_flow(dim: int, context_dim: int, n_layers: int = 4,
                         hidden: Sequence[int] = (64, 64), order: str | Sequence = "reverse",
                         scale_bound: float = 3.0, actnorm: bool = False,
                         seed: int | None = 0,
                         base: BaseDistribution | None = None) -> ConditionalFlow:
    """A conditional flow of ``n_layers`` ``ConditionalMAF`` layers, the ordering reversed
    at every other layer (``order`` as in ``nfcourse.flows.autoregressive.layer_orders``);
    with ``actnorm`` an ``ActNorm`` after each."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    orders = layer_orders(dim, n_layers, order, seed)
    layers: list[nn.Module] = []
    with seeded(seed):
        for k in range(n_layers):
            layers.append(ConditionalMAF(dim, context_dim, hidden, order=orders[k],
                                         scale_bound=scale_bound))
            if actnorm:
                layers.append(ActNorm(dim))
    return ConditionalFlow(layers, context_dim, base=base)


def fit_conditional(flow: ConditionalFlow, data: Tensor, context: Tensor, steps: int,
                    batch_size: int = 256, lr: float = 1e-3, seed: int | None = 0,
                    **kwargs: object) -> list[float]:
    """Fit ``flow`` by maximum likelihood to pairs ``(data[i], context[i])``: minimise
    ``-mean log q(x | c)`` over mini-batches of ``batch_size`` pairs drawn at random.
    Returns the per-step loss; other keywords go to ``nfcourse.train.train``."""
    from ..training import train

    if not isinstance(flow, ConditionalFlow):
        raise TypeError(f"flow must be a ConditionalFlow, got {type(flow).__name__}")
    data, context = flow._points(data, context, "data")
    batch_size = check_positive_int(batch_size, "batch_size")
    indices = generator(seed)
    n = data.shape[0]

    def loss_fn(step: int) -> Tensor:
        idx = torch.randint(n, (min(batch_size, n),), generator=indices)
        return -flow._log_prob(data[idx], context[idx]).mean()

    return train(loss_fn, flow, steps, lr=lr, seed=seed,
                 desc=kwargs.pop("desc", "conditional maximum likelihood"), **kwargs)
