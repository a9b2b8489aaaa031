"""Anomaly scores: ROC AUC against known cases, the ROC curve, the scores and the
out-of-distribution images."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from nfcourse.applications import anomaly


def test_auc_of_known_cases():
    s_in = torch.tensor([0.0, 1.0, 2.0])
    assert anomaly.roc_auc(s_in, torch.tensor([3.0, 4.0])) == 1.0
    assert anomaly.roc_auc(s_in, torch.tensor([-1.0, -2.0])) == 0.0
    assert anomaly.roc_auc(torch.ones(4), torch.ones(3)) == 0.5
    # of the 2 x 2 pairs, two in order, one tie, one reversed: (2 + 0.5) / 4
    assert anomaly.roc_auc(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5])) == 0.625


def test_auc_equals_pair_count_and_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    s_in = torch.randint(0, 5, (300,), generator=g).double()
    s_out = torch.randint(1, 7, (200,), generator=g).double()
    pairs = (s_out[:, None] > s_in).double() + 0.5 * (s_out[:, None] == s_in).double()
    labels = np.r_[np.zeros(300), np.ones(200)]
    expected = roc_auc_score(labels, torch.cat([s_in, s_out]).numpy())
    auc = anomaly.roc_auc(s_in, s_out)
    assert auc == pytest.approx(float(pairs.mean()), abs=1e-12)
    assert auc == pytest.approx(expected, abs=1e-12)
    assert anomaly.roc_auc(s_in.numpy(), s_out.numpy()) == auc


def test_roc_curve_area_is_the_auc():
    g = torch.Generator().manual_seed(1)
    s_in, s_out = torch.randn(100, generator=g), torch.randn(80, generator=g) + 1
    fpr, tpr = anomaly.roc_curve(s_in, s_out)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(anomaly.roc_auc(s_in, s_out), abs=1e-12)


@pytest.mark.parametrize(
    "bad, match",
    [
        ([1.0, 2.0], "1-D torch.Tensor or numpy array"),
        (torch.ones(2, 2), "1-D array"),
        (torch.ones(0), "empty"),
        (torch.tensor([0.0, float("nan")]), "non-finite"),
        (torch.tensor([1, 2]), "floating-point"),
    ],
)
def test_auc_rejects_bad_scores(bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        anomaly.roc_auc(torch.ones(3), bad)


def test_scores():
    log_p = torch.tensor([-1.0, -5.0])
    log_p0 = torch.tensor([-2.0, -2.0])
    assert torch.equal(anomaly.likelihood_ratio_score(log_p, log_p0), torch.tensor([-1.0, 3.0]))
    nll = torch.tensor([1.0, 4.0])
    assert torch.equal(
        anomaly.typicality_score(nll, torch.tensor([2.0, 4.0])), torch.tensor([2.0, 1.0])
    )
    with pytest.raises(ValueError, match="same inputs"):
        anomaly.likelihood_ratio_score(log_p, torch.zeros(3))
    with pytest.raises(TypeError, match="train_nll"):
        anomaly.typicality_score(nll, torch.zeros(0))


def test_images():
    g = torch.Generator().manual_seed(0)
    for x in (anomaly.noise_images(7, generator=g), anomaly.shape_images(7, generator=g)):
        assert x.shape == (7, 64) and x.dtype == torch.float32
        assert bool(((x >= 0) & (x <= 16) & (x == x.round())).all())
    shapes = anomaly.shape_images(6, side=10, levels=5, generator=g)
    assert shapes.shape == (6, 100) and set(shapes.unique().tolist()) == {0.0, 4.0}
    assert bool((shapes.sum(dim=1) > 0).all())
    digits = torch.arange(64.0).view(1, 64) % 17
    img = digits.view(8, 8)
    assert torch.equal(anomaly.transform_images(digits, "flip").view(8, 8), img.flip(0))
    assert torch.equal(anomaly.transform_images(digits, "invert"), 16 - digits)
    rotated = anomaly.transform_images(digits, "rotate").view(8, 8)
    assert torch.equal(rotated, torch.rot90(img, 1))
    assert torch.equal(anomaly.constant_images([0, 3]), torch.tensor([[0.0], [3.0]]).expand(2, 64))
    blurred = anomaly.blur_images(torch.full((1, 64), 9.0)).view(8, 8)
    assert blurred[3, 3] == 9 and blurred[0, 0] == 4  # 4 of 9 neighbours inside
    with pytest.raises(ValueError, match="kind must be one of"):
        anomaly.transform_images(digits, "mirror")
    with pytest.raises(ValueError, match="not a square"):
        anomaly.blur_images(torch.ones(2, 10))
    with pytest.raises(ValueError, match="values must be integers in 0..16"):
        anomaly.constant_images([17])
    with pytest.raises(ValueError, match="side must be an integer"):
        anomaly.noise_images(3, side=1)
