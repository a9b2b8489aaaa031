"""Autoregressive flows (chapter 7): MAF, IAF, a small Transformer flow, and with a context
the conditional MAF of chapter 12.

An autoregressive map transforms each coordinate with parameters that depend only on the
coordinates before it in an ordering ``order`` (``order[j]`` is the position of ``x_j``),
and on a context ``c`` when there is one: ``x_i = g(z_i; theta_i(u_<i, c))`` with an
elementwise map ``g`` and a conditioner ``theta``. There are two ways to wire it:

* MAF (Papamakarios et al. 2017), parameters from the *data* side, ``u = x``.
  Normalizing (``inverse``, the density) is one pass of the conditioner; sampling
  (``forward``) must build ``x`` one position at a time, ``D`` passes.
* IAF (Kingma et al. 2016), parameters from the *base* side, ``u = z``. Sampling
  (``forward``) is one pass; the density of a new point (``inverse``) takes ``D`` passes.

``Autoregressive`` holds the conditioner, the direction and the one ``D``-pass solver;
a subclass supplies only the elementwise map ``g``. With the affine map
``g(z; s, t) = exp(s) z + t`` (``AffineAutoregressive``: ``MAF`` and ``IAF``) the
Jacobian is triangular with diagonal ``exp(s_i)``, so ``log |det df/dz| = sum_i s_i`` and
the inverse's log-det is ``-sum_i s_i``; the log-scale is bounded, ``s = c tanh(h / c)``
(chapter 5's ``soft_clamp``). Chapter 8's ``RationalQuadraticAutoregressive`` uses a
spline for ``g``.

The conditioner is a module with ``dim``, ``params_per_dim``, ``context_dim``, an
``order`` buffer and a method ``_net(x, context) -> (B, dim, params_per_dim)`` whose
output ``i`` depends only on ``x_j`` with ``order[j] < order[i]`` (and on the context): a
``MADE`` (``nfcourse.flows.made``, which takes a context) or a ``CausalTransformer``
(below, a small version of the Transformer conditioner of TarFlow, Zhai et al. 2025,
without context). The builders ``maf_flow``, ``iaf_flow`` and ``transformer_flow`` stack
layers with the ordering reversed at every other layer; ``maf_flow(..., context_dim=C)``
is the conditional MAF of chapter 12.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Flow, Transform
from ..distributions import BaseDistribution
from ..seeding import seeded
from ..validation import check_batch, check_positive_float, check_positive_int, module_dtype
from .actnorm import ActNorm
from .coupling import soft_clamp
from .made import MADE, check_order

__all__ = [
    "Autoregressive",
    "AffineAutoregressive",
    "MAF",
    "IAF",
    "CausalTransformer",
    "layer_orders",
    "maf_flow",
    "iaf_flow",
    "transformer_flow",
]


# --------------------------------------------------------------------------------------
# A causal Transformer conditioner
# --------------------------------------------------------------------------------------


class _Block(nn.Module):
    """Pre-norm Transformer block: causal self-attention, then a per-token MLP, each added
    to the residual stream. Nothing in it lets a token see a later one."""

    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )

    def forward(self, h: Tensor) -> Tensor:
        b, n, w = h.shape
        q, k, v = (
            self.qkv(self.norm1(h))
            .view(b, n, 3, self.n_heads, w // self.n_heads)
            .permute(2, 0, 3, 1, 4)
        )  # 3 x (B, heads, N, W / heads)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(a.transpose(1, 2).reshape(b, n, w))
        return h + self.mlp(self.norm2(h))


class CausalTransformer(nn.Module):
    """A causal Transformer conditioner: ``out[:, i, :]`` depends only on ``x[:, j]`` with
    ``order[j] < order[i]``.

    The coordinates, sorted by ``order``, become a sequence of tokens (each value embedded
    by a linear map, plus a learned position embedding). The sequence is shifted right by
    one, with a learned start token in front, so that the token at position ``p`` holds
    ``x`` at position ``p - 1``; causal self-attention then lets position ``p`` see the
    values at positions ``0, ..., p - 1`` only. A linear head, zero at the start, reads
    ``params_per_dim`` numbers off every position.

    Args:
        dim: the dimension ``D`` (the sequence length).
        params_per_dim: outputs per coordinate.
        width: the token width.
        n_heads: attention heads (``width`` must be a multiple).
        n_blocks: Transformer blocks.
        order: a permutation of ``range(dim)``; ``None`` is the identity.
        seed: an integer makes the initial weights repeat without touching the global
            random state.
    """

    order: Tensor
    #: A Transformer conditioner takes no context.
    context_dim: int = 0

    def __init__(
        self,
        dim: int,
        params_per_dim: int = 2,
        width: int = 32,
        n_heads: int = 4,
        n_blocks: int = 2,
        order: Tensor | Sequence[int] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        dim = check_positive_int(dim, "dim")
        params_per_dim = check_positive_int(params_per_dim, "params_per_dim")
        width = check_positive_int(width, "width")
        n_heads = check_positive_int(n_heads, "n_heads")
        n_blocks = check_positive_int(n_blocks, "n_blocks")
        if width % n_heads:
            raise ValueError(
                f"width must be a multiple of n_heads, got width={width} and "
                f"n_heads={n_heads}; choose for example width={n_heads * 8}"
            )
        self.dim, self.params_per_dim = dim, params_per_dim
        order_t = check_order(order, dim)
        self.register_buffer("order", order_t)
        self.register_buffer("sequence", torch.argsort(order_t))  # coordinate at position p
        with seeded(seed):
            self.embed = nn.Linear(1, width)
            self.start = nn.Parameter(0.02 * torch.randn(width))
            self.position = nn.Parameter(0.02 * torch.randn(dim, width))
            self.blocks = nn.ModuleList(_Block(width, n_heads) for _ in range(n_blocks))
            self.norm = nn.LayerNorm(width)
            self.head = nn.Linear(width, params_per_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _net(self, x: Tensor, context: None = None) -> Tensor:
        b = x.shape[0]
        seq = x.index_select(1, self.sequence)[:, :-1]  # (B, D - 1)
        tokens = torch.cat(
            [self.start.expand(b, 1, -1), self.embed(seq.unsqueeze(-1))], dim=1
        )  # (B, D, W)
        h = tokens + self.position
        for block in self.blocks:
            h = block(h)
        out = self.head(self.norm(h))  # by position
        return out.index_select(1, self.order)  # by coordinate

    def forward(self, x: Tensor) -> Tensor:
        """``(B, dim)`` to ``(B, dim, params_per_dim)``."""
        return self._net(
            check_batch(x, self.dim, "x", dtype=module_dtype(self), owner="CausalTransformer")
        )


# --------------------------------------------------------------------------------------
# Autoregressive layers: one solver, an elementwise map per subclass
# --------------------------------------------------------------------------------------

#: The two wirings of an autoregressive layer: where the conditioner reads its input.
DIRECTIONS = ("maf", "iaf")


class Autoregressive(Transform):
    """An autoregressive layer ``x_i = g(z_i; theta_i(u_<i, c))``: an elementwise map ``g``
    whose parameters ``theta_i`` come from a conditioner that sees only the coordinates of
    ``u`` before ``i`` in its ordering (and the context ``c``, if any).

    With ``direction="maf"`` the conditioner reads the data side, ``u = x``: ``inverse``
    is one pass, ``z = g^{-1}(x; theta(x, c))``, and ``forward`` takes ``D`` passes. With
    ``direction="iaf"`` it reads the base side, ``u = z``: ``forward`` is one pass and
    ``inverse`` takes ``D`` passes. Either way the Jacobian is triangular in the ordering,
    ``log |det df/dz| = sum_i log g'(z_i; theta_i)``.

    ``_one_pass(u, y, context, inverse)`` computes the parameters from ``u`` once and
    applies ``g`` (or ``g^{-1}``) to ``y``; ``_d_passes(y, context, inverse)`` solves for
    the ``u`` that is both the conditioner's input and the map's output, one more position
    exact per pass. A subclass implements only ``_elementwise(y, params, inverse)``:
    ``params`` of shape ``(B, D, params_per_dim)`` in, the mapped ``y`` and the log-det
    ``(B,)`` out.

    Args:
        conditioner: a ``MADE`` or ``CausalTransformer`` with ``params_per_dim`` outputs
            per coordinate; the layer's ``dim``, ``order`` and ``context_dim`` are its.
        params_per_dim: the number of parameters of ``g`` per coordinate.
        direction: ``"maf"`` (parameters from the data side) or ``"iaf"`` (from the base
            side).
    """

    conditioner: nn.Module

    def __init__(
        self, conditioner: nn.Module, params_per_dim: int, direction: str = "maf"
    ) -> None:
        if not isinstance(conditioner, (MADE, CausalTransformer)):
            raise TypeError(
                f"conditioner must be a MADE or a CausalTransformer, got "
                f"{type(conditioner).__name__}"
            )
        params_per_dim = check_positive_int(params_per_dim, "params_per_dim")
        if conditioner.params_per_dim != params_per_dim:
            raise ValueError(
                f"{type(self).__name__} needs {params_per_dim} conditioner outputs per "
                f"coordinate{self._params_meaning()}, got a conditioner with "
                f"params_per_dim={conditioner.params_per_dim}; build it with "
                f"params_per_dim={params_per_dim}"
            )
        if direction not in DIRECTIONS:
            raise ValueError(
                f"direction must be 'maf' (parameters from the data side) or "
                f"'iaf' (from the base side), got {direction!r}"
            )
        super().__init__(conditioner.dim, context_dim=conditioner.context_dim)
        self.conditioner = conditioner
        self.params_per_dim = params_per_dim
        self.direction = direction

    def _params_meaning(self) -> str:
        return ""

    @property
    def order(self) -> Tensor:
        return self.conditioner.order

    def _elementwise(self, y: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """``g(y; params)`` (``g^{-1}`` if ``inverse``) for ``y`` ``(B, D)`` and ``params``
        ``(B, D, params_per_dim)``, and its log-det ``(B,)``."""
        raise NotImplementedError

    def _conditioner_params(self, u: Tensor, context: Tensor | None) -> Tensor:
        if context is None:
            return self.conditioner._net(u)
        return self.conditioner._net(u, context)

    def _one_pass(
        self, u: Tensor, y: Tensor, context: Tensor | None, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        return self._elementwise(y, self._conditioner_params(u, context), inverse)

    def _d_passes(self, y: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        # After pass p the coordinates at positions 0..p are exact: each depends only on
        # earlier positions, which were exact one pass before. D passes finish the job,
        # and the parameters of the last pass are the final ones. The first pass sees
        # u = 0 for every point: without a context its parameters are the same for the
        # whole batch, so it runs on a single row and broadcasts; with one, the rows differ.
        if context is None:
            params = self._conditioner_params(y.new_zeros(1, self.dim), None)
            params = params.expand(y.shape[0], -1, -1)
        else:
            params = self._conditioner_params(torch.zeros_like(y), context)
        u, log_abs_det = self._elementwise(y, params, inverse)
        for _ in range(self.dim - 1):
            u, log_abs_det = self._one_pass(u, y, context, inverse)
        return u, log_abs_det

    def _forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.direction == "iaf":
            return self._one_pass(z, z, context, inverse=False)
        return self._d_passes(z, context, inverse=False)

    def _inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.direction == "maf":
            return self._one_pass(x, x, context, inverse=True)
        return self._d_passes(x, context, inverse=True)

    def extra_repr(self) -> str:
        context = f", context_dim={self.context_dim}" if self.context_dim else ""
        return f"dim={self.dim}{context}, direction={self.direction!r}"


class AffineAutoregressive(Autoregressive):
    """The affine autoregressive layer of MAF and IAF: ``g(z; s, t) = exp(s) z + t`` with
    ``(h, t) = conditioner(u, c)`` and a bounded log-scale ``s = b tanh(h / b)``; the
    log-det is ``sum_i s_i`` (``-sum_i s_i`` for the inverse).

    Args:
        conditioner: a ``MADE`` or ``CausalTransformer`` with 2 outputs per coordinate.
        scale_bound: ``b``, the largest log-scale per layer.
        direction: ``"maf"`` or ``"iaf"``, as in ``Autoregressive``.
    """

    def __init__(
        self, conditioner: nn.Module, scale_bound: float = 3.0, direction: str = "maf"
    ) -> None:
        scale_bound = check_positive_float(
            scale_bound, "scale_bound", "the largest log-scale b per layer, for example 3.0"
        )
        super().__init__(conditioner, 2, direction)
        self.scale_bound = scale_bound

    def _params_meaning(self) -> str:
        return " (log-scale and shift)"

    def _scale_and_shift(self, params: Tensor) -> tuple[Tensor, Tensor]:
        return soft_clamp(params[..., 0], self.scale_bound), params[..., 1]

    def _params(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The log-scale ``s`` and shift ``t`` that the conditioner reads off ``u``."""
        return self._scale_and_shift(self._conditioner_params(u, context))

    def _elementwise(self, y: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        s, t = self._scale_and_shift(params)
        if inverse:
            return (y - t) * torch.exp(-s), -s.sum(dim=1)
        return y * torch.exp(s) + t, s.sum(dim=1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale_bound={self.scale_bound}"


def _conditioner(
    dim: int,
    hidden: Sequence[int],
    order: Tensor | Sequence[int] | None,
    seed: int | None,
    conditioner: nn.Module | None,
    context_dim: int,
) -> nn.Module:
    if conditioner is None:
        return MADE(
            check_positive_int(dim, "dim"),
            hidden,
            2,
            order=order,
            context_dim=context_dim,
            seed=seed,
        )
    if context_dim and getattr(conditioner, "context_dim", 0) != context_dim:
        raise ValueError(
            f"context_dim={context_dim} but the conditioner takes contexts of size "
            f"{getattr(conditioner, 'context_dim', 0)}; a ready conditioner sets the "
            "context size: leave context_dim out"
        )
    return conditioner


class MAF(AffineAutoregressive):
    """A masked autoregressive flow layer: ``x_i = exp(s_i(x_<i, c)) z_i + t_i(x_<i, c)``.

    ``inverse`` (data to base, the density) is one conditioner pass,
    ``z = (x - t(x, c)) exp(-s(x, c))`` with log-det ``-sum s``; ``forward`` (sampling)
    takes ``D`` passes and returns log-det ``+sum s``. With ``context_dim = C > 0`` the
    MADE gets the context ``c`` as an extra input that every hidden unit may see (the
    conditional MAF, chapter 12): for a fixed ``c`` it is an ordinary MAF layer in ``x``.

    Args:
        dim: the dimension ``D``.
        hidden: the MADE's hidden widths.
        order: the autoregressive ordering (``None``: ``x_1`` first).
        scale_bound: the largest log-scale ``b``.
        seed: initial weights (see ``nfcourse.seeding``).
        conditioner: a ready conditioner (``MADE`` or ``CausalTransformer`` with
            ``params_per_dim=2``) instead of a new MADE; then ``dim``, ``hidden``,
            ``order``, ``seed`` and ``context_dim`` are taken from it.
        context_dim: the size ``C`` of the context, 0 for none.

    References: Papamakarios, Pavlakou and Murray, "Masked Autoregressive Flow for Density
    Estimation", NeurIPS 2017 (section 3.4 for the conditional MAF).
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        order: Tensor | Sequence[int] | None = None,
        scale_bound: float = 3.0,
        seed: int | None = None,
        conditioner: nn.Module | None = None,
        context_dim: int = 0,
    ) -> None:
        super().__init__(
            _conditioner(dim, hidden, order, seed, conditioner, context_dim),
            scale_bound,
            direction="maf",
        )


class IAF(AffineAutoregressive):
    """An inverse autoregressive flow layer: ``x_i = exp(s_i(z_<i, c)) z_i + t_i(z_<i, c)``.

    ``forward`` (base to data, sampling) is one conditioner pass with log-det ``+sum s``;
    ``inverse`` (the density of a new point) takes ``D`` passes and returns ``-sum s``.
    Arguments as ``MAF``; with ``context_dim = C > 0`` the MADE sees a context, as in the
    posterior of chapter 6's VAE with ``posterior="iaf"``.

    References: Kingma, Salimans, Jozefowicz, Chen, Sutskever and Welling, "Improved
    Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        order: Tensor | Sequence[int] | None = None,
        scale_bound: float = 3.0,
        seed: int | None = None,
        conditioner: nn.Module | None = None,
        context_dim: int = 0,
    ) -> None:
        super().__init__(
            _conditioner(dim, hidden, order, seed, conditioner, context_dim),
            scale_bound,
            direction="iaf",
        )


# --------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------


def layer_orders(
    dim: int, n_layers: int, order: str | Sequence = "reverse", seed: int | None = 0
) -> list[Tensor]:
    """The ordering of each layer: ``"reverse"`` alternates ``0, ..., D-1`` and its
    reverse; ``"random"`` draws a random permutation per layer (repeatable with ``seed``);
    a list of ``n_layers`` permutations is used as given."""
    if isinstance(order, str):
        if order == "reverse":
            forward = torch.arange(dim)
            return [forward if k % 2 == 0 else forward.flip(0) for k in range(n_layers)]
        if order == "random":
            g = None if seed is None else torch.Generator().manual_seed(seed)
            return [torch.randperm(dim, generator=g) for _ in range(n_layers)]
        raise ValueError(
            f"order must be 'reverse', 'random' or a list of permutations, got {order!r}"
        )
    orders = [check_order(o, dim) for o in order]
    if len(orders) != n_layers:
        raise ValueError(f"got {len(orders)} orders for n_layers={n_layers}; pass one per layer")
    return orders


def _stack(
    kind: type[AffineAutoregressive],
    dim: int,
    n_layers: int,
    make_conditioner: Callable[[Tensor], nn.Module],
    order: str | Sequence,
    scale_bound: float,
    actnorm: bool,
    seed: int | None,
    base: BaseDistribution | None,
) -> Flow:
    dim = check_positive_int(dim, "dim")
    n_layers = check_positive_int(n_layers, "n_layers")
    orders = layer_orders(dim, n_layers, order, seed)
    layers: list[Transform] = []
    with seeded(seed):
        for k in range(n_layers):
            layers.append(
                kind(dim, conditioner=make_conditioner(orders[k]), scale_bound=scale_bound)
            )
            if actnorm:
                layers.append(ActNorm(dim))
    return Flow(layers, base=base)


def maf_flow(
    dim: int,
    n_layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    order: str | Sequence = "reverse",
    scale_bound: float = 3.0,
    actnorm: bool = False,
    seed: int | None = 0,
    base: BaseDistribution | None = None,
    context_dim: int = 0,
) -> Flow:
    """A flow of ``n_layers`` MAF layers (MADE conditioners), the ordering reversed at every
    other layer (``order``, see ``layer_orders``); with ``actnorm`` an ``ActNorm`` after
    each layer in the forward map. ``seed`` as everywhere in the package.

    With ``context_dim = C > 0`` it is the conditional MAF of chapter 12, a density
    ``q(x | c)`` for every context ``c`` of size ``C``: every MADE sees the context, and
    ``log_prob(x, context)``, ``sample(n, context)`` take it (``ActNorm`` does not)."""
    return _stack(
        MAF,
        dim,
        n_layers,
        lambda o: MADE(dim, hidden, 2, order=o, context_dim=context_dim),
        order,
        scale_bound,
        actnorm,
        seed,
        base,
    )


def iaf_flow(
    dim: int,
    n_layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    order: str | Sequence = "reverse",
    scale_bound: float = 3.0,
    actnorm: bool = False,
    seed: int | None = 0,
    base: BaseDistribution | None = None,
    context_dim: int = 0,
) -> Flow:
    """A flow of ``n_layers`` IAF layers; arguments as ``maf_flow``."""
    return _stack(
        IAF,
        dim,
        n_layers,
        lambda o: MADE(dim, hidden, 2, order=o, context_dim=context_dim),
        order,
        scale_bound,
        actnorm,
        seed,
        base,
    )


def transformer_flow(
    dim: int,
    n_layers: int = 2,
    width: int = 32,
    n_heads: int = 4,
    n_blocks: int = 2,
    order: str | Sequence = "reverse",
    scale_bound: float = 3.0,
    actnorm: bool = False,
    seed: int | None = 0,
    base: BaseDistribution | None = None,
) -> Flow:
    """A flow of ``n_layers`` MAF layers whose conditioners are ``CausalTransformer``s of
    ``n_blocks`` blocks, the ordering reversed at every other layer: a small, pixel-level
    version of TarFlow (Zhai et al. 2025), which works on image patches."""
    return _stack(
        MAF,
        dim,
        n_layers,
        lambda o: CausalTransformer(dim, 2, width, n_heads, n_blocks, order=o),
        order,
        scale_bound,
        actnorm,
        seed,
        base,
    )
