"""Toy densities: samples follow the stated law, log-densities are normalised and exact."""

import math

import pytest
import torch

import nfcourse as nf
from nfcourse import densities as data


def _grid_mass(density, lo, hi, n=801):
    g = torch.linspace(lo, hi, n, dtype=torch.float64)
    x1, x2 = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([x1.flatten(), x2.flatten()], dim=1)
    cell = float(g[1] - g[0]) ** 2
    return float(density.log_prob(pts).exp().sum() * cell)


@pytest.mark.parametrize("density", [data.GaussianRing(), data.SineWave(noise=0.3)])
def test_2d_log_prob_integrates_to_one(density):
    assert abs(_grid_mass(density, -5, 5) - 1) < 5e-3


def test_checkerboard_samples_lie_on_dark_squares_with_density_one_eighth():
    d = data.Checkerboard()
    x = d.sample(20_000, dtype=torch.float64)
    lp = d.log_prob(x)
    assert torch.allclose(lp, torch.full_like(lp, -math.log(8)))
    light = torch.tensor([[0.5, -0.5], [-1.5, -0.5]], dtype=torch.float64)
    assert torch.isinf(d.log_prob(light)).all()
    squares = (torch.floor(x) + 2).long()
    counts = torch.bincount(squares[:, 0] * 4 + squares[:, 1], minlength=16)
    assert (counts > 0).sum() == 8
    assert counts.max() / counts[counts > 0].min() < 1.15


@pytest.mark.parametrize(
    "density",
    [data.Checkerboard(), data.GaussianRing(), data.SineWave(), data.GaussianMixture1D()],
)
def test_entropy_matches_monte_carlo_of_minus_log_prob(density):
    x = density.sample(200_000, seed=99, dtype=torch.float64)
    mc = float(-density.log_prob(x).mean())
    assert abs(mc - density.entropy()) < 0.01


def test_sine_wave_follows_the_seed_recipe():
    x = data.SineWave(noise=0.1).sample(50_000, dtype=torch.float64)
    assert x[:, 1].min() >= -3 and x[:, 1].max() <= 3
    residual = x[:, 0] - torch.sin(x[:, 1])
    assert abs(float(residual.std()) - 0.1) < 0.003


def test_samples_are_reproducible_and_seed_dependent():
    d = data.GaussianRing()
    torch.testing.assert_close(d.sample(10, seed=4), d.sample(10, seed=4))
    assert not torch.equal(d.sample(10, seed=4), d.sample(10, seed=5))


def test_two_moons_ships_with_scikit_learn_and_has_no_exact_density():
    x = data.TwoMoons().sample(100)
    assert x.shape == (100, 2)
    with pytest.raises(NotImplementedError, match="no exact log-density"):
        data.TwoMoons().log_prob(x)


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="positive integer"):
        data.Checkerboard().sample(0)
    with pytest.raises(ValueError, match=r"expected shape \(B, 2\)"):
        data.Checkerboard().log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="one entry per component"):
        data.GaussianMixture1D(means=(0.0, 1.0), stds=(1.0,))


def test_kl_divergence_is_zero_for_the_truth_and_matches_a_closed_form():
    p = data.GaussianMixture1D(means=(0.0,), stds=(1.0,))
    kl, se = p.kl_divergence(lambda x: p.log_prob(x.double()))
    assert abs(kl) < 1e-6 and se < 1e-6
    q = torch.distributions.Normal(torch.tensor([0.0]), torch.tensor([2.0]))
    kl, se = p.kl_divergence(lambda x: q.log_prob(x).sum(dim=1), n=100_000)
    exact = math.log(2.0) + 1 / 8 - 0.5
    assert abs(kl - exact) < 4 * se + 1e-4


def test_kl_divergence_feeds_the_model_its_own_dtype():
    ring = data.GaussianRing()
    flow64 = nf.Flow(nf.ElementwiseAffine(2, 2.0)).double()
    kl, _ = ring.kl_divergence(flow64, n=1000)
    assert math.isfinite(kl) and kl > 0
    with pytest.raises(TypeError, match="log_prob"):
        ring.kl_divergence(42)


def test_student_t_integrates_to_one_and_its_samples_match_its_density():
    density = data.StudentT2D()
    t = torch.linspace(-80, 80, 2401, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), dim=-1).reshape(-1, 2)
    mass = float(density.log_prob(grid).exp().sum() * (t[1] - t[0]) ** 2)
    assert abs(mass - 1) < 5e-3  # the heavy tails beyond the grid hold the rest
    x = density.sample(200_000, seed=3, dtype=torch.float64)
    # the fraction of samples in a box against the integral of the density over it
    inside = ((x[:, 0].abs() < 2) & (x[:, 1].abs() < 1)).double().mean()
    s = torch.linspace(-2, 2, 801, dtype=torch.float64)
    u = torch.linspace(-1, 1, 401, dtype=torch.float64)
    box = torch.stack(torch.meshgrid(s, u, indexing="ij"), dim=-1).reshape(-1, 2)
    integral = density.log_prob(box).exp().mean() * 8
    assert abs(float(inside) - float(integral)) < 0.005
    with pytest.raises(ValueError, match="df must be positive"):
        data.StudentT2D(df=0)


