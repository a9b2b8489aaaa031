"""Tests of the continuous-time flows of chapter 10 (``nfcourse.flows.continuous``), in
float64, against closed forms to the solver's tolerance."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nfcourse import Flow, testing
from nfcourse.flows.continuous import (
    ContinuousFlow,
    GaussianPathField,
    LinearField,
    VelocityField,
    _probe,
    continuous_flow,
    exact_divergence,
    flow_matching_loss,
    hutchinson_divergence,
    ot_pairing,
    path_straightness,
    straight_path,
)

F64 = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-10}


def randn(*shape, seed=0, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def random_field(dim=3, seed=0, hidden=(16, 16), activation=nn.Tanh):
    torch.manual_seed(seed)
    field = VelocityField(dim, hidden, activation).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in field.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))
    return field


def linear_field(dim=3, seed=1):
    a = randn(dim, dim, seed=seed, scale=0.7)
    b = randn(dim, seed=seed + 1)
    return LinearField(a, b)


# --- closed forms --------------------------------------------------------------------------


def test_linear_field_flow_is_its_affine_map():
    field = linear_field()
    flow = ContinuousFlow(field, **TIGHT)
    z = randn(20, 3, seed=2, scale=2.0)
    x, log_det = flow(z)
    x_exact, log_det_exact = field.closed_form(z)
    assert torch.allclose(x, x_exact, atol=1e-8)
    assert torch.allclose(log_det, log_det_exact, atol=1e-8)
    assert abs(float(log_det_exact[0]) - float(torch.trace(field.matrix.detach()))) < 1e-12
    z_back, log_det_inv = flow.inverse(x_exact)
    assert torch.allclose(z_back, z, atol=1e-8)
    assert torch.allclose(log_det_inv, -log_det_exact, atol=1e-8)


def test_linear_field_log_density_matches_the_gaussian_it_makes():
    # N(0, I) pushed through x = M z + c is N(c, M M^T)
    field = linear_field(2, seed=5)
    model = Flow(ContinuousFlow(field, **TIGHT))
    zero = torch.zeros(1, 2, dtype=F64)
    c = field.closed_form(zero)[0][0]
    m = field.closed_form(torch.eye(2, dtype=F64))[0] - c
    gaussian = torch.distributions.MultivariateNormal(c, m.T @ m)
    x = randn(15, 2, seed=6, scale=2.0)
    assert torch.allclose(model.log_prob(x), gaussian.log_prob(x), atol=1e-8)


@pytest.mark.parametrize("dim", [1, 2, 4])
def test_gaussian_path_reaches_its_gaussian(dim):
    field = GaussianPathField(randn(dim, seed=dim), 0.2 + randn(dim, seed=dim + 1).abs())
    model = Flow(ContinuousFlow(field, dim, **TIGHT))
    x = randn(25, dim, seed=3, scale=1.5)
    assert torch.allclose(model.log_prob(x), field.marginal_log_prob(x, 1.0), atol=1e-7)
    # the marginal at an intermediate time, by a flow of the field up to t = 0.4
    path = ContinuousFlow(field, dim, **TIGHT)
    z = path.trajectory(randn(4000, dim, seed=4), [0.0, 0.4])[-1]
    target = field.sigma(torch.full((1, 1), 0.4, dtype=F64))[0]
    assert torch.allclose(z.std(0), target, atol=0.05)


def test_gaussian_path_field_is_the_conditional_mean_of_the_path_velocity():
    # regress x_1 - x_0 on x_t by least squares: the fit is the field (linear in x)
    mean, std = torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([0.5, 2.0], dtype=F64)
    field = GaussianPathField(mean, std)
    n, t = 200_000, 0.3
    x0 = randn(n, 2, seed=7)
    x1 = mean + std * randn(n, 2, seed=8)
    xt, u = straight_path(x0, x1, torch.full((n,), t, dtype=F64))
    for i in range(2):
        design = torch.stack([torch.ones(n, dtype=F64), xt[:, i]], 1)
        coef = torch.linalg.lstsq(design, u[:, i : i + 1]).solution.flatten()
        grid = torch.tensor([[-1.0, -1.0], [2.0, 2.0]], dtype=F64)
        expected = field(t, grid)[:, i]
        assert torch.allclose(coef[0] + coef[1] * grid[:, i], expected, atol=0.02)


# --- the transform: log-det, round trips, shapes, gradients ---------------------------------


@pytest.mark.parametrize("method,options", [("dopri5", TIGHT), ("rk4", {"step_size": 0.05})])
def test_log_det_matches_autograd_jacobian(method, options):
    flow = ContinuousFlow(random_field(), method=method, **options)
    z = randn(6, 3, seed=9, scale=2.0)
    assert testing.check_log_det(flow, z, atol=1e-7) < 1e-7
    assert testing.check_log_det(flow, z, atol=1e-7, direction="inverse") < 1e-7


def test_round_trips_both_directions_including_far_tails():
    flow = ContinuousFlow(random_field(), **TIGHT)
    z = torch.cat(
        [randn(8, 3, seed=10), torch.tensor([[8.0, -9.0, 7.5], [0.0, 0.0, 0.0]], dtype=F64)]
    )
    assert testing.check_round_trip(flow, z, atol=1e-7) < 1e-7
    x, _ = flow(z)
    z_back, _ = flow.inverse(x)
    x_again, _ = flow(z_back)
    assert torch.allclose(x_again, x, atol=1e-7)


def test_sampling_then_reverse_integration_returns_the_start():
    model = continuous_flow(2, hidden=(16,), rtol=1e-9, atol=1e-9).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2)
    g = torch.Generator().manual_seed(0)
    z = model.base.sample(50, generator=g)
    x, log_det = model.transform(z)
    z_back, log_det_back = model.transform.inverse(x)
    assert torch.allclose(z_back, z, atol=1e-6)
    assert torch.allclose(log_det_back, -log_det, atol=1e-6)
    # the two routes to log q(x) agree: sampling's and log_prob's
    log_q = model.base.log_prob(z) - log_det
    assert torch.allclose(model.log_prob(x), log_q, atol=1e-6)


def test_fixed_step_error_shrinks_with_the_step_at_the_method_order():
    field = linear_field()
    z = randn(10, 3, seed=11)
    exact, _ = field.closed_form(z)
    errors = []
    for h in (0.1, 0.05):
        x, _ = ContinuousFlow(field, method="rk4", step_size=h)(z)
        errors.append(float((x - exact).abs().max()))
    assert 10 < errors[0] / errors[1] < 24  # fourth order: 2^4 = 16


def test_adaptive_solver_counts_fewer_evaluations_at_looser_tolerance():
    field = random_field()
    z = randn(10, 3, seed=12)
    nfe = []
    for tol in (1e-3, 1e-8):
        field.nfe = 0
        ContinuousFlow(field, rtol=tol, atol=tol)(z)
        nfe.append(field.nfe)
    assert 0 < nfe[0] < nfe[1]


@pytest.mark.parametrize("batch", [1, 7])
def test_batch_shapes(batch):
    testing.check_batch_shapes(
        ContinuousFlow(random_field(), rtol=1e-6, atol=1e-6), 3, batch_sizes=(batch,)
    )


@pytest.mark.parametrize("adjoint", [False, True])
def test_gradients_reach_every_parameter_of_the_likelihood(adjoint):
    model = Flow(ContinuousFlow(random_field(), adjoint=adjoint, rtol=1e-6, atol=1e-6))
    loss = -model.log_prob(randn(5, 3, seed=13)).mean()
    testing.check_gradients_reach(model, loss)


def test_adjoint_gradients_agree_with_backpropagation_through_the_solver():
    x = randn(5, 3, seed=14)
    grads = []
    for adjoint in (False, True):
        model = Flow(ContinuousFlow(random_field(seed=3), adjoint=adjoint, **TIGHT))
        (-model.log_prob(x).mean()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_the_inverse_under_no_grad_still_computes_the_divergence():
    field = linear_field()
    flow = ContinuousFlow(field, **TIGHT)
    x = randn(4, 3, seed=15)
    with torch.no_grad():
        _, log_det = flow.inverse(x)
    assert torch.allclose(
        log_det, torch.full((4,), -float(torch.trace(field.matrix)), dtype=F64), atol=1e-8
    )
    assert not log_det.requires_grad


# --- the divergence ------------------------------------------------------------------------


def test_exact_divergence_is_the_trace_of_the_autograd_jacobian():
    field = random_field(4)
    z = randn(6, 4, seed=16).requires_grad_(True)
    v = field(0.3, z)
    div = exact_divergence(v, z)
    for b in range(6):
        jac = torch.autograd.functional.jacobian(
            lambda p: field(0.3, p.unsqueeze(0))[0], z[b].detach()
        )
        assert abs(float(div[b]) - float(torch.trace(jac))) < 1e-10


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(kind):
    field = random_field(5, seed=4)
    z = randn(1, 5, seed=17).expand(40_000, 5).clone().requires_grad_(True)
    v = field(0.5, z)
    exact = float(exact_divergence(field(0.5, z[:1]), z)[0])
    noise = _probe(z.shape, kind, F64, z.device, torch.Generator().manual_seed(0))
    estimates = hutchinson_divergence(v, z, noise)
    mean, se = float(estimates.mean()), float(estimates.std()) / math.sqrt(len(estimates))
    assert abs(mean - exact) < 4 * se
    assert float(estimates.std()) > 0.01  # a real estimator, not the exact trace


def test_hutchinson_flow_log_det_is_unbiased_and_seeded():
    field = random_field(3, seed=5)
    x = randn(1, 3, seed=18).expand(3000, 3).clone()
    exact = ContinuousFlow(field, trace="exact", rtol=1e-7, atol=1e-7).inverse(x)[1][0]
    noisy = ContinuousFlow(field, trace="hutchinson", rtol=1e-7, atol=1e-7, seed=1)
    with torch.no_grad():
        estimates = noisy.inverse(x)[1]
    se = float(estimates.std()) / math.sqrt(len(estimates))
    assert abs(float(estimates.mean()) - float(exact)) < 4 * se
    again = ContinuousFlow(field, trace="hutchinson", rtol=1e-7, atol=1e-7, seed=1)
    with torch.no_grad():
        assert torch.equal(again.inverse(x)[1], estimates)


def test_auto_trace_switches_to_hutchinson_in_high_dimension():
    assert ContinuousFlow(VelocityField(2)).trace == "exact"
    assert ContinuousFlow(VelocityField(20)).trace == "hutchinson"


# --- flow matching -------------------------------------------------------------------------


def test_flow_matching_loss_by_hand():
    field = random_field(2, seed=6)
    x0, x1 = randn(8, 2, seed=19), randn(8, 2, seed=20)
    t = torch.rand(8, generator=torch.Generator().manual_seed(0), dtype=F64)
    loss = flow_matching_loss(field, x1, x0=x0, t=t)
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    expected = ((field(t[:, None], xt) - (x1 - x0)) ** 2).sum(1).mean()
    assert torch.allclose(loss, expected, atol=1e-12)
    testing.check_gradients_reach(field, loss)


def test_flow_matching_loss_exceeds_its_minimum_by_the_distance_to_the_exact_field():
    # L(v) - L(u) = E |v(x_t, t) - u(x_t, t)|^2 for the marginal field u (Lipman et al.)
    mean, std = torch.tensor([1.0, -1.0], dtype=F64), torch.tensor([0.5, 1.5], dtype=F64)
    exact = GaussianPathField(mean, std)
    other = GaussianPathField(mean + 0.3, std * 1.2)
    n = 200_000
    x0, x1 = randn(n, 2, seed=21), mean + std * randn(n, 2, seed=23)
    t = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=F64)
    losses = [float(flow_matching_loss(f, x1, x0=x0, t=t)) for f in (exact, other)]
    xt, _ = straight_path(x0, x1, t)
    distance = float(((other(t, xt) - exact(t, xt)) ** 2).sum(1).mean())
    assert distance > 0.05
    assert abs((losses[1] - losses[0]) - distance) < 0.1 * distance


def test_flow_matching_trains_to_the_gaussian_field():
    mean, std = torch.tensor([1.0, -1.0]), torch.tensor([0.5, 1.0])
    exact = GaussianPathField(mean, std)
    torch.manual_seed(0)
    field = VelocityField(2, (32, 32))
    optimizer = torch.optim.Adam(field.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(1000):
        x1 = mean + std * torch.randn(256, 2, generator=g)
        optimizer.zero_grad()
        flow_matching_loss(field, x1, generator=g).backward()
        optimizer.step()
    # compare the fields where the paths go: at points x_t of the path
    n = 2000
    x0, x1 = torch.randn(n, 2, generator=g), mean + std * torch.randn(n, 2, generator=g)
    t = torch.rand(n, 1, generator=g)
    xt, _ = straight_path(x0, x1, t)
    with torch.no_grad():
        error = (field(t, xt) - exact(t, xt)).norm(dim=1).mean()
        scale = exact(t, xt).norm(dim=1).mean()
    assert float(error) < 0.25 * float(scale)
    model = Flow(ContinuousFlow(field, rtol=1e-5, atol=1e-5))
    test = mean + std * torch.randn(n, 2, generator=g)
    with torch.no_grad():
        gap = exact.marginal_log_prob(test) - model.log_prob(test)
    assert 0 < float(gap.mean()) < 0.1


def test_path_straightness():
    straight = ContinuousFlow(
        LinearField(torch.zeros(2, 2, dtype=F64), torch.tensor([1.0, 2.0], dtype=F64))
    )
    z = randn(5, 2, seed=22)
    assert float(path_straightness(straight, z).abs().max()) < 1e-10
    rotation = torch.tensor([[0.0, -2.0], [2.0, 0.0]], dtype=F64)
    curved = ContinuousFlow(LinearField(rotation), **TIGHT)
    # a rotation by 2 radians: arc length 2r, chord 2 r sin(1)
    expected = 1 / math.sin(1.0) - 1
    assert torch.allclose(
        path_straightness(curved, z, steps=400), torch.full((5,), expected, dtype=F64), atol=1e-4
    )


# --- errors --------------------------------------------------------------------------------


def test_clear_errors():
    field = VelocityField(2)
    with pytest.raises(ValueError, match="method must be one of"):
        ContinuousFlow(field, method="rk45")
    with pytest.raises(ValueError, match="needs step_size"):
        ContinuousFlow(field, method="rk4")
    with pytest.raises(ValueError, match="rtol must be a finite positive number"):
        ContinuousFlow(field, rtol=0)
    with pytest.raises(ValueError, match="trace must be"):
        ContinuousFlow(field, trace="stochastic")
    with pytest.raises(TypeError, match="field must be an nn.Module"):
        ContinuousFlow(lambda t, z: z, dim=2)
    with pytest.raises(ValueError, match="smooth activation"):
        VelocityField(2, activation=nn.ReLU)
    with pytest.raises(ValueError, match=r"hidden\[0\] must be a positive integer"):
        VelocityField(2, hidden=(0,))
    with pytest.raises(ValueError, match=r"expected shape \(B, 2\)"):
        ContinuousFlow(field)(torch.zeros(3, 4))
    with pytest.raises(TypeError, match="float64 parameters"):
        ContinuousFlow(VelocityField(2).double())(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="non-finite"):
        ContinuousFlow(field)(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ValueError, match=r"x1 has 3 features"):
        flow_matching_loss(field, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="one time per point"):
        flow_matching_loss(field, torch.zeros(4, 2), t=torch.zeros(3))
    with pytest.raises(ValueError, match="strictly increasing"):
        ContinuousFlow(field).trajectory(torch.zeros(2, 2), [0.0, 0.5, 0.2])
    with pytest.raises(ValueError, match="std must be positive"):
        GaussianPathField(torch.zeros(2), torch.tensor([1.0, 0.0]))


# --------------------------------------------------------------------------------------
# Minibatch optimal-transport coupling
# --------------------------------------------------------------------------------------


def test_ot_pairing_returns_a_permutation():
    x0, x1 = randn(64, 2, seed=1), randn(64, 2, seed=2, scale=3.0)
    perm = ot_pairing(x0, x1)
    assert perm.dtype == torch.long and perm.shape == (64,)
    assert torch.equal(perm.sort().values, torch.arange(64))


def test_ot_pairing_minimises_the_batch_cost_against_brute_force():
    import itertools

    for seed in range(5):
        x0, x1 = randn(6, 3, seed=10 + seed), randn(6, 3, seed=20 + seed, scale=2.0)

        def cost(order, x0=x0, x1=x1):
            return float(((x0 - x1[list(order)]) ** 2).sum())

        best = min(itertools.permutations(range(6)), key=cost)
        perm = ot_pairing(x0, x1)
        assert cost(perm.tolist()) == pytest.approx(cost(best), rel=1e-12)
        assert perm.tolist() == list(best)  # random points: the optimum is unique


def test_ot_pairing_pairs_a_shifted_copy_with_itself():
    x0 = randn(32, 2, seed=3)
    shuffle = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    x1 = x0[shuffle] + 0.01
    perm = ot_pairing(x0, x1)
    assert torch.equal(x1[perm] - 0.01, x0)


def test_flow_matching_loss_with_ot_coupling_pairs_before_interpolating():
    field = random_field(dim=2, seed=4)
    x0, x1, t = randn(16, 2, seed=5), randn(16, 2, seed=6, scale=2.0), torch.rand(16, dtype=F64)
    perm = ot_pairing(x0, x1)
    by_hand = flow_matching_loss(field, x1[perm], x0=x0, t=t).detach()
    loss = flow_matching_loss(field, x1, x0=x0, t=t, coupling="ot").detach()
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-12)
    # the OT pairs are never longer in total than the independent ones
    assert float(((x1[perm] - x0) ** 2).sum()) <= float(((x1 - x0) ** 2).sum())
    with pytest.raises(ValueError, match="coupling"):
        flow_matching_loss(field, x1, x0=x0, t=t, coupling="sinkhorn")
    with pytest.raises(ValueError, match="one shape"):
        ot_pairing(x0, x1[:8])
