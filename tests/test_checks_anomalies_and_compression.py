"""The exercise checks of chapter 11 accept right answers and name wrong ones."""

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
    check_fit_coder,
    check_quantize,
)

CH = "11_anomalies_and_compression"
auc_ref = solution(CH, "auc_from_pairs")
quantize_ref = solution(CH, "quantize")


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


WRONG = [
    Wrong(check_auc_from_pairs, "stub", stub, "not written yet"),
    Wrong(check_auc_from_pairs, "ties-zero", _pairs(0.0), "ties count as 0"),
    Wrong(check_auc_from_pairs, "ties-one", _pairs(1.0), "ties count as 1"),
    Wrong(check_auc_from_pairs, "reversed", _pairs(0.5, reverse=True), "reversed"),
    Wrong(check_auc_from_pairs, "per-input", auc_per_input, "number of pairs"),
    Wrong(check_quantize, "stub", stub, "not written yet"),
    Wrong(check_quantize, "round", quantize_round, "could never encode"),
    Wrong(check_quantize, "floor-only", quantize_floor_only, "leftover|units over"),
    Wrong(check_quantize, "uniform", quantize_uniform, "follow the probabilities"),
    Wrong(check_quantize, "floats", quantize_floats, "whole numbers"),
]

RIGHT = [
    Right(check_auc_from_pairs, "solution", auc_ref),
    Right(check_auc_from_pairs, "sklearn", auc_sklearn),
    Right(check_auc_from_pairs, "loops-float32", auc_loops_float32),
    Right(check_quantize, "solution", quantize_ref),
    Right(check_quantize, "package-numpy", quantize_numpy),
    Right(check_quantize, "largest-remainder", quantize_largest_remainder),
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
