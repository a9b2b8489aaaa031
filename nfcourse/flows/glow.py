"""Builders of the flows on images of chapter 9: the multi-scale Glow and a flat flow on
images, both behind the logit pre-processing (layers in ``nfcourse.flows.image``)."""

from __future__ import annotations

from collections.abc import Sequence

from ..core import Compose, Flow, Transform
from ..seeding import seeded
from ..validation import check_positive_int
from .actnorm import ActNorm2d
from .image import (
    ConvAffineCoupling,
    FlatToImage,
    InvertibleConv1x1,
    Logit,
    MultiScale,
    Squeeze,
    _image_shape,
)

__all__ = ["glow", "flat_image_flow"]


def glow(
    shape: Sequence[int] = (1, 28, 28),
    levels: int = 2,
    steps: int = 4,
    hidden: int = 64,
    lu: bool = True,
    scale_bound: float = 3.0,
    alpha: float = 0.05,
    seed: int | None = 0,
    shift_bound: float | None = None,
) -> Flow:
    """A multi-scale Glow on images with pixels in ``[0, 1]``, an ``nfcourse.Flow`` whose
    ``log_prob`` takes images ``(B, C, H, W)``.

    From the data side: ``Logit`` pre-processing, then ``levels`` blocks, each a
    ``Squeeze`` followed by ``steps`` steps of flow (``ActNorm2d``,
    ``InvertibleConv1x1``, ``ConvAffineCoupling`` with a channel mask, alternating which
    half conditions); half the channels are factored out after every block but the last.

    Args:
        shape: the image shape ``(C, H, W)``; ``H`` and ``W`` divisible by
            ``2 ** levels``.
        levels: the number of squeezes (blocks).
        steps: steps of flow per level.
        hidden: the conditioners' hidden channels.
        lu: the LU parameterisation of the 1 x 1 convolutions.
        scale_bound: the couplings' largest log-scale.
        shift_bound: the couplings' largest shift (``None``: unbounded).
        alpha: the ``Logit`` pre-processing's ``a``.
        seed: as everywhere in the package (``nfcourse.seeding``).
    """
    c, h, w = _image_shape(shape, "shape")
    levels, steps = check_positive_int(levels, "levels"), check_positive_int(steps, "steps")
    if h % 2**levels or w % 2**levels:
        raise ValueError(
            f"{levels} levels halve the height and width {levels} times, so "
            f"they must be divisible by {2**levels}; got {h} x {w}. Use "
            f"fewer levels"
        )
    blocks = []
    with seeded(seed):
        for level in range(levels):
            squeeze_layer = Squeeze((c, h, w))
            c, h, w = squeeze_layer.latent_shape
            layers: list[Transform] = [squeeze_layer]  # from the data side
            for k in range(steps):
                layers += [
                    ActNorm2d((c, h, w)),
                    InvertibleConv1x1(
                        (c, h, w), lu=lu, seed=None if seed is None else seed + 100 * level + k
                    ),
                    ConvAffineCoupling(
                        (c, h, w),
                        "channel",
                        parity=k % 2,
                        hidden=hidden,
                        scale_bound=scale_bound,
                        shift_bound=shift_bound,
                    ),
                ]
            blocks.append(Compose(*reversed(layers)))
            c = c // 2
    multiscale = MultiScale(blocks)
    return Flow(Compose(multiscale, Logit(multiscale.event_shape, alpha)))


def flat_image_flow(
    transform: Transform, shape: Sequence[int] = (1, 28, 28), alpha: float = 0.05
) -> Flow:
    """A flat flow (chapter 5's ``coupling_flow(...).transform``) on images: ``Logit``
    pre-processing, the pixels flattened row by row, then ``transform``."""
    flat = FlatToImage(transform, shape)
    return Flow(Compose(flat, Logit(flat.event_shape, alpha)))
