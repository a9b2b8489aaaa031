"""The chapter 10-12 application helpers refuse silent wrong answers (issue 25): shapes
that would broadcast, NaN, numpy scalars and counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nfcourse.applications import anomaly, augmentation
from nfcourse.applications import inference as inf
from nfcourse.flows import maf_flow


@pytest.fixture(scope="module")
def flow():
    return maf_flow(2, n_layers=1, hidden=(8,), seed=0)


def _log_target(x):
    return -0.5 * (x**2).sum(1)


def test_importance_log_weights_refuses_a_target_of_shape_n_by_1(flow):
    with pytest.raises(ValueError, match=r"log-densities of shape \(5,\), got shape \(5, 1\)"):
        inf.importance_log_weights(flow, lambda x: _log_target(x)[:, None], 5)


def test_importance_log_weights_names_the_rows_where_the_target_is_nan(flow):
    def target(x):
        out = _log_target(x)
        out[2] = math.nan
        return out

    with pytest.raises(ValueError, match=r"NaN or \+inf at rows \[2\]"):
        inf.importance_log_weights(flow, target, 5)


def test_importance_log_weights_accepts_minus_inf_and_numpy_counts(flow):
    x, log_w = inf.importance_log_weights(flow, lambda x: torch.full((len(x),), -math.inf), 4)
    assert log_w.shape == (4,) and bool((log_w == -math.inf).all())
    x, log_w = inf.importance_log_weights(flow, _log_target, np.int64(5))
    assert x.shape == (5, 2) and log_w.shape == (5,)


def test_log_z_estimate_of_all_zero_weights_is_an_error_not_nan():
    with pytest.raises(ValueError, match="no sample has positive weight"):
        inf.log_z_estimate(torch.full((4,), -math.inf))
    log_z, se = inf.log_z_estimate(torch.tensor([0.0, -math.inf]))
    assert log_z == pytest.approx(-math.log(2)) and math.isfinite(se)


def test_two_modes_energy_checks_its_numbers_and_accepts_numpy_scalars():
    energy = inf.two_modes_energy(np.float32(2.0), np.float64(0.5))
    assert torch.isfinite(energy(torch.zeros(1, 2))).all()
    for bad in (math.inf, math.nan, -1.0, "a"):
        with pytest.raises(ValueError, match="separation must be a finite non-negative"):
            inf.two_modes_energy(bad)
    with pytest.raises(ValueError, match="scale must be a finite positive number"):
        inf.two_modes_energy(1.0, math.nan)


def test_linear_gaussian_simulator_refuses_bad_numbers_and_broadcasting_rows():
    with pytest.raises(ValueError, match="noise must be a finite positive number"):
        inf.LinearGaussianSimulator(torch.eye(2), math.inf)
    with pytest.raises(ValueError, match="matrix must hold finite floating-point numbers"):
        inf.LinearGaussianSimulator(torch.eye(2) * math.nan, 1.0)
    sim = inf.LinearGaussianSimulator(torch.eye(2), np.float32(0.5), np.float64(1.0))
    with pytest.raises(ValueError, match="theta has 3 rows but x has 1"):
        sim.posterior_log_prob(torch.zeros(3, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="x must be one observation"):
        sim.posterior_sample(torch.zeros(2, 2), 3)
    assert sim.posterior_sample(torch.zeros(2), np.int64(3)).shape == (3, 2)


def test_posterior_kl_takes_one_observation_and_a_numpy_count():
    sim = inf.LinearGaussianSimulator(torch.eye(2, dtype=torch.float64), 0.5)
    flow = maf_flow(2, n_layers=1, hidden=(8,), seed=0, context_dim=2)
    kl, se = inf.posterior_kl(flow, sim, torch.zeros(2), n=np.int64(50))
    assert math.isfinite(kl) and math.isfinite(se)
    with pytest.raises(ValueError, match="x must be one observation"):
        inf.posterior_kl(flow, sim, torch.zeros(2, 2), n=10)


def test_anomaly_scores_refuse_nan_and_integer_tensors():
    with pytest.raises(ValueError, match=r"log_p holds NaN or \+inf at \[0\]"):
        anomaly.likelihood_ratio_score(torch.tensor([math.nan]), torch.tensor([1.0]))
    with pytest.raises(TypeError, match="float32 or float64"):
        anomaly.likelihood_ratio_score(torch.tensor([1]), torch.tensor([1]))
    with pytest.raises(ValueError, match="both -inf"):
        anomaly.likelihood_ratio_score(torch.tensor([-math.inf]), torch.tensor([-math.inf]))
    score = anomaly.likelihood_ratio_score(torch.tensor([-math.inf]), torch.tensor([0.0]))
    assert score.item() == math.inf  # zero density under the model: most anomalous
    with pytest.raises(ValueError, match="train_nll holds NaN"):
        anomaly.typicality_score(torch.tensor([1.0]), torch.tensor([math.nan]))
    with pytest.raises(ValueError, match=r"train_nll holds \+inf"):
        anomaly.typicality_score(torch.tensor([1.0]), torch.tensor([math.inf]))


def test_image_helpers_refuse_nan_pixels_and_fractional_levels():
    with pytest.raises(ValueError, match="non-finite"):
        anomaly.blur_images(torch.full((1, 4), math.nan))
    with pytest.raises(ValueError, match="non-finite"):
        anomaly.transform_images(torch.full((1, 4), math.nan), "flip")
    with pytest.raises(TypeError, match="levels must be a positive integer"):
        anomaly.transform_images(torch.zeros(1, 4), "invert", levels=2.5)
    assert anomaly.noise_images(np.int64(2), np.int64(4), np.int64(5)).shape == (2, 16)


def test_augmentation_helpers_check_counts_labels_and_code_shapes():
    labels = torch.arange(10).repeat(20)
    train, test = augmentation.few_labels_split(labels, np.int64(2), n_test=np.int64(50))
    assert train.shape == (20,) and test.shape == (50,)
    with pytest.raises(TypeError, match="n_test must be a positive integer"):
        augmentation.few_labels_split(labels, 2, n_test=50.5)
    with pytest.raises(ValueError, match="labels must be a 1D integer tensor"):
        augmentation.few_labels_split(labels.float(), 2)
    code = augmentation.PCACode(torch.randn(20, 5, generator=torch.Generator().manual_seed(0)), 2)
    with pytest.raises(ValueError, match=r"expected shape \(B, 5\)"):
        code.encode(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"expected shape \(B, 2\)"):
        code.decode(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="non-finite"):
        code.encode(torch.full((1, 5), math.nan))
