"""The exercise checks of chapter 11 accept right answers and name wrong ones."""

import math
import re

import numpy as np
import pytest
import torch
from check_tables import Right, Wrong, assert_right, assert_wrong, outcome, stub
from solution_code import solution

import nfcourse as nf
from nfcourse.applications.compression import DiscretizedMAF, quantize_probabilities
from nfcourse.checks.anomalies_and_compression import (
    CODER_GOAL,
    check_auc_from_pairs,
    check_binormal_auc,
    check_fit_coder,
    check_quantize,
    check_typicality_threshold,
)

CH = "11_anomalies_and_compression"
auc_ref = solution(CH, "auc_from_pairs")
quantize_ref = solution(CH, "quantize")
binormal_ref = solution(CH, "binormal_auc")
typicality_ref = solution(CH, "typicality_threshold")


def _pairs(tie, reverse=False):
    def auc(s_in, s_out):
        a, b = (s_in, s_out) if reverse else (s_out, s_in)
        above = (a[:, None] > b[None, :]).double()
        ties = (a[:, None] == b[None, :]).double()
        return (above + tie * ties).mean()

    return auc


def auc_per_input(s_in, s_out):
    above = (s_out[:, None] > s_in[None, :]).double()
    ties = (s_out[:, None] == s_in[None, :]).double()
    return (above + 0.5 * ties).sum() / (len(s_in) + len(s_out))


def auc_sklearn(s_in, s_out):
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
    return float(roc_auc_score(labels, torch.cat([s_in, s_out]).numpy()))


def auc_loops_float32(s_in, s_out):
    total = 0.0
    for o in s_out.float().tolist():
        for i in s_in.float().tolist():
            total += 1.0 if o > i else 0.5 if o == i else 0.0
    return torch.tensor(total / (len(s_in) * len(s_out)), dtype=torch.float32)


def quantize_round(p, precision):
    return torch.round(p * 2**precision).long()


def quantize_floor_only(p, precision):
    return 1 + torch.floor(p * (2**precision - p.shape[-1])).long()


def quantize_uniform(p, precision):
    q = torch.full(p.shape, 2**precision // p.shape[-1], dtype=torch.long)
    q[:, 0] += 2**precision - q.sum(dim=1)
    return q


def quantize_floats(p, precision):
    return p * 2**precision


def quantize_numpy(p, precision):
    return quantize_probabilities(p.numpy(), precision)


def quantize_largest_remainder(p, precision):
    total, levels = 2**precision, p.shape[-1]
    share = p * (total - levels)
    q = 1 + share.floor().long()
    left = total - q.sum(dim=1)
    order = (share - share.floor()).argsort(dim=1, descending=True)
    for row in range(len(q)):
        q[row, order[row, : int(left[row])]] += 1
    return q


# --- the AUC of two Gaussian scores ------------------------------------------------------


def _phi(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def binormal(width=lambda a, b: math.hypot(a, b), reverse=False, cdf=_phi):
    def auc(mu_in, sd_in, mu_out, sd_out):
        delta = (mu_in - mu_out) if reverse else (mu_out - mu_in)
        return cdf(delta / width(sd_in, sd_out))

    return auc


def binormal_torch_float32(mu_in, sd_in, mu_out, sd_out):
    normal = torch.distributions.Normal(torch.tensor(mu_in), torch.tensor(sd_in))
    spread = torch.tensor(sd_in**2 + sd_out**2).sqrt()
    return normal.cdf(torch.tensor(mu_in) + (mu_out - mu_in) * sd_in / spread)


def binormal_scipy(mu_in, sd_in, mu_out, sd_out):
    from scipy.stats import norm

    return norm.cdf(mu_out - mu_in, scale=np.hypot(sd_in, sd_out))


def binormal_survival(mu_in, sd_in, mu_out, sd_out):
    from scipy.stats import norm

    return norm.sf(0.0, loc=mu_out - mu_in, scale=math.sqrt(sd_in**2 + sd_out**2))


def binormal_wrong_constant(mu_in, sd_in, mu_out, sd_out):
    return _phi((mu_out - mu_in) / math.hypot(sd_in, sd_out)) + 0.05


# --- the typicality threshold -------------------------------------------------------------


def _z(p):
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(p)))