# --- the targets of the training exercises -----------------------------------------------------


def _midpoint_mass(density, box, n=800):
    """The integral of exp(log_prob) over ``box`` by the midpoint rule (1, 2 or 3 axes)."""
    axes = [lo + (hi - lo) * (torch.arange(n, dtype=torch.float64) + 0.5) / n for lo, hi in box]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(box))
    cell = math.prod((hi - lo) / n for lo, hi in box)
    return float(density.log_prob(grid).exp().sum() * cell)


@pytest.mark.parametrize(
    "density, box, n",
    [
        (data.MirroredGumbel(), ((-12.0, 3.0),), 200_000),
        (data.KumaraswamySquare(), ((0.0, 1.0), (0.0, 1.0)), 1000),
        (data.Banana(), ((-8.0, 8.0), (-4.0, 36.0)), 1200),
        (data.MovedSine(), ((-42.0, -18.0), (11.8, 12.2)), 1200),
        (data.CorrelatedGaussian(), ((-5.0, 7.0), (-8.0, 4.0), (-4.5, 5.5)), 120),
    ],
)
def test_exercise_targets_integrate_to_one(density, box, n):
    assert abs(_midpoint_mass(density, box, n) - 1) < 5e-3


@pytest.mark.parametrize(
    "density",
    [
        data.MirroredGumbel(),
        data.CorrelatedGaussian(),
        data.KumaraswamySquare(),
        data.Banana(),
        data.MovedSine(),
    ],
)
def test_exercise_targets_sample_their_log_prob(density):
    """The samples follow the density: the mean of -log p over them is the entropy (a
    closed form, or an independent Monte Carlo run); a seed repeats them."""
    x = density.sample(200_000, seed=5, dtype=torch.float64)
    log_p = density.log_prob(x)
    assert bool(torch.isfinite(log_p).all())
    assert abs(float(-log_p.mean()) - density.entropy()) < 0.015
    assert torch.equal(x, density.sample(200_000, seed=5, dtype=torch.float64))
    assert density.sample(3, seed=5).dtype == torch.float32


def test_correlated_gaussian_matches_torch_distributions():
    density = data.CorrelatedGaussian()
    reference = torch.distributions.MultivariateNormal(density.mean, scale_tril=density.scale_tril)
    x = density.sample(1000, seed=1, dtype=torch.float64)
    torch.testing.assert_close(density.log_prob(x), reference.log_prob(x))
    assert density.entropy() == pytest.approx(float(reference.entropy()))
    with pytest.raises(ValueError, match="lower-triangular"):
        data.CorrelatedGaussian(scale_tril=((1.0, 1.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))


def test_mirrored_gumbel_is_a_reflected_scaled_gumbel():
    density = data.MirroredGumbel()
    gumbel = torch.distributions.Gumbel(
        torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    )
    x = density.sample(500, seed=2, dtype=torch.float64)
    g = (-x[:, 0] - 1.0) / 0.5
    torch.testing.assert_close(density.log_prob(x), gumbel.log_prob(g) - math.log(0.5))
    assert density.entropy() == pytest.approx(float(gumbel.entropy()) + math.log(0.5))


def test_kumaraswamy_square_is_zero_outside_the_square():
    density = data.KumaraswamySquare()
    outside = torch.tensor([[-0.1, 0.5], [0.5, 1.2], [1.0, 0.5]], dtype=torch.float64)
    assert bool(torch.isinf(density.log_prob(outside)).all())
    x = density.sample(10_000, seed=0, dtype=torch.float64)
    assert bool(((x > 0) & (x < 1)).all())


def test_banana_log_prob_is_the_normalised_log_banana():
    x = data.Banana().sample(100, seed=0, dtype=torch.float64)
    torch.testing.assert_close(data.Banana().log_prob(x), data.log_banana(x) - math.log(math.pi))


def test_moved_sine_is_the_sine_wave_stretched_and_moved():
    moved, sine = data.MovedSine(), data.SineWave()
    y = sine.sample(100, seed=3, dtype=torch.float64)
    x = moved.sample(100, seed=3, dtype=torch.float64)
    torch.testing.assert_close(
        x,
        y * torch.tensor([8.0, 0.05], dtype=torch.float64)
        + torch.tensor([-30.0, 12.0], dtype=torch.float64),
    )
    torch.testing.assert_close(moved.log_prob(x), sine.log_prob(y) - math.log(8 * 0.05))
