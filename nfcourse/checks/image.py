"""Feedback for the exercises of chapter 9 (flows on images).

* ``check_squeeze``: the squeeze ``(B, C, H, W) -> (B, 4C, H/2, W/2)`` in the channel order
  of ``nfcourse.flows.image.squeeze``, and its inverse;
* ``check_conv1x1``: the 1 x 1 convolution ``x_{:,i,j} = W z_{:,i,j}`` and its log-det
  ``H W log |det W|``;
* ``check_batch_bits_per_dim``: dequantize a batch with given noise, evaluate a flow and
  report bits per dimension;
* ``check_fit_glow``: a Glow trained on 14 x 14 digits to a goal in bits per dimension.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import Flow
from ..flows.dequantization import dequantization_nll, pixels_to_levels
from ..flows.glow import glow
from ..flows.image import squeeze
from ..images import bits_per_dim as _bits_per_dim
from . import ExerciseError, Slip, as_number, as_tensor, check_gradients, compare, run
from ._training import Goal, Measurement, check_fit

__all__ = [
    "GLOW_GOAL",
    "GLOW_STEPS",
    "check_batch_bits_per_dim",
    "check_conv1x1",
    "check_fit_glow",
    "check_squeeze",
    "make_image_flow",
    "small_digits",
]


# --- Exercise: the squeeze ----------------------------------------------------------------


def _squeeze_slips(x: Tensor) -> list[Slip]:
    b, c, h, w = x.shape
    six = x.reshape(b, c, h // 2, 2, w // 2, 2)
    return [
        Slip(
            "a plain reshape to (B, 4C, H/2, W/2) does not gather 2 x 2 blocks: it cuts "
            "the rows of the image into pieces. Reshape to (B, C, H/2, 2, W/2, 2), move "
            "the two axes of size 2 next to the channel axis with permute, then reshape",
            x.reshape(b, 4 * c, h // 2, w // 2),
        ),
        Slip(
            "the row offset a and the column offset b inside the block are swapped: "
            "channel 4c + 2a + b holds pixel (2i + a, 2j + b), so permute to "
            "(B, C, 2 (rows), 2 (columns), H/2, W/2)",
            six.permute(0, 1, 5, 3, 2, 4).reshape(b, 4 * c, h // 2, w // 2),
        ),
        Slip(
            "the channel axis must come first among the folded axes: channel 4c + 2a + b, "
            "so permute to (B, C, 2, 2, H/2, W/2), not (B, 2, 2, C, H/2, W/2)",
            six.permute(0, 3, 5, 1, 2, 4).reshape(b, 4 * c, h // 2, w // 2),
        ),
        Slip(
            "the positions inside the image got mixed with the offsets in the block: "
            "permute to (B, C, 2, 2, H/2, W/2) before reshaping, so that the last two axes "
            "are the (i, j) of the block",
            six.permute(0, 1, 2, 4, 3, 5).reshape(b, 4 * c, h // 2, w // 2),
        ),
    ]


def check_squeeze(squeeze_fn: Callable, unsqueeze_fn: Callable) -> None:
    """Check ``squeeze_fn(x)``: ``(B, C, H, W) -> (B, 4C, H/2, W/2)``, channel
    ``4c + 2a + b`` at ``(i, j)`` holding pixel ``(2i + a, 2j + b)`` of channel ``c``;
    and ``unsqueeze_fn``, its inverse."""
    cases = [(2, 1, 4, 4), (3, 2, 6, 4), (1, 3, 2, 8)]
    for shape in cases:
        b, c, h, w = shape
        x = torch.arange(math.prod(shape), dtype=torch.float64).view(shape)
        out = as_tensor(
            run(squeeze_fn, x.clone(), name="squeeze"),
            f"squeeze of images of shape {shape}",
            (b, 4 * c, h // 2, w // 2),
            ("batch", "channels", "height", "width"),
        )
        compare(
            out,
            squeeze(x),
            f"squeeze on images of shape {shape}",
            slips=_squeeze_slips(x),
            advice="channel 4c + 2a + b at (i, j) holds pixel "
            "(2i + a, 2j + b) of channel c; compare with the chapter's printout",
        )
        y = squeeze(x)
        back = as_tensor(
            run(unsqueeze_fn, y.clone(), name="unsqueeze"),
            f"unsqueeze of shape {tuple(y.shape)}",
            shape,
            ("batch", "channels", "height", "width"),
        )
        compare(
            back,
            x,
            f"unsqueeze(squeeze(x)) for images of shape {shape}",
            slips=[
                Slip(
                    "unsqueeze applies the same permutation as squeeze; it must undo it: "
                    "reshape to (B, C, 2, 2, H, W), permute to (B, C, H, 2, W, 2), reshape",
                    lambda: (
                        y.reshape(b, c, 2, 2, h // 2, w // 2)
                        .permute(0, 1, 2, 4, 3, 5)
                        .reshape(shape)
                    ),
                ),
                Slip(
                    "a plain reshape back does not undo the squeeze's permutation",
                    y.reshape(shape),
                ),
            ],
            advice="unsqueeze must return the original images exactly",
        )
        z = torch.randn(
            b,
            4 * c,
            h // 2,
            w // 2,
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(sum(shape)),
        )
        again = as_tensor(
            run(
                squeeze_fn,
                as_tensor(run(unsqueeze_fn, z.clone(), name="unsqueeze"), "unsqueeze"),
                name="squeeze",
            ),
            "squeeze(unsqueeze(z))",
            tuple(z.shape),
        )
        compare(
            again,
            z,
            "squeeze(unsqueeze(z))",
            advice="the two maps must be inverse in both directions",
        )
    print(
        "Correct: squeeze folds every 2 x 2 block into four channels in the chapter's "
        "order, and unsqueeze undoes it in both directions."
    )


# --- Exercise: the 1 x 1 convolution ------------------------------------------------------


def _conv_cases() -> Iterator[tuple[Tensor, Tensor]]:
    """``(W, z)``: weights with a negative determinant far from one, and images."""
    g = torch.Generator().manual_seed(4)
    for c, h, w, n in ((3, 4, 5, 4), (4, 2, 3, 3)):
        weight = torch.randn(c, c, generator=g, dtype=torch.float64)
        if float(torch.linalg.det(weight)) > 0:  # a negative determinant catches log(det)
            weight[0] = -weight[0]
        weight = weight * 1.3  # |det W| far from 1
        z = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
        yield weight, z


def check_conv1x1(fn: Callable, atol: float = 1e-8) -> None:
    """Check ``fn(z, weight) -> (x, log_det)``: ``x_{b,:,i,j} = W z_{b,:,i,j}`` and
    ``log_det = H W log |det W|`` for every image, shape ``(B,)``."""
    for weight, z in _conv_cases():
        n, c, h, w = z.shape
        weight = weight.clone().requires_grad_(True)
        out = run(fn, z.clone(), weight, name="conv1x1")
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise ExerciseError(
                f"conv1x1 should return a pair (x, log_det), got {type(out).__name__}"
            )
        x = as_tensor(
            out[0], "the x of conv1x1", tuple(z.shape), ("batch", "channels", "height", "width")
        )
        log_det = out[1]
        if isinstance(log_det, Tensor) and log_det.dim() == 0:
            raise ExerciseError(
                "log_det is one number; return one per image, shape (B,): "
                "expand it with .expand(z.shape[0])"
            )
        log_det = as_tensor(log_det, "the log_det of conv1x1", (n,), ("batch",))
        with torch.no_grad():
            wd = weight.detach()
            expected_x = torch.einsum("ij,bjhw->bihw", wd, z)
            log_abs = torch.linalg.slogdet(wd)[1]
            expected = (h * w * log_abs).expand(n)
        compare(
            x,
            expected_x,
            f"x for C = {c}",
            slips=[
                Slip(
                    "W acts on the channel vector of each pixel as W z, not W^T z: "
                    "x[:, i] = sum_j W[i, j] z[:, j]",
                    torch.einsum("ji,bjhw->bihw", wd, z),
                ),
            ],
            advice="x[b, :, i, j] = W @ z[b, :, i, j], e.g. torch.einsum('ij,bjhw->bihw', "
            "weight, z) or F.conv2d(z, weight[:, :, None, None])",
        )
        compare(
            log_det,
            expected,
            f"log_det for an image of {h} x {w} pixels",
            slips=[
                Slip(
                    "the Jacobian holds H W copies of W, one per pixel: multiply log |det W| "
                    "by H * W",
                    log_abs.expand(n),
                ),
                Slip(
                    "multiply log |det W| by the number of pixels H * W, not by the number of "
                    "channels",
                    (c * log_abs).expand(n),
                ),
                Slip(
                    "log |det W| is log of the absolute value: det W is negative here, so "
                    "torch.log(torch.det(W)) is NaN; use torch.linalg.slogdet(W)[1]",
                    torch.full((n,), float("nan"), dtype=torch.float64),
                ),
                Slip("H W log |det W|, not H W |det W|", (h * w * log_abs.exp()).expand(n)),
                Slip(
                    "the sum of the log of the diagonal of W is not log |det W| (W is not "
                    "triangular); use torch.linalg.slogdet",
                    (h * w * wd.diagonal().abs().log().sum()).expand(n),
                ),
                Slip("this is the inverse's log-det, -H W log |det W|", -expected),
            ],
            nan_hint="det W is negative here: take the log of its absolute value "
            "(torch.linalg.slogdet(W)[1])",
        )
        check_gradients(x.sum() + log_det.sum(), {"weight": weight}, "conv1x1's output")
    print(
        "Correct: x = W z at every pixel, and log_det = H W log |det W|, also for a W "
        "with a negative determinant."
    )


# --- Exercise: bits per dimension of a batch ---------------------------------------------


def make_image_flow(seed: int = 0, dtype: torch.dtype = torch.float64) -> Flow:
    """A small random Glow on 1 x 4 x 4 images for the exercises."""
    flow = glow((1, 4, 4), levels=2, steps=1, hidden=4, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return flow.to(dtype).eval()


def check_batch_bits_per_dim(fn: Callable) -> None:
    """Check ``fn(flow, pixels, u) -> bits``: ``y = (x + u) / 256``, and the bound
    ``(mean(-log p(y)) + D ln 256) / (D ln 2)`` for the batch, one number; in float32 and
    float64."""
    levels = 256
    for dtype in (torch.float64, torch.float32):
        flow = make_image_flow(1, dtype)
        g = torch.Generator().manual_seed(2)
        pixels = torch.randint(0, levels, (40, 1, 4, 4), generator=g).to(dtype)
        pixels[0] = 0.0
        pixels[1] = levels - 1
        u = torch.rand(pixels.shape, generator=g, dtype=dtype)
        d = 16
        got = as_number(
            run(fn, flow, pixels.clone(), u.clone(), name="batch_bits_per_dim"),
            "batch_bits_per_dim",
        )
        with torch.no_grad():

            def nll(y: Tensor) -> Tensor:
                with torch.no_grad():
                    return -flow.log_prob(y).double()

            right = nll((pixels + u) / levels)
            expected = _bits_per_dim(float(right.mean()), d, levels)
            ln2 = math.log(2)

            def bits(value: float | Tensor) -> Tensor:
                return torch.tensor(float(value), dtype=torch.float64)

            slips = [
                Slip(
                    "add D ln 256 to the negative log-likelihood: the density of y = "
                    "(x + u) / 256 is 256^D times the density of x + u",
                    bits(right.mean() / (d * ln2)),
                ),
                Slip(
                    "divide by D ln 2: bits per dimension is per pixel, in bits",
                    bits((right.mean() + d * math.log(levels)) / ln2),
                ),
                Slip(
                    "the result is in nats; divide by ln 2 for bits",
                    bits((right.mean() + d * math.log(levels)) / d),
                ),
                Slip(
                    "the noise u is missing: y = (x + u) / 256, not x / 256",
                    lambda: bits(_bits_per_dim(float(nll(pixels / levels).mean()), d, levels)),
                ),
                Slip(
                    "divide by the number of levels L = 256, not L - 1 = 255",
                    lambda: bits(_bits_per_dim(float(nll((pixels + u) / 255).mean()), d, levels)),
                ),
                Slip(
                    "the sign: the bound uses the negative log-likelihood, -log p(y)",
                    bits((-right.mean() + d * math.log(levels)) / (d * ln2)),
                ),
                Slip(
                    "average over the images of the batch; this is the sum",
                    bits((right.sum() + len(right) * d * math.log(levels)) / (d * ln2)),
                ),
            ]
        compare(
            got.reshape(1),
            bits(expected).reshape(1),
            f"batch_bits_per_dim with a {str(dtype)[6:]} flow",
            slips=[Slip(s.message, (lambda s=s: s.evaluate().reshape(1))) for s in slips],
            rtol=1e-5 if dtype == torch.float32 else 1e-9,
        )
    print(
        f"Correct: the batch scores {expected:.4f} bits per dimension (the uniform "
        f"model would score {math.log2(levels):.0f})."
    )


# --- Exercise: train a Glow to a goal -----------------------------------------------------

GLOW_STEPS = 300
GLOW_GOAL = 3.6


def small_digits(seed: int = 0) -> tuple[Tensor, Tensor]:
    """The shipped MNIST digits at half resolution, 14 x 14 (each pixel the mean of a
    2 x 2 block, rounded): integer pixels 0..255 in float32 tensors of shape
    ``(N, 1, 14, 14)``, split into 4,000 training and 1,000 test images."""
    from ..images import load_mnist

    train, test = load_mnist(seed=seed)

    def half(x: Tensor) -> Tensor:
        return torch.round(F.avg_pool2d(pixels_to_levels(x).view(-1, 1, 28, 28), 2))

    return half(train), half(test)


def check_fit_glow(
    fit_glow: Callable[[Tensor, torch.Generator], tuple[Flow, list[float]]], seed: int = 0
) -> None:
    """Exercise: ``fit_glow(train, generator)`` builds a flow on 14 x 14 digits (integer
    pixels, shape ``(4000, 1, 14, 14)``), trains it for at most 300 steps and returns
    ``(flow, history)``; the flow must be an ``nfcourse.Flow`` on images and score below
    3.6 bits per dimension on the 1,000 test digits (uniform dequantization)."""
    train, test = small_digits(seed)
    goal = Goal(
        GLOW_GOAL,
        steps=GLOW_STEPS,
        n=len(test),
        digits=3,
        phrases=(
            "{subject} {value:.3f}{error} bits per dimension on the {n:,} test digits",
            "{subject} {value:.4g} bits per dimension on the test digits",
        ),
    )

    def inspect(flow: Flow) -> None:
        if flow.event_shape != (1, 14, 14):
            raise ExerciseError(
                f"the flow models samples of shape {flow.event_shape}; the digits are (1, 14, 14)"
            )

    def nll(flow: Flow, images: Tensor, seed: int) -> Tensor:
        dtype = next(flow.parameters()).dtype
        with torch.no_grad():
            return dequantization_nll(
                flow, images.to(dtype), 256, generator=torch.Generator().manual_seed(seed)
            ).double()

    def measure(flow: Flow) -> Measurement:
        flow.eval()
        try:
            per_image = nll(flow, test, 99)
        except Exception as failure:
            raise ExerciseError(
                f"evaluating your flow on the test digits failed: "
                f"{type(failure).__name__}: {failure}"
            ) from None
        bits = _bits_per_dim(per_image, 196, 256)
        return Measurement(float(bits.mean()), float(bits.std() / math.sqrt(len(bits))))

    def loss(flow: Flow) -> float:
        index = torch.randint(len(train), (256,), generator=torch.Generator().manual_seed(7))
        return float(nll(flow, train[index], 8).mean())

    check_fit(
        fit_glow,
        train.clone(),
        torch.Generator().manual_seed(seed),
        name="fit_glow",
        goal=goal,
        seed=seed,
        model_hint="an nfcourse.Flow on images (nfcourse.flows.glow.glow builds one)",
        inspect=inspect,
        measure=measure,
        loss=loss,
        slips=lambda flow, loss: [
            (
                -loss,
                "your loss is the mean log-likelihood, not its "
                "negative: the optimiser minimises, so the loss is "
                "dequantization_nll(...).mean(), the negative "
                "log-likelihood",
            )
        ],
        went_up="is the loss the negative log-likelihood (dequantization_nll), not its "
        "negative, and the learning rate not too large?",
        fallback="the flow learns too slowly: Adam with a learning rate near 1e-2, "
        "batches of about 64 digits drawn afresh at every step, and the whole "
        "budget of steps",
        subject="your flow scores",
    )