def typicality(tail=lambda a: 1 - a / 2, root=math.sqrt, spread="sd", plus_mean=False):
    def threshold(train_scores, batch_size, alpha):
        sd = float(train_scores.std())
        s = sd**2 if spread == "var" else sd
        eps = _z(tail(alpha)) * s / root(batch_size)
        return eps + float(train_scores.mean()) * plus_mean

    return threshold


def typicality_bootstrap(train_scores, batch_size, alpha, draws=2000):
    g = torch.Generator().manual_seed(3)
    pick = torch.randint(len(train_scores), (draws, batch_size), generator=g)
    gaps = (train_scores[pick].mean(dim=1) - train_scores.mean()).abs()
    return torch.quantile(gaps, 1 - alpha)


def typicality_numpy(train_scores, batch_size, alpha):
    from scipy.stats import norm

    x = train_scores.numpy()
    return norm.ppf(1 - alpha / 2) * x.std(ddof=1) / np.sqrt(batch_size)


def typicality_float32(train_scores, batch_size, alpha):
    sd = train_scores.float().std()
    return (
        torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - alpha / 2))
        * sd
        / (batch_size**0.5)
    )


WRONG = [
    Wrong(check_auc_from_pairs, "stub", stub, "not written yet"),
    Wrong(check_auc_from_pairs, "ties-zero", _pairs(0.0), "ties count as 0"),
    Wrong(check_auc_from_pairs, "ties-one", _pairs(1.0), "ties count as 1"),
    Wrong(check_auc_from_pairs, "reversed", _pairs(0.5, reverse=True), "reversed"),
    Wrong(check_auc_from_pairs, "per-input", auc_per_input, "number of pairs"),
    Wrong(
        check_auc_from_pairs, "reversed-ties-zero", _pairs(0.0, reverse=True), "ties counted as 0"
    ),
    Wrong(
        check_auc_from_pairs, "reversed-ties-one", _pairs(1.0, reverse=True), "ties counted as 1"
    ),
    Wrong(check_auc_from_pairs, "percent", lambda a, b: 100 * auc_ref(a, b), "percent"),
    Wrong(check_quantize, "stub", stub, "not written yet"),
    Wrong(check_quantize, "round", quantize_round, "could never encode"),
    Wrong(check_quantize, "floor-only", quantize_floor_only, "leftover|units over"),
    Wrong(check_quantize, "uniform", quantize_uniform, "follow the probabilities"),
    Wrong(check_quantize, "floats", quantize_floats, "whole numbers"),
    Wrong(check_binormal_auc, "stub", stub, "not written yet"),
    Wrong(check_binormal_auc, "reversed", binormal(reverse=True), "other class's view"),
    Wrong(check_binormal_auc, "sd-sum", binormal(width=lambda a, b: a + b), r"variances\* add"),
    Wrong(
        check_binormal_auc, "no-sqrt", binormal(width=lambda a, b: a * a + b * b), "square root"
    ),
    Wrong(
        check_binormal_auc,
        "pooled",
        binormal(width=lambda a, b: math.sqrt((a * a + b * b) / 2)),
        "averaged.*erf",
    ),
    Wrong(check_binormal_auc, "sd-in-only", binormal(width=lambda a, b: a), "only the in-"),
    Wrong(check_binormal_auc, "sd-out-only", binormal(width=lambda a, b: b), "only the out-"),
    Wrong(
        check_binormal_auc,
        "erf-no-sqrt2",
        binormal(cdf=lambda z: 0.5 * (1 + math.erf(z))),
        r"averaged.*erf\(z / sqrt 2\)",
    ),
    Wrong(
        check_binormal_auc,
        "density",
        binormal(cdf=lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)),
        "density",
    ),
    Wrong(check_binormal_auc, "z-only", binormal(cdf=lambda z: z), "itself"),
    Wrong(check_binormal_auc, "unknown", binormal_wrong_constant, "none of the usual slips"),
    Wrong(check_typicality_threshold, "stub", stub, "not written yet"),
    Wrong(check_typicality_threshold, "no-sqrt-m", typicality(root=lambda m: 1.0), "sqrt\\(M\\)"),
    Wrong(check_typicality_threshold, "over-m", typicality(root=lambda m: m), "1 / sqrt\\(M\\)"),
    Wrong(check_typicality_threshold, "one-sided", typicality(tail=lambda a: 1 - a), "one-sided"),
    Wrong(check_typicality_threshold, "variance", typicality(spread="var"), "variance"),
    Wrong(
        check_typicality_threshold,
        "no-z",
        typicality(tail=lambda a: 0.8413447460685429),
        "quantile",
    ),
    Wrong(check_typicality_threshold, "plus-mean", typicality(plus_mean=True), "half-width"),
    Wrong(check_typicality_threshold, "alpha-quantile", typicality(tail=lambda a: a), "positive"),
]

