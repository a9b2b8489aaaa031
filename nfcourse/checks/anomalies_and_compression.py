"""Feedback for the exercises of chapter 11 (anomalies and compression).

* ``check_auc_from_pairs``: the ROC AUC from its definition, ties counting one half;
* ``check_quantize``: probability tables to positive integers summing to ``2^precision``;
* ``check_fit_coder``: train a ``DiscretizedMAF`` whose bitstream beats bz2 on the digits;
* ``check_binormal_auc``: the AUC of two Gaussian scores, derived (not printed in the
  chapter);
* ``check_typicality_threshold``: the half-width of a typicality test for batches of ``M``
  inputs at a chosen false-alarm rate (a design decision: normal approximation or
  resampling).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ..applications.compression import DiscretizedMAF, decode, encode
from ..images import load_digits
from ._toolkit import (
    ExerciseError,
    Slip,
    as_number,
    compare,
    run,
)
from ._training import (
    Goal,
    Measurement,
    check_fit,
)

__all__ = [
    "CODER_GOAL",
    "CODER_STEPS",
    "check_auc_from_pairs",
    "check_binormal_auc",
    "check_typicality_threshold",
    "check_fit_coder",
    "check_quantize",
]


# --------------------------------------------------------------------------------------
# ROC AUC
# --------------------------------------------------------------------------------------


def _pairs(s_in: Tensor, s_out: Tensor, above: float, tie: float) -> Tensor:
    ordered = (s_out[:, None] > s_in[None, :]).double()
    ties = (s_out[:, None] == s_in[None, :]).double()
    below = (s_out[:, None] < s_in[None, :]).double()
    return (above * ordered + tie * ties + (1 - above) * below).mean()


def _auc_cases() -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(11)
    return [
        (torch.tensor([0.0, 1.0, 2.0, 2.0]), torch.tensor([2.0, 3.0, 1.0])),
        (
            torch.randint(0, 4, (30,), generator=g).double(),
            torch.randint(1, 6, (20,), generator=g).double(),
        ),
        (
            torch.randn(40, generator=g, dtype=torch.float64),
            torch.randn(25, generator=g, dtype=torch.float64) - 0.5,
        ),
    ]


def check_auc_from_pairs(fn: Callable) -> None:
    """Check ``fn(scores_in, scores_out)``: the share of pairs (in, out) with the
    out-of-distribution score above the in-distribution one, ties counting one half."""
    name = getattr(fn, "__name__", "your function")
    for s_in, s_out in _auc_cases():
        got = as_number(run(fn, s_in.clone(), s_out.clone(), name=name), f"{name}'s AUC")
        expected = _pairs(s_in, s_out, 1.0, 0.5)
        slips = [
            Slip(
                "ties count as 0; a tie is a coin flip for the threshold, so it counts one half",
                _pairs(s_in, s_out, 1.0, 0.0),
            ),
            Slip(
                "ties count as 1 (>= instead of >); they count one half",
                _pairs(s_in, s_out, 1.0, 1.0),
            ),
            Slip(
                "the order is reversed: count the pairs where the *out-of-distribution* "
                "score is the higher one",
                _pairs(s_in, s_out, 0.0, 0.5),
            ),
            Slip(
                "this is P(s_in > s_out), the other class's view with ties counted as 0: "
                "count the pairs where the *out-of-distribution* score is the higher one, "
                "and half of the ties",
                _pairs(s_in, s_out, 0.0, 0.0),
            ),
            Slip(
                "this is P(s_in >= s_out), the other class's view with ties counted as 1: "
                "count the pairs where the *out-of-distribution* score is the higher one, "
                "and half of the ties",
                _pairs(s_in, s_out, 0.0, 1.0),
            ),
            Slip(
                "this is the AUC in percent; return the fraction of pairs, between 0 and 1",
                100 * _pairs(s_in, s_out, 1.0, 0.5),
            ),
            Slip(
                "this counts ordered pairs but divides by the number of inputs, not by the "
                "number of pairs n_in * n_out",
                _pairs(s_in, s_out, 1.0, 0.5) * len(s_in) * len(s_out) / (len(s_in) + len(s_out)),
            ),
        ]
        compare(got, expected, f"{name}({len(s_in)} in, {len(s_out)} out)", slips=slips)
    print(
        "Correct: your AUC counts the pairs in order and half of the ties (checked on "
        "three sets of scores, two with many ties)."
    )


# --------------------------------------------------------------------------------------
# The AUC of two Gaussian scores
# --------------------------------------------------------------------------------------


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


# (mu_in, sd_in, mu_out, sd_out): unequal widths separate sd_in + sd_out, the variances
# and their average; the last case has the out-of-distribution scores lower (AUC < 1/2)
BINORMAL_CASES = [(0.0, 0.5, 0.7, 1.5), (2.5, 0.3, 3.4, 0.8), (1.0, 1.2, 0.4, 0.4)]


def check_binormal_auc(fn: Callable) -> None:
    """Check ``fn(mu_in, sd_in, mu_out, sd_out)``: the AUC ``P(s_out > s_in)`` when the
    scores are independent Gaussians, ``Phi((mu_out - mu_in) / sqrt(sd_in^2 + sd_out^2))``."""
    name = getattr(fn, "__name__", "your function")
    for mu_in, sd_in, mu_out, sd_out in BINORMAL_CASES:
        args = (mu_in, sd_in, mu_out, sd_out)
        got = as_number(run(fn, *args, name=name), f"{name}'s AUC")
        delta, width = mu_out - mu_in, math.hypot(sd_in, sd_out)
        expected = torch.tensor(_phi(delta / width), dtype=torch.float64)
        z = delta / width
        slips = [
            Slip(
                "this is 1 - AUC, the other class's view: the AUC is the probability that "
                "the *out-of-distribution* score is the higher one, P(s_out - s_in > 0)",
                torch.tensor(_phi(-z)),
            ),
            Slip(
                "the standard deviations were added; for independent scores the "
                "*variances* add: s_out - s_in has standard deviation "
                "sqrt(sd_in^2 + sd_out^2)",
                torch.tensor(_phi(delta / (sd_in + sd_out))),
            ),
            Slip(
                "the difference was divided by the variance sd_in^2 + sd_out^2; divide by "
                "its square root, the standard deviation of s_out - s_in",
                torch.tensor(_phi(delta / (sd_in**2 + sd_out**2))),
            ),
            Slip(
                "this is Phi(z sqrt 2), the AUC with the spread divided by sqrt 2: either the "
                "two variances were averaged (a pooled standard deviation), where the "
                "difference of the scores has their *sum*, or the normal CDF was written "
                "0.5 (1 + erf(z)), where it is 0.5 (1 + erf(z / sqrt 2))",
                torch.tensor(_phi(delta / math.sqrt((sd_in**2 + sd_out**2) / 2))),
            ),
            Slip(
                "only the in-distribution spread sd_in is used; s_out varies too, and "
                "the difference has variance sd_in^2 + sd_out^2",
                torch.tensor(_phi(delta / sd_in)),
            ),
            Slip(
                "only the out-of-distribution spread sd_out is used; s_in varies too, and "
                "the difference has variance sd_in^2 + sd_out^2",
                torch.tensor(_phi(delta / sd_out)),
            ),
            Slip(
                "this is the standard normal *density* at z; the probability "
                "P(s_out - s_in > 0) is its CDF, Phi(z)",
                torch.tensor(math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)),
            ),
            Slip(
                "this is z = (mu_out - mu_in) / sqrt(sd_in^2 + sd_out^2) itself; the AUC is "
                "the probability Phi(z)",
                torch.tensor(z),
            ),
        ]
        compare(
            got,
            expected,
            f"{name}{args}",
            slips=slips,
            advice=(
                "None of the usual slips gives this number. Write s_out - s_in, find its "
                "mean and variance, and ask for the probability that it is positive"
            ),
        )
    print(
        "Correct: the AUC of two Gaussian scores is Phi((mu_out - mu_in) / "
        "sqrt(sd_in^2 + sd_out^2)) (checked on three pairs, one below one half)."
    )


# --------------------------------------------------------------------------------------
# A typicality test for batches
# --------------------------------------------------------------------------------------

#: How far a resampled answer may fall from the normal approximation (relative).
TYPICALITY_RTOL = 0.10
# (batch size, false-alarm rate): a batch larger than one first, so that a forgotten
# sqrt(M) cannot pass; two rates, so that one-sided quantiles show
TYPICALITY_CASES = [(16, 0.05), (4, 0.1), (1, 0.05), (64, 0.05)]


def _normal_quantile(p: float) -> float:
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(p, dtype=torch.float64)))


def check_typicality_threshold(fn: Callable, seed: int = 0) -> None:
    """Check ``fn(train_scores, batch_size, alpha)``: the half-width ``eps`` such that the
    mean score of a batch of ``batch_size`` in-distribution inputs lies farther than
    ``eps`` from the training mean with probability ``alpha``:
    ``z_{1 - alpha / 2} * sd / sqrt(M)`` by the normal approximation, or the same by
    resampling the training scores (within 10 %)."""
    name = getattr(fn, "__name__", "your function")
    g = torch.Generator().manual_seed(seed)
    scores = 2.5 + 0.4 * torch.randn(20_000, generator=g, dtype=torch.float64)
    mean, sd = float(scores.mean()), float(scores.std())
    for m, alpha in TYPICALITY_CASES:
        got = as_number(run(fn, scores.clone(), m, alpha, name=name), f"{name}'s threshold")
        where = f"{name}(train_scores, batch_size={m}, alpha={alpha})"
        if not bool(torch.isfinite(got)) or float(got) <= 0:
            raise ExerciseError(
                f"{where} returned {float(got):.4g}; a half-width eps is a positive "
                "distance: flag the batch when |mean score - H_hat| > eps. A negative value "
                f"often comes from the quantile at alpha instead of 1 - alpha / 2"
            )
        z2, z1 = _normal_quantile(1 - alpha / 2), _normal_quantile(1 - alpha)
        expected = torch.tensor(z2 * sd / math.sqrt(m), dtype=torch.float64)
        slips = [
            Slip(
                "sqrt(M) is missing: the mean of M independent scores has standard "
                "deviation sd / sqrt(M), so the threshold shrinks with the batch",
                torch.tensor(z2 * sd),
            ),
            Slip(
                "the spread was divided by M; the standard deviation of a mean of M "
                "scores falls as 1 / sqrt(M), not 1 / M",
                torch.tensor(z2 * sd / m),
            ),
            Slip(
                f"this is the one-sided quantile z_(1 - alpha) = {z1:.3f}; the test flags "
                "a batch on *either* side of H_hat (|mean - H_hat| > eps), so alpha / 2 "
                f"goes in each tail: z_(1 - alpha / 2) = {z2:.3f}",
                torch.tensor(z1 * sd / math.sqrt(m)),
            ),
            Slip(
                "the variance was used for the spread; the threshold scales with the "
                "standard deviation (the square root of the variance)",
                torch.tensor(z2 * sd**2 / math.sqrt(m)),
            ),
            Slip(
                "this is the standard error sd / sqrt(M) alone; multiply by the normal "
                "quantile z_(1 - alpha / 2) that sets the false-alarm rate",
                torch.tensor(sd / math.sqrt(m)),
            ),
            Slip(
                "this is H_hat + eps, the upper end of the accepted range; return the "
                "half-width eps (the distance from H_hat)",
                torch.tensor(mean + z2 * sd / math.sqrt(m)),
            ),
        ]
        compare(
            got,
            expected,
            where,
            slips=slips,
            rtol=TYPICALITY_RTOL,
            advice=(
                "None of the usual slips gives this number. Under the null hypothesis the "
                "batch mean has mean H and standard deviation sd / sqrt(M); choose eps so "
                "that |mean - H| > eps with probability alpha. If you resample, draw at "
                "least 2,000 batches: a quantile of fewer is too noisy"
            ),
        )
    print(
        "Correct: your threshold is z_(1 - alpha / 2) sd / sqrt(M), the false-alarm rate "
        "you asked for at every batch size (checked for M = 1, 4, 16, 64)."
    )


# --------------------------------------------------------------------------------------
# Quantising probability tables
# --------------------------------------------------------------------------------------


def _tables() -> list[tuple[Tensor, int]]:
    g = torch.Generator().manual_seed(12)
    sharp = torch.softmax(25 * torch.randn(6, 17, generator=g, dtype=torch.float64), -1)
    one_hot = torch.zeros(2, 5, dtype=torch.float64)
    one_hot[0, 2] = one_hot[1, 0] = 1.0
    # rounding these to nearest sums to more than the total: 5 + 5 + 5 + 2 = 17 > 16
    over = torch.tensor([[0.3, 0.3, 0.3, 0.1]], dtype=torch.float64)
    return [(sharp, 24), (one_hot, 8), (over, 4)]


def _as_integers(got: object, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(got, Tensor):
        got = got.detach().cpu().numpy()
    if not isinstance(got, np.ndarray):
        raise ExerciseError(
            f"{name} should return a tensor or numpy array of integers, got {type(got).__name__}"
        )
    if got.shape != shape:
        raise ExerciseError(
            f"{name} returned shape {got.shape}; expected {shape}, one integer per probability"
        )
    values = got.astype(np.float64)
    if not np.isfinite(values).all() or (values != np.round(values)).any():
        raise ExerciseError(
            f"{name} returned values that are not whole numbers (e.g. "
            f"{values.ravel()[np.flatnonzero(values != np.round(values))[:1]]}"
            "): the coder needs integers; round down with floor"
        )
    return np.round(values).astype(np.int64)


def check_quantize(fn: Callable) -> None:
    """Check ``fn(probabilities, precision)``: integer tables of the same shape, each row
    summing to ``2^precision``, every entry at least 1, and each entry within ``L`` units
    of ``p * 2^precision`` (any such rounding is accepted)."""
    name = getattr(fn, "__name__", "your function")
    for p, precision in _tables():
        total, levels = 2**precision, p.shape[-1]
        q = _as_integers(run(fn, p.clone(), precision, name=name), name, tuple(p.shape))
        where = f"for precision {precision} and tables of {levels} values"
        if (q < 1).any():
            row, k = np.argwhere(q < 1)[0]
            raise ExerciseError(
                f"{name} gives value {k} of table {row} the integer {q[row, k]} {where} "
                f"(its probability is {float(p[row, k]):.3g}): the coder could never encode "
                "that value, and a model's zero is never certain. Give every value 1 first "
                "and share the rest, 2^precision - L, in proportion"
            )
        sums = q.sum(axis=-1)
        if (sums != total).any():
            row = int(np.flatnonzero(sums != total)[0])
            hint = (
                "rounding to nearest can overshoot; round down and hand the leftover to one value"
                if sums[row] > total
                else "rounding down leaves units over; hand them to one value (the most "
                "likely, say)"
            )
            raise ExerciseError(
                f"table {row} sums to {sums[row]}, not 2^{precision} = {total} {where}: {hint}"
            )
        gap = np.abs(q - p.numpy() * total)
        if gap.max() > levels:
            row, k = np.unravel_index(int(gap.argmax()), gap.shape)
            raise ExerciseError(
                f"value {k} of table {row} gets {q[row, k]} units {where}, but its share "
                f"is p * 2^precision = {float(p[row, k]) * total:.1f}: the integers must "
                "follow the probabilities (share 2^precision - L in proportion to p)"
            )
    print(
        "Correct: every table sums to 2^precision, no value gets zero, and the integers "
        "follow the probabilities (checked on sharp, one-hot and awkward tables)."
    )


# --------------------------------------------------------------------------------------
# Train the coder's model
# --------------------------------------------------------------------------------------

CODER_STEPS = 300
CODER_GOAL = 2.6  # bits per pixel on the test digits; bz2 -9 needs about 2.81
CODER_FLOOR = (
    0.0,
    "a discrete negative log-likelihood cannot be negative: is the sign of your loss right?",
)


def check_fit_coder(
    fit_coder: Callable[[Tensor, torch.Generator], tuple[DiscretizedMAF, list[float]]],
    seed: int = 0,
) -> None:
    """Exercise: ``fit_coder(train_images, generator)`` builds a ``DiscretizedMAF`` for the
    8 x 8 digits (64 pixels, 17 levels), trains it on the exact discrete log-likelihood for
    at most 300 steps and returns ``(model, history)``. The model's bitstream must code the
    359 test digits in fewer than 2.6 bits per pixel and decode them exactly."""
    train, test = load_digits()
    x = test.double()
    goal = Goal(
        CODER_GOAL,
        steps=CODER_STEPS,
        n=len(x),
        phrases=(
            "{subject} the {n} test digits in {value:.3f} bits per pixel, and every decoded "
            "image equals the original; bz2 needs about 2.81",
            "{subject} the test digits in {value:.3f} bits per pixel",
        ),
    )

    def inspect(model: DiscretizedMAF) -> None:
        if model.dim != 64 or model.levels != 17:
            raise ExerciseError(
                f"the model must describe 64 pixels with 17 levels, got "
                f"dim={model.dim}, levels={model.levels}"
            )

    def measure(model: DiscretizedMAF) -> Measurement:
        coder = model.double().eval()
        try:
            words, _ = encode(coder, x)
            decoded = decode(coder, words, len(x))
        except Exception as failure:
            raise ExerciseError(
                f"coding the test digits with your model failed: "
                f"{type(failure).__name__}: {failure}"
            ) from None
        if not torch.equal(decoded, x):
            raise ExerciseError(
                "the decoded images differ from the originals: the model's "
                "tables changed between encoding and decoding"
            )
        return Measurement(32 * len(words) / x.numel())

    check_fit(
        fit_coder,
        train.clone(),
        torch.Generator().manual_seed(seed),
        name="fit_coder",
        goal=goal,
        seed=seed,
        model_type=DiscretizedMAF,
        model_hint="the DiscretizedMAF you trained",
        floor=CODER_FLOOR,
        inspect=inspect,
        measure=measure,
        subject="your model codes",
        fallback="train longer (up to 300 steps), with a larger learning rate or a wider MADE",
    )
