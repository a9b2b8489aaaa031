"""Dequantization of images for a flow (chapter 9): integer pixels from grey levels, the
bound of the discrete likelihood with uniform or variational noise.

A flow ``p`` on ``[0, 1]^D`` scores integer pixels ``x`` in ``0..L-1`` through the
dequantized ``y = (x + u) / L`` (``nfcourse.images.dequantize``): for any noise density
``q(u | x)`` on the cell,

    -log P(x) <= E_q[-log p(y) + log q(u | x)] + D log L,

uniform noise being ``log q = 0`` and ``VariationalDequantizer`` a learned ``q``
(Ho et al. 2019).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Flow
from ..images import _dequantize
from ..seeding import seeded
from ..validation import (
    check_images,
    check_pixel_values,
    check_positive_int,
    module_dtype,
)
from .image import ConvAffineCoupling, _image_shape

__all__ = ["pixels_to_levels", "VariationalDequantizer", "dequantization_nll"]


def pixels_to_levels(x: Tensor, levels: int = 256) -> Tensor:
    """Grey levels in ``[0, 1]`` (as ``load_mnist`` returns them, ``k / (L - 1)``) as the
    integers ``0, ..., L - 1`` they encode, in the same dtype."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = f"a {x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(
            f"x must be a floating-point tensor of grey levels in [0, 1], got "
            f"{got}; convert it with torch.as_tensor(x, dtype=torch.float32)"
        )
    levels = _check_levels(levels)
    check_pixel_values(
        x,
        "x",
        1.0,
        fix="pixels_to_levels takes grey levels in [0, 1], "
        "k / (L - 1); integer pixels need no conversion",
    )
    return torch.round(x * (levels - 1))


#: ``B``: the variational noise is ``u = sigmoid(B tanh(h / B))``, inside
#: ``[sigmoid(-B), sigmoid(B)]``, which float32 tells apart from 0 and 1.
PRE_SIGMOID_BOUND = 12.0


def _check_levels(levels: object) -> int:
    levels = check_positive_int(levels, "levels")
    if levels < 2:
        raise ValueError(
            f"levels must be at least 2 (a number of grey levels: pixels 0..L-1 are "
            f"rescaled by L - 1), got {levels}; 8-bit images have levels=256"
        )
    return levels


class VariationalDequantizer(nn.Module):
    """Variational dequantization (Ho et al. 2019): noise ``u ~ q(u | x)`` on ``(0, 1)^D``
    drawn by a conditional flow instead of ``U[0, 1)^D``.

    ``eps ~ N(0, I)`` goes through checkerboard ``ConvAffineCoupling`` layers whose
    conditioners also see the image ``x`` (rescaled to ``[-1, 1]``), then through the
    bounded squashing ``u = sigmoid(B tanh(h / B))``, ``B = PRE_SIGMOID_BOUND = 12``;
    ``log q(u | x)`` follows by the change of variables, with ``log sigmoid'`` and
    ``log tanh'`` in stable forms. Bounding the pre-sigmoid values keeps ``u`` in
    ``[sigmoid(-12), sigmoid(12)] = [6.1e-6, 1 - 6.1e-6]``, strictly inside ``(0, 1)`` in
    float32 and float64 whatever the parameters (a bare sigmoid rounds to exactly 0 or 1
    once ``|h| > 17``, and the bound would then score a point on the cell's edge), and
    ``log q`` finite. Any density on the cell gives a valid bound. The bound of the
    discrete likelihood becomes ``-log P(x) <= E_q[-log p((x + u) / L) + log q(u | x)]
    + D log L``; uniform noise is the special case ``log q = 0``.

    Args:
        event_shape: the image shape ``(C, H, W)``.
        levels: ``L >= 2``, the number of grey levels.
        layers: the number of coupling layers.
        hidden: their conditioners' hidden channels.
        seed: as everywhere in the package.
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        levels: int = 256,
        layers: int = 2,
        hidden: int = 16,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.event_shape = _image_shape(event_shape)
        self.levels = _check_levels(levels)
        layers = check_positive_int(layers, "layers")
        with seeded(seed):
            self.couplings = nn.ModuleList(
                ConvAffineCoupling(
                    self.event_shape,
                    "checkerboard",
                    parity=k % 2,
                    hidden=hidden,
                    context_channels=self.event_shape[0],
                )
                for k in range(layers)
            )

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Noise ``u`` (shape of ``x``) for integer pixels ``x`` in ``0..L-1`` and
        ``log q(u | x)``, shape ``(B,)``."""
        x = check_images(x, self.event_shape, "x", module_dtype(self), "the dequantizer")
        check_pixel_values(
            x,
            "x",
            self.levels - 1,
            integers=True,
            fix="the dequantizer takes integer pixels 0..L-1; convert grey levels in [0, 1] "
            "with pixels_to_levels",
        )
        context = 2 * x / (self.levels - 1) - 1
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        log_q = -0.5 * (eps**2).flatten(1).sum(1) - 0.5 * eps[0].numel() * math.log(2 * math.pi)
        h = eps
        for layer in self.couplings:
            h, log_det = layer.couple(h, inverse=False, context=context)
            log_q = log_q - log_det
        # h -> g = B tanh(h / B): log g' = log(1 - tanh^2(y)) = 2 (log 2 - |y| - softplus(-2|y|))
        y = h / PRE_SIGMOID_BOUND
        log_tanh_grad = 2 * (math.log(2) - y.abs() - F.softplus(-2 * y.abs()))
        g = PRE_SIGMOID_BOUND * torch.tanh(y)
        log_sigmoid_grad = F.logsigmoid(g) + F.logsigmoid(-g)
        log_q = log_q - (log_tanh_grad + log_sigmoid_grad).flatten(1).sum(1)
        return torch.sigmoid(g), log_q


def dequantization_nll(
    flow: Flow,
    pixels: Tensor,
    levels: int = 256,
    dequantizer: VariationalDequantizer | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The per-image bound ``-log p(y) + log q(u | x)`` in nats, ``y = (x + u) / L``, for
    integer pixels ``x`` of shape ``(B, C, H, W)``: uniform noise without ``dequantizer``
    (``log q = 0``), variational noise with it. Add ``D ln L`` and divide by ``D ln 2``
    (``nfcourse.images.bits_per_dim``) for bits per dimension."""
    if not isinstance(flow, Flow) or len(flow.event_shape) != 3:
        raise TypeError(
            f"flow must be an nfcourse.Flow on images (C, H, W) "
            f"(nfcourse.flows.glow builds one), got {type(flow).__name__}"
            + (f" on samples of shape {flow.event_shape}" if isinstance(flow, Flow) else "")
        )
    levels = _check_levels(levels)
    pixels = check_images(pixels, flow.event_shape, "pixels", module_dtype(flow), "the flow")
    check_pixel_values(
        pixels,
        "pixels",
        levels - 1,
        integers=True,
        fix="convert grey levels in [0, 1] with pixels_to_levels",
    )
    if dequantizer is not None and dequantizer.levels != levels:
        raise ValueError(
            f"the dequantizer was built for levels={dequantizer.levels} but levels={levels} "
            "was passed; build both for one number of grey levels"
        )
    if dequantizer is None:
        u, log_q = None, pixels.new_zeros(pixels.shape[0])
    else:
        u, log_q = dequantizer(pixels, generator)
    y = _dequantize(pixels, levels, u, generator)
    return -flow._log_prob(y) + log_q
