"""Autoregressive flows (chapter 7): MAF, IAF and a small Transformer flow.

An autoregressive map transforms each coordinate with parameters that depend only on the
coordinates before it in an ordering ``order`` (``order[j]`` is the position of ``x_j``).
With the affine map ``g(z; s, t) = exp(s) z + t`` there are two ways to wire it:

* MAF (Papamakarios et al. 2017), parameters from the *data* side:
  ``x_i = exp(s_i(x_<i)) z_i + t_i(x_<i)``. Normalizing (``inverse``, the density) is one
  pass of the conditioner, ``z = (x - t(x)) exp(-s(x))``; sampling (``forward``) must
  build ``x`` one position at a time, ``D`` passes.
* IAF (Kingma et al. 2016), parameters from the *base* side:
  ``x_i = exp(s_i(z_<i)) z_i + t_i(z_<i)``. Sampling (``forward``) is one pass; the density
  of a new point (``inverse``) takes ``D`` passes.

Both have a triangular Jacobian with diagonal ``exp(s_i)``, so
``log |det df/dz| = sum_i s_i`` and the inverse's log-det is ``-sum_i s_i``. The log-scale
is bounded, ``s = c tanh(h / c)`` (chapter 5's ``soft_clamp``).

The conditioner is any module with ``dim``, an ``order`` buffer and a method
``_net(x) -> (B, dim, 2)`` whose output ``i`` depends only on ``x_j`` with
``order[j] < order[i]``: a ``MADE`` (``nfcourse.flows.made``) or a ``CausalTransformer``
(below, a small version of the Transformer conditioner of TarFlow, Zhai et al. 2025).
The builders ``maf_flow``, ``iaf_flow`` and ``transformer_flow`` stack layers with the
ordering reversed at every other layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Flow, Transform
from ..distributions import BaseDistribution
from ..seeding import seeded
from ..validation import check_batch, module_dtype
from .actnorm import ActNorm
from .coupling import soft_clamp
from .made import MADE, check_order

__all__ = [
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
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(),
                                 nn.Linear(2 * width, width))

    def forward(self, h: Tensor) -> Tensor:
        b, n, w = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.n_heads, w // self.n_heads) \
            .permute(2, 0, 3, 1, 4)                      # 3 x (B, heads, N, W / heads)
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

    def __init__(self, dim: int, params_per_dim: int = 2, width: int = 32, n_heads: int = 4,
                 n_blocks: int = 2, order: Tensor | Sequence[int] | None = None,
                 seed: int | None = None) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("params_per_dim", params_per_dim),
                            ("width", width), ("n_heads", n_heads), ("n_blocks", n_blocks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
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

    def _net(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        seq = x.index_select(1, self.sequence)[:, :-1]                  # (B, D - 1)
        tokens = torch.cat([self.start.expand(b, 1, -1),
                            self.embed(seq.unsqueeze(-1))], dim=1)      # (B, D, W)
        h = tokens + self.position
        for block in self.blocks:
            h = block(h)
        out = self.head(self.norm(h))                                    # by position
        return out.index_select(1, self.order)                          # by coordinate

    def forward(self, x: Tensor) -> Tensor:
        """``(B, dim)`` to ``(B, dim, params_per_dim)``."""
        return self._net(check_batch(x, self.dim, "x", dtype=module_dtype(self),
                                     owner="CausalTransformer"))


# --------------------------------------------------------------------------------------
# Affine autoregressive layers
# --------------------------------------------------------------------------------------

class AffineAutoregressive(Transform):
    """The shared machinery of MAF and IAF: an affine map ``exp(s) y + t`` whose
    ``(h, t) = conditioner(u)`` depend on ``u`` autoregressively, ``s = c tanh(h / c)``.

    ``_one_pass(u, y, inverse)`` computes the parameters from ``u`` once and applies the
    map to ``y``; ``_d_passes(y, inverse)`` solves for the ``u`` that is both the input of
    the conditioner and the output of the map, one position per pass.

    Args:
        conditioner: a ``MADE`` or ``CausalTransformer`` with 2 outputs per coordinate.
        scale_bound: ``c``, the largest log-scale per layer.
    """

    def __init__(self, conditioner: nn.Module, scale_bound: float = 3.0) -> None:
        if not isinstance(conditioner, (MADE, CausalTransformer)):
            raise TypeError(
                f"conditioner must be a MADE or a CausalTransformer, got "
                f"{type(conditioner).__name__}"
            )
        if conditioner.params_per_dim != 2:
            raise ValueError(
                f"an affine autoregressive layer needs 2 conditioner outputs per coordinate "
                f"(log-scale and shift), got params_per_dim={conditioner.params_per_dim}"
            )
        if getattr(conditioner, "context_dim", 0):
            raise ValueError("an affine autoregressive layer takes a conditioner without "
                             "context (context_dim=0)")
        if not scale_bound > 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound!r}")
        super().__init__(conditioner.dim)
        self.conditioner = conditioner
        self.scale_bound = float(scale_bound)

    @property
    def order(self) -> Tensor:
        return self.conditioner.order

    def _params(self, u: Tensor) -> tuple[Tensor, Tensor]:
        h = self.conditioner._net(u)
        return soft_clamp(h[..., 0], self.scale_bound), h[..., 1]

    def _one_pass(self, u: Tensor, y: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        s, t = self._params(u)
        if inverse:
            return (y - t) * torch.exp(-s), -s.sum(dim=1)
        return y * torch.exp(s) + t, s.sum(dim=1)

    def _d_passes(self, y: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        # After pass p the coordinates at positions 0..p are exact: each depends only on
        # earlier positions, which were exact one pass before. D passes finish the job,
        # and the parameters of the last pass are the final ones. The first pass sees
        # u = 0 for every point, so its parameters are the same for the whole batch: it
        # runs on a single row and broadcasts.
        u, log_abs_det = self._one_pass(y.new_zeros(1, self.dim), y, inverse)
        for _ in range(self.dim - 1):
            u, log_abs_det = self._one_pass(u, y, inverse)
        return u, log_abs_det.expand(y.shape[0])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale_bound={self.scale_bound}"


def _conditioner(dim: int, hidden: Sequence[int], order: Tensor | Sequence[int] | None,
                 seed: int | None, conditioner: nn.Module | None) -> nn.Module:
    if conditioner is not None:
        return conditioner
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    return MADE(dim, hidden, 2, order=order, seed=seed)


class MAF(AffineAutoregressive):
    """A masked autoregressive flow layer: ``x_i = exp(s_i(x_<i)) z_i + t_i(x_<i)``.

    ``inverse`` (data to base, the density) is one conditioner pass,
    ``z = (x - t(x)) exp(-s(x))`` with log-det ``-sum s``; ``forward`` (sampling) takes
    ``D`` passes and returns log-det ``+sum s``.

    Args:
        dim: the dimension ``D``.
        hidden: the MADE's hidden widths.
        order: the autoregressive ordering (``None``: ``x_1`` first).
        scale_bound: the largest log-scale ``c``.
        seed: initial weights (see ``nfcourse.seeding``).
        conditioner: a ready conditioner (``MADE`` or ``CausalTransformer`` with
            ``params_per_dim=2``) instead of a new MADE; then ``dim``, ``hidden``,
            ``order`` and ``seed`` are taken from it.

    References: Papamakarios, Pavlakou and Murray, "Masked Autoregressive Flow for Density
    Estimation", NeurIPS 2017.
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64),
                 order: Tensor | Sequence[int] | None = None, scale_bound: float = 3.0,
                 seed: int | None = None, conditioner: nn.Module | None = None) -> None:
        super().__init__(_conditioner(dim, hidden, order, seed, conditioner), scale_bound)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._one_pass(x, x, inverse=True)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._d_passes(z, inverse=False)


