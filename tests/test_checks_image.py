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
    check_temperature_typicality,
    check_uniform_gap,
)

CH = "09_image_flows"
squeeze_ref = solution(CH, "squeeze")
unsqueeze_ref = solution(CH, "unsqueeze")
conv_ref = solution(CH, "conv1x1")
bits_ref = solution(CH, "batch_bits_per_dim")
gap_ref = solution(CH, "uniform_gap")
typicality_ref = solution(CH, "temperature_typicality")


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


def gap(fn):
    """An answer to the uniform gap built from E_u[log p] (``mean_log``) and the mass."""

    def answer(a, b):
        flat = a == b
        width = torch.where(flat, torch.ones_like(a), b - a)
        mean_log = (torch.xlogy(b, b) - torch.xlogy(a, a)) / width - 1
        mass = (a + b) / 2
        return torch.where(flat, torch.zeros_like(a), fn(a, b, mean_log, mass))

    return answer


def gap_by_tilt(a, b):
    s = ((b - a) / (a + b)).double()
    safe = torch.where(s == 0, torch.ones_like(s), s)
    value = 1 - (torch.xlogy(1 + s, 1 + s) - torch.xlogy(1 - s, 1 - s)) / (2 * safe)
    return torch.where(s == 0, torch.zeros_like(s), value).to(a.dtype)


def gap_by_quadrature(a, b):  # a fine midpoint rule, in float64
    u = (torch.arange(200_000, dtype=torch.float64) + 0.5) / 200_000
    p = a.double()[:, None] + (b - a).double()[:, None] * u
    return torch.log((a + b).double() / 2) - torch.log(p).mean(1)


def gap_in_float32(a, b):
    return gap_ref(a.float(), b.float())


def gap_plain_formula(a, b):  # 0 / 0 at a = b and 0 * log 0 at a zero edge
    return torch.log((a + b) / 2) + 1 - (b * torch.log(b) - a * torch.log(a)) / (b - a)


def gap_nan_flat(a, b):  # xlogy for the edges, but no limit at a = b
    return torch.log((a + b) / 2) + 1 - (torch.xlogy(b, b) - torch.xlogy(a, a)) / (b - a)


def gap_nan_edge(a, b):  # the limit at a = b, but a log a at a = 0
    flat = a == b
    width = torch.where(flat, torch.ones_like(a), b - a)
    value = torch.log((a + b) / 2) + 1 - (b * torch.log(b) - a * torch.log(a)) / width
    return torch.where(flat, torch.zeros_like(a), value)


def gap_reverse_kl(a, b):
    mass = (a + b) / 2
    alpha, beta = a / mass, b / mass
    span = torch.where(a == b, torch.ones_like(a), beta - alpha)
    value = (
        (torch.xlogy(beta**2, beta) - torch.xlogy(alpha**2, alpha)) / 2 - (beta**2 - alpha**2) / 4
    ) / span
    return torch.where(a == b, torch.zeros_like(a), value)


def gap_random(a, b):
    return torch.rand(a.shape, generator=torch.Generator().manual_seed(3), dtype=a.dtype)


def typicality(mean_sq_norm, gap_, sd):
    def answer(d, t):
        return mean_sq_norm(d, t), gap_(d, t), sd(d, t)

    return answer


def _right_norm(d, t):
    return d * t**2


def _right_gap(d, t):
    return d * t**2 / 2


def _right_sd(d, t):
    return t**2 * math.sqrt(d / 2)


def norm_slip(fn):
    return typicality(fn, _right_gap, _right_sd)


def gap_slip(fn):
    return typicality(_right_norm, fn, _right_sd)


def sd_slip(fn):
    return typicality(_right_norm, _right_gap, fn)


def typicality_tensors(dtype):
    def answer(d, t):
        return tuple(torch.tensor(v, dtype=dtype) for v in typicality_ref(d, t))

    return answer


