"""MADE, the masked autoencoder for distribution estimation (chapter 7).

An autoregressive flow needs a conditioner whose output for coordinate ``i`` depends only
on the coordinates that come before ``i`` in some ordering. MADE (Germain et al. 2015)
gets all ``D`` of these outputs from one pass of a multilayer perceptron whose weight
matrices are multiplied by binary masks.

Every unit gets a *degree*: input ``j`` the degree ``m(j) = order[j] + 1`` (its position in
the ordering, counted from 1), every hidden unit a degree ``m(k)`` in ``1, ..., D - 1``.
A hidden unit may see the units of the layer below whose degree is at most its own,

    M_hidden[k, j] = 1  if  m(k) >= m(j),

and the output units of coordinate ``i`` (degree ``m(i)``) only the hidden units of strictly
smaller degree,

    M_out[i, k] = 1  if  m(i) > m(k).

By induction a hidden unit of degree ``d`` depends only on inputs of degree at most ``d``,
so output ``i`` depends only on the inputs with ``order[j] < order[i]``: the strict ``>``
of the last mask is what stops ``x_i`` from seeing itself. Context inputs (for conditional
flows) get degree 0, so every hidden unit may see them; with a context some hidden units
get degree 0 too (they see the context alone), so that even the first coordinate's
outputs depend on it.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..seeding import seeded
from ..validation import check_batch, check_positive_int, module_dtype

__all__ = [
    "MADE",
    "MaskedLinear",
    "check_context_dim",
    "check_order",
    "hidden_degrees",
    "made_degrees",
    "made_masks",
]


def check_order(order: Tensor | Sequence[int] | None, dim: int) -> Tensor:
    """``order`` as a ``(dim,)`` long tensor holding each of ``0, ..., dim - 1`` once;
    ``None`` gives the identity ordering ``0, 1, ..., dim - 1``."""
    if order is None:
        return torch.arange(dim)
    order_t = torch.as_tensor(order)
    if order_t.dim() != 1 or order_t.dtype == torch.bool or order_t.is_floating_point():
        raise ValueError(
            f"order must be a 1D sequence of integers, a permutation of range({dim}), "
            f"got {order!r}"
        )
    order_t = order_t.to(torch.long).cpu()
    if len(order_t) != dim or not torch.equal(order_t.sort().values, torch.arange(dim)):
        raise ValueError(
            f"order must hold each of 0, ..., {dim - 1} exactly once (a permutation of "
            f"range({dim})), got {order_t.tolist()}; order[j] is the position of x_j in "
            "the autoregressive ordering"
        )
    return order_t


def check_context_dim(context_dim: object) -> int:
    """``context_dim`` as a non-negative ``int`` (0: no context; NumPy integers are
    accepted)."""
    what = "context_dim must be a non-negative integer (the size of the context, 0 for none)"
    if context_dim is None or isinstance(context_dim, bool):
        raise TypeError(f"{what}, got {context_dim!r}")
    try:
        number = operator.index(context_dim)
    except TypeError:
        raise TypeError(
            f"{what}, got {context_dim!r} of type {type(context_dim).__name__}"
        ) from None
    if number < 0:
        raise ValueError(f"{what}, got {number}")
    return number


def hidden_degrees(width: int, dim: int, low: int = 1) -> Tensor:
    """Degrees of a hidden layer of ``width`` units: ``low, low + 1, ..., D - 1, low, ...``
    in turn, so that every degree is present when the layer is wide enough (the
    deterministic choice of MADE). ``low = 1`` without a context; ``low = 0`` with one, so
    that some units see the context alone and feed the first coordinate. When no degree is
    left (``D = 1`` without a context) all degrees are 1 and nothing is seen."""
    if dim <= low:
        return torch.ones(width, dtype=torch.long)
    return torch.arange(width) % (dim - low) + low


def made_degrees(order: Tensor, hidden: Sequence[int], low: int = 1) -> list[Tensor]:
    """The degrees of every layer of a MADE: ``[input, hidden_1, ..., hidden_L]``, the
    input degrees being ``order + 1`` (``low`` as in ``hidden_degrees``)."""
    dim = len(order)
    return [order + 1] + [hidden_degrees(h, dim, low) for h in hidden]


def made_masks(
    in_degrees: Tensor, hidden_degrees: Sequence[Tensor], out_degrees: Tensor | None = None
) -> list[Tensor]:
    """The binary masks of a MADE from its degrees.

    Args:
        in_degrees: ``(D,)`` degrees of the inputs (context inputs get degree 0).
        hidden_degrees: one ``(H_l,)`` tensor of degrees per hidden layer.
        out_degrees: ``(D_out,)`` degrees of the outputs; defaults to ``in_degrees``.

    Returns:
        ``[M_1, ..., M_L, M_out]`` with ``M_l`` of shape ``(H_l, H_{l-1})`` (the layout of
        ``nn.Linear.weight``): ``M_l[k, j] = m_l(k) >= m_{l-1}(j)`` in the hidden layers and
        ``M_out[i, k] = m_out(i) > m_L(k)`` (strict) in the output layer.
    """
    in_degrees = torch.as_tensor(in_degrees)
    out_degrees = in_degrees if out_degrees is None else torch.as_tensor(out_degrees)
    masks = []
    below = in_degrees
    for degrees in hidden_degrees:
        degrees = torch.as_tensor(degrees)
        masks.append((degrees.unsqueeze(1) >= below.unsqueeze(0)).to(torch.get_default_dtype()))
        below = degrees
    masks.append((out_degrees.unsqueeze(1) > below.unsqueeze(0)).to(torch.get_default_dtype()))
    return masks


class MaskedLinear(nn.Linear):
    """``y = (W * M) x + b``: a linear layer whose weight is multiplied by a fixed binary
    mask ``M`` of the shape of ``W``, ``(out_features, in_features)``."""

    def __init__(self, mask: Tensor, bias: bool = True):
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder conditioner: ``out[:, i, :]`` depends only on ``x[:, j]`` with
    ``order[j] < order[i]`` (and on the context, if any).

    Args:
        dim: the dimension ``D`` of ``x``.
        hidden: widths of the hidden layers (ReLU between them).
        params_per_dim: how many numbers the network outputs per coordinate (2 for an
            affine map: a log-scale and a shift).
        order: a permutation of ``range(dim)``; ``order[j]`` is the position of ``x_j`` in
            the ordering. ``None`` is the identity ordering.
        context_dim: the size of an extra context input that every output may see (for
            conditional flows); 0 for none.
        seed: an integer makes the initial weights repeat without touching the global
            random state; ``None`` draws them from it.

    The output layer starts at zero, so a fresh MADE outputs zeros and an autoregressive
    flow built on it starts as the identity map.

    References: Germain, Gregor, Murray and Larochelle, "MADE: Masked Autoencoder for
    Distribution Estimation", ICML 2015.
    """

    order: Tensor

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int],
        params_per_dim: int,
        order: Tensor | Sequence[int] | None = None,
        context_dim: int = 0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        dim = check_positive_int(dim, "dim")
        params_per_dim = check_positive_int(params_per_dim, "params_per_dim")
        context_dim = check_context_dim(context_dim)
        try:
            if isinstance(hidden, (str, bytes)):
                raise TypeError
            hidden = list(hidden)
        except TypeError:
            raise TypeError(
                f"hidden must be a sequence of layer widths such as (64, 64), got {hidden!r}"
            ) from None
        if not hidden:
            raise ValueError(
                "hidden must list at least one positive layer width, got an empty sequence; "
                "pass for example hidden=(64, 64)"
            )
        hidden = tuple(
            check_positive_int(h, f"hidden[{k}]", "the width of a hidden layer")
            for k, h in enumerate(hidden)
        )
        self.dim = dim
        self.hidden = hidden
        self.params_per_dim = params_per_dim
        self.context_dim = context_dim
        order_t = check_order(order, dim)
        self.register_buffer("order", order_t)
        degrees = made_degrees(order_t, hidden, low=0 if context_dim else 1)
        in_degrees = torch.cat([degrees[0], torch.zeros(context_dim, dtype=torch.long)])
        out_degrees = degrees[0].repeat_interleave(params_per_dim)
        masks = made_masks(in_degrees, degrees[1:], out_degrees)
        with seeded(seed):
            layers: list[nn.Module] = []
            for k, mask in enumerate(masks):
                layers.append(MaskedLinear(mask))
                if k < len(masks) - 1:
                    layers.append(nn.ReLU())
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.net = nn.Sequential(*layers)

    def _net(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The forward pass without input checks (used inside the flows)."""
        if context is not None:
            x = torch.cat([x, context], dim=1)
        return self.net(x).view(x.shape[0], self.dim, self.params_per_dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``(B, dim)`` inputs (and ``(B, context_dim)`` context) to ``(B, dim,
        params_per_dim)`` outputs."""
        dtype = module_dtype(self)
        x = check_batch(x, self.dim, "x", dtype=dtype, owner="MADE")
        if self.context_dim:
            if context is None:
                raise ValueError(
                    f"this MADE was built with context_dim={self.context_dim}; pass "
                    f"context of shape (B, {self.context_dim})"
                )
            context = check_batch(context, self.context_dim, "context", dtype=dtype, owner="MADE")
            if context.shape[0] != x.shape[0]:
                raise ValueError(
                    f"context has {context.shape[0]} rows but x has {x.shape[0]}; pass one "
                    "context row per point"
                )
        elif context is not None:
            raise ValueError(
                "this MADE was built with context_dim=0 and takes no context; build it "
                "with context_dim=C to condition on a context"
            )
        return self._net(x, context)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, hidden={self.hidden}, params_per_dim={self.params_per_dim}, "
            f"context_dim={self.context_dim}, order={self.order.tolist()}"
        )