class IAF(AffineAutoregressive):
    """An inverse autoregressive flow layer: ``x_i = exp(s_i(z_<i)) z_i + t_i(z_<i)``.

    ``forward`` (base to data, sampling) is one conditioner pass with log-det ``+sum s``;
    ``inverse`` (the density of a new point) takes ``D`` passes and returns ``-sum s``.
    Arguments as ``MAF``.

    References: Kingma, Salimans, Jozefowicz, Chen, Sutskever and Welling, "Improved
    Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64),
                 order: Tensor | Sequence[int] | None = None, scale_bound: float = 3.0,
                 seed: int | None = None, conditioner: nn.Module | None = None) -> None:
        super().__init__(_conditioner(dim, hidden, order, seed, conditioner), scale_bound)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._one_pass(z, z, inverse=False)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._d_passes(x, inverse=True)


# --------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------

def layer_orders(dim: int, n_layers: int, order: str | Sequence = "reverse",
                 seed: int | None = 0) -> list[Tensor]:
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


def _stack(kind: type[AffineAutoregressive], dim: int, n_layers: int,
           make_conditioner: Callable[[Tensor], nn.Module], order: str | Sequence,
           scale_bound: float, actnorm: bool,
           seed: int | None, base: BaseDistribution | None) -> Flow:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    orders = layer_orders(dim, n_layers, order, seed)
    layers: list[Transform] = []
    with seeded(seed):
        for k in range(n_layers):
            layers.append(kind(dim, conditioner=make_conditioner(orders[k]),
                               scale_bound=scale_bound))
            if actnorm:
                layers.append(ActNorm(dim))
    return Flow(layers, base=base)


def maf_flow(dim: int, n_layers: int = 5, hidden: Sequence[int] = (64, 64),
             order: str | Sequence = "reverse", scale_bound: float = 3.0,
             actnorm: bool = False, seed: int | None = 0,
             base: BaseDistribution | None = None) -> Flow:
    """A flow of ``n_layers`` MAF layers (MADE conditioners), the ordering reversed at every
    other layer (``order``, see ``layer_orders``); with ``actnorm`` an ``ActNorm`` after
    each layer in the forward map. ``seed`` as everywhere in the package."""
    return _stack(MAF, dim, n_layers, lambda o: MADE(dim, hidden, 2, order=o), order,
                  scale_bound, actnorm, seed, base)


def iaf_flow(dim: int, n_layers: int = 5, hidden: Sequence[int] = (64, 64),
             order: str | Sequence = "reverse", scale_bound: float = 3.0,
             actnorm: bool = False, seed: int | None = 0,
             base: BaseDistribution | None = None) -> Flow:
    """A flow of ``n_layers`` IAF layers; arguments as ``maf_flow``."""
    return _stack(IAF, dim, n_layers, lambda o: MADE(dim, hidden, 2, order=o), order,
                  scale_bound, actnorm, seed, base)


def transformer_flow(dim: int, n_layers: int = 2, width: int = 32, n_heads: int = 4,
                     n_blocks: int = 2, order: str | Sequence = "reverse",
                     scale_bound: float = 3.0, actnorm: bool = False,
                     seed: int | None = 0, base: BaseDistribution | None = None) -> Flow:
    """A flow of ``n_layers`` MAF layers whose conditioners are ``CausalTransformer``s of
    ``n_blocks`` blocks, the ordering reversed at every other layer: a small, pixel-level
    version of TarFlow (Zhai et al. 2025), which works on image patches."""
    return _stack(MAF, dim, n_layers,
                  lambda o: CausalTransformer(dim, 2, width, n_heads, n_blocks, order=o),
                  order, scale_bound, actnorm, seed, base)
