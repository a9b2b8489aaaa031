"""Planar flows (chapter 3): log-det, constraint, numerical inverse and its gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import nfcourse
from nfcourse import testing
from nfcourse.flows import PlanarFlow, constrained_u, planar_forward, planar_inverse
from nfcourse.flows.planar import default_tolerance, solve_planar_projection


def random_planar(dim: int, seed: int = 0, scale: float = 1.5) -> PlanarFlow:
    """A planar layer in float64 with random, non-trivial parameters."""
    g = torch.Generator().manual_seed(seed)
    flow = PlanarFlow(dim).double()
    with torch.no_grad():
        flow.u.copy_(scale * torch.randn(dim, generator=g, dtype=torch.float64))
        flow.w.copy_(scale * torch.randn(dim, generator=g, dtype=torch.float64))
        flow.b.copy_(torch.randn((), generator=g, dtype=torch.float64))
    return flow


def points(n: int, dim: int, seed: int = 1, scale: float = 1.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, dim, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_planar_log_det_matches_autograd_jacobian(dim):
    flow, z = random_planar(dim), points(16, dim)
    log_det = flow(z)[1]
    assert log_det.abs().max() > 1e-2, "test parameters too close to the identity"
    assert testing.check_log_det(flow, z, atol=1e-8) <= 1e-8


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_planar_inverse_log_det_matches_autograd_jacobian_of_the_inverse(dim):
    flow = random_planar(dim, seed=3)
    x = flow(points(16, dim))[0].detach()
    assert testing.check_log_det(flow, x, atol=1e-8, direction="inverse") <= 1e-8


@pytest.mark.parametrize("dim", [1, 2, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planar_round_trip_through_the_numerical_inverse(dim, seed):
    flow, z = random_planar(dim, seed=seed), points(64, dim, seed=seed + 10, scale=3.0)
    assert testing.check_round_trip(flow, z, atol=1e-10) <= 1e-10


def test_planar_round_trip_in_float32():
    flow = random_planar(2, seed=4).float()
    with torch.no_grad():  # keep away from w^T u_hat = -1, where float32 log-dets lose digits
        flow.u.copy_(-flow.u)
    assert float((flow.w @ flow.u_hat).detach()) > -0.9
    z = points(256, 2, seed=5).float()
    x, log_det = flow(z)
    z_back, log_det_inverse = flow.inverse(x)
    assert (z_back - z).abs().max() < 1e-4
    assert (log_det + log_det_inverse).abs().max() < 1e-4


def test_planar_batch_shapes():
    testing.check_batch_shapes(random_planar(3), 3, batch_sizes=(1, 7, 32))


def test_planar_forward_gradients_reach_every_parameter():
    flow, z = random_planar(2), points(32, 2)
    x, log_det = flow(z)
    testing.check_gradients_reach(flow, (x**2).sum() + log_det.sum())


def test_planar_log_prob_gradients_reach_every_parameter():
    model = nfcourse.Flow([random_planar(2, seed=s) for s in range(3)]).double()
    x = points(32, 2, seed=7)
    testing.check_gradients_reach(model, model.log_prob(x).mean())


def test_gradients_through_the_inverse_match_finite_differences():
    flow = random_planar(2, seed=5)
    x = points(6, 2, seed=8, scale=2.0)

    def inverse_outputs(u, w, b, x):
        z, log_det = planar_inverse(x, constrained_u(u, w), w, b)
        return z, log_det

    inputs = tuple(t.detach().clone().requires_grad_(True) for t in (flow.u, flow.w, flow.b, x))
    assert torch.autograd.gradcheck(inverse_outputs, inputs, eps=1e-6, atol=1e-6)


def test_detached_root_alone_would_give_wrong_gradients():
    # The implicit-function step matters: without it, the gradient of z with respect to b
    # misses the dependence of the root alpha on b.
    flow = random_planar(2, seed=6)
    x = points(4, 2, seed=9)
    u_hat = flow.u_hat.detach()
    b = flow.b.detach().clone().requires_grad_(True)
    z, _ = planar_inverse(x, u_hat, flow.w.detach(), b)
    (grad_right,) = torch.autograd.grad(z.sum(), b)
    alpha = solve_planar_projection(x @ flow.w.detach(), flow.w.detach() @ u_hat, b)
    z_naive = x - torch.tanh(alpha + b).unsqueeze(1) * u_hat
    (grad_naive,) = torch.autograd.grad(z_naive.sum(), b)
    eps = 1e-6
    with torch.no_grad():
        plus = planar_inverse(x, u_hat, flow.w.detach(), b + eps)[0].sum()
        minus = planar_inverse(x, u_hat, flow.w.detach(), b - eps)[0].sum()
    finite_difference = (plus - minus) / (2 * eps)
    assert abs(float(grad_right) - float(finite_difference)) < 1e-6
    assert abs(float(grad_naive) - float(finite_difference)) > 1e-3


def test_constrained_u_follows_the_paper_formula():
    g = torch.Generator().manual_seed(0)
    u = 3 * torch.randn(10, 4, generator=g, dtype=torch.float64)
    w = 3 * torch.randn(10, 4, generator=g, dtype=torch.float64)
    u_hat = constrained_u(u, w)
    a = (w * u).sum(-1)
    # w^T u_hat = m(w^T u) = -1 + softplus(w^T u): this fails if one divides by ||w||
    torch.testing.assert_close((w * u_hat).sum(-1), -1 + F.softplus(a), rtol=1e-12, atol=1e-12)
    # the correction moves u along w only
    correction = u_hat - u
    cross = correction[:, :, None] * w[:, None, :] - correction[:, None, :] * w[:, :, None]
    assert cross.abs().max() < 1e-12


finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=1, max_size=6))
def test_w_dot_u_hat_is_at_least_minus_one_for_any_raw_parameters(pairs):
    u = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    w = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    if float(w.norm()) < 1e-3:
        w = w + 1e-3
    u_hat = constrained_u(u, w)
    assert torch.isfinite(u_hat).all()
    m = float(w @ u_hat)
    # w^T u_hat = m(w^T u) >= -1, up to the rounding of the dot products
    rounding = 1e-12 * (1 + float(u.abs() @ w.abs()) + float(u_hat.abs() @ w.abs()))
    assert m >= -1 - rounding


@settings(max_examples=200, deadline=None)
@given(finite, finite, finite, finite, st.floats(-5, 5))
def test_planar_map_is_monotone_along_w(u1, u2, w1, w2, b):
    w = torch.tensor([w1, w2], dtype=torch.float64)
    if float(w.norm()) < 1e-3:
        w = torch.tensor([1.0, 0.5], dtype=torch.float64)
    u = torch.tensor([u1, u2], dtype=torch.float64)
    u_hat = constrained_u(u, w)
    rounding = 1e-12 * (1 + float(u.abs() @ w.abs()) + float(u_hat.abs() @ w.abs()))
    # move along w across the hyperplane: w^T f(z) must increase with t
    t = torch.linspace(-10, 10, 401, dtype=torch.float64) / float(w.norm())
    z = torch.tensor([0.3, -0.7], dtype=torch.float64) + t.unsqueeze(1) * w / w.norm()
    x, log_det = planar_forward(z, u_hat, w, torch.tensor(b, dtype=torch.float64))
    along = x @ w
    steps = along[1:] - along[:-1]
    assert bool((steps >= -1e-9 * (1 + along.abs().max())).all())
    # and the determinant 1 + u_hat^T psi(z) never changes sign (up to rounding)
    det = 1 + (1 - torch.tanh(z @ w + b) ** 2) * (w @ u_hat)
    assert bool((det >= -rounding).all())
    assert bool(torch.isfinite(log_det[det > 1e-300]).all())


def test_unconstrained_planar_map_folds_the_plane():
    flow = PlanarFlow(2, constrained=False).double()
    with torch.no_grad():
        flow.w.copy_(torch.tensor([1.0, 0.0]))
        flow.u.copy_(torch.tensor([-3.0, 0.5]))
        flow.b.zero_()
    z = torch.stack(
        [torch.linspace(-3, 3, 61, dtype=torch.float64), torch.zeros(61, dtype=torch.float64)],
        dim=1,
    )
    x = flow(z)[0]
    det = 1 + (1 - torch.tanh(z @ flow.w) ** 2) * float(flow.w.detach() @ flow.u.detach())
    assert det.min() < 0 < det.max()
    assert (x[1:, 0] - x[:-1, 0]).min() < 0, "the image of a line along w should double back"
    with pytest.raises(ValueError, match="not invertible"):
        flow.inverse(x)


def test_solve_planar_projection_at_the_edge_of_the_constraint():
    # m = -1 makes the slope vanish at alpha = -b; bisection still finds the root.
    y = torch.linspace(-4, 4, 101, dtype=torch.float64)
    m, b = torch.tensor(-1.0, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    alpha = solve_planar_projection(y, m, b)
    residual = alpha + m * torch.tanh(alpha + b) - y
    assert residual.abs().max() <= default_tolerance(torch.float64) * (1 + 4 + 1)


@settings(max_examples=300, deadline=None)
@given(st.floats(-1e4, 1e4), st.floats(-1.0, 1e3), st.floats(-1e3, 1e3))
def test_solve_planar_projection_converges_for_any_valid_equation(y, m, b):
    y_ = torch.tensor([y, -y, 0.5 * y], dtype=torch.float64)
    m_, b_ = torch.tensor(m, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    alpha = solve_planar_projection(y_, m_, b_, max_iter=100)
    residual = (alpha + m_ * torch.tanh(alpha + b_) - y_).abs()
    assert bool((residual <= 1e-12 * (1 + y_.abs() + abs(m))).all())


def test_planar_inverse_that_does_not_converge_raises_a_clear_error():
    flow = random_planar(2, seed=2)
    flow.max_iter, flow.tol = 1, 1e-15
    x = points(8, 2, scale=3.0)
    with pytest.raises(RuntimeError, match="did not converge in 1 iterations.*largest residual"):
        flow.inverse(x)


def test_planar_rejects_a_point_of_the_wrong_dimension():
    with pytest.raises(ValueError, match=r"expected shape \(B, 2\)"):
        random_planar(2)(points(4, 3))
    with pytest.raises(ValueError, match=r"expected shape \(B, 2\)"):
        random_planar(2).inverse(points(4, 3))


def test_planar_rejects_non_finite_input():
    z = points(4, 2)
    z[2, 1] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        random_planar(2)(z)
    z[2, 1] = math.inf
    with pytest.raises(ValueError, match="non-finite"):
        random_planar(2).inverse(z)


def test_planar_rejects_a_max_iter_below_one():
    with pytest.raises(ValueError, match="max_iter"):
        PlanarFlow(2, max_iter=0)


def test_default_planar_layer_starts_near_the_identity():
    torch.manual_seed(0)
    flow = PlanarFlow(2).double()
    z = points(100, 2)
    x, log_det = flow(z)
    assert abs(float((flow.w @ flow.u_hat).detach())) < 0.05
    assert (x - z).abs().max() < 0.1
    assert log_det.abs().max() < 0.05


def test_unconstrained_planar_map_inverts_when_it_is_invertible():
    # constrained=False uses the raw u; while w^T u >= -1 the layer is still invertible, and
    # its inverse must use this layer's own parameters, tolerance and iteration limit.
    flow = PlanarFlow(3, constrained=False, tol=1e-13, max_iter=60).double()
    with torch.no_grad():
        flow.w.copy_(torch.tensor([0.8, -0.4, 1.1]))
        flow.u.copy_(torch.tensor([0.9, 0.3, -0.2]))
        flow.b.fill_(0.4)
    z = torch.randn(40, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    testing.check_round_trip(flow, z, atol=1e-10)
    testing.check_log_det(flow.inv(), flow(z)[0].detach(), atol=1e-8)
    flow.max_iter = 1
    with pytest.raises(RuntimeError, match="did not converge in 1 iterations"):
        flow.inverse(3 * z)


@pytest.mark.parametrize("batch_shape", [(5,), (4, 5)])
def test_planar_functions_take_one_parameter_set_per_point(batch_shape):
    # The VAE of chapter 6 calls chapter 3's planar map with parameters for every image.
    g = torch.Generator().manual_seed(7)
    d = 3
    u = 2 * torch.randn(5, d, generator=g, dtype=torch.float64)
    w = 2 * torch.randn(5, d, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    u_hat = constrained_u(u, w)
    z = torch.randn(*batch_shape, d, generator=g, dtype=torch.float64)
    x, log_abs_det = planar_forward(z, u_hat, w, b)
    assert x.shape == z.shape and log_abs_det.shape == batch_shape
    for i in range(5):  # each point with its own parameters is the shared-parameter map
        zi = z[..., i, :].reshape(-1, d)
        xi, ldi = planar_forward(zi, u_hat[i], w[i], b[i])
        torch.testing.assert_close(x[..., i, :].reshape(-1, d), xi)
        torch.testing.assert_close(log_abs_det[..., i].reshape(-1), ldi)
    z_back, log_abs_det_inverse = planar_inverse(x, u_hat, w, b)
    torch.testing.assert_close(z_back, z, atol=1e-10, rtol=0)
    torch.testing.assert_close(log_abs_det_inverse, -log_abs_det, atol=1e-10, rtol=0)
    bad = u_hat.clone()
    bad[2] = u[2] - (w[2] @ u[2] + 3.0) * w[2] / (w[2] @ w[2])  # w^T u = -3 for one point
    with pytest.raises(ValueError, match="not invertible"):
        planar_inverse(x, bad, w, b)


def test_planar_and_radial_initialisation_follow_their_generator():
    from nfcourse.flows import RadialFlow

    for make in (PlanarFlow, RadialFlow):
        a = make(3, generator=torch.Generator().manual_seed(1))
        b = make(3, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(1)
        c = make(3, generator=torch.Generator().manual_seed(2))
        for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
            assert torch.equal(p, q), name
        assert any(
            not torch.equal(p, r) for p, r in zip(a.parameters(), c.parameters(), strict=True)
        )
    layer = PlanarFlow(4, generator=torch.Generator().manual_seed(0)).double()
    # w^T u = log(e - 1) at the start: m(w^T u) = 0, so u_hat is small and f is near identity
    assert abs(float(layer.w @ layer.u) - math.log(math.e - 1)) < 1e-6
    assert float(layer.u_hat.norm()) < 0.05
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        PlanarFlow(2, max_iter=0)
    assert PlanarFlow(2, max_iter=1).max_iter == 1
