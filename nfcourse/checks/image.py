"""Feedback for the exercises of chapter 9 (flows on images).

* ``check_squeeze``: the squeeze ``(B, C, H, W) -> (B, 4C, H/2, W/2)`` in the channel order
  of ``nfcourse.flows.image.squeeze``, and its inverse;
* ``check_conv1x1``: the 1 x 1 convolution ``x_{:,i,j} = W z_{:,i,j}`` and its log-det
  ``H W log |det W|``;
* ``check_batch_bits_per_dim``: dequantize a batch with given noise, evaluate a flow and
  report bits per dimension;
* ``check_uniform_gap``: the gap of the uniform dequantization bound on a cell where the
  model's density is linear, ``log((a + b) / 2) + 1 - (b log b - a log a) / (b - a)``;
* ``check_fit_glow``: a Glow trained on 14 x 14 digits to a goal in bits per dimension;
* ``check_temperature_typicality``: for ``z ~ N(0, T^2 I_D)`` scored by ``N(0, I_D)``, the
  mean squared norm ``D T^2``, the gap ``D T^2 / 2`` to the mode's log-density and the
  spread ``T^2 sqrt(D / 2)`` of the log-density.
"""

from __future__ import annotations

import itertools
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
from . import (
    ExerciseError,
    Slip,
    as_number,
    as_tensor,
    check_gradients,
    compare,
    run,
    tolerances,
)
from ._toolkit import matches
from ._training import Goal, Measurement, check_fit

__all__ = [
    "GLOW_GOAL",
    "GLOW_STEPS",
    "check_batch_bits_per_dim",
    "check_conv1x1",
    "check_fit_glow",
    "check_squeeze",
    "check_temperature_typicality",
    "check_uniform_gap",
    "make_image_flow",
    "small_digits",
]


# --- one number -----------------------------------------------------------------------------


def _compare_number(
    got: Tensor,
    expected: float | Tensor,
    what: str,
    *,
    slips: list[Slip],
    advice: str,
    rtol: float = 0.0,
    close_hint: str = "",
) -> None:
    """``compare`` for an answer that is one number: name the slip that gives it; when
    none does, say how far it is from the right value (not "at every point"), and, with
    ``close_hint``, what a nearly right number usually means."""
    atol, r = tolerances(got)
    r = max(r, rtol)
    right = torch.as_tensor(expected, dtype=torch.float64).reshape(())
    if matches(got.reshape(()), right, atol, r):
        return
    for slip in slips:
        value = slip.evaluate()
        if (
            value is not None
            and value.numel() == 1
            and not matches(value.reshape(()), right, atol, r)
            and matches(got.reshape(()), value.reshape(()), max(atol, 1e-6), max(r, 1e-6))
        ):
            raise ExerciseError(f"{what} is not right: {slip.message}")
    g, x = float(got), float(right)
    if not math.isfinite(g):
        raise ExerciseError(f"{what} is {g}, where the right value is finite. {advice}")
    relative = abs(g - x) / max(abs(x), 1e-12)
    if close_hint and relative < 0.05:
        raise ExerciseError(
            f"{what} is {g:.6g}, within {100 * relative:.2g} % of the right value but not "
            f"equal to it: {close_hint}"
        )
    ratio = f"{g / x:.4g} times it, " if x != 0 else ""
    raise ExerciseError(
        f"{what} is {g:.6g}, where the right value is {x:.6g} ({ratio}off by "
        f"{g - x:+.4g}). {advice}"
    )


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
        _compare_number(
            got,
            bits(expected),
            f"batch_bits_per_dim with a {str(dtype)[6:]} flow",
            slips=slips,
            rtol=1e-5 if dtype == torch.float32 else 1e-9,
            advice="None of the usual slips gives this number. Dequantize, y = (x + u) / "
            "256, average -log p(y) over the batch, add D ln 256 and divide by D ln 2",
        )
    print(
        f"Correct: the batch scores {expected:.4f} bits per dimension (the uniform "
        f"model would score {math.log2(levels):.0f})."
    )


# --- Exercise: the gap of uniform dequantization on a tilted cell ------------------------

