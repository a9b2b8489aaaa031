"""Piecewise-linear flows (chapter 4): the map, its inverse, its log-det and its domain rule."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nfcourse as nf
from nfcourse.distributions import Uniform01
from nfcourse.flows.piecewise import PiecewiseLinear, piecewise_linear
from nfcourse.testing import (
    autograd_log_abs_det,
    check_batch_shapes,
    check_gradients_reach,
    check_log_det,
    check_round_trip,
)

DTYPE = torch.float64


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


def _logits(*shape, seed=0, scale=1.5):
    return scale * torch.randn(*shape, generator=_generator(seed), dtype=DTYPE)


def _interior_points(n, dim, num_bins, seed=0, margin=0.05):
    """Points at least ``margin / K`` away from every bin edge, where the map is smooth."""
    g = _generator(seed)
    k = torch.randint(num_bins, (n, dim), generator=g)
    u = margin + (1 - 2 * margin) * torch.rand(n, dim, generator=g, dtype=DTYPE)
    return (k + u) / num_bins


def _layer(dim=3, num_bins=6, seed=0):
    layer = PiecewiseLinear(dim, num_bins).double()
    with torch.no_grad():
        layer.logits.copy_(_logits(dim, num_bins, seed=seed))
    return layer


# --- the formula -------------------------------------------------------------------------


def test_piecewise_linear_matches_the_formula_on_a_worked_example():
    masses = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=DTYPE)
    x = torch.tensor([[0.6]], dtype=DTYPE)  # bin k = 2 of K = 4: c_2 = 0.3, slope 4 * 0.3
    y, log_det = piecewise_linear(x, masses.log())
    torch.testing.assert_close(
        y, torch.tensor([[0.3 + 4 * 0.3 * (0.6 - 0.5)]], dtype=DTYPE), atol=1e-15, rtol=0
    )
    torch.testing.assert_close(
        log_det, torch.tensor([math.log(1.2)], dtype=DTYPE), atol=1e-15, rtol=0
    )


def test_piecewise_linear_sends_bin_edges_to_cumulative_masses():
    logits = _logits(2, 7, seed=3)
    masses = torch.softmax(logits, dim=-1)
    cumulative = torch.cat([torch.zeros(2, 1, dtype=DTYPE), masses.cumsum(-1)], dim=-1)
    edges = torch.arange(8, dtype=DTYPE).div(7).unsqueeze(1).expand(8, 2)
    y, _ = piecewise_linear(edges.contiguous(), logits)
    torch.testing.assert_close(y, cumulative.T, atol=1e-14, rtol=0)


def test_piecewise_linear_bins_are_closed_on_the_left_in_both_directions():
    # At an edge k/K the forward map uses bin k (slope K q_k); the inverse, at the image c_k,
    # must pick the same bin, so the two log-dets cancel there too. K = 8 makes k/K exact.
    logits = _logits(1, 8, seed=25, scale=2.0)
    edges = (torch.arange(9, dtype=DTYPE) / 8).unsqueeze(1)
    y, log_det = piecewise_linear(edges, logits)
    x_back, log_det_back = piecewise_linear(y, logits, inverse=True)
    torch.testing.assert_close(x_back, edges, atol=1e-14, rtol=0)
    torch.testing.assert_close(
        log_det + log_det_back, torch.zeros(9, dtype=DTYPE), atol=1e-14, rtol=0
    )


def test_piecewise_linear_with_one_bin_is_the_identity():
    x = torch.rand(5, 3, generator=_generator(), dtype=DTYPE)
    y, log_det = piecewise_linear(x, _logits(3, 1))
    torch.testing.assert_close(y, x, atol=1e-15, rtol=0)
    torch.testing.assert_close(log_det, torch.zeros(5, dtype=DTYPE), atol=1e-15, rtol=0)


def test_piecewise_linear_density_of_the_inverse_is_the_histogram_of_bin_masses():
    # Normalizing direction: log p(x) = log p_U(f(x)) + log f'(x) = log(K q_k) on bin k.
    layer = _layer(dim=1, num_bins=5)
    flow = nf.Flow(layer.inv(), base=Uniform01(1).double())
    x = _interior_points(200, 1, 5, seed=4)
    k = (x * 5).floor().long().squeeze(1)
    expected = torch.log(5 * layer.bin_masses()[0, k])
    torch.testing.assert_close(flow.log_prob(x), expected.detach(), atol=1e-12, rtol=0)
    grid = (torch.arange(100_000, dtype=DTYPE) + 0.5).div(100_000).unsqueeze(1)
    assert abs(float(flow.log_prob(grid).detach().exp().mean()) - 1) < 1e-9  # integrates to one


# --- log-det, round trip, shapes, gradients ----------------------------------------------


@pytest.mark.parametrize("num_bins", [2, 5, 17])
def test_piecewise_linear_log_det_matches_autograd_jacobian(num_bins):
    layer = _layer(dim=3, num_bins=num_bins, seed=num_bins)
    x = _interior_points(24, 3, num_bins, seed=1)
    assert check_log_det(layer, x, atol=1e-8) < 1e-8
    _, log_det = layer(x)
    assert log_det.abs().min() > 1e-3  # non-trivial: the masses are far from equal


@pytest.mark.parametrize("num_bins", [2, 5, 17])
def test_piecewise_linear_inverse_log_det_matches_autograd_jacobian(num_bins):
    layer = _layer(dim=3, num_bins=num_bins, seed=num_bins)
    y, _ = layer(_interior_points(24, 3, num_bins, seed=2))
    assert check_log_det(layer, y.detach(), atol=1e-8, direction="inverse") < 1e-8


def test_piecewise_linear_log_det_matches_autograd_with_per_sample_logits():
    logits = _logits(10, 2, 6, seed=5)
    x = _interior_points(10, 2, 6, seed=6)
    _, log_det = piecewise_linear(x, logits)
    expected = torch.stack(
        [
            autograd_log_abs_det(
                lambda v, b=b: piecewise_linear(v, logits[b : b + 1])[0], x[b : b + 1]
            )[0]
            for b in range(10)
        ]
    )
    torch.testing.assert_close(log_det, expected, atol=1e-8, rtol=0)


def test_piecewise_linear_round_trip():
    layer = _layer(dim=4, num_bins=8, seed=7)
    x = torch.rand(64, 4, generator=_generator(8), dtype=DTYPE)
    assert check_round_trip(layer, x, atol=1e-8) < 1e-8
    y = torch.rand(64, 4, generator=_generator(9), dtype=DTYPE)
    assert check_round_trip(layer.inv(), y, atol=1e-8) < 1e-8


def test_piecewise_linear_round_trip_with_identity_tails():
    layer = _layer(dim=2, num_bins=5, seed=10)
    x = 3 * torch.randn(64, 2, generator=_generator(11), dtype=DTYPE)
    assert ((x < 0) | (x > 1)).any() and ((x > 0) & (x < 1)).any()
    assert check_round_trip(layer, x, atol=1e-8) < 1e-8


def test_piecewise_linear_is_increasing_on_a_fine_grid():
    logits = _logits(3, 9, seed=12, scale=3.0)
    x = torch.linspace(-0.5, 1.5, 20_001, dtype=DTYPE).unsqueeze(1).expand(-1, 3).contiguous()
    y, _ = piecewise_linear(x, logits)
    assert bool((y.diff(dim=0) > 0).all())
    x_back, _ = piecewise_linear(y, logits, inverse=True)
    assert bool((x_back.diff(dim=0) > 0).all())


def test_piecewise_linear_batch_shapes():
    check_batch_shapes(_layer(dim=3, num_bins=4), 3)


@pytest.mark.parametrize("logit_shape", [(4, 5), (3, 4, 5), (1, 4, 5), (2, 3, 4, 5), (2, 1, 4, 5)])
def test_piecewise_linear_accepts_extra_leading_dims(logit_shape):
    x = torch.rand(2, 3, 4, generator=_generator(13), dtype=DTYPE)
    logits = _logits(*logit_shape, seed=14)
    for inverse in (False, True):
        y, log_det = piecewise_linear(x, logits, inverse=inverse)
        assert y.shape == (2, 3, 4) and log_det.shape == (2, 3)
        full = logits.expand(2, 3, 4, 5)
        for i in range(2):
            for j in range(3):
                yij, ldij = piecewise_linear(x[i, j : j + 1], full[i, j], inverse=inverse)
                torch.testing.assert_close(y[i, j], yij[0], atol=1e-15, rtol=0)
                torch.testing.assert_close(log_det[i, j], ldij[0], atol=1e-15, rtol=0)


def test_piecewise_linear_gradients_reach_every_parameter():
    layer = _layer(dim=3, num_bins=5)
    x = torch.rand(32, 3, generator=_generator(15), dtype=DTYPE)
    y, log_det = layer(x)
    check_gradients_reach(layer, (y**2).sum() + log_det.sum())
    z, log_det = layer.inverse(x)
    check_gradients_reach(layer, (z**2).sum() + log_det.sum())


def test_piecewise_linear_gradients_reach_inputs_and_per_sample_logits():
    x = torch.rand(6, 2, generator=_generator(16), dtype=DTYPE).requires_grad_()
    logits = _logits(6, 2, 4, seed=17).requires_grad_()
    y, log_det = piecewise_linear(x, logits)
    gx, gl = torch.autograd.grad((y**2).sum() + log_det.sum(), [x, logits])
    assert bool((gx != 0).all()) and bool((gl != 0).all())


def test_piecewise_linear_works_in_float32():
    layer = PiecewiseLinear(2, 6, init_scale=1.0)
    x = torch.rand(100, 2, generator=_generator(18))
    with torch.no_grad():
        y, log_det = layer(x)
        x_back, log_det_back = layer.inverse(y)
    assert y.dtype == torch.float32 and log_det.dtype == torch.float32
    assert float((x_back - x).abs().max()) < 1e-5
    assert float((log_det + log_det_back).abs().max()) < 1e-5


def test_piecewise_linear_module_starts_at_the_identity():
    x = torch.rand(10, 3, generator=_generator(19), dtype=DTYPE)
    y, log_det = PiecewiseLinear(3, 7).double()(x)
    torch.testing.assert_close(y, x, atol=1e-15, rtol=0)
    torch.testing.assert_close(log_det, torch.zeros(10, dtype=DTYPE), atol=1e-14, rtol=0)


def test_piecewise_linear_bin_masses_sum_to_one():
    masses = _layer(dim=3, num_bins=5).bin_masses()
    assert masses.shape == (3, 5) and bool((masses > 0).all())
    torch.testing.assert_close(masses.sum(-1), torch.ones(3, dtype=DTYPE))


# --- property-based tests of the map -----------------------------------------------------


OFFSETS = [0.0, 1e-16, -1e-16, 1e-12, -1e-12, 1e-8, -1e-8]


@st.composite
def _map_and_point(draw):
    """Random logits and a point in [0, 1]: anywhere, or at or near a bin edge (or 0, 1)."""
    num_bins = draw(st.integers(1, 12))
    logits = draw(st.lists(st.floats(-6, 6), min_size=num_bins, max_size=num_bins))
    if draw(st.booleans()):
        x = draw(st.floats(0, 1))
    else:
        edge = draw(st.integers(0, num_bins)) / num_bins
        x = min(max(edge + draw(st.sampled_from(OFFSETS)), 0.0), 1.0)
    return torch.tensor([logits], dtype=DTYPE), x


@settings(max_examples=300, deadline=None)
@given(_map_and_point())
def test_piecewise_linear_maps_unit_interval_into_itself_and_round_trips(case):
    logits, x = case
    y, log_det = piecewise_linear(torch.tensor([[x]], dtype=DTYPE), logits)
    assert 0.0 <= float(y) <= 1.0
    assert math.isfinite(float(log_det))
    x_back, _ = piecewise_linear(y, logits, inverse=True)
    assert abs(float(x_back) - x) < 1e-8


@settings(max_examples=100, deadline=None)
@given(_map_and_point())
def test_piecewise_linear_fixes_the_ends_exactly(case):
    logits, _ = case
    ends = torch.tensor([[0.0], [1.0]], dtype=DTYPE)
    for inverse in (False, True):
        y, _ = piecewise_linear(ends, logits, inverse=inverse)
        assert float(y[0]) == 0.0 and float(y[1]) == 1.0


@settings(max_examples=200, deadline=None)
@given(_map_and_point(), _map_and_point())
def test_piecewise_linear_is_monotone_at_and_near_bin_edges(case, other):
    logits, x1 = case
    _, x2 = other
    near = [min(max(x + d, 0.0), 1.0) for x in (x1, x2) for d in (0.0, 1e-15, -1e-15)]
    points = torch.tensor(sorted(near), dtype=DTYPE).unsqueeze(1)
    y, _ = piecewise_linear(points, logits)
    assert bool((y.diff(dim=0) >= 0).all())
    x_back, _ = piecewise_linear(y, logits, inverse=True)
    assert bool((x_back.diff(dim=0) >= 0).all())


@settings(max_examples=100, deadline=None)
@given(_map_and_point(), st.floats(-50, 50))
def test_piecewise_linear_outside_unit_interval_is_the_identity(case, x):
    logits, _ = case
    y, log_det = piecewise_linear(torch.tensor([[x]], dtype=DTYPE), logits)
    if x < 0 or x > 1:
        assert float(y) == x and float(log_det) == 0.0
    x_back, _ = piecewise_linear(y, logits, inverse=True)
    assert abs(float(x_back) - x) < 1e-8


# --- the domain rule and bad input -------------------------------------------------------


def test_piecewise_linear_identity_tails_are_continuous_at_zero_and_one():
    logits = _logits(1, 6, seed=20)
    for end in (0.0, 1.0):
        x = torch.tensor([[end - 1e-9], [end], [end + 1e-9]], dtype=DTYPE)
        y, _ = piecewise_linear(x, logits)
        assert float((y - end).abs().max()) < 1e-7


def test_piecewise_linear_strict_mode_rejects_points_outside_unit_interval():
    logits = _logits(2, 4)
    inside = torch.tensor([[0.0, 1.0], [0.3, 0.7]], dtype=DTYPE)
    piecewise_linear(inside, logits, strict=True)  # the closed interval is allowed
    for bad in (-1e-6, 1.5):
        x = torch.tensor([[0.5, bad]], dtype=DTYPE)
        for inverse in (False, True):
            with pytest.raises(ValueError, match=r"defined on \[0, 1\]"):
                piecewise_linear(x, logits, inverse=inverse, strict=True)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PiecewiseLinear(2, 4, strict=True).double()(torch.tensor([[0.5, 2.0]], dtype=DTYPE))
    with pytest.raises(ValueError, match=r"inputs \(y\) range over \[-0.5, 0.5\]"):
        PiecewiseLinear(2, 4, strict=True).double().inverse(
            torch.tensor([[0.5, -0.5]], dtype=DTYPE)
        )


@pytest.mark.parametrize(
    "logit_shape, match",
    [
        ((5,), r"\(\.\.\., D, K\)"),
        ((3, 5), r"do not fit"),
        ((4, 4, 5), r"do not fit"),
        ((2, 3, 4, 2, 5), r"do not fit"),
        ((2, 0), r"at least one bin"),
    ],
)
def test_piecewise_linear_rejects_logits_of_the_wrong_shape(logit_shape, match):
    x = torch.rand(3, 2, generator=_generator(), dtype=DTYPE)
    with pytest.raises(ValueError, match=match):
        piecewise_linear(x, torch.zeros(logit_shape, dtype=DTYPE))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_piecewise_linear_rejects_non_finite_values(bad):
    x = torch.rand(3, 2, generator=_generator(), dtype=DTYPE)
    logits = _logits(2, 4)
    x_bad = x.clone()
    x_bad[1, 0] = bad
    with pytest.raises(ValueError, match="non-finite"):
        piecewise_linear(x_bad, logits)
    logits_bad = logits.clone()
    logits_bad[0, 2] = bad
    with pytest.raises(ValueError, match="logits contain non-finite"):
        piecewise_linear(x, logits_bad, inverse=True)
    with pytest.raises(ValueError, match="non-finite"):
        _layer(dim=2)(x_bad)


def test_piecewise_linear_rejects_wrong_types():
    x = torch.rand(3, 2, generator=_generator(), dtype=DTYPE)
    with pytest.raises(TypeError, match="same dtype"):
        piecewise_linear(x, torch.zeros(2, 4))
    with pytest.raises(TypeError, match="floating-point"):
        piecewise_linear(torch.ones(3, 2, dtype=torch.long), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        piecewise_linear([[0.5, 0.5]], torch.zeros(2, 4))


def test_piecewise_linear_module_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_bins"):
        PiecewiseLinear(2, 0)
    with pytest.raises(ValueError, match="init_scale"):
        PiecewiseLinear(2, 3, init_scale=-1.0)
    with pytest.raises(ValueError, match="features"):
        _layer(dim=3)(torch.rand(4, 2, dtype=DTYPE))


# --- the uniform base --------------------------------------------------------------------


def test_uniform01_log_prob_is_zero_inside_and_minus_inf_outside():
    base = Uniform01(2).double()
    z = torch.tensor([[0.0, 1.0], [0.5, 0.2], [-0.1, 0.5], [0.5, 1.01]], dtype=DTYPE)
    assert base.log_prob(z).tolist() == [0.0, 0.0, -math.inf, -math.inf]
    with pytest.raises(ValueError, match="features"):
        base.log_prob(torch.rand(3, 3, dtype=DTYPE))
    with pytest.raises(ValueError, match="dim"):
        Uniform01(0)


def test_uniform01_samples_are_seeded_and_inside_the_unit_cube():
    base = Uniform01(3).double()
    a = base.sample(1000, generator=_generator(21))
    b = base.sample(1000, generator=_generator(21))
    assert a.shape == (1000, 3) and a.dtype == DTYPE
    assert torch.equal(a, b) and bool(((a >= 0) & (a <= 1)).all())
    assert abs(float(a.mean()) - 0.5) < 0.02


def test_flow_with_uniform_base_samples_the_histogram():
    # Sampling direction: x = f^{-1}(u) has mass q_k in bin k of the normalizing map f.
    layer = _layer(dim=1, num_bins=4, seed=22)
    flow = nf.Flow(layer.inv(), base=Uniform01(1).double())
    x = flow.sample(200_000, generator=_generator(23))
    counts = torch.bincount((x[:, 0] * 4).floor().long().clamp(0, 3), minlength=4)
    fractions = counts.to(DTYPE) / len(x)
    torch.testing.assert_close(fractions, layer.bin_masses()[0].detach(), atol=5e-3, rtol=0)
    _, log_q = flow.sample_and_log_prob(100, generator=_generator(24))
    assert torch.isfinite(log_q).all()


# --- the chapter's target density and widget ----------------------------------------------


def test_beta_mixture_log_prob_is_normalised_and_matches_its_samples():
    from nfcourse.densities import BetaMixture1D

    target = BetaMixture1D()
    grid = ((torch.arange(100_000, dtype=DTYPE) + 0.5) / 100_000).unsqueeze(1)
    assert abs(float(target.log_prob(grid).exp().mean()) - 1) < 1e-8
    x = target.sample(100_000, seed=3, dtype=DTYPE)
    assert x.shape == (100_000, 1) and bool(((x > 0) & (x < 1)).all())
    # the mean of the mixture is sum_k w_k a_k / (a_k + b_k)
    mean = float((target.weights * target.a / (target.a + target.b)).sum())
    assert abs(float(x.mean()) - mean) < 0.005
    nll = float(-target.log_prob(x).mean())
    assert abs(nll - target.entropy()) < 0.01  # Monte Carlo entropy agrees with quadrature
    assert torch.equal(target.sample(5, seed=7), target.sample(5, seed=7))
    outside = target.log_prob(torch.tensor([[-0.1], [1.2]], dtype=DTYPE))
    assert outside.tolist() == [-math.inf, -math.inf]


def test_beta_mixture_rejects_bad_parameters():
    from nfcourse.densities import BetaMixture1D

    with pytest.raises(ValueError, match="at least 1"):
        BetaMixture1D(a=(0.5,), b=(2.0,), weights=(1.0,))
    with pytest.raises(ValueError, match="sum to one"):
        BetaMixture1D(a=(2.0, 3.0), b=(2.0, 3.0), weights=(0.5, 0.6))
    with pytest.raises(ValueError, match="one entry per component"):
        BetaMixture1D(a=(2.0,), b=(2.0, 3.0), weights=(1.0,))


def test_piecewise_widget_has_one_slider_per_free_bin_and_draws_map_and_density():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nfcourse.widgets.piecewise import NUM_BINS, _draw_piecewise, piecewise_widget

    box = piecewise_widget()
    sliders = box.children[0].children
    # bin 0 holds mass 1: scaling every mass alike changes nothing, so 4 sliders suffice
    assert len(sliders) == NUM_BINS - 1 == 4
    fig = plt.figure()
    _draw_piecewise(fig, **{f"m{k}": float(k + 1) for k in range(NUM_BINS)})
    ax_map, ax_density = fig.axes
    y = [float(v) for v in ax_map.lines[0].get_ydata()]
    assert y[0] == 0 and abs(y[-1] - 1) < 1e-12
    assert all(b >= a for a, b in zip(y, y[1:], strict=False))
    plt.close("all")


def test_minimum_bin_mass_bounds_every_mass_and_keeps_the_map_exact():
    layer = PiecewiseLinear(
        2, 5, init_scale=40.0, min_mass=0.01, generator=torch.Generator().manual_seed(0)
    ).double()
    q = layer.bin_masses().detach()
    assert float(q.min()) >= 0.01 - 1e-15 and float(q.min()) < 0.0101
    torch.testing.assert_close(q.sum(-1), torch.ones(2, dtype=DTYPE))
    x = torch.rand(300, 2, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    check_round_trip(layer, x, atol=1e-12)
    check_round_trip(layer.inv(), x, atol=1e-12)
    check_log_det(layer, x[:20], atol=1e-10)
    with pytest.raises(ValueError, match=r"min_mass must lie in \[0, 1/K\)"):
        PiecewiseLinear(2, 5, min_mass=0.2)
    assert "min_mass=0.01" in repr(layer)
