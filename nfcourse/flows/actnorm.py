"""Activation normalisation (Kingma and Dhariwal 2018), chapter 5: an elementwise affine
layer whose parameters start from the statistics of the first data batch it sees.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .affine import ElementwiseAffine

__all__ = ["ActNorm"]


class ActNorm(ElementwiseAffine):
    """Activation normalisation: ``x = exp(s) * z + b`` with ``s, b`` of shape ``(D,)`` and
    ``log |det J| = sum_i s_i``, initialised from the first data batch it normalises so that
    its output ``z = (x - b) exp(-s)`` has zero mean and unit variance per coordinate.

    The initialisation happens at most once, and never after training has started: on the
    first call of ``inverse`` (the data direction) in training mode, unless a ``forward``
    call in training mode (sampling, as reverse-KL training does) or a change of the
    parameters (an optimiser step, ``load_state_dict``) came first. After that the
    parameters are trained like any others, and ``initialized`` is ``True``.

    Args:
        dim: the dimension ``D``.

    References: Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1
    Convolutions", NeurIPS 2018.
    """

    def __init__(self, dim: int):
        super().__init__(dim)
        self.register_buffer("initialized", torch.tensor(False))
        self._versions = self._parameter_versions()
        self._known_initialized = False  # a host-side copy: no device sync once True

    def _parameter_versions(self) -> tuple[int, int]:
        return self.shift._version, self.log_scale._version

    def _started(self) -> bool:
        """Whether the initial parameters are no longer the ones set at construction."""
        return bool(self.initialized) or self._parameter_versions() != self._versions

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set ``b`` to the mean and ``exp(s)`` to the standard deviation of ``x``."""
        if x.shape[0] < 2:
            raise ValueError(
                f"ActNorm initialises from the statistics of its first data batch, which "
                f"needs at least 2 points, got a batch of {x.shape[0]}; pass a larger batch"
            )
        self.shift.copy_(x.mean(dim=0))
        self.log_scale.copy_(torch.log(x.std(dim=0).clamp_min(1e-6)))
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
        return super()._forward(z)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self._needs_decision():
            if self._started():
                self.initialized.fill_(True)
            else:
                self.initialize(x)
            self._known_initialized = True
        return super()._inverse(x)