# (a, b): the model's density at the left and right edge of a cell. The masses (a + b) / 2
# differ from 1 and from one another, so that a missing log P cannot pass; both tilts
# (b > a and b < a) appear; two cells touch zero at an edge (the largest gap, and
# 0 * log 0); two are flat (0 / 0 in the closed form)
GAP_CELLS = (
    (0.2, 1.0),
    (1.5, 0.4),
    (3.0, 3.6),
    (0.05, 0.9),
    (2.0, 0.0),
    (0.7, 0.7),
    (0.0, 1.7),
    (1.2, 4.0),
    (2.4, 2.4),
    (0.45, 0.15),
)


def _gap_reference(a: Tensor, b: Tensor) -> Tensor:
    """``log((a + b) / 2) - E_u[log(a + (b - a) u)]`` in float64, 0 where ``a == b``."""
    a, b = a.double(), b.double()
    flat = a == b
    width = torch.where(flat, torch.ones_like(a), b - a)
    mean_log = (torch.xlogy(b, b) - torch.xlogy(a, a)) / width - 1
    return torch.where(flat, torch.zeros_like(a), torch.log((a + b) / 2) - mean_log)


def _gap_slips(a: Tensor, b: Tensor, gap: Tensor) -> list[Slip]:
    a, b = a.double(), b.double()
    flat, edge = a == b, (a == 0) | (b == 0)
    mass = (a + b) / 2
    mean_log = torch.log(mass) - gap  # E_u[log p(x + u)]
    with torch.no_grad():
        # the normalised density 1 + s (2u - 1) runs from alpha to beta over the cell
        alpha, beta = a / mass, b / mass
        span = torch.where(flat, torch.ones_like(a), beta - alpha)
        # KL(p || uniform) = int_0^1 t log t du = (1 / (beta - alpha)) int t log t dt
        reverse = (
            (torch.xlogy(beta**2, beta) - torch.xlogy(alpha**2, alpha)) / 2
            - (beta**2 - alpha**2) / 4
        ) / span
        reverse = torch.where(flat, torch.zeros_like(a), reverse)
        nan = torch.full_like(a, float("nan"))
    slips = [
        Slip(
            "this is minus the gap, E_u[log p(x + u)] - log P(x): the bound E_u[-log p] lies "
            "*above* -log P(x) (Jensen), so the gap E_u[-log p(x + u)] + log P(x) is "
            "positive",
            -gap,
        ),
        Slip(
            "this is E_u[-log p(x + u)], the bound itself, not its gap: subtract -log P(x), "
            "that is add log P(x) with P(x) = (a + b) / 2, the mass of the cell (the "
            "density is not normalised on the cell)",
            -mean_log,
        ),
        Slip(
            "log P(x) has the wrong sign: the gap is the bound minus -log P(x), that is "
            "E_u[-log p(x + u)] + log P(x), with P(x) = (a + b) / 2",
            -mean_log - torch.log(mass),
        ),
        Slip(
            "the mass of the cell is the area of a trapezoid of width 1, P(x) = (a + b) / 2, "
            "not a + b: the answer is log 2 too large",
            gap + math.log(2),
        ),
        Slip(
            "this is the gap in bits (divided by ln 2); the exercise asks for nats, with "
            "the natural logarithm",
            gap / math.log(2),
        ),
        Slip(
            "the antiderivative of log t is t log t - t: the -t part is missing, which "
            "after dividing by b - a is the -1 in E_u[log p] = (b log b - a log a) / (b - a)"
            " - 1 (the answer is 1 too small)",
            gap - 1,
        ),
        Slip(
            "the substitution t = a + (b - a) u has dt = (b - a) du: the integral over t "
            "must be divided by b - a to give the average over u",
            torch.log(mass) - (torch.xlogy(b, b) - torch.xlogy(a, a) - (b - a)),
        ),
        Slip(
            "this is KL(p(.|x) || uniform), the divergence in the other direction: the "
            "noise u is drawn from the uniform density, so the gap of the bound is "
            "E_uniform[log(uniform / p(u|x))] = KL(uniform || p(.|x))",
            reverse,
        ),
        Slip(
            "log p is not linear in u, so E_u[log p] is not the mean of log a and log b: "
            "integrate log(a + (b - a) u) over u in [0, 1)",
            torch.log(mass) - (torch.log(a) + torch.log(b)) / 2,
        ),
        Slip(
            "this is zero for every cell, as if the bound were tight: Jensen's inequality is "
            "an equality only where p is constant on the cell, and these densities are "
            "tilted (only the cells with a = b have no gap)",
            torch.zeros_like(gap),
        ),
    ]
    right_but_nan = [
        Slip(
            "right except for the flat cells (a = b: 0 / 0, where the gap is 0) and the "
            "cells with a zero edge (a log a at a = 0 is NaN, its limit 0: torch.xlogy)",
            torch.where(flat | edge, nan, gap),
        ),
        Slip(
            "right except for the flat cells, a = b, where the closed form is 0 / 0: there "
            "the density is constant on the cell and the gap is 0 (its limit); set it with "
            "torch.where(a == b, 0, ...)",
            torch.where(flat, nan, gap),
        ),
        Slip(
            "right except for the cells whose density is 0 at an edge: a log a is "
            "0 * (-inf) = NaN at a = 0 in floating point, while its limit is 0; "
            "torch.xlogy(a, a) computes a log a with that limit",
            torch.where(edge, nan, gap),
        ),
    ]
    # a flat cell (a = b) may be handled three ways beside the slip: by the formula's
    # limit, by torch.where(a == b, 0, ...), or not at all (0 / 0 = NaN)
    return right_but_nan + [
        Slip(slip.message, variant)
        for slip in slips
        for variant in (
            slip.value,
            torch.where(flat, torch.zeros_like(a), slip.value),
            torch.where(flat, nan, slip.value),
        )
    ]