def typicality_by_sampling(d, t):  # a Monte Carlo answer is not exact: it must fail
    g = torch.Generator().manual_seed(0)
    z = t * torch.randn(4000, d, generator=g, dtype=torch.float64)
    log_p = -0.5 * (z**2).sum(1)
    return float((z**2).sum(1).mean()), float(-log_p.mean()), float(log_p.std())


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
    Wrong(
        check_batch_bits_per_dim,
        "random",
        lambda flow, pixels, u: torch.tensor(5.123, dtype=torch.float64),
        "where the right value is .*None of the usual slips",
    ),
    Wrong(check_uniform_gap, "stub", stub, "not written yet"),
    Wrong(check_uniform_gap, "sign", gap(lambda a, b, m, p: m - torch.log(p)), "minus the gap"),
    Wrong(check_uniform_gap, "no-mass", gap(lambda a, b, m, p: -m), "the bound itself"),
    Wrong(
        check_uniform_gap,
        "log-p-sign",
        gap(lambda a, b, m, p: -m - torch.log(p)),
        "log P\\(x\\) has the wrong sign",
    ),
    Wrong(
        check_uniform_gap,
        "mass-a-plus-b",
        gap(lambda a, b, m, p: torch.log(a + b) - m),
        "trapezoid",
    ),
    Wrong(
        check_uniform_gap,
        "bits",
        gap(lambda a, b, m, p: (torch.log(p) - m) / math.log(2)),
        "in bits",
    ),
    Wrong(
        check_uniform_gap,
        "no-minus-t",
        gap(lambda a, b, m, p: torch.log(p) - (m + 1)),
        "-t part is missing",
    ),
    Wrong(
        check_uniform_gap,
        "no-jacobian",
        gap(lambda a, b, m, p: torch.log(p) - (torch.xlogy(b, b) - torch.xlogy(a, a) - (b - a))),
        "dt = \\(b - a\\) du",
    ),
    Wrong(check_uniform_gap, "reverse-kl", gap_reverse_kl, "other direction"),
    Wrong(
        check_uniform_gap,
        "mean-of-edge-logs",
        gap(lambda a, b, m, p: torch.log(p) - (torch.log(a) + torch.log(b)) / 2),
        "not linear in u",
    ),
    Wrong(check_uniform_gap, "zero", lambda a, b: torch.zeros_like(a), "as if the bound"),
    Wrong(check_uniform_gap, "nan-flat", gap_nan_flat, "flat cells, a = b"),
    Wrong(check_uniform_gap, "nan-edge", gap_nan_edge, "0 at an edge.*xlogy"),
    Wrong(check_uniform_gap, "nan-both", gap_plain_formula, "flat cells.*zero edge"),
    Wrong(
        check_uniform_gap,
        "one-number",
        lambda a, b: gap_ref(a, b).sum(),
        "shape",
    ),
    Wrong(check_uniform_gap, "random", gap_random, "None of the usual slips|differs"),
    Wrong(check_temperature_typicality, "stub", stub, "not written yet"),
    Wrong(check_temperature_typicality, "norm-t", norm_slip(lambda d, t: d * t), "T, not T\\^2"),
    Wrong(
        check_temperature_typicality,
        "norm-no-d",
        norm_slip(lambda d, t: t**2),
        "one coordinate",
    ),
    Wrong(
        check_temperature_typicality,
        "norm-not-squared",
        norm_slip(lambda d, t: t * math.sqrt(d)),
        "typical norm",
    ),
    Wrong(
        check_temperature_typicality,
        "norm-no-t",
        norm_slip(lambda d, t: float(d)),
        "temperature is missing",
    ),
    Wrong(check_temperature_typicality, "gap-t", gap_slip(lambda d, t: d * t / 2), "T, not T\\^2"),
    Wrong(
        check_temperature_typicality,
        "gap-no-d",
        gap_slip(lambda d, t: t**2 / 2),
        "per coordinate",
    ),
    Wrong(
        check_temperature_typicality,
        "gap-bits-per-dim",
        gap_slip(lambda d, t: t**2 / (2 * math.log(2))),
        "bits per dimension",
    ),
    Wrong(
        check_temperature_typicality,
        "gap-no-half",
        gap_slip(lambda d, t: d * t**2),
        "factor 1/2",
    ),
    Wrong(
        check_temperature_typicality,
        "gap-bits",
        gap_slip(lambda d, t: d * t**2 / (2 * math.log(2))),
        "in bits",
    ),
    Wrong(
        check_temperature_typicality,
        "gap-sign",
        gap_slip(lambda d, t: -d * t**2 / 2),
        "the sign",
    ),
    Wrong(
        check_temperature_typicality,
        "gap-tempered",
        gap_slip(lambda d, t: d / 2),
        "tempered density",
    ),
    Wrong(
        check_temperature_typicality,
        "gap-mean-log",
        gap_slip(lambda d, t: -d / 2 * math.log(2 * math.pi) - d * t**2 / 2),
        "E\\[log N\\(z; 0, I\\)\\] itself",
    ),
    Wrong(
        check_temperature_typicality,
        "gap-mean-nll",
        gap_slip(lambda d, t: d / 2 * math.log(2 * math.pi) + d * t**2 / 2),
        "constant \\(D/2\\) log\\(2 pi\\) cancels",
    ),
    Wrong(
        check_temperature_typicality,
        "gap-one-minus",
        gap_slip(lambda d, t: d * (1 - t**2) / 2),
        "typical samples at T = 1 and at T",
    ),
    Wrong(
        check_temperature_typicality,
        "sd-of-square",
        sd_slip(lambda d, t: t**2 * math.sqrt(2 * d)),
        "standard deviation of \\|z\\|\\^2",
    ),
    Wrong(
        check_temperature_typicality,
        "sd-variance",
        sd_slip(lambda d, t: d * t**4 / 2),
        "this is the variance, D T\\^4 / 2",
    ),
    Wrong(
        check_temperature_typicality,
        "sd-variance-of-square",
        sd_slip(lambda d, t: 2 * d * t**4),
        "variance of \\|z\\|\\^2",
    ),
    Wrong(
        check_temperature_typicality,
        "sd-t",
        sd_slip(lambda d, t: t * math.sqrt(d / 2)),
        "T, not T\\^2",
    ),
    Wrong(
        check_temperature_typicality,
        "sd-tempered",
        sd_slip(lambda d, t: math.sqrt(d / 2)),
        "tempered",
    ),
    Wrong(
        check_temperature_typicality,
        "sd-fourth-moment-1",
        sd_slip(lambda d, t: t**2 * math.sqrt(d) / 2),
        "not T\\^4: the fourth",
    ),
    Wrong(
        check_temperature_typicality,
        "sd-fourth-moment-3",
        sd_slip(lambda d, t: t**2 * math.sqrt(3 * d) / 2),
        "subtract",
    ),
    Wrong(
        check_temperature_typicality,
        "sd-no-d",
        sd_slip(lambda d, t: t**2 / math.sqrt(2)),
        "one coordinate's",
    ),
    Wrong(
        check_temperature_typicality,
        "sd-times-d",
        sd_slip(lambda d, t: t**2 * d / math.sqrt(2)),
        "variances that add",
    ),
    Wrong(
        check_temperature_typicality,
        "sd-bits",
        sd_slip(lambda d, t: t**2 * math.sqrt(d / 2) / math.log(2)),
        "in bits",
    ),
    Wrong(
        check_temperature_typicality,
        "order",
        lambda d, t: tuple(reversed(typicality_ref(d, t))),
        "another order",
    ),
    Wrong(
        check_temperature_typicality,
        "two-numbers",
        lambda d, t: typicality_ref(d, t)[:2],
        "three numbers",
    ),
    Wrong(
        check_temperature_typicality,
        "sampling",
        typicality_by_sampling,
        "Monte Carlo",
    ),
    Wrong(
        check_temperature_typicality,
        "random",
        lambda d, t: (1.7 * d, 0.3 * d, 2.9),
        "where the right value is .*None of the usual slips",
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
    Right(check_uniform_gap, "reference", gap_ref),
    Right(check_uniform_gap, "float32", gap_in_float32),
    Right(check_uniform_gap, "by-tilt", gap_by_tilt),
    Right(check_uniform_gap, "quadrature", gap_by_quadrature),
    Right(check_temperature_typicality, "reference", typicality_ref),
    Right(check_temperature_typicality, "float32", typicality_tensors(torch.float32)),
    Right(check_temperature_typicality, "float64", typicality_tensors(torch.float64)),
    Right(check_temperature_typicality, "list", lambda d, t: list(typicality_ref(d, t))),
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
