"""Flows on images (chapter 9): Glow's layers and its multi-scale architecture.

Images are batches of shape ``(B, C, H, W)``. The convention of the course is unchanged
(``forward(z) -> (x, log_abs_det)`` maps base to data, ``inverse`` normalizes, log-dets
have shape ``(B,)``); the one extension is the shape of the tensors. An
``ImageTransform`` has a data-side shape ``shape`` (``(C, H, W)``) and a base-side shape
``latent_shape``, either an image shape (a squeeze changes ``(C, H, W)`` into
``(4C, H/2, W/2)``) or ``(D,)``, the flat vector a ``StandardNormal(D)`` base expects.
``forward`` checks ``z`` against ``latent_shape`` and ``inverse`` checks ``x`` against
``shape``, each once, with errors that name the expected shape; ``dim`` is the number of
numbers ``C * H * W``, which no layer changes. ``ImageFlow`` is an ``nfcourse.Flow``
whose ``log_prob`` takes images and whose ``sample`` returns images.

The layers, all written as ``x = f(z)`` from base to data:

* ``Logit``: ``x = (sigmoid(z) - a) / (1 - 2a)`` maps logit space onto ``[0, 1]``; its
  inverse is the pre-processing ``z = logit(a + (1 - 2a) x)`` of dequantized pixels;
* ``Squeeze``: its inverse folds every 2 x 2 block of pixels into 4 channels;
* ``ActNorm2d``: ``x = exp(s_c) z + b_c`` per channel, ``log |det| = H W sum_c s_c``,
  initialised from the first data batch (Kingma and Dhariwal 2018);
* ``InvertibleConv1x1``: ``x_{:,i,j} = W z_{:,i,j}`` at every pixel,
  ``log |det| = H W log |det W|``, with ``W = P L (U + diag(sign(s) exp(log|s|)))``;
* ``ConvAffineCoupling``: RealNVP's affine coupling with a convolutional conditioner, a
  ``"channel"`` mask (half the channels condition) or a ``"checkerboard"`` mask;
* ``MultiScale``: blocks of layers, half the channels factored out after each block
  (Dinh et al. 2017), the latent vector the concatenation of all factored-out parts;
* ``VariationalDequantizer``: ``u ~ q(u | x)`` on ``(0, 1)^D`` by a small conditional flow
  (Ho et al. 2019), in place of uniform noise.

``glow`` and ``flat_image_flow`` assemble flows; ``dequantization_nll`` evaluates the
dequantization bound with uniform or variational noise. ``pretrained_glow`` loads the
Glow that ``tools/train_image_flows.py`` trained for a longer budget, shipped in
``nfcourse/pretrained``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Flow, Transform
from ..distributions import BaseDistribution
from ..seeding import generator as _generator
from ..seeding import seeded
from ..validation import check_batch, check_positive_int, check_dtype, module_dtype
from .masks import checkerboard_mask

__all__ = [
    "check_images",
    "squeeze",
    "unsqueeze",
    "ImageTransform",
    "ImageCompose",
    "FlatToImage",
    "Logit",
    "Squeeze",
    "ActNorm2d",
    "InvertibleConv1x1",
    "ConvAffineCoupling",
    "MultiScale",
    "ImageFlow",
    "VariationalDequantizer",
    "glow",
    "flat_image_flow",
    "pixels_to_levels",
    "dequantization_nll",
    "PRETRAINED_GLOW_SETTINGS",
    "pretrained_glow_paths",
    "pretrained_glow",
]


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------

def _as_shape(shape: Sequence[int], name: str = "shape") -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple (C, H, W) of positive integers, got "
                        f"{shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name} must be a tuple (C, H, W) of three positive integers, "
                         f"got {shape}")
    return shape


def check_images(x: Tensor, shape: Sequence[int], name: str = "x",
                 dtype: torch.dtype | None = None, owner: str = "the model") -> Tensor:
    """Check that ``x`` is a finite float32 or float64 batch of images of shape
    ``(B, C, H, W)`` with ``(C, H, W) = shape`` and ``B >= 1`` (of dtype ``dtype`` when
    given); raise ``TypeError`` or ``ValueError`` naming what came in and the fix."""
    c, h, w = shape
    expected = f"(B, {c}, {h}, {w}) (batch, channels, height, width)"
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got "
                        f"{type(x).__name__}; convert it with torch.as_tensor")
    check_dtype(x, dtype, name, owner)
    if x.dim() != 4:
        hint = ""
        if x.dim() == 2 and x.shape[1] == c * h * w:
            hint = f"; reshape flat images with {name}.view(-1, {c}, {h}, {w})"
        elif x.dim() == 3 and tuple(x.shape) == (c, h, w):
            hint = f"; a single image needs a batch axis: {name}.unsqueeze(0)"
        elif x.dim() == 3 and c == 1 and tuple(x.shape[1:]) == (h, w):
            hint = f"; add the channel axis with {name}.unsqueeze(1)"
        raise ValueError(f"{name} must have shape {expected}, got shape "
                         f"{tuple(x.shape)}{hint}")
    if tuple(x.shape[1:]) != (c, h, w):
        raise ValueError(f"{name} has images of shape {tuple(x.shape[1:])} but {owner} "
                         f"works on {(c, h, w)}: expected {expected}, got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); pass at "
                         "least one image")
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).flatten(1).any(dim=1).nonzero().flatten()
        raise ValueError(f"{name} contains non-finite values (NaN or inf) in images "
                         f"{bad[:5].tolist()}")
    return x


# --------------------------------------------------------------------------------------
# Squeeze, as pure functions
# --------------------------------------------------------------------------------------

def squeeze(x: Tensor) -> Tensor:
    """Fold every 2 x 2 block of pixels into channels: ``(B, C, H, W) -> (B, 4C, H/2,
    W/2)``. Output channel ``4c + 2a + b`` holds pixel ``(2i + a, 2j + b)`` of channel
    ``c`` at position ``(i, j)``."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    """The inverse of ``squeeze``: ``(B, 4C, H, W) -> (B, C, 2H, 2W)``."""
    b, c4, h, w = x.shape
    x = x.reshape(b, c4 // 4, 2, 2, h, w)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)


# --------------------------------------------------------------------------------------
# Image transforms
# --------------------------------------------------------------------------------------

class ImageTransform(Transform):
    """A transform of images: ``inverse`` takes data of shape ``(B, *shape)`` and returns
    base-side tensors ``(B, *latent_shape)``; ``forward`` goes back. Subclasses implement
    ``_forward`` and ``_inverse`` as for any ``Transform``.

    Args:
        shape: the data-side image shape ``(C, H, W)``.
        latent_shape: the base-side shape, ``(C', H', W')`` or ``(D,)``; defaults to
            ``shape``. It must hold as many numbers as ``shape``.
    """

    def __init__(self, shape: Sequence[int], latent_shape: Sequence[int] | None = None):
        shape = _as_shape(shape)
        latent_shape = shape if latent_shape is None else tuple(int(s) for s in latent_shape)
        if math.prod(latent_shape) != math.prod(shape):
            raise ValueError(f"latent_shape {latent_shape} holds {math.prod(latent_shape)} "
                             f"numbers but shape {shape} holds {math.prod(shape)}")
        super().__init__(math.prod(shape))
        self.shape = shape
        self.latent_shape = latent_shape

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Map base to data: ``x = f(z)`` of shape ``(B, *shape)`` and
        ``log |det df/dz|`` of shape ``(B,)``."""
        return self._forward(self._check_latent(z, "z"))

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map data to base: ``z = f^{-1}(x)`` of shape ``(B, *latent_shape)`` and
        ``log |det df^{-1}/dx|``."""
        return self._inverse(self._check_data(x, "x"))

    def _check_latent(self, z: Tensor, name: str) -> Tensor:
        owner = type(self).__name__
        if len(self.latent_shape) == 1:
            return check_batch(z, self.dim, name, dtype=module_dtype(self), owner=owner)
        return check_images(z, self.latent_shape, name, module_dtype(self), owner)

    def _check_data(self, x: Tensor, name: str) -> Tensor:
        return check_images(x, self.shape, name, module_dtype(self), type(self).__name__)

    def _check(self, x: Tensor, name: str) -> Tensor:  # as Transform: z is base side
        return self._check_latent(x, name) if name == "z" else self._check_data(x, name)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, latent_shape={self.latent_shape}"


def _zeros(t: Tensor) -> Tensor:
    return t.new_zeros(t.shape[0])


class ImageCompose(ImageTransform):
    """The composition ``f = f_K o ... o f_1`` of image transforms, ``f_1`` applied first
    by ``forward`` (nearest the base); the data side of ``f_k`` must be the base side of
    ``f_{k+1}``. Log-determinants add, as in ``nfcourse.Compose``.

    Args:
        transforms: the layers ``f_1, ..., f_K``.
    """

    def __init__(self, *transforms: ImageTransform | Iterable[ImageTransform]):
        if len(transforms) == 1 and not isinstance(transforms[0], Transform):
            transforms = tuple(transforms[0])
        if not transforms:
            raise ValueError("ImageCompose needs at least one transform")
        for k, t in enumerate(transforms):
            if not isinstance(t, ImageTransform):
                raise TypeError(f"ImageCompose takes ImageTransforms, got "
                                f"{type(t).__name__} at position {k}; wrap a flat "
                                "transform with FlatToImage")
        for k in range(1, len(transforms)):
            if transforms[k].latent_shape != transforms[k - 1].shape:
                raise ValueError(
                    f"transform {k} ({type(transforms[k]).__name__}) expects base-side "
                    f"tensors of shape {transforms[k].latent_shape} but transform {k - 1} "
                    f"({type(transforms[k - 1]).__name__}) outputs images of shape "
                    f"{transforms[k - 1].shape}")
        super().__init__(transforms[-1].shape, transforms[0].latent_shape)
        self.transforms = nn.ModuleList(transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, k: int) -> ImageTransform:
        return self.transforms[k]

    def _check_data(self, x: Tensor, name: str) -> Tensor:
        return self.transforms[-1]._check_data(x, name)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        total = _zeros(z)
        for t in self.transforms:
            z, log_abs_det = t._forward(z)
            total = total + log_abs_det
        return z, total

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = _zeros(x)
        for t in reversed(self.transforms):
            x, log_abs_det = t._inverse(x)
            total = total + log_abs_det
        return x, total

    def extra_repr(self) -> str:
        return ""


class FlatToImage(ImageTransform):
    """A flat transform of ``R^D`` (chapter 5's coupling flow, say) as an image transform:
    ``x = f(z).view(B, C, H, W)``; the pixels are taken row by row, channel after channel.

    Args:
        transform: a ``Transform`` of dimension ``C * H * W``.
        shape: the image shape ``(C, H, W)``.
    """

    def __init__(self, transform: Transform, shape: Sequence[int]):
        shape = _as_shape(shape)
        if not isinstance(transform, Transform):
            raise TypeError(f"transform must be an nfcourse Transform, got "
                            f"{type(transform).__name__}")
        if transform.dim is not None and transform.dim != math.prod(shape):
            raise ValueError(f"the transform works in dimension {transform.dim} but images "
                             f"of shape {shape} hold {math.prod(shape)} pixels")
        super().__init__(shape, (math.prod(shape),))
        self.transform = transform

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x, log_abs_det = self.transform._forward(z)
        return x.reshape(len(x), *self.shape), log_abs_det

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform._inverse(x.reshape(len(x), -1))


class Logit(ImageTransform):
    """The logit pre-processing of pixels in ``[0, 1]`` (Dinh et al. 2017), written from
    base to data: ``x = (sigmoid(z) - a) / (1 - 2a)``; its inverse is
    ``z = logit(a + (1 - 2a) x)``, whose log-det is

        sum_i [log(1 - 2a) - log s_i - log(1 - s_i)],   s_i = a + (1 - 2a) x_i.

    ``a > 0`` keeps ``z`` finite at ``x = 0`` and ``x = 1``. ``forward`` maps all of
    ``R^D`` onto ``(-e, 1 + e)``, ``e = a / (1 - 2a)``, the interval where the inverse is
    defined; ``inverse`` rejects values outside it.

    Args:
        shape: the image shape ``(C, H, W)``.
        alpha: ``a``, in ``[0, 0.5)``; 0.05 as in RealNVP.
    """

    def __init__(self, shape: Sequence[int], alpha: float = 0.05):
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must lie in [0, 0.5), got {alpha!r}; 0.05 is usual")
        super().__init__(shape)
        self.alpha = float(alpha)

    def _check_data(self, x: Tensor, name: str) -> Tensor:
        x = super()._check_data(x, name)
        lo, hi = float(x.detach().min()), float(x.detach().max())
        edge = self.alpha / (1 - 2 * self.alpha)  # the map is defined on (-edge, 1 + edge)
        if not (lo > -edge or (lo == 0 and edge == 0)) or not hi < 1 + edge:
            raise ValueError(f"{name} must hold dequantized pixels in [0, 1], got values in "
                             f"[{lo:.4g}, {hi:.4g}]; divide 8-bit pixels by 256 after adding "
                             "the noise (nfcourse.images.dequantize)")
        return x

    def _log_det(self, s: Tensor) -> Tensor:
        scale = math.log1p(-2 * self.alpha)
        return (scale - torch.log(s) - torch.log1p(-s)).flatten(1).sum(dim=1)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        s = torch.sigmoid(z)
        scale = math.log1p(-2 * self.alpha)
        # log s + log(1 - s) = logsigmoid(z) + logsigmoid(-z), stable in the tails
        log_det = (F.logsigmoid(z) + F.logsigmoid(-z) - scale).flatten(1).sum(dim=1)
        return (s - self.alpha) / (1 - 2 * self.alpha), log_det

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.alpha + (1 - 2 * self.alpha) * x
        return torch.log(s) - torch.log1p(-s), self._log_det(s)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, alpha={self.alpha}"


class Squeeze(ImageTransform):
    """The squeeze of RealNVP, written from base to data: ``inverse`` folds every 2 x 2
    block of pixels into 4 channels, ``(C, H, W) -> (4C, H/2, W/2)``, and ``forward``
    unfolds them. A permutation of the numbers: the log-det is zero.

    Args:
        shape: the data-side image shape ``(C, H, W)``, ``H`` and ``W`` even.
    """

    def __init__(self, shape: Sequence[int]):
        c, h, w = _as_shape(shape)
        if h % 2 or w % 2:
            raise ValueError(f"a squeeze needs an even height and width, got an image of "
                             f"{h} x {w}; pad or crop it, or factor out fewer levels")
        super().__init__((c, h, w), (4 * c, h // 2, w // 2))

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return unsqueeze(z), _zeros(z)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return squeeze(x), _zeros(x)


class ActNorm2d(ImageTransform):
    """Activation normalisation of images: ``x = exp(s_c) z + b_c`` per channel ``c``,
    ``log |det J| = H W sum_c s_c`` (every pixel of a channel is scaled alike).

    Like ``ActNorm``, the first call of ``inverse`` (the data direction) in training mode
    sets ``b`` to the mean and ``exp(s)`` to the standard deviation of each channel over
    the batch and its pixels, so that the output starts standardised; a first call of
    ``forward`` in training mode (sampling) keeps the identity start instead.

    With ``per_pixel=True`` every pixel of every channel gets its own ``s`` and ``b``
    (``log |det J| = sum s`` over ``C H W`` numbers), initialised per pixel over the
    batch.

    Args:
        shape: the image shape ``(C, H, W)``.
        per_pixel: one scale and shift per pixel instead of per channel.
        data_init: initialise from the first data batch; ``False`` starts (and stays,
            until trained) at the identity.

    References: Kingma and Dhariwal 2018.
    """

    def __init__(self, shape: Sequence[int], per_pixel: bool = False,
                 data_init: bool = True):
        super().__init__(shape)
        c, h, w = self.shape
        self.per_pixel = bool(per_pixel)
        size = (c, h, w) if self.per_pixel else (c, 1, 1)
        self.log_scale = nn.Parameter(torch.zeros(size))
        self.shift = nn.Parameter(torch.zeros(size))
        self.register_buffer("initialized", torch.tensor(not data_init))
        self._known_initialized = not data_init

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set ``b_c`` to the mean and ``exp(s_c)`` to the standard deviation of channel
        ``c`` of ``x``, over the batch and the pixels."""
        dims = (0,) if self.per_pixel else (0, 2, 3)
        count = math.prod(x.shape[d] for d in dims)
        if count < 2:
            raise ValueError(f"ActNorm2d initialises from the statistics of its first data "
                             f"batch, which needs at least 2 numbers per "
                             f"{'pixel' if self.per_pixel else 'channel'}, got {count}; "
                             "pass a larger batch")
        self.shift.copy_(x.mean(dim=dims)[0] if self.per_pixel else
                         x.mean(dim=dims).view(-1, 1, 1))
        std = x.std(dim=dims)[0] if self.per_pixel else x.std(dim=dims).view(-1, 1, 1)
        self.log_scale.copy_(torch.log(std.clamp_min(1e-6)))
        self.initialized.fill_(True)

    def _needs_decision(self) -> bool:
        if self._known_initialized or not self.training:
            return False
        self._known_initialized = bool(self.initialized)
        return not self._known_initialized

    def _log_det(self, x: Tensor) -> Tensor:
        pixels = 1 if self.per_pixel else x.shape[2] * x.shape[3]
        return (pixels * self.log_scale.sum()).expand(x.shape[0])

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if self._needs_decision():
            self.initialized.fill_(True)
            self._known_initialized = True
        return z * torch.exp(self.log_scale) + self.shift, self._log_det(z)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self._needs_decision():
            self.initialize(x)
            self._known_initialized = True
        return (x - self.shift) * torch.exp(-self.log_scale), -self._log_det(x)


class InvertibleConv1x1(ImageTransform):
    """Glow's invertible 1 x 1 convolution: at every pixel ``x_{:,i,j} = W z_{:,i,j}``
    with one ``C x C`` matrix ``W``. The Jacobian is block diagonal with ``H W`` copies of
    ``W``, so ``log |det J| = H W log |det W|``.

    With ``lu=True`` (default) ``W = P L (U + diag(sign(s) exp(log|s|)))``: ``P`` a fixed
    permutation, ``L`` unit lower triangular, ``U`` strictly upper triangular, and
    ``log |det W| = sum log|s|`` costs ``O(C)``; otherwise ``W`` is a free matrix and the
    log-det comes from ``torch.linalg.slogdet``. ``W`` starts as a random rotation.

    Args:
        shape: the image shape ``(C, H, W)``.
        lu: the LU parameterisation.
        seed: the seed of the initial rotation (``nfcourse.seeding``).

    References: Kingma and Dhariwal 2018.
    """

    def __init__(self, shape: Sequence[int], lu: bool = True, seed: int | None = 0):
        super().__init__(shape)
        c = self.shape[0]
        w = torch.linalg.qr(torch.randn(c, c, generator=_generator(seed)))[0]
        self.lu = bool(lu)
        if self.lu:
            p, lower, upper = torch.linalg.lu(w)
            s = upper.diagonal()
            self.register_buffer("permutation", p)
            self.register_buffer("sign_s", torch.sign(s))
            self.register_buffer("lower_mask", torch.tril(torch.ones(c, c), -1))
            self.lower = nn.Parameter(lower * self.lower_mask)
            self.upper = nn.Parameter(upper * self.lower_mask.T)
            self.log_s = nn.Parameter(torch.log(s.abs()))
        else:
            self.weight = nn.Parameter(w)

    def matrix(self) -> Tensor:
        """The ``C x C`` matrix ``W``."""
        if not self.lu:
            return self.weight
        eye = torch.eye(len(self.log_s), dtype=self.log_s.dtype, device=self.log_s.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.permutation @ lower @ upper

    def log_abs_det_matrix(self) -> Tensor:
        """``log |det W|``: ``sum log|s|`` with the LU parameterisation."""
        if self.lu:
            return self.log_s.sum()
        return torch.linalg.slogdet(self.weight)[1]

    def _mix(self, t: Tensor, w: Tensor) -> Tensor:
        return torch.einsum("ij,bjhw->bihw", w, t)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        log_det = z.shape[2] * z.shape[3] * self.log_abs_det_matrix()
        return self._mix(z, self.matrix()), log_det.expand(z.shape[0])

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_det = -x.shape[2] * x.shape[3] * self.log_abs_det_matrix()
        return self._mix(x, torch.linalg.inv(self.matrix())), log_det.expand(x.shape[0])

    def extra_repr(self) -> str:
        return f"shape={self.shape}, lu={self.lu}"


def _soft_clamp(h: Tensor, bound: float) -> Tensor:
    return bound * torch.tanh(h / bound)


def conv_conditioner(in_channels: int, out_channels: int, hidden: int = 64,
                     zero_last: bool = True) -> nn.Sequential:
    """Glow's conditioner: a 3 x 3 convolution, ReLU, a 1 x 1 convolution, ReLU and a
    3 x 3 convolution (started at zero with ``zero_last``, so the coupling starts as the
    identity). Zero padding keeps the height and width."""
    if not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"hidden must be a positive integer (channels), got {hidden!r}")
    net = nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(),
        nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
        nn.Conv2d(hidden, out_channels, 3, padding=1))
    if zero_last:
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)
    return net


