"""Radial flows (chapter 3): log-det, constraint and closed-form inverse."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nfcourse
from nfcourse import testing
from nfcourse.flows import RadialFlow, radial_forward, radial_inverse


def random_radial(dim: int, seed: int = 0, raw_beta: float | None = None) -> RadialFlow:
    """A radial layer in float64 with random, non-trivial parameters."""
    g = torch.Generator().manual_seed(seed)
    flow = RadialFlow(dim).double()
    with torch.no_grad():
        flow.z0.copy_(torch.randn(dim, generator=g, dtype=torch.float64))
        flow.raw_alpha.copy_(torch.randn((), generator=g, dtype=torch.float64))
        flow.raw_beta.copy_(
            2 * torch.randn((), generator=g, dtype=torch.float64)
            if raw_beta is None
            else torch.tensor(raw_beta)
        )
    return flow


def points(n: int, dim: int, seed: int = 1, scale: float = 1.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, dim, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("dim", [1, 2, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_radial_log_det_matches_autograd_jacobian(dim, seed):
    flow, z = random_radial(dim, seed), points(16, dim, seed=seed + 5)
    assert flow(z)[1].abs().max() > 1e-2, "test parameters too close to the identity"
    assert testing.check_log_det(flow, z, atol=1e-8) <= 1e-8


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_radial_inverse_log_det_matches_autograd_jacobian_of_the_inverse(dim):
    flow = random_radial(dim, seed=2)
    x = flow(points(16, dim))[0].detach()
    assert testing.check_log_det(flow, x, atol=1e-8, direction="inverse") <= 1e-8


@pytest.mark.parametrize("dim", [1, 2, 5])
@pytest.mark.parametrize("raw_beta", [None, -8.0, 4.0])
def test_radial_round_trip(dim, raw_beta):
    # raw_beta = -8 puts beta just above -alpha: strong contraction towards z0
    flow = random_radial(dim, seed=3, raw_beta=raw_beta)
    near_centre = flow.z0.detach() + 1e-3 * points(4, dim, seed=5)
    z = torch.cat([points(64, dim, seed=4, scale=3.0), near_centre])
    assert testing.check_round_trip(flow, z, atol=1e-10) <= 1e-10


def test_radial_round_trip_in_float32():
    flow = random_radial(2, seed=5).float()
    z = points(256, 2, seed=6).float()
    x, log_det = flow(z)
    z_back, log_det_inverse = flow.inverse(x)
    assert (z_back - z).abs().max() < 1e-5
    assert (log_det + log_det_inverse).abs().max() < 1e-5


def test_radial_batch_shapes():
    testing.check_batch_shapes(random_radial(3), 3, batch_sizes=(1, 7, 32))


def test_radial_gradients_reach_every_parameter_forward_and_inverse():
    flow, z = random_radial(2), points(32, 2)
    x, log_det = flow(z)
    testing.check_gradients_reach(flow, (x**2).sum() + log_det.sum())
    model = nfcourse.Flow([random_radial(2, seed=s) for s in range(3)]).double()
    testing.check_gradients_reach(model, model.log_prob(points(32, 2, seed=7)).mean())


def test_radial_inverse_gradients_match_finite_differences():
    flow = random_radial(2, seed=8)
    x = points(5, 2, seed=9)
    inputs = tuple(
        t.detach().clone().requires_grad_(True) for t in (flow.z0, flow.alpha, flow.beta, x)
    )
    assert torch.autograd.gradcheck(lambda z0, a, b, x: radial_inverse(x, z0, a, b), inputs)


reals = st.floats(min_value=-50, max_value=50, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(reals, reals, st.floats(0.0, 20.0))
def test_radial_map_is_invertible_for_any_raw_parameters(raw_alpha, raw_beta, r):
    flow = RadialFlow(2).double()
    with torch.no_grad():
        flow.raw_alpha.fill_(raw_alpha)
        flow.raw_beta.fill_(raw_beta)
    alpha, beta = float(flow.alpha.detach()), float(flow.beta.detach())
    assert alpha > 0 and beta >= -alpha * (1 + 1e-15)
    # both eigenvalues of the Jacobian are non-negative at every radius
    h = 1 / (alpha + r)
    assert 1 + beta * h >= -1e-12
    assert 1 + beta * alpha * h**2 >= -1e-12
    # the radius of the image, r (1 + beta h), never decreases with r
    radii = torch.linspace(0, 20, 201, dtype=torch.float64)
    image = radii * (1 + beta / (alpha + radii))
    assert bool(((image[1:] - image[:-1]) >= -1e-12).all())


def test_radial_forward_moves_points_along_the_ray_from_z0():
    flow, z = random_radial(3), points(20, 3)
    x = flow(z)[0]
    d_in, d_out = z - flow.z0, x - flow.z0
    cos = (d_in * d_out).sum(1) / (d_in.norm(dim=1) * d_out.norm(dim=1))
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-12)


def test_radial_pure_functions_agree_with_the_module():
    flow, z = random_radial(2), points(8, 2)
    x, log_det = radial_forward(z, flow.z0, flow.alpha, flow.beta)
    torch.testing.assert_close(x, flow(z)[0])
    torch.testing.assert_close(log_det, flow(z)[1])


def test_default_radial_layer_is_the_identity():
    flow = RadialFlow(2).double()
    z = points(10, 2)
    x, log_det = flow(z)
    assert float(flow.beta.detach()) == 0.0
    torch.testing.assert_close(x, z)
    assert log_det.abs().max() == 0


def test_radial_rejects_a_point_of_the_wrong_dimension():
    with pytest.raises(ValueError, match=r"expected shape \(B, 2\)"):
        random_radial(2)(points(4, 3))


def test_radial_rejects_non_finite_input():
    x = points(4, 2)
    x[0, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        random_radial(2).inverse(x)
