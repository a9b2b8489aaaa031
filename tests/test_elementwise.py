"""The elementwise maps of chapter 1: SinhArcsinh and ElementwiseAffine, in float64."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal, TransformedDistribution

import nfcourse as nf
from nfcourse.flows.elementwise import sinh_arcsinh
from nfcourse.testing import (
    check_batch_shapes,
    check_gradients_reach,
    check_log_det,
    check_round_trip,
)

DIM = 3


def _randomised(layer: nf.Transform, seed: int) -> nf.Transform:
    """The layer in float64 with every parameter moved to a random, non-trivial value."""
    g = torch.Generator().manual_seed(seed)
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


def _sinh_arcsinh(seed=0):
    return _randomised(nf.SinhArcsinh(DIM, skew=0.4, tail=1.3), seed)


def _affine(seed=0):
    return _randomised(nf.ElementwiseAffine(DIM, scale=1.8, shift=-0.5), seed)


LAYERS = {"sinh_arcsinh": _sinh_arcsinh, "affine": _affine}


@pytest.fixture
def z():
    return 1.5 * torch.randn(
        16, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_log_det_matches_autograd_jacobian(make, direction, z):
    layer = make()
    assert check_log_det(layer, z, atol=1e-8, direction=direction) < 1e-8
    # The check is not vacuous: the log-dets are far from zero.
    fn = layer.forward if direction == "forward" else layer.inverse
    assert fn(z)[1].abs().min() > 1e-2


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
def test_round_trip_recovers_points_and_log_dets_cancel(make, z):
    layer = make()
    assert check_round_trip(layer, z, atol=1e-10) < 1e-10
    x, _ = layer(z)
    assert (x - z).abs().max() > 0.1  # the map is not the identity


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
def test_batch_shapes(make):
    check_batch_shapes(make(), DIM, batch_sizes=(1, 2, 17))


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
def test_gradients_reach_every_parameter(make, z):
    layer = make()
    flow = nf.Flow(layer).double()
    check_gradients_reach(layer, flow.forward_kl(layer(z)[0].detach()))
    check_gradients_reach(layer, flow.reverse_kl(nf.StandardNormal(DIM).double().log_prob, 32))


def test_sinh_arcsinh_matches_its_closed_form_derivative(z):
    layer = _sinh_arcsinh()
    eps, tau = layer.skew, layer.log_tail.exp()
    x, log_det = layer(z)
    u = tau * (torch.asinh(z) + eps)
    torch.testing.assert_close(x, torch.sinh(u))
    derivative = tau * torch.cosh(u) / torch.sqrt(1 + z**2)
    torch.testing.assert_close(log_det, derivative.log().sum(dim=1), atol=1e-12, rtol=0)


def test_sinh_arcsinh_is_the_identity_at_zero_skew_and_unit_tail(z):
    layer = nf.SinhArcsinh(DIM).double()
    x, log_det = layer(z)
    torch.testing.assert_close(x, z)
    torch.testing.assert_close(log_det, torch.zeros(len(z), dtype=torch.float64))


def test_sinh_arcsinh_log_det_stays_finite_far_in_the_tails():
    layer = nf.SinhArcsinh(1, skew=0.5, tail=2.0).double()
    z = torch.tensor([[-1e6], [-30.0], [30.0], [1e6]], dtype=torch.float64)
    with torch.no_grad():
        x, log_det = layer(z)
    assert torch.isfinite(x).all() and torch.isfinite(log_det).all()
    # f'(z) ~ tau (2|z|)^tau e^{+-tau eps} / (2|z|) for large |z|: check the growth rate.
    slope = (log_det[3] - log_det[2]) / (math.log(1e6) - math.log(30.0))
    assert abs(float(slope) - 1.0) < 1e-3  # tau - 1 = 1
    z_back, log_det_back = layer.inverse(x)
    torch.testing.assert_close(z_back, z, rtol=1e-9, atol=0)
    torch.testing.assert_close(log_det_back, -log_det)


def test_sinh_arcsinh_skew_moves_mass_right():
    flow = nf.Flow(nf.SinhArcsinh(1, skew=0.8)).double()
    with torch.no_grad():
        x = flow.sample(20_000, generator=torch.Generator().manual_seed(0))
    assert float(x.mean()) > 0.5 and float(x.median()) > 0.5


def test_pure_function_and_module_agree(z):
    layer = _sinh_arcsinh()
    x, log_det = sinh_arcsinh(z, layer.skew, layer.log_tail)
    torch.testing.assert_close((x, log_det), layer(z))
    torch.testing.assert_close(
        sinh_arcsinh(x, layer.skew, layer.log_tail, inverse=True), layer.inverse(x)
    )


def test_affine_log_det_is_the_sum_of_log_scales(z):
    layer = _affine()
    _, log_det = layer(z)
    torch.testing.assert_close(log_det, layer.log_scale.sum().expand(len(z)))


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
@pytest.mark.parametrize(
    "bad, error, message",
    [
        (
            torch.zeros(4, DIM + 1, dtype=torch.float64),
            ValueError,
            rf"expected shape \(B, {DIM}\)",
        ),
        (torch.zeros(DIM, dtype=torch.float64), ValueError, "batch first"),
        (torch.tensor([[0.0, math.inf, 0.0]], dtype=torch.float64), ValueError, "non-finite"),
        (torch.tensor([[0.0, math.nan, 0.0]], dtype=torch.float64), ValueError, "non-finite"),
        (torch.zeros(4, DIM, dtype=torch.int64), TypeError, "float32 or float64"),
    ],
    ids=["wrong_dim", "no_batch", "inf", "nan", "integer"],
)
def test_bad_input_gets_a_clear_error(make, bad, error, message):
    layer = make()
    with pytest.raises(error, match=message):
        layer(bad)
    with pytest.raises(error, match=message):
        layer.inverse(bad)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="tail must be positive"):
        nf.SinhArcsinh(2, tail=0.0)
    with pytest.raises(ValueError, match="scale must be positive"):
        nf.ElementwiseAffine(2, scale=-1.0)
    with pytest.raises(ValueError, match="positive integer"):
        nf.SinhArcsinh(0)


@pytest.mark.parametrize(
    "make",
    [*LAYERS.values(), lambda: nf.Compose(_sinh_arcsinh(1), _affine(2))],
    ids=[*LAYERS.keys(), "composed"],
)
def test_inside_torch_transformed_distribution_matches_flow_log_prob(make, z):
    layer = make()
    base = Independent(
        Normal(torch.zeros(DIM, dtype=torch.float64), torch.ones(DIM, dtype=torch.float64)), 1
    )
    dist = TransformedDistribution(base, [nf.to_torch_transform(layer)])
    x = layer(z)[0].detach()
    expected = nf.Flow(layer).double().log_prob(x)
    torch.testing.assert_close(dist.log_prob(x), expected, atol=1e-12, rtol=0)
    # and the torch distribution samples through the same map
    sample = dist.sample((5,))
    assert sample.shape == (5, DIM)
    assert torch.isfinite(nf.Flow(layer).double().log_prob(sample)).all()