def check_uniform_gap(fn: Callable) -> None:
    """Check ``fn(a, b) -> gap``: on a cell where the model's density is linear, ``a`` at
    the left edge and ``b`` at the right, the gap of the uniform bound
    ``E_u[-log p(x + u)] + log P(x)`` with ``P(x) = (a + b) / 2``, in nats, one per cell;
    for float64 and float32 inputs."""
    name = getattr(fn, "__name__", "your function")
    for dtype in (torch.float64, torch.float32):
        a = torch.tensor([c[0] for c in GAP_CELLS], dtype=dtype)
        b = torch.tensor([c[1] for c in GAP_CELLS], dtype=dtype)
        got = as_tensor(
            run(fn, a.clone(), b.clone(), name=name),
            f"{name}(a, b)",
            (len(a),),
            ("cells",),
        )
        expected = _gap_reference(a, b)
        flat, edge = a == b, (a == 0) | (b == 0)
        compare(
            got,
            expected,
            f"the gap of {name} for {str(dtype)[6:]} inputs",
            slips=_gap_slips(a, b, expected),
            labels=[
                f"the cell a = {float(x):g}, b = {float(y):g}" for x, y in zip(a, b, strict=True)
            ],
            groups={
                "the flat cells, a = b (0 / 0 in the closed form; the gap is 0 there)": flat,
                "the cells with a zero edge (a log a at a = 0: its limit is 0, "
                "torch.xlogy(a, a))": edge,
            },
            nan_hint="the closed form has 0 / 0 at a = b and 0 * log 0 at a zero edge; "
            "take the limits (0 for the gap of a flat cell, 0 for a log a at a = 0)",
            atol=1e-5,  # a fine numerical average over u passes too
            advice="None of the usual slips gives these numbers. Write E_u[log p(x + u)] "
            "as the integral of log t from a to b divided by b - a, and subtract it from "
            "log P(x)",
        )
    largest = float(_gap_reference(torch.tensor([0.0]), torch.tensor([1.0])))
    print(
        "Correct: the gap of the uniform bound on a linear cell is "
        "log((a + b) / 2) + 1 - (b log b - a log a) / (b - a), zero only on flat cells "
        f"and largest, 1 - ln 2 = {largest:.4f} nats ({largest / math.log(2):.4f} bits), "
        "when the density touches zero at an edge."
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


# --- Exercise: temperature and typicality -------------------------------------------------

# (D, T): no T = 1 (where T = T^2), no T = 1/2 (where T / 2 = T^2) and no D = 2 (where
# D / 2 = 1); the 3 x 32 x 32 case is an image of CIFAR's size
TEMPERATURE_CASES = ((784, 0.7), (12, 1.6), (3072, 0.6))
_TYPICALITY_PARTS = (
    "the mean squared norm E|z|^2",
    "the gap log N(0; 0, I) - E[log N(z; 0, I)]",
    "the standard deviation of log N(z; 0, I)",
)


def _typicality_reference(d: int, t: float) -> tuple[float, float, float]:
    return d * t**2, d * t**2 / 2, t**2 * math.sqrt(d / 2)


def _typicality_slips(d: int, t: float) -> tuple[list[Slip], list[Slip], list[Slip]]:
    ln2, half_log_2pi = math.log(2), 0.5 * math.log(2 * math.pi)

    def num(value: float) -> Tensor:
        return torch.tensor(value, dtype=torch.float64)

    square = [
        Slip("T, not T^2: z = T e with e ~ N(0, I), so |z|^2 = T^2 |e|^2", num(d * t)),
        Slip(
            "this is one coordinate's E z_i^2 = T^2; the squared norm sums the D coordinates",
            num(t**2),
        ),
        Slip(
            "this is about the typical norm |z|, T sqrt(D); the question asks for the mean "
            "of the *squared* norm",
            num(t * math.sqrt(d)),
        ),
        Slip(
            "the temperature is missing: z ~ N(0, T^2 I) has variance T^2 in every "
            "coordinate, so E|z|^2 = D T^2",
            num(d),
        ),
    ]
    gap = [
        Slip(
            "T, not T^2: log N(z; 0, I) = -(D/2) log(2 pi) - |z|^2 / 2 and E|z|^2 = D T^2",
            num(d * t / 2),
        ),
        Slip(
            "this is the gap per coordinate, T^2 / 2; the D coordinates add up",
            num(t**2 / 2),
        ),
        Slip(
            "this is the gap in bits per dimension, T^2 / (2 ln 2); the exercise asks for "
            "nats for the whole vector",
            num(t**2 / (2 * ln2)),
        ),
        Slip(
            "the factor 1/2 of the Gaussian's exponent, -|z|^2 / 2, is missing",
            num(d * t**2),
        ),
        Slip(
            "this is in bits (divided by ln 2); the exercise asks for nats",
            num(d * t**2 / (2 * ln2)),
        ),
        Slip(
            "the sign: the mode z = 0 has the *higher* log-density, so log N(0) - "
            "E[log N(z)] is positive",
            num(-d * t**2 / 2),
        ),
        Slip(
            "this is D / 2, the gap under the tempered density N(0, T^2 I), the same at "
            "every T; the flow scores z with its base N(0, I), where the gap is D T^2 / 2",
            num(d / 2),
        ),
        Slip(
            "this is E[log N(z; 0, I)] itself; the question asks how far it lies below the "
            "log-density at the mode, log N(0; 0, I) = -(D/2) log(2 pi)",
            num(-d * half_log_2pi - d * t**2 / 2),
        ),
        Slip(
            "this is E[-log N(z; 0, I)]; the constant (D/2) log(2 pi) cancels in the "
            "difference with the mode's log-density",
            num(d * half_log_2pi + d * t**2 / 2),
        ),
        Slip(
            "this is D (1 - T^2) / 2, the gap between typical samples at T = 1 and at T; "
            "the question compares the mode z = 0 with a typical sample at T",
            num(d * (1 - t**2) / 2),
        ),
    ]
    spread = [
        Slip(
            "this is the standard deviation of |z|^2, T^2 sqrt(2D); log N(z; 0, I) = const "
            "- |z|^2 / 2 has half of it",
            num(t**2 * math.sqrt(2 * d)),
        ),
        Slip(
            "this is the variance, D T^4 / 2; return the standard deviation, its square root",
            num(d * t**4 / 2),
        ),
        Slip(
            "this is the variance of |z|^2, 2 D T^4; the log-density is -|z|^2 / 2 + const, "
            "and the spread asked for is a standard deviation",
            num(2 * d * t**4),
        ),
        Slip(
            "T, not T^2: the log-density is -|z|^2 / 2 + const and |z|^2 = T^2 |e|^2, so "
            "its spread scales with T^2",
            num(t * math.sqrt(d / 2)),
        ),
        Slip(
            "this is sqrt(D/2), the spread of the log-density under the tempered "
            "N(0, T^2 I) (or with T forgotten); the flow scores z with its base N(0, I), "
            "where the spread is T^2 sqrt(D/2)",
            num(math.sqrt(d / 2)),
        ),
        Slip(
            "Var(z_i^2) = E z_i^4 - (E z_i^2)^2 = 3 T^4 - T^4 = 2 T^4, not T^4: the fourth "
            "moment of a Gaussian is 3 sigma^4",
            num(t**2 * math.sqrt(d) / 2),
        ),
        Slip(
            "E z_i^4 = 3 T^4 was taken for the variance of z_i^2; subtract (E z_i^2)^2 = "
            "T^4, which leaves 2 T^4",
            num(t**2 * math.sqrt(3 * d) / 2),
        ),
        Slip(
            "the variances of the D independent terms z_i^2 / 2 add (each T^4 / 2), so "
            "the standard deviation grows as sqrt(D); this is one coordinate's, T^2 / sqrt(2)",
            num(t**2 / math.sqrt(2)),
        ),
        Slip(
            "the standard deviation of a sum of D independent terms grows as sqrt(D), not "
            "D: it is the variances that add",
            num(t**2 * d / math.sqrt(2)),
        ),
        Slip(
            "this is in bits (divided by ln 2); the exercise asks for nats",
            num(t**2 * math.sqrt(d / 2) / ln2),
        ),
    ]
    return square, gap, spread


def check_temperature_typicality(fn: Callable) -> None:
    """Check ``fn(d, t) -> (mean_sq_norm, gap, sd)`` for ``z ~ N(0, T^2 I_D)`` scored by
    the base ``N(0, I_D)``: ``E|z|^2 = D T^2``, the gap ``log N(0) - E[log N(z)] =
    D T^2 / 2`` nats and the standard deviation ``T^2 sqrt(D / 2)`` of ``log N(z)``."""
    name = getattr(fn, "__name__", "your function")
    for d, t in TEMPERATURE_CASES:
        where = f"{name}({d}, {t})"
        out = run(fn, d, t, name=name)
        if not (isinstance(out, tuple | list) and len(out) == 3):
            raise ExerciseError(
                f"{where} should return three numbers (mean_sq_norm, gap, sd), got "
                + (
                    f"a {type(out).__name__} of {len(out)}"
                    if isinstance(out, tuple | list)
                    else type(out).__name__
                )
            )
        got = [
            as_number(v, f"{where}: {part}")
            for v, part in zip(out, _TYPICALITY_PARTS, strict=True)
        ]
        right = _typicality_reference(d, t)
        values = [float(v) for v in got]
        in_order = all(
            abs(v - r) <= 1e-4 * max(1.0, abs(r)) for v, r in zip(values, right, strict=True)
        )
        if not in_order:
            for order in itertools.permutations(range(3)):
                if order != (0, 1, 2) and all(
                    abs(values[i] - right[k]) <= 1e-4 * max(1.0, abs(right[k]))
                    for i, k in enumerate(order)
                ):
                    raise ExerciseError(
                        f"{where} returns the right three numbers in another order: "
                        "return (mean_sq_norm, gap, sd), in that order"
                    )
        for value, expected, part, slips in zip(
            got, right, _TYPICALITY_PARTS, _typicality_slips(d, t), strict=True
        ):
            _compare_number(
                value,
                expected,
                f"{part} for D = {d}, T = {t}",
                slips=slips,
                advice="None of the usual slips gives this number. Write z = T e with "
                "e ~ N(0, I) and log N(z; 0, I) = -(D/2) log(2 pi) - T^2 |e|^2 / 2, and use "
                "E e_i^2 = 1, E e_i^4 = 3",
                close_hint="an estimate from samples (a Monte Carlo average) or a rounded "
                "constant gives this; the exercise asks for the exact value, a formula in "
                "D and T that the derivation gives",
            )
    d, t = 784, 0.7
    _, gap, sd = _typicality_reference(d, t)
    print(
        f"Correct: for D = {d} and T = {t}, samples have E|z|^2 = {d * t**2:.1f}, their "
        f"log-density lies {gap:.1f} nats ({gap / (d * math.log(2)):.3f} bits per "
        f"dimension) below the mode's, with a spread of {sd:.1f} nats: the mode is "
        f"sqrt(D / 2) = {math.sqrt(d / 2):.1f} standard deviations away, at every T."
    )
