"""Activation normalisation (Kingma and Dhariwal 2018): an elementwise affine layer whose
parameters start from the statistics of the first data batch it sees.

``ActNorm`` normalises points per coordinate (chapter 5) and images per channel
(chapter 9); ``ActNorm2d`` is the same layer built from an image shape. Both share one
data-dependent initialisation and one guard that keeps a trained layer from being
initialised again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..core import Transform
from ..validation import check_shape

__all__ = ["actnorm", "ActNorm", "ActNorm2d"]


def actnorm(
    z: Tensor, log_scale: Tensor, shift: Tensor, copies: int = 1, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """``x = exp(s) z + b`` and ``log |det| = copies * sum(s)``, or the inverse
    ``z = (x - b) exp(-s)`` and minus that log-det, broadcast to the batch ``(B,)``.
    ``s`` and ``b`` broadcast against one sample; ``copies`` is how many numbers share each
    entry of ``s`` (``H W`` for one scale per channel of an image)."""
    total = log_scale.sum() if copies == 1 else copies * log_scale.sum()
    log_abs_det = total.expand(z.shape[0])
    if not inverse:
        return torch.exp(log_scale) * z + shift, log_abs_det
    return (z - shift) * torch.exp(-log_scale), -log_abs_det


class ActNorm(Transform):
    """Activation normalisation: ``x = exp(s) * z + b``, initialised from the first data
    batch it normalises so that its output ``z = (x - b) exp(-s)`` has zero mean and unit
    variance.

    * Points ``(B, D)`` (``dim=D``): ``s, b`` of shape ``(D,)``,
      ``log |det J| = sum_i s_i``, statistics per coordinate over the batch.
    * Images ``(B, C, H, W)`` (``event_shape=(C, H, W)``): one ``s_c, b_c`` per channel,
      shape ``(C, 1, 1)``, shared by the ``H W`` pixels, so ``log |det J| = H W sum_c s_c``;
      statistics per channel over the batch and the pixels. With ``per_pixel=True`` every
      number of the image has its own ``s, b`` (shape ``(C, H, W)``,
      ``log |det J| = sum s``), with statistics over the batch.

    The initialisation happens at most once, and never after training has started: on the
    first call of ``inverse`` (the data direction) in training mode, unless a ``forward``
    call in training mode (sampling, as reverse-KL training does) or a change of the
    parameters (an optimiser step, ``load_state_dict``) came first. After that the
    parameters are trained like any others, and the buffer ``initialized`` is ``True``.

    Args:
        dim: the dimension ``D`` of points.
        event_shape: the shape of one sample instead: ``(D,)`` or an image ``(C, H, W)``.
        per_pixel: for images, one scale and shift per pixel instead of per channel.
        data_init: initialise from the first data batch; ``False`` starts (and stays, until
            trained) at the identity.

    References: Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1
    Convolutions", NeurIPS 2018.
    """

    def __init__(
        self,
        dim: int | None = None,
        *,
        event_shape: Sequence[int] | None = None,
        per_pixel: bool = False,
        data_init: bool = True,
    ) -> None:
        if dim is None and event_shape is None:
            raise TypeError(
                "ActNorm needs dim=D for points or event_shape=(C, H, W) for images, got neither"
            )
        super().__init__(dim, event_shape=event_shape)
        shape = self.event_shape
        if len(shape) not in (1, 3):
            raise ValueError(
                f"event_shape must be (D,) for points or (C, H, W) for images, got {shape}"
            )
        self.per_pixel = bool(per_pixel)
        per_channel = len(shape) == 3 and not self.per_pixel
        size = (shape[0], 1, 1) if per_channel else shape
        # the axes the statistics run over, and how many numbers share one entry of s
        self._axes = (0, 2, 3) if per_channel else (0,)
        self._copies = shape[1] * shape[2] if per_channel else 1
        self.log_scale = nn.Parameter(torch.zeros(size))
        self.shift = nn.Parameter(torch.zeros(size))
        self.register_buffer("initialized", torch.tensor(not data_init))
        self._versions = self._parameter_versions()
        self._known_initialized = not data_init  # a host-side copy: no device sync once True

    def _parameter_versions(self) -> tuple[int, int]:
        return self.shift._version, self.log_scale._version

    def _started(self) -> bool:
        """Whether the initial parameters are no longer the ones set at construction."""
        return bool(self.initialized) or self._parameter_versions() != self._versions

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set ``b`` to the mean and ``exp(s)`` to the standard deviation of ``x``: per
        coordinate of points, per channel of images (over the batch and the pixels)."""
        count = math.prod(x.shape[axis] for axis in self._axes)
        if count < 2:
            if self._axes == (0,):
                raise ValueError(
                    f"{type(self).__name__} initialises from the statistics of its first "
                    f"data batch, which needs at least 2 points, got a batch of "
                    f"{x.shape[0]}; pass a larger batch"
                )
            raise ValueError(
                f"{type(self).__name__} initialises from the statistics of its "
                f"first data batch, which needs at least 2 numbers per channel, "
                f"got {count}; pass a larger batch"
            )
        self.shift.copy_(x.mean(dim=self._axes, keepdim=True)[0])
        std = x.std(dim=self._axes, keepdim=True)[0]
        self.log_scale.copy_(torch.log(std.clamp_min(1e-6)))
        self.initialized.fill_(True)

    def _needs_decision(self) -> bool:
        if self._known_initialized or not self.training:
            return False
        self._known_initialized = bool(self.initialized)
        return not self._known_initialized

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if self._needs_decision():  # trained from the sampling side: keep the start
            self.initialized.fill_(True)
            self._known_initialized = True
        return actnorm(z, self.log_scale, self.shift, self._copies)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self._needs_decision():
            if self._started():
                self.initialized.fill_(True)
            else:
                self.initialize(x)
            self._known_initialized = True
        return actnorm(x, self.log_scale, self.shift, self._copies, inverse=True)

    def extra_repr(self) -> str:
        extra = ", per_pixel=True" if self.per_pixel else ""
        return f"event_shape={self.event_shape}{extra}"


class ActNorm2d(ActNorm):
    """Activation normalisation of images, ``x_{c,i,j} = exp(s_c) z_{c,i,j} + b_c`` with
    ``log |det J| = H W sum_c s_c``: ``ActNorm`` built from an image shape (Glow's step of
    flow, chapter 9). Everything else, the initialisation and its guard included, is
    ``ActNorm``'s.

    Args:
        event_shape: the image shape ``(C, H, W)``.
        per_pixel: one scale and shift per pixel instead of per channel.
        data_init: initialise from the first data batch.
    """

    def __init__(
        self, event_shape: Sequence[int], per_pixel: bool = False, data_init: bool = True
    ) -> None:
        shape = check_shape(event_shape, "event_shape")
        if len(shape) != 3:
            raise ValueError(
                f"event_shape must be an image shape (C, H, W), got {shape}; "
                "use ActNorm(dim) for points"
            )
        super().__init__(event_shape=shape, per_pixel=per_pixel, data_init=data_init)
