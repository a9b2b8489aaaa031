"""Tests of ``nfcourse.applications`` (chapter 12): importance weights, the simulator's
closed-form posterior, and the augmentation helpers."""

import math

import pytest
import torch

from nfcourse.applications import augmentation as aug
from nfcourse.applications import inference as inf
from nfcourse.core import Flow
from nfcourse.flows.affine import ElementwiseAffine
from nfcourse.targets import log_partition


def test_ess_and_log_z_for_equal_and_one_dominant_weight():
    lw = torch.full((10,), 3.0)
    assert inf.effective_sample_size(lw) == pytest.approx(10)
    assert inf.log_z_estimate(lw)[0] == pytest.approx(3.0)
    lw = torch.tensor([1000.0, 0.0, 0.0])
    assert inf.effective_sample_size(lw) == pytest.approx(1.0)
    assert inf.log_z_estimate(lw)[0] == pytest.approx(1000 - math.log(3))
    with pytest.raises(ValueError, match="log_w must be a non-empty 1D"):
        inf.effective_sample_size(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="NaN"):
        inf.log_z_estimate(torch.tensor([0.0, float("nan")]))


def test_importance_sampling_recovers_log_z_of_a_gaussian():
    # target: exp(-|x - m|^2 / (2 * 0.8^2)) unnormalised, Z = 2 pi 0.8^2; proposal N(0, I)
    flow = Flow([ElementwiseAffine(2)])
    m = torch.tensor([0.3, -0.2])

    def log_target(x):
        return -0.5 * ((x - m) ** 2).sum(1) / 0.64

    _, lw = inf.importance_log_weights(
        flow, log_target, 20000, generator=torch.Generator().manual_seed(0)
    )
    log_z, se = inf.log_z_estimate(lw)
    assert abs(log_z - math.log(2 * math.pi * 0.64)) < 4 * se + 1e-3
    assert 0.5 * 20000 < inf.effective_sample_size(lw) < 20000


@pytest.mark.parametrize("separation", [0.0, 3.0, 8.0])
def test_two_modes_energy_is_normalised(separation):
    assert abs(log_partition(inf.two_modes_energy(separation))) < 1e-6


def test_linear_gaussian_posterior_matches_bayes_rule_on_a_grid():
    sim = inf.LinearGaussianSimulator(
        torch.tensor([[1.0, 0.5], [0.0, 1.0], [1.0, -1.0]]), noise=0.5
    )
    x = torch.tensor([[0.7, -0.4, 1.1]], dtype=torch.float64)
    g = torch.linspace(-4, 4, 401, dtype=torch.float64)
    t1, t2 = torch.meshgrid(g, g, indexing="xy")
    theta = torch.stack([t1.flatten(), t2.flatten()], 1)
    log_joint = -0.5 * (theta**2).sum(1) - 0.5 * ((x - theta @ sim.matrix.T) ** 2).sum(1) / 0.25
    cell = float(g[1] - g[0]) ** 2
    log_post = log_joint - torch.logsumexp(log_joint, 0) - math.log(cell)
    exact = sim.posterior_log_prob(theta, x.expand(len(theta), 3))
    inside = exact > exact.max() - 10
    torch.testing.assert_close(log_post[inside], exact[inside], atol=1e-6, rtol=0)
    s = sim.posterior_sample(x, 20000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s.mean(0), sim.posterior_mean(x)[0], atol=0.02, rtol=0)


def test_augmentation_helpers_shapes_and_split():
    images, labels = aug.load_labelled_digits()
    train, test = aug.few_labels_split(labels, 3, seed=1)
    assert len(train) == 30 and len(test) == 700
    assert not set(train.tolist()) & set(test.tolist())
    assert torch.equal(labels[train].bincount(), torch.full((10,), 3))
    x, y = images[train], labels[train]
    code = aug.PCACode(images[:200], 8)
    back = code.decode(code.encode(images[:200]))
    assert back.shape == (200, 64)
    gx, gy = aug.gaussian_samples(x, y, 4, code_dim=5)
    assert gx.shape == (40, 64) and gy.tolist() == [k for k in range(10) for _ in range(4)]
    assert float(gx.min()) >= 0 and float(gx.max()) <= 16
    fx, fy = aug.flow_samples(x, y, 2, code_dim=5, steps=5)
    assert fx.shape == (20, 64) and torch.isfinite(fx).all()
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        aug.one_hot(torch.tensor([3, 10]))