RIGHT = [
    Right(check_auc_from_pairs, "solution", auc_ref),
    Right(check_auc_from_pairs, "sklearn", auc_sklearn),
    Right(check_auc_from_pairs, "loops-float32", auc_loops_float32),
    Right(check_quantize, "solution", quantize_ref),
    Right(check_quantize, "package-numpy", quantize_numpy),
    Right(check_quantize, "largest-remainder", quantize_largest_remainder),
    Right(check_binormal_auc, "solution", binormal_ref),
    Right(check_binormal_auc, "torch-float32", binormal_torch_float32),
    Right(check_binormal_auc, "scipy", binormal_scipy),
    Right(check_binormal_auc, "survival", binormal_survival),
    Right(check_typicality_threshold, "solution", typicality_ref),
    Right(check_typicality_threshold, "bootstrap", typicality_bootstrap),
    Right(check_typicality_threshold, "numpy", typicality_numpy),
    Right(check_typicality_threshold, "float32", typicality_float32),
]


@pytest.mark.parametrize("row", [w.param() for w in WRONG])
def test_check_rejects_and_names_the_mistake(row):
    assert_wrong(row)


@pytest.mark.parametrize("row", [r.param() for r in RIGHT])
def test_check_accepts_right_answers_written_differently(row):
    assert_right(row)


# --- the build-and-train exercise ---------------------------------------------------------


def _coder(sign=1.0, steps=200, dtype=torch.float32):
    def fit_coder(train_images, generator):
        model = DiscretizedMAF(64, 17, hidden=(64,), seed=0).to(dtype)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        x = train_images.to(dtype)

        def loss_fn(step):
            pick = torch.randint(len(x), (128,), generator=generator)
            return -sign * model.log_prob(x[pick]).mean() / 64

        return model, nf.train(
            loss_fn,
            model,
            steps,
            optimizer=optimizer,
            scheduler=schedule,
            progress=False,
            max_loss=1e9,
        )

    return fit_coder


def test_fit_coder_reference_answer_reaches_the_goal_with_margin():
    fit = solution(CH, "fit_coder")
    raised, message = outcome(Right(check_fit_coder, "solution", fit))
    assert not raised, message
    bpp = float(re.search(r"in ([0-9.]+) bits per pixel", message).group(1))
    assert bpp < CODER_GOAL - 0.15


def test_fit_coder_accepts_float64():
    assert_right(Right(check_fit_coder, "float64", _coder(steps=150, dtype=torch.float64)))


@pytest.mark.parametrize(
    "wrong, match",
    [
        (_coder(sign=-1.0, steps=30), "sign|went up|below"),
        (_coder(steps=2), "half|train longer|budget|steps"),
    ],
)
def test_fit_coder_check_names_the_cause_of_a_miss(wrong, match):
    assert_wrong(Wrong(check_fit_coder, "miss", wrong, match))


def test_fit_coder_rejects_another_model():
    def fit(train_images, generator):
        flow = nf.maf_flow(64, n_layers=1, hidden=(4,))
        return flow, [1.0]

    assert_wrong(Wrong(check_fit_coder, "model", fit, "DiscretizedMAF"))
