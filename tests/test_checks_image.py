"""The exercise checks of chapter 9 accept right answers and name wrong ones."""

import math

import pytest
import torch
from check_tables import Right, Wrong, assert_right, assert_wrong, stub
from solution_code import solution

from nfcourse.checks import ExerciseError
from nfcourse.checks.image import (
    check_batch_bits_per_dim,
    check_conv1x1,
    check_fit_glow,
    check_squeeze,
)

CH = "09_image_flows"
squeeze_ref = solution(CH, "squeeze")
unsqueeze_ref = solution(CH, "unsqueeze")
conv_ref = solution(CH, "conv1x1")
bits_ref = solution(CH, "batch_bits_per_dim")


def check_squeeze_only(answer):
    return check_squeeze(answer, unsqueeze_ref)


def check_unsqueeze_only(answer):
    return check_squeeze(squeeze_ref, answer)


def plain_reshape(x):
    b, c, h, w = x.shape
    return x.reshape(b, 4 * c, h // 2, w // 2)


def swapped_offsets(x):
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2)
    return x.permute(0, 1, 5, 3, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def channel_last(x):
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2)
    return x.permute(0, 3, 5, 1, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze_by_reshape(y):
    b, c4, h, w = y.shape
    return y.reshape(b, c4 // 4, 2 * h, 2 * w)


def pixel_unshuffle(x):  # torch's own layout is the same as the chapter's
    return torch.nn.functional.pixel_unshuffle(x, 2)


def pixel_shuffle(y):
    return torch.nn.functional.pixel_shuffle(y, 2)


def conv(fn):
    def answer(z, weight):
        b, c, h, w = z.shape
        x = torch.einsum("ij,bjhw->bihw", weight, z)
        return x, fn(weight, h, w).expand(b)

    return answer


def conv_transposed(z, weight):
    x = torch.einsum("ji,bjhw->bihw", weight, z)
    return x, z.shape[2] * z.shape[3] * torch.linalg.slogdet(weight)[1].expand(len(z))


def conv_scalar_log_det(z, weight):
    x = torch.einsum("ij,bjhw->bihw", weight, z)
    return x, z.shape[2] * z.shape[3] * torch.linalg.slogdet(weight)[1]


def conv_detached(z, weight):
    x, log_det = conv_ref(z, weight.detach())
    return x, log_det


def conv2d_answer(z, weight):
    x = torch.nn.functional.conv2d(z, weight[:, :, None, None])
    log_det = z.shape[2] * z.shape[3] * torch.log(torch.linalg.det(weight).abs())
    return x, log_det.repeat(len(z))


def bits(fn):
    def answer(flow, pixels, u):
        d = pixels[0].numel()
        return fn(flow, pixels, u, d)

    return answer


def nll_of(flow, y):
    return -flow.log_prob(y)


WRONG = [
    Wrong(check_squeeze_only, "stub", stub, "not written yet"),
    Wrong(check_squeeze_only, "plain-reshape", plain_reshape, "plain reshape"),
    Wrong(check_squeeze_only, "swapped-offsets", swapped_offsets, "swapped"),
    Wrong(check_squeeze_only, "channel-last", channel_last, "channel axis must come first"),
    Wrong(check_unsqueeze_only, "reshape-back", unsqueeze_by_reshape, "plain reshape back"),
    Wrong(check_unsqueeze_only, "squeeze-again", lambda y: squeeze_ref(y), "shape"),
    Wrong(check_conv1x1, "transposed", conv_transposed, "W z, not W\\^T z"),
    Wrong(
        check_conv1x1,
        "no-hw",
        conv(lambda w, h, wd: torch.linalg.slogdet(w)[1]),
        "H W copies of W",
    ),
    Wrong(
        check_conv1x1,
        "times-c",
        conv(lambda w, h, wd: len(w) * torch.linalg.slogdet(w)[1]),
        "not by the number of channels",
    ),
    Wrong(
        check_conv1x1,
        "log-det-nan",
        conv(lambda w, h, wd: h * wd * torch.log(torch.det(w))),
        "negative|slogdet",
    ),
    Wrong(
        check_conv1x1,
        "diag",
        conv(lambda w, h, wd: h * wd * w.diagonal().abs().log().sum()),
        "not triangular",
    ),
    Wrong(
        check_conv1x1,
        "inverse-sign",
        conv(lambda w, h, wd: -h * wd * torch.linalg.slogdet(w)[1]),
        "inverse's log-det",
    ),
    Wrong(check_conv1x1, "scalar", conv_scalar_log_det, "one per image"),
    Wrong(check_conv1x1, "detached", conv_detached, "no gradient|carries no gradient"),
    Wrong(
        check_batch_bits_per_dim,
        "no-d-ln-l",
        bits(lambda f, x, u, d: nll_of(f, (x + u) / 256).mean() / (d * math.log(2))),
        "add D ln 256",
    ),
    Wrong(
        check_batch_bits_per_dim,
        "nats",
        bits(lambda f, x, u, d: (nll_of(f, (x + u) / 256).mean() + d * math.log(256)) / d),
        "nats",
    ),
    Wrong(
        check_batch_bits_per_dim,
        "no-noise",
        bits(
            lambda f, x, u, d: (nll_of(f, x / 256).mean() + d * math.log(256)) / (d * math.log(2))
        ),
        "noise u is missing",
    ),
    Wrong(
        check_batch_bits_per_dim,
        "by-255",
        bits(
            lambda f, x, u, d: (
                (nll_of(f, (x + u) / 255).mean() + d * math.log(256)) / (d * math.log(2))
            )
        ),
        "not L - 1",
    ),
    Wrong(
        check_batch_bits_per_dim,
        "sign",
        bits(
            lambda f, x, u, d: (
                (-nll_of(f, (x + u) / 256).mean() + d * math.log(256)) / (d * math.log(2))
            )
        ),
        "sign",
    ),
    Wrong(
        check_batch_bits_per_dim,
        "per-image",
        bits(
            lambda f, x, u, d: (nll_of(f, (x + u) / 256) + d * math.log(256)) / (d * math.log(2))
        ),
        "one number|shape",
    ),
    Wrong(
        check_batch_bits_per_dim,
        "sum",
        bits(
            lambda f, x, u, d: (
                (nll_of(f, (x + u) / 256).sum() + len(x) * d * math.log(256)) / (d * math.log(2))
            )
        ),
        "average",
    ),
]

RIGHT = [
    Right(check_squeeze_only, "reference", squeeze_ref),
    Right(check_squeeze_only, "pixel-unshuffle", pixel_unshuffle),
    Right(check_unsqueeze_only, "pixel-shuffle", pixel_shuffle),
    Right(check_conv1x1, "reference", conv_ref),
    Right(check_conv1x1, "conv2d", conv2d_answer),
    Right(check_batch_bits_per_dim, "reference", bits_ref),
    Right(
        check_batch_bits_per_dim,
        "float",
        bits(
            lambda f, x, u, d: float(
                (nll_of(f, (x + u) / 256).detach().mean() / d + math.log(256)) / math.log(2)
            )
        ),
    ),
    Right(
        check_batch_bits_per_dim,
        "log2",
        bits(lambda f, x, u, d: nll_of(f, (x + u) / 256).mean() / (d * math.log(2)) + 8),
    ),
]


@pytest.mark.parametrize("row", [w.param() for w in WRONG])
def test_check_rejects_and_names_the_mistake(row):
    assert_wrong(row)


@pytest.mark.parametrize("row", [r.param() for r in RIGHT])
def test_check_accepts_right_answers_written_differently(row):
    assert_right(row)


def test_fit_glow_reference_reaches_the_goal(capsys):
    check_fit_glow(solution(CH, "fit_glow"))
    assert "Correct" in capsys.readouterr().out


def _short_fit(sign, steps):
    import nfcourse
    from nfcourse.flows.dequantization import dequantization_nll
    from nfcourse.flows.glow import glow

    def fit_glow(train, generator):
        flow = glow((1, 14, 14), levels=1, steps=1, hidden=4)

        def loss_fn(step):
            index = torch.randint(len(train), (16,), generator=generator)
            return sign * dequantization_nll(flow, train[index], 256, generator=generator).mean()

        return flow, nfcourse.train(loss_fn, flow, steps, lr=1e-3, progress=False)

    return fit_glow


@pytest.mark.parametrize(
    "fit, match",
    [
        (_short_fit(1.0, 10), "only 10 of the 300 steps"),
        (_short_fit(-1.0, 30), "not its negative"),
        (lambda train, generator: (torch.nn.Linear(2, 2), [1.0]), "Flow on images"),
        (stub, "not written yet"),
    ],
)
def test_fit_glow_check_names_the_cause_of_a_miss(fit, match):
    with pytest.raises(ExerciseError, match=match):
        check_fit_glow(fit)
