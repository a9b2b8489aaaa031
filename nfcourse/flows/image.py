"""Flows on images (chapter 9): Glow's layers and its multi-scale architecture.

Images are batches of shape ``(B, C, H, W)``, and an image layer is an ordinary
``nfcourse.Transform`` whose ``event_shape`` is ``(C, H, W)``: ``forward(z) ->
(x, log_abs_det)`` maps base to data, ``inverse`` normalizes, log-dets have shape
``(B,)``. A layer that reshapes has a ``latent_shape`` of its own on the base side: a
squeeze turns ``(C, H, W)`` into ``(4C, H/2, W/2)``, and ``MultiScale`` and
``FlatToImage`` end in the flat ``(D,)`` of a ``StandardNormal(D)`` base. ``Compose``
checks that the shapes of consecutive layers fit, and ``nfcourse.Flow`` takes images in
``log_prob`` and returns them from ``sample``.

The layers, all written as ``x = f(z)`` from base to data:

* ``Logit``: ``x = (sigmoid(z) - a) / (1 - 2a)`` maps logit space onto ``[0, 1]``; its
  inverse is the pre-processing ``z = logit(a + (1 - 2a) x)`` of dequantized pixels;
* ``Squeeze``: its inverse folds every 2 x 2 block of pixels into 4 channels;
* ``ActNorm2d`` (``nfcourse.flows.actnorm``): ``x = exp(s_c) z + b_c`` per channel,
  ``log |det| = H W sum_c s_c``, initialised from the first data batch;
* ``InvertibleConv1x1``: ``x_{:,i,j} = W z_{:,i,j}`` at every pixel,
  ``log |det| = H W log |det W|``, with ``W = P L (U + diag(sign(s) exp(log|s|)))``;
* ``ConvAffineCoupling``: RealNVP's affine coupling with a convolutional conditioner, a
  ``"channel"`` mask (half the channels condition) or a ``"checkerboard"`` mask;
* ``MultiScale``: blocks of layers, half the channels factored out after each block
  (Dinh et al. 2017), the latent vector the concatenation of all factored-out parts;
* ``FlatToImage``: a flat transform of ``R^D`` on images flattened row by row.

The builders ``glow`` and ``flat_image_flow`` are in ``nfcourse.flows.glow``;
dequantization (``dequantization_nll``, ``VariationalDequantizer``) in
``nfcourse.flows.dequantization``; the pretrained Glow in ``nfcourse.pretrained``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Transform
from ..seeding import generator as _generator
from ..validation import check_positive_int, check_shape
from .masks import checkerboard_mask

__all__ = [
    "squeeze",
    "unsqueeze",
    "FlatToImage",
    "Logit",
    "Squeeze",
    "InvertibleConv1x1",
    "conv_conditioner",
    "ConvAffineCoupling",
    "MultiScale",
]


def _image_shape(shape: Sequence[int], name: str = "event_shape") -> tuple[int, int, int]:
    """``shape`` as an image shape ``(C, H, W)`` of positive integers."""
    shape = check_shape(shape, name)
    if len(shape) != 3:
        raise ValueError(
            f"{name} must be an image shape (C, H, W) of three positive integers, got {shape}"
        )
    return shape


def _zeros(t: Tensor) -> Tensor:
    return t.new_zeros(t.shape[0])


def _check_overflow(y: Tensor, log_det: Tensor, where: str) -> None:
    # One reduction: a multi-scale flow whose parameters are too large for its dtype
    # overflows to inf (or inf - inf = NaN) inside its layers; say so rather than return it.
    if not bool(torch.isfinite(y.sum() + log_det.sum())):
        raise ValueError(
            f"{where} overflowed: the layers produced non-finite values (inf or NaN) in "
            f"{y.dtype}; the flow's scales are too large for this dtype. Use smaller "
            "parameters (a smaller learning rate or scale_bound), or the model in float64 "
            "(.double())"
        )


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


class FlatToImage(Transform):
    """A flat transform of ``R^D`` (chapter 5's coupling flow, say) as an image transform:
    ``x = f(z).view(B, C, H, W)``; the pixels are taken row by row, channel after channel.
    Its base side is the flat ``(D,)``; a context is passed on to a conditional ``f``.

    Args:
        transform: a ``Transform`` of dimension ``D = C * H * W``.
        event_shape: the image shape ``(C, H, W)``.
    """

    def __init__(self, transform: Transform, event_shape: Sequence[int]) -> None:
        shape = _image_shape(event_shape)
        if not isinstance(transform, Transform):
            raise TypeError(
                f"transform must be an nfcourse Transform, got {type(transform).__name__}"
            )
        if transform.dim is not None and transform.dim != math.prod(shape):
            raise ValueError(
                f"the transform works in dimension {transform.dim} but images "
                f"of shape {shape} hold {math.prod(shape)} pixels"
            )
        super().__init__(
            event_shape=shape, latent_shape=(math.prod(shape),), context_dim=transform.context_dim
        )
        self.transform = transform

    def _forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, log_abs_det = self.transform._map(z, context)
        return x.reshape(len(x), *self.event_shape), log_abs_det

    def _inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform._map(x.reshape(len(x), -1), context, inverse=True)


#: The smallest ``alpha`` of ``Logit``: above float32's resolution ``1.2e-7``, so that every
#: pixel in ``[0, 1]`` keeps ``s = a + (1 - 2a) x`` clear of the clamp of ``Logit.inverse``.
MIN_ALPHA = 1e-6


class Logit(Transform):
    """The logit pre-processing of pixels in ``[0, 1]`` (Dinh et al. 2017), written from
    base to data: ``x = (sigmoid(z) - a) / (1 - 2a)``; its inverse is
    ``z = logit(a + (1 - 2a) x)``, whose log-det is

        sum_i [log(1 - 2a) - log s_i - log(1 - s_i)],   s_i = a + (1 - 2a) x_i.

    ``a > 0`` keeps ``z`` finite at ``x = 0`` and ``x = 1``; ``a = 0`` is refused (a black
    pixel would have ``z = -inf``). ``forward`` maps ``R^D`` onto the open interval
    ``(-e, 1 + e)``, ``e = a / (1 - 2a)``; in floating point ``sigmoid(z)`` rounds to 0 or 1
    once ``|z|`` exceeds about 36.7 (float64) or 16.6 (float32), so the forward's image is
    the closed ``[-e, 1 + e]``, and ``inverse`` accepts exactly that (up to rounding) and
    rejects anything further out. It clamps ``s`` to ``[eps, 1 - eps]`` (``eps`` the
    dtype's machine epsilon), so it returns ``|z| <= logit(1 - eps)``, 36.04 in float64 and
    15.94 in float32, with a finite log-det. The bound: for ``|z|`` below it a round trip
    is exact up to the conditioning ``eps / (s (1 - s)) ~ eps e^|z|`` of the inverse; beyond
    it ``x`` no longer tells ``z`` apart, and ``inverse(forward(z)) = sign(z) logit(1 -
    eps)``. Pixels in ``[0, 1]`` never meet the clamp (``s >= a >= 1e-6``). The forward's
    log-det uses ``logsigmoid``, exact in the far tails.

    Args:
        event_shape: the image shape ``(C, H, W)``.
        alpha: ``a``, in ``[1e-6, 0.5)``; 0.05 as in RealNVP.
    """

    def __init__(self, event_shape: Sequence[int], alpha: float = 0.05) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, int | float):
            raise TypeError(f"alpha must be a number in [1e-6, 0.5), got {alpha!r}")
        if not MIN_ALPHA <= alpha < 0.5:
            raise ValueError(
                f"alpha must lie in [{MIN_ALPHA:g}, 0.5), got {alpha!r}: alpha = 0 sends "
                "black pixels (x = 0) to z = -inf and white ones (x = 1) to +inf; use the "
                "usual alpha=0.05, or a small positive alpha such as 1e-6"
            )
        super().__init__(event_shape=_image_shape(event_shape))
        self.alpha = float(alpha)

    def _check_domain(self, s: Tensor, x: Tensor) -> None:
        # s = a + (1 - 2a) x must lie in [0, 1]: x in the closed image [-e, 1 + e] of the
        # forward; a few ulps of slack absorb the rounding of the forward's division.
        slack = 4 * torch.finfo(s.dtype).eps
        if bool(((s < -slack) | (s > 1 + slack)).any()):
            edge = self.alpha / (1 - 2 * self.alpha)
            lo, hi = float(x.detach().min()), float(x.detach().max())
            raise ValueError(
                f"x must hold dequantized pixels in [0, 1] (the logit with alpha="
                f"{self.alpha:g} accepts [{-edge:.4g}, {1 + edge:.4g}]), got values in "
                f"[{lo:.4g}, {hi:.4g}]; divide 8-bit pixels by 256 after adding "
                "the noise (nfcourse.images.dequantize)"
            )

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        _check_overflow(z, z.new_zeros(1), "the logit's input (the flow before it)")
        s = torch.sigmoid(z)
        scale = math.log1p(-2 * self.alpha)
        # log s + log(1 - s) = logsigmoid(z) + logsigmoid(-z), stable in the tails
        log_det = (F.logsigmoid(z) + F.logsigmoid(-z) - scale).flatten(1).sum(dim=1)
        return (s - self.alpha) / (1 - 2 * self.alpha), log_det

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.alpha + (1 - 2 * self.alpha) * x
        self._check_domain(s, x)  # a domain check, as piecewise maps in strict mode do
        eps = torch.finfo(s.dtype).eps
        s = s.clamp(eps, 1 - eps)
        log_s, log_1ms = torch.log(s), torch.log1p(-s)
        log_det = (math.log1p(-2 * self.alpha) - log_s - log_1ms).flatten(1).sum(dim=1)
        return log_s - log_1ms, log_det

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, alpha={self.alpha}"


class Squeeze(Transform):
    """The squeeze of RealNVP, written from base to data: ``inverse`` folds every 2 x 2
    block of pixels into 4 channels, ``(C, H, W) -> (4C, H/2, W/2)``, and ``forward``
    unfolds them. A permutation of the numbers: the log-det is zero.

    Args:
        event_shape: the data-side image shape ``(C, H, W)``, ``H`` and ``W`` even.
    """

    def __init__(self, event_shape: Sequence[int]) -> None:
        c, h, w = _image_shape(event_shape)
        if h % 2 or w % 2:
            raise ValueError(
                f"a squeeze needs an even height and width, got an image of "
                f"{h} x {w}; pad or crop it, or factor out fewer levels"
            )
        super().__init__(event_shape=(c, h, w), latent_shape=(4 * c, h // 2, w // 2))

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return unsqueeze(z), _zeros(z)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return squeeze(x), _zeros(x)


class InvertibleConv1x1(Transform):
    """Glow's invertible 1 x 1 convolution: at every pixel ``x_{:,i,j} = W z_{:,i,j}``
    with one ``C x C`` matrix ``W``. The Jacobian is block diagonal with ``H W`` copies of
    ``W``, so ``log |det J| = H W log |det W|``.

    With ``lu=True`` (default) ``W = P L (U + diag(sign(s) exp(log|s|)))``: ``P`` a fixed
    permutation, ``L`` unit lower triangular, ``U`` strictly upper triangular, and
    ``log |det W| = sum log|s|`` costs ``O(C)``; otherwise ``W`` is a free matrix and the
    log-det comes from ``torch.linalg.slogdet``. ``W`` starts as a random rotation.

    Args:
        event_shape: the image shape ``(C, H, W)``.
        lu: the LU parameterisation.
        seed: the seed of the initial rotation (``nfcourse.seeding``).

    References: Kingma and Dhariwal 2018.
    """

    def __init__(self, event_shape: Sequence[int], lu: bool = True, seed: int | None = 0) -> None:
        super().__init__(event_shape=_image_shape(event_shape))
        c = self.event_shape[0]
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
        inverse, info = torch.linalg.inv_ex(self.matrix())
        if int(info) != 0 or not bool(torch.isfinite(inverse).all()):
            raise FloatingPointError(
                f"the 1 x 1 convolution's {len(inverse)} x {len(inverse)} matrix W cannot be "
                f"inverted in {inverse.dtype}: it is singular to working precision (its LU "
                "parameters are too large for this dtype). Convert the flow and the data "
                "with .double(), or train with a smaller learning rate"
            )
        return self._mix(x, inverse), log_det.expand(x.shape[0])

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, lu={self.lu}"


def _soft_clamp(h: Tensor, bound: float) -> Tensor:
    return bound * torch.tanh(h / bound)


def conv_conditioner(
    in_channels: int, out_channels: int, hidden: int = 64, zero_last: bool = True
) -> nn.Sequential:
    """Glow's conditioner: a 3 x 3 convolution, ReLU, a 1 x 1 convolution, ReLU and a
    3 x 3 convolution (started at zero with ``zero_last``, so the coupling starts as the
    identity). Zero padding keeps the height and width."""
    hidden = check_positive_int(hidden, "hidden")
    net = nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, 1),
        nn.ReLU(),
        nn.Conv2d(hidden, out_channels, 3, padding=1),
    )
    if zero_last:
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)
    return net


class ConvAffineCoupling(Transform):
    """Affine coupling of images with a convolutional conditioner:
    ``x_A = z_A``, ``x_B = exp(s) z_B + t`` with ``(h, g) = NN(z_A)``, the bounded
    log-scale ``s = c tanh(h / c)`` and the shift ``t = g``, or ``t = b tanh(g / b)`` with a
    ``shift_bound`` ``b``; ``log |det J| = sum s`` over the transformed numbers.

    A ReLU conditioner's output grows without limit with its input, so on an image far
    from the training data an unbounded shift can throw a latent number hundreds of
    standard deviations out (chapter 9 shows it happen); ``shift_bound`` caps that.

    Masks:

    * ``"channel"``: the first ``C // 2`` channels condition and the others are
      transformed (``parity=1`` swaps the roles); needs ``C >= 2``;
    * ``"checkerboard"``: the pixels ``(i, j)`` with ``(i + j) % 2 == parity`` are
      transformed in every channel, the others condition; the conditioner sees the image
      with the transformed pixels set to zero.

    Args:
        event_shape: the image shape ``(C, H, W)``.
        mask: ``"channel"`` or ``"checkerboard"``.
        parity: 0 or 1, which half is transformed.
        hidden: the conditioner's hidden channels.
        scale_bound: ``c``, the largest log-scale.
        shift_bound: ``b``, the largest shift, or ``None`` for an unbounded shift.
        context_channels: channels of an extra input to the conditioner (for a conditional
            flow such as ``VariationalDequantizer``); 0 for none.
        zero_init: start as the identity.
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        mask: str = "channel",
        parity: int = 0,
        hidden: int = 64,
        scale_bound: float = 3.0,
        context_channels: int = 0,
        zero_init: bool = True,
        shift_bound: float | None = None,
    ) -> None:
        super().__init__(event_shape=_image_shape(event_shape))
        c, h, w = self.event_shape
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1, got {parity!r}")
        if not scale_bound > 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound!r}")
        if shift_bound is not None and not (
            isinstance(shift_bound, (int, float))
            and not isinstance(shift_bound, bool)
            and 0 < shift_bound < math.inf
        ):
            raise ValueError(
                f"shift_bound must be a positive finite number or None (an unbounded shift), "
                f"got {shift_bound!r}"
            )
        self.shift_bound = None if shift_bound is None else float(shift_bound)
        if mask == "channel":
            if c < 2:
                raise ValueError(
                    f"a channel mask needs at least 2 channels, got shape "
                    f"{self.event_shape}; use mask='checkerboard' or squeeze first"
                )
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
        self.context_channels = (
            0
            if isinstance(context_channels, int)
            and not isinstance(context_channels, bool)
            and context_channels == 0
            else check_positive_int(
                context_channels, "context_channels", "channels of the conditioner's context"
            )
        )
        self.conditioner = conv_conditioner(n_in + self.context_channels, n_out, hidden, zero_init)

    def _check_coupling_context(self, context: object, z: Tensor) -> None:
        # ``couple`` runs inside VariationalDequantizer on every call: shape checks only.
        if not self.context_channels:
            if context is not None:
                raise ValueError(
                    "this coupling takes no context (context_channels=0), got one; build it "
                    "with context_channels=C to feed the conditioner a context, or leave "
                    "context out"
                )
            return
        b, _, h, w = z.shape
        expected = (b, self.context_channels, h, w)
        if context is None:
            raise ValueError(
                f"this coupling has context_channels={self.context_channels} and needs a "
                f"context: call couple(z, context=...) with a tensor of shape {expected} "
                "(batch, context channels, height, width)"
            )
        if not isinstance(context, Tensor) or tuple(context.shape) != expected:
            got = (
                f"shape {tuple(context.shape)}"
                if isinstance(context, Tensor)
                else type(context).__name__
            )
            raise ValueError(
                f"context must have shape {expected} (one image of {self.context_channels} "
                f"channels per input, of the input's height and width), got {got}"
            )
        if context.dtype != z.dtype:
            raise TypeError(
                f"context is {context.dtype} but the input is {z.dtype}; convert the context "
                f"with .to({z.dtype})"
            )

    def _net(self, cond: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.context_channels:
            cond = torch.cat([cond, context], dim=1)
        raw, shift = self.conditioner(cond).chunk(2, dim=1)
        if self.shift_bound is not None:
            shift = _soft_clamp(shift, self.shift_bound)
        return _soft_clamp(raw, self.scale_bound), shift

    def couple(
        self, z: Tensor, inverse: bool = False, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The layer (``inverse=False``: base to data) with an optional conditioner input
        ``context`` of shape ``(B, context_channels, H, W)``, needed when the layer was built
        with ``context_channels > 0``; the context's shape and dtype are checked, ``z`` is
        not."""
        self._check_coupling_context(context, z)
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
        return f"event_shape={self.event_shape}, mask={self.mask!r}, parity={self.parity}"


class MultiScale(Transform):
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

    def __init__(self, blocks: Sequence[Transform]) -> None:
        blocks = list(blocks)
        if not blocks:
            raise ValueError("MultiScale needs at least one block")
        for k, block in enumerate(blocks):
            if (
                not isinstance(block, Transform)
                or block.event_shape is None
                or len(block.event_shape) != 3
                or len(block.latent_shape) != 3
            ):
                raise TypeError(
                    f"block {k} must be a Transform of images with an "
                    f"image-shaped base side, got {type(block).__name__}"
                )
            if block.context_dim:
                raise ValueError(
                    f"block {k} is conditional (context_dim="
                    f"{block.context_dim}); MultiScale takes no context"
                )
        sizes = []
        for k in range(len(blocks) - 1):
            c, h, w = blocks[k].latent_shape
            if c % 2:
                raise ValueError(
                    f"block {k} outputs {c} channels; half of them are "
                    "factored out, so the count must be even"
                )
            if blocks[k + 1].event_shape != (c // 2, h, w):
                raise ValueError(
                    f"block {k + 1} takes images of shape "
                    f"{blocks[k + 1].event_shape}, but block {k} passes on "
                    f"{(c // 2, h, w)} (half of its {c} channels)"
                )
            sizes.append(c // 2 * h * w)
        sizes.append(math.prod(blocks[-1].latent_shape))
        shape = blocks[0].event_shape
        super().__init__(event_shape=shape, latent_shape=(math.prod(shape),))
        self.blocks = nn.ModuleList(blocks)
        self.sizes = sizes

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        parts, total = [], _zeros(x)
        for k, block in enumerate(self.blocks):
            h, log_det = block._map(x, inverse=True)
            total = total + log_det
            if k < len(self.blocks) - 1:
                out, x = h.chunk(2, dim=1)
                parts.append(out.reshape(len(out), -1))
            else:
                parts.append(h.reshape(len(h), -1))
        z = torch.cat(parts, dim=1)
        _check_overflow(z, total, "MultiScale.inverse")
        return z, total

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
            x, log_det = block._map(h_k)
            total = total + log_det
        _check_overflow(x, total, "MultiScale.forward")
        return x, total

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, factored out={self.sizes}"