class ConvAffineCoupling(ImageTransform):
    """Affine coupling of images with a convolutional conditioner:
    ``x_A = z_A``, ``x_B = exp(s) z_B + t`` with ``(h, t) = NN(z_A)`` and the bounded
    log-scale ``s = c tanh(h / c)``; ``log |det J| = sum s`` over the transformed numbers.

    Masks:

    * ``"channel"``: the first ``C // 2`` channels condition and the others are
      transformed (``parity=1`` swaps the roles); needs ``C >= 2``;
    * ``"checkerboard"``: the pixels ``(i, j)`` with ``(i + j) % 2 == parity`` are
      transformed in every channel, the others condition; the conditioner sees the image
      with the transformed pixels set to zero.

    Args:
        shape: the image shape ``(C, H, W)``.
        mask: ``"channel"`` or ``"checkerboard"``.
        parity: 0 or 1, which half is transformed.
        hidden: the conditioner's hidden channels.
        scale_bound: ``c``, the largest log-scale.
        context_channels: channels of an extra input to the conditioner (for a conditional
            flow such as ``VariationalDequantizer``); 0 for none.
        zero_init: start as the identity.
    """

    def __init__(self, shape: Sequence[int], mask: str = "channel", parity: int = 0,
                 hidden: int = 64, scale_bound: float = 3.0, context_channels: int = 0,
                 zero_init: bool = True):
        super().__init__(shape)
        c, h, w = self.shape
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1, got {parity!r}")
        if not scale_bound > 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound!r}")
        if mask == "channel":
            if c < 2:
                raise ValueError(f"a channel mask needs at least 2 channels, got shape "
                                 f"{self.shape}; use mask='checkerboard' or squeeze first")
            first = torch.arange(c) < c // 2
            transformed = first if parity else ~first
            self.register_buffer("trans_channels", transformed.nonzero().flatten())
            self.register_buffer("cond_channels", (~transformed).nonzero().flatten())
            n_in, n_out = len(self.cond_channels), 2 * len(self.trans_channels)
        elif mask == "checkerboard":
            board = checkerboard_mask(h, w, parity).view(1, 1, h, w)
            self.register_buffer("board", board.to(torch.get_default_dtype()))
            n_in, n_out = c, 2 * c
        else:
            raise ValueError(f"mask must be 'channel' or 'checkerboard', got {mask!r}")
        self.mask, self.parity = mask, parity
        self.scale_bound = float(scale_bound)
        self.context_channels = int(context_channels)
        self.conditioner = conv_conditioner(n_in + self.context_channels, n_out, hidden,
                                            zero_init)

    def _net(self, cond: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.context_channels:
            cond = torch.cat([cond, context], dim=1)
        raw, shift = self.conditioner(cond).chunk(2, dim=1)
        return _soft_clamp(raw, self.scale_bound), shift

    def couple(self, z: Tensor, inverse: bool = False, context: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
        """The layer (``inverse=False``: base to data) with an optional conditioner input
        ``context`` of shape ``(B, context_channels, H, W)``; no input checks."""
        if self.mask == "channel":
            z_a = z.index_select(1, self.cond_channels)
            z_b = z.index_select(1, self.trans_channels)
            s, t = self._net(z_a, context)
            x_b = (z_b - t) * torch.exp(-s) if inverse else z_b * torch.exp(s) + t
            x = z.index_copy(1, self.trans_channels, x_b)
        else:
            m = self.board
            s, t = self._net(z * (1 - m), context)
            s, t = s * m, t * m  # zero where the pixel conditions: the identity there
            x = (z - t) * torch.exp(-s) if inverse else z * torch.exp(s) + t
        log_det = s.flatten(1).sum(dim=1)
        return x, -log_det if inverse else log_det

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.couple(z, inverse=False)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.couple(x, inverse=True)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, mask={self.mask!r}, parity={self.parity}"


class MultiScale(ImageTransform):
    """The multi-scale architecture (Dinh et al. 2017; Glow): blocks ``g_1, ..., g_K`` of
    image transforms, written from the data side. In the normalizing direction, block
    ``g_k`` maps its input to ``h_k`` of shape ``(C_k, H_k, W_k)``; for ``k < K`` the
    first half of its channels is factored out as a part ``z_k`` of the latent vector and
    the second half goes on into ``g_{k+1}``; the last block's output is ``z_K``. The latent
    vector is ``z = (z_1, ..., z_K)``, each part flattened, so the base is ``N(0, I_D)``.

    Every factored-out number is a coordinate of ``z`` directly, so the Jacobian is block
    triangular and ``log |det| = sum_k log |det g_k|``.

    Args:
        blocks: the image transforms ``g_1, ..., g_K`` from the data side; block ``k + 1``
            takes images of shape ``(C_k / 2, H_k, W_k)``.
    """

    def __init__(self, blocks: Sequence[ImageTransform]):
        blocks = list(blocks)
        if not blocks:
            raise ValueError("MultiScale needs at least one block")
        for k, block in enumerate(blocks):
            if not isinstance(block, ImageTransform) or len(block.latent_shape) != 3:
                raise TypeError(f"block {k} must be an ImageTransform with an image-shaped "
                                f"base side, got {type(block).__name__}")
        sizes = []
        for k in range(len(blocks) - 1):
            c, h, w = blocks[k].latent_shape
            if c % 2:
                raise ValueError(f"block {k} outputs {c} channels; half of them are "
                                 "factored out, so the count must be even")
            if blocks[k + 1].shape != (c // 2, h, w):
                raise ValueError(f"block {k + 1} takes images of shape "
                                 f"{blocks[k + 1].shape}, but block {k} passes on "
                                 f"{(c // 2, h, w)} (half of its {c} channels)")
            sizes.append(c // 2 * h * w)
        sizes.append(math.prod(blocks[-1].latent_shape))
        shape = blocks[0].shape
        super().__init__(shape, (math.prod(shape),))
        self.blocks = nn.ModuleList(blocks)
        self.sizes = sizes

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        parts, total = [], _zeros(x)
        for k, block in enumerate(self.blocks):
            h, log_det = block._inverse(x)
            total = total + log_det
            if k < len(self.blocks) - 1:
                out, x = h.chunk(2, dim=1)
                parts.append(out.reshape(len(out), -1))
            else:
                parts.append(h.reshape(len(h), -1))
        return torch.cat(parts, dim=1), total

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        parts = z.split(self.sizes, dim=1)
        total = _zeros(z)
        x = None
        for k in reversed(range(len(self.blocks))):
            block = self.blocks[k]
            c, h, w = block.latent_shape
            if k == len(self.blocks) - 1:
                h_k = parts[k].reshape(len(z), c, h, w)
            else:
                h_k = torch.cat([parts[k].reshape(len(z), c // 2, h, w), x], dim=1)
            x, log_det = block._forward(h_k)
            total = total + log_det
        return x, total

    def extra_repr(self) -> str:
        return f"shape={self.shape}, factored out={self.sizes}"


# --------------------------------------------------------------------------------------
# The flow model on images
# --------------------------------------------------------------------------------------

class ImageFlow(Flow):
    """A flow on images: ``log_prob`` takes ``(B, C, H, W)`` and ``sample`` returns it.

    The transform is an ``ImageTransform`` whose base side is a flat vector ``(D,)``; the
    base distribution defaults to ``StandardNormal(D)``. Everything else is ``Flow``.

    Args:
        transform: the map from base to data.
        base: the base distribution on ``R^D``.
    """

    def __init__(self, transform: ImageTransform, base: BaseDistribution | None = None):
        if not isinstance(transform, ImageTransform) or len(transform.latent_shape) != 1:
            raise TypeError(
                f"transform must be an ImageTransform whose base side is a flat vector "
                f"(D,) (MultiScale, FlatToImage, or an ImageCompose ending in one), got "
                f"{type(transform).__name__}")
        super().__init__(transform, base)
        self.shape = transform.shape

    def _check(self, x: Tensor, name: str = "x") -> Tensor:
        return self.transform._check_data(x, name)

    def sample(self, n: int, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        """``n`` images ``x = f(T z)``, ``z ~ p_Z``: ``temperature`` ``T < 1`` draws from
        the centre of the base (Kingma and Dhariwal 2018)."""
        n = check_positive_int(n, "n")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        z = self.base.sample(n, generator=generator) * temperature
        return self.transform._forward(z)[0]

    def encode(self, x: Tensor) -> Tensor:
        """The latent vectors ``z = f^{-1}(x)`` of images ``x``, shape ``(B, D)``."""
        return self.transform._inverse(self._check(x))[0]

    def decode(self, z: Tensor) -> Tensor:
        """The images ``x = f(z)`` of latent vectors ``z`` of shape ``(B, D)``."""
        z = check_batch(z, self.dim, "z", dtype=module_dtype(self), owner="the flow")
        return self.transform._forward(z)[0]


def glow(shape: Sequence[int] = (1, 28, 28), levels: int = 2, steps: int = 4,
         hidden: int = 64, lu: bool = True, scale_bound: float = 3.0,
         alpha: float = 0.05, seed: int | None = 0) -> ImageFlow:
    """A multi-scale Glow on images with pixels in ``[0, 1]``.

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
        alpha: the ``Logit`` pre-processing's ``a``.
        seed: as everywhere in the package (``nfcourse.seeding``).
    """
    c, h, w = _as_shape(shape)
    levels, steps = check_positive_int(levels, "levels"), check_positive_int(steps, "steps")
    if h % 2 ** levels or w % 2 ** levels:
        raise ValueError(f"{levels} levels halve the height and width {levels} times, so "
                         f"they must be divisible by {2 ** levels}; got {h} x {w}. Use "
                         f"fewer levels")
    blocks = []
    with seeded(seed):
        for level in range(levels):
            squeeze_layer = Squeeze((c, h, w))
            c, h, w = squeeze_layer.latent_shape
            layers: list[ImageTransform] = [squeeze_layer]  # from the data side
            for k in range(steps):
                layers += [
                    ActNorm2d((c, h, w)),
                    InvertibleConv1x1((c, h, w), lu=lu,
                                      seed=None if seed is None else seed + 100 * level + k),
                    ConvAffineCoupling((c, h, w), "channel", parity=k % 2, hidden=hidden,
                                       scale_bound=scale_bound)]
            blocks.append(ImageCompose(*reversed(layers)))
            c = c // 2
    multiscale = MultiScale(blocks)
    return ImageFlow(ImageCompose(multiscale, Logit(multiscale.shape, alpha)))


def flat_image_flow(transform: Transform, shape: Sequence[int] = (1, 28, 28),
                    alpha: float = 0.05) -> ImageFlow:
    """A flat flow (chapter 5's ``coupling_flow(...).transform``) on images: ``Logit``
    pre-processing, the pixels flattened row by row, then ``transform``."""
    flat = FlatToImage(transform, shape)
    return ImageFlow(ImageCompose(flat, Logit(flat.shape, alpha)))


# --------------------------------------------------------------------------------------
# Dequantization
# --------------------------------------------------------------------------------------

def pixels_to_levels(x: Tensor, levels: int = 256) -> Tensor:
    """Grey levels in ``[0, 1]`` (as ``load_mnist`` returns them, ``k / (L - 1)``) as the
    integers ``0, ..., L - 1`` they encode, in the same dtype."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor of grey levels in [0, 1]")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError(f"x must hold grey levels in [0, 1], got [{float(x.min()):.4g}, "
                         f"{float(x.max()):.4g}]")
    return torch.round(x * (levels - 1))


class VariationalDequantizer(nn.Module):
    """Variational dequantization (Ho et al. 2019): noise ``u ~ q(u | x)`` on ``(0, 1)^D``
    drawn by a conditional flow instead of ``U[0, 1)^D``.

    ``eps ~ N(0, I)`` goes through checkerboard ``ConvAffineCoupling`` layers whose
    conditioners also see the image ``x`` (rescaled to ``[-1, 1]``), then through a
    sigmoid; ``log q(u | x)`` follows by the change of variables. The bound of the
    discrete likelihood becomes ``-log P(x) <= E_q[-log p((x + u) / L) + log q(u | x)]
    + D log L``; uniform noise is the special case ``log q = 0``.

    Args:
        shape: the image shape ``(C, H, W)``.
        levels: ``L``, the number of grey levels.
        layers: the number of coupling layers.
        hidden: their conditioners' hidden channels.
        seed: as everywhere in the package.
    """

    def __init__(self, shape: Sequence[int], levels: int = 256, layers: int = 2,
                 hidden: int = 16, seed: int | None = 0):
        super().__init__()
        self.shape = _as_shape(shape)
        self.levels = int(levels)
        layers = check_positive_int(layers, "layers")
        with seeded(seed):
            self.couplings = nn.ModuleList(
                ConvAffineCoupling(self.shape, "checkerboard", parity=k % 2, hidden=hidden,
                                   context_channels=self.shape[0])
                for k in range(layers))

    def forward(self, x: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor]:
        """Noise ``u`` (shape of ``x``) for integer pixels ``x`` in ``0..L-1`` and
        ``log q(u | x)``, shape ``(B,)``."""
        x = check_images(x, self.shape, "x", module_dtype(self), "the dequantizer")
        context = 2 * x / (self.levels - 1) - 1
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        log_q = -0.5 * (eps**2).flatten(1).sum(1) - 0.5 * eps[0].numel() * math.log(2 * math.pi)
        h = eps
        for layer in self.couplings:
            h, log_det = layer.couple(h, inverse=False, context=context)
            log_q = log_q - log_det
        log_q = log_q - (F.logsigmoid(h) + F.logsigmoid(-h)).flatten(1).sum(1)
        return torch.sigmoid(h), log_q


def dequantization_nll(flow: ImageFlow, pixels: Tensor, levels: int = 256,
                       dequantizer: VariationalDequantizer | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
    """The per-image bound ``-log p(y) + log q(u | x)`` in nats, ``y = (x + u) / L``, for
    integer pixels ``x`` of shape ``(B, C, H, W)``: uniform noise without ``dequantizer``
    (``log q = 0``), variational noise with it. Add ``D ln L`` and divide by ``D ln 2``
    (``nfcourse.images.bits_per_dim``) for bits per dimension."""
    if not isinstance(flow, ImageFlow):
        raise TypeError(f"flow must be an ImageFlow, got {type(flow).__name__}")
    pixels = check_images(pixels, flow.shape, "pixels", module_dtype(flow), "the flow")
    if bool((pixels != pixels.round()).any()) or float(pixels.min()) < 0 \
            or float(pixels.max()) > levels - 1:
        raise ValueError(f"pixels must hold integers 0..{levels - 1}, got values in "
                         f"[{float(pixels.min()):.4g}, {float(pixels.max()):.4g}]; "
                         "convert grey levels in [0, 1] with pixels_to_levels")
    if dequantizer is None:
        u = torch.rand(pixels.shape, generator=generator, dtype=pixels.dtype,
                       device=pixels.device)
        log_q = _zeros(pixels)
    else:
        u, log_q = dequantizer(pixels, generator)
    y = ((pixels + u) / levels).clamp(0, 1)
    return -flow._log_prob(y) + log_q


# --------------------------------------------------------------------------------------
# Pretrained weights
# --------------------------------------------------------------------------------------

#: The settings of ``glow`` for the weights that ``tools/train_image_flows.py`` trains.
PRETRAINED_GLOW_SETTINGS = {"levels": 2, "steps": 4, "hidden": 16}


def pretrained_glow_paths() -> tuple[Path, Path]:
    """The paths of the pretrained Glow's weights and of its results file, inside the
    installed package (``nfcourse/pretrained/glow_mnist.pt`` and ``glow_mnist.json``)."""
    folder = Path(__file__).resolve().parent.parent / "pretrained"
    return folder / "glow_mnist.pt", folder / "glow_mnist.json"


def pretrained_glow() -> tuple[ImageFlow, dict]:
    """Chapter 9's Glow trained for a longer budget on the shipped MNIST digits, and the
    record of its training (steps, batch size, seed, wall time, machine, torch version,
    train and test bits per dimension).

    The weights are loaded with ``torch.load(..., weights_only=True)`` into
    ``glow((1, 28, 28), **PRETRAINED_GLOW_SETTINGS)``, and the flow is returned in
    evaluation mode. ``python tools/train_image_flows.py`` (in the repository) writes them.

    Raises:
        FileNotFoundError: when the weights or the results file are missing.
    """
    weights, results = pretrained_glow_paths()
    for path in (weights, results):
        if not path.is_file():
            raise FileNotFoundError(
                f"the pretrained Glow needs {path}, which is missing from this installation "
                "of nfcourse; reinstall the package, or write it by running "
                "`python tools/train_image_flows.py` in the repository")
    flow = glow((1, 28, 28), **PRETRAINED_GLOW_SETTINGS)  # weights replaced below
    state = torch.load(weights, map_location="cpu", weights_only=True)
    flow.load_state_dict(state)
    for module in flow.modules():  # the loaded ActNorm2d layers are initialised
        if isinstance(module, ActNorm2d):
            module._known_initialized = bool(module.initialized)
    flow.eval()
    return flow, json.loads(results.read_text())
