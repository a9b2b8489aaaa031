"""Tests of the rational-quadratic spline flows of chapter 8 (``nfcourse.flows.spline``),
in float64 with non-trivial random parameters."""

from __future__ import annotations

import math

import pytest
import torch

from nfcourse import Flow, testing
from nfcourse.densities import GaussianRing
from nfcourse.flows.actnorm import ActNorm
from nfcourse.flows.masks import half_mask
from nfcourse.flows.spline import (
    RationalQuadraticAutoregressive,
    RationalQuadraticCoupling,
    RationalQuadraticSpline,
    rational_quadratic_spline,
    spline_flow,
    spline_parameters,
)
from nfcourse.testing import perturb
from nfcourse.training import fit_maximum_likelihood

B = 3.0
K = 6


def gen(seed):
    return torch.Generator().manual_seed(seed)


def raw(n, scale=1.0, seed=0, bins=K):
    g = gen(seed)
    return tuple(
        scale * torch.randn(n, k, generator=g, dtype=torch.float64) for k in (bins, bins, bins - 1)
    )


def spline(x, params, inverse=False, **kw):
    return rational_quadratic_spline(x, *params, inverse=inverse, bound=B, **kw)


# ------------------------------------------------------------------ the spline itself


@pytest.mark.parametrize("scale", [0.0, 1.0, 5.0, 1e3, 1e8])
def test_spline_derivative_matches_autograd_and_round_trips_both_ways(scale):
    n = 400
    x = torch.linspace(-1.5 * B, 1.5 * B, n, dtype=torch.float64)
    params = raw(n, scale)
    xx = x.clone().requires_grad_()
    y, log_d = spline(xx, params)
    (grad,) = torch.autograd.grad(y.sum(), xx)
    # at scale 1e8 knot slopes reach 1e8 and autograd's own derivative loses digits
    atol = 1e-7 if scale <= 1e3 else 1e-3
    assert torch.isfinite(log_d).all()
    torch.testing.assert_close(log_d, grad.log(), atol=atol, rtol=0)
    x_back, log_d_inv = spline(y.detach(), params, inverse=True)
    # exact to rounding, up to the conditioning of the map: where the spline is nearly
    # flat (extreme parameters), a rounding of y moves x by that much over the slope
    slope = log_d.detach().exp()
    if scale <= 1e3:
        assert bool(((x_back - x).abs() <= 1e-9 + 1e-13 / slope).all())
    # backward stable at any scale: the point found maps back onto y
    y_again, log_d_again = spline(x_back, params)
    assert float((y_again - y).abs().max()) < 1e-12
    assert float((log_d_again + log_d_inv).abs().max()) < 1e-6
    if scale <= 1e3:
        assert float((log_d.detach() + log_d_inv).abs().max()) < 1e-6
    # the other direction: inverse first, in float64 autograd too
    yy = x.clone().requires_grad_()
    z, log_d_inv = spline(yy, params, inverse=True)
    (grad,) = torch.autograd.grad(z.sum(), yy)
    if scale <= 1e3:  # at 1e8 autograd through the root formula loses digits
        torch.testing.assert_close(log_d_inv, grad.log(), atol=atol, rtol=0)
    assert torch.isfinite(log_d_inv).all() and torch.isfinite(grad).all()
    y_back, log_d_back = spline(z.detach(), params)
    # exact up to the conditioning: a rounding of z (about 1e-15 here) moves y by that
    # much times the slope, which extreme parameters make as large as 1e8
    assert bool(((y_back - x).abs() <= 1e-10 + 1e-15 * log_d_back.exp()).all())
    assert float((log_d_inv.detach() + spline(z.detach(), params)[1]).abs().max()) < 1e-6


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_spline_at_and_beside_every_knot(scale):
    n = 50
    params = raw(n, scale, seed=3)
    knot_x, knot_y, deriv = spline_parameters(*params, bound=B)
    rep = [p.repeat_interleave(K + 1, 0) for p in params]
    xs, ys, ds = knot_x.reshape(-1), knot_y.reshape(-1), deriv.reshape(-1)
    y, log_d = spline(xs, rep)
    torch.testing.assert_close(y, ys, atol=1e-12, rtol=0)
    torch.testing.assert_close(log_d, ds.log(), atol=1e-9, rtol=0)
    x_back, log_d_inv = spline(ys, rep, inverse=True)
    torch.testing.assert_close(x_back, xs, atol=1e-10, rtol=0)
    torch.testing.assert_close(log_d_inv, -ds.log(), atol=1e-7, rtol=0)
    for eps in (1e-12, 1e-9, 1e-6):
        for side in (-1, 1):
            x = (xs + side * eps).clamp(-B, B)
            y, log_d = spline(x, rep)
            x_back, log_d_inv = spline(y, rep, inverse=True)
            # exact up to the conditioning: a rounding of y moves x by it over the slope
            assert bool(((x_back - x).abs() <= 1e-10 + 1e-13 / log_d.exp()).all())
            # the inverse's log-det is minus the forward's at the point it returns
            _, log_d_back = spline(x_back, rep)
            assert float((log_d_back + log_d_inv).abs().max()) < 1e-6
            y2 = (ys + side * eps).clamp(-B, B)
            x2, _ = spline(y2, rep, inverse=True)
            assert float((spline(x2, rep)[0] - y2).abs().max()) < 1e-9


def test_spline_is_continuous_with_slope_one_at_the_edges_and_identity_in_the_tails():
    params = raw(8, 2.0, seed=5)
    for edge in (-B, B):
        for eps in (0.0, 1e-9):
            x_in = torch.full((8,), edge - math.copysign(eps, edge), dtype=torch.float64)
            x_out = torch.full((8,), edge + math.copysign(1e-9, edge), dtype=torch.float64)
            y_in, log_in = spline(x_in, params)
            y_out, log_out = spline(x_out, params)
            assert float((y_out - y_in).abs().max()) < 1e-8
            # slope 1 at the edge itself; within 1e-9 of it, the slope is 1 to within
            # 1e-9 times the spline's curvature there
            assert float(log_in.abs().max()) < (1e-9 if eps == 0 else 1e-3)
            assert float(log_out.abs().max()) == 0
    far = torch.tensor([-1e12, -50.0, -B - 1e-3, B + 1e-3, 50.0, 1e12], dtype=torch.float64)
    params = raw(6, 10.0, seed=7)
    for inverse in (False, True):
        y, log_d = spline(far, params, inverse=inverse)
        assert torch.equal(y, far) and torch.equal(log_d, torch.zeros_like(far))


def test_spline_is_monotone_and_maps_the_box_onto_itself():
    params = [p.expand(2001, -1) for p in raw(1, 4.0, seed=9)]
    x = torch.linspace(-B, B, 2001, dtype=torch.float64)
    y, _ = spline(x, params)
    assert bool((y.diff() > 0).all())
    assert float(y[0]) == -B and float(y[-1]) == B


def test_zero_parameters_give_the_identity():
    x = torch.linspace(-2 * B, 2 * B, 101, dtype=torch.float64)
    params = tuple(torch.zeros(101, k, dtype=torch.float64) for k in (K, K, K - 1))
    y, log_d = spline(x, params)
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
    assert float(log_d.abs().max()) < 1e-12


def test_minimums_hold_for_extreme_parameters():
    params = raw(200, 1e6, seed=11)
    knot_x, knot_y, deriv = spline_parameters(
        *params, bound=B, min_bin_width=1e-2, min_bin_height=2e-2, min_derivative=0.1
    )
    assert float(knot_x.diff().min()) >= 2 * B * 1e-2 * (1 - 1e-9)
    assert float(knot_y.diff().min()) >= 2 * B * 2e-2 * (1 - 1e-9)
    assert float(deriv.min()) >= 0.1
    assert torch.isfinite(deriv).all()


def test_spline_keeps_any_batch_shape_and_gives_every_parameter_a_gradient():
    g = gen(2)
    x = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    params = [
        torch.randn(3, 4, 5, k, generator=g, dtype=torch.float64, requires_grad=True)
        for k in (K, K, K - 1)
    ]
    for inverse in (False, True):
        y, log_d = rational_quadratic_spline(x, *params, inverse=inverse, bound=B)
        assert y.shape == x.shape and log_d.shape == x.shape
        grads = torch.autograd.grad((y + log_d).sum(), params)
        assert all(bool((gr != 0).any()) and torch.isfinite(gr).all() for gr in grads)


def test_gradients_are_finite_in_the_tails():
    x = torch.tensor([-100.0, 100.0], dtype=torch.float64, requires_grad=True)
    params = [p.requires_grad_() for p in raw(2, 1.0)]
    y, log_d = spline(x, params, inverse=True)
    grads = torch.autograd.grad((y + log_d).sum(), [x, *params])
    assert all(torch.isfinite(gr).all() for gr in grads)


def test_spline_rejects_bad_arguments_with_clear_messages():
    x = torch.zeros(4, dtype=torch.float64)
    w, h, d = raw(4)
    with pytest.raises(ValueError, match="unnormalized_derivatives must have shape"):
        rational_quadratic_spline(x, w, h, torch.zeros(4, K, dtype=torch.float64))
    with pytest.raises(ValueError, match="inputs must have shape"):
        rational_quadratic_spline(torch.zeros(5, dtype=torch.float64), w, h, d)
    with pytest.raises(TypeError, match="unnormalized_widths is torch.float32"):
        rational_quadratic_spline(x, w.float(), h, d)
    with pytest.raises(TypeError, match="inputs must be a torch.Tensor"):
        rational_quadratic_spline([0.0] * 4, w, h, d)
    with pytest.raises(ValueError, match="non-finite"):
        rational_quadratic_spline(x + math.nan, w, h, d)
    with pytest.raises(ValueError, match="bound must be a finite positive"):
        rational_quadratic_spline(x, w, h, d, bound=-1.0)
    with pytest.raises(ValueError, match=r"min_bin_width must be a number in \(0, 1/bins\)"):
        rational_quadratic_spline(x, w, h, d, min_bin_width=0.5)
    with pytest.raises(ValueError, match="min_derivative"):
        rational_quadratic_spline(x, w, h, d, min_derivative=1.0)
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        RationalQuadraticSpline(2, bins=0)


# ------------------------------------------------------------------ the layers


def layers():
    torch.manual_seed(0)
    return {
        "elementwise": perturb(RationalQuadraticSpline(3, bins=K, bound=B).double(), 1.0),
        "coupling": perturb(
            RationalQuadraticCoupling(half_mask(3), hidden=(8, 8), bins=K, bound=B).double(), 0.5
        ),
        "autoregressive": perturb(
            RationalQuadraticAutoregressive(
                3, hidden=(8, 8), order=[2, 0, 1], bins=K, bound=B
            ).double(),
            0.5,
        ),
    }


@pytest.mark.parametrize("name", ["elementwise", "coupling", "autoregressive"])
def test_layer_log_det_round_trips_shapes_and_gradients(name):
    layer = layers()[name]
    g = gen(4)
    z = torch.cat(
        [
            torch.randn(20, 3, generator=g, dtype=torch.float64) * 1.5,
            torch.tensor([[B, -B, 0.0], [-B, B, 10.0], [1e6, -1e6, B]], dtype=torch.float64),
        ]
    )
    for direction in ("forward", "inverse"):
        testing.check_log_det(layer, z, atol=1e-8, direction=direction)
    testing.check_round_trip(layer, z, atol=1e-9)
    testing.check_round_trip(layer.inv(), z, atol=1e-9)
    testing.check_batch_shapes(layer, 3)
    testing.check_gradients_reach(layer, layer(z)[0].sum() + layer(z)[1].sum())


@pytest.mark.parametrize("scale", [5.0, 50.0])
def test_coupling_layer_round_trips_at_extreme_conditioner_outputs(scale):
    torch.manual_seed(0)
    layer = perturb(
        RationalQuadraticCoupling(half_mask(2), hidden=(8,), bins=K, bound=B).double(), scale
    )
    z = torch.randn(400, 2, generator=gen(5), dtype=torch.float64) * 2
    for t in (layer, layer.inv()):
        x, log_d = t(z)
        z_back, log_d_back = t.inverse(x)
        assert torch.equal(z_back[:, 0], z[:, 0])  # the conditioning coordinate
        # one transformed coordinate: its log-det is the log-slope of its spline; the
        # round trip is exact up to a rounding of x divided by that slope
        err = (z_back[:, 1] - z[:, 1]).abs()
        assert bool((err <= 1e-10 + 1e-13 / log_d.detach().exp()).all())
        _, log_d_again = t(z_back)
        assert float((log_d_again + log_d_back).abs().max()) < 1e-8


def test_coupling_with_zero_initialised_conditioner_is_the_identity():
    layer = RationalQuadraticCoupling(half_mask(4), hidden=(8,), bins=K, bound=B).double()
    z = torch.randn(10, 4, generator=gen(6), dtype=torch.float64) * 3
    x, log_d = layer(z)
    torch.testing.assert_close(x, z, atol=1e-12, rtol=0)
    assert float(log_d.abs().max()) < 1e-12


def test_coupling_parameter_count_and_repr():
    layer = RationalQuadraticCoupling(half_mask(2), hidden=(16,), bins=5, bound=2.0)
    # 1 -> 16 -> (3 * 5 - 1) outputs for the one transformed coordinate
    assert sum(p.numel() for p in layer.parameters()) == (1 * 16 + 16) + (16 * 14 + 14)
    assert "bins=5" in repr(layer) and "bound=2.0" in repr(layer)


# ------------------------------------------------------------------ the builder


@pytest.mark.parametrize(
    "dim,layer", [(1, "coupling"), (2, "coupling"), (5, "coupling"), (3, "autoregressive")]
)
def test_spline_flow_log_det_round_trips_and_gradients(dim, layer):
    flow = perturb(spline_flow(dim, hidden=(8, 8), n_layers=3, layer=layer).double(), 0.3)
    z = torch.randn(8, dim, generator=gen(7), dtype=torch.float64) * 2
    testing.check_log_det(flow.transform, z, atol=1e-8)
    testing.check_log_det(flow.transform, z, atol=1e-8, direction="inverse")
    # sampling an autoregressive flow feeds each pass's rounding into the next conditioner
    atol = 1e-9 if layer == "coupling" else 1e-7
    testing.check_round_trip(flow.transform, z, atol=atol)
    testing.check_round_trip(flow.transform.inv(), z, atol=atol)
    testing.check_gradients_reach(flow, flow.log_prob(z).sum())


def test_spline_flow_standardises_from_the_first_data_batch():
    flow = spline_flow(2).double()
    assert isinstance(flow.transform[-1], ActNorm)
    g = gen(8)
    data = (
        torch.randn(500, 2, generator=g, dtype=torch.float64)
        * torch.tensor([50.0, 0.01], dtype=torch.float64)
        + 1000.0
    )
    flow.log_prob(data)
    z, _ = flow.transform[-1].inverse(data)
    torch.testing.assert_close(z.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(2, dtype=torch.float64), atol=1e-9, rtol=0)
    assert not isinstance(spline_flow(2, standardize=False).transform[-1], ActNorm)


def test_spline_flow_is_seeded_without_touching_the_global_state():
    state = torch.random.get_rng_state()
    a, b = spline_flow(3, seed=4), spline_flow(3, seed=4)
    assert torch.equal(state, torch.random.get_rng_state())
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_spline_flow_density_integrates_to_one_in_two_dimensions():
    flow = perturb(spline_flow(2, hidden=(8,), n_layers=2, standardize=False).double(), 0.2)
    t = torch.linspace(-10, 10, 1001, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum() * (t[1] - t[0]) ** 2
    assert abs(float(mass) - 1) < 1e-3


def test_spline_flow_learns_the_ring_quickly():
    density = GaussianRing()
    data = density.sample(4000, seed=1)
    flow = spline_flow(2, hidden=(32, 32))
    fit_maximum_likelihood(flow, data, steps=300, batch_size=256, lr=3e-3, progress=False)
    kl, _ = density.kl_divergence(flow, n=4000)
    # a standard normal is about 1.7 nats away; a spline flow after 300 steps is far closer
    assert kl < 0.6


def test_spline_flow_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        spline_flow(0)
    with pytest.raises(ValueError, match="n_layers must be a positive integer"):
        spline_flow(2, n_layers=0)
    with pytest.raises(ValueError, match="activation is ReLU"):
        spline_flow(2, layer="autoregressive", activation=torch.nn.Tanh)
    with pytest.raises(ValueError, match="layer must be 'coupling' or 'autoregressive'"):
        spline_flow(2, layer="maf")
    with pytest.raises(ValueError, match="permutation must be"):
        spline_flow(2, permutation=None)
    with pytest.raises(ValueError, match="bound must be a finite positive"):
        spline_flow(2, bound=0)
    flow = spline_flow(2)
    with pytest.raises(TypeError, match="float64 but the flow has torch.float32"):
        flow.log_prob(torch.zeros(3, 2, dtype=torch.float64))
    assert isinstance(flow, Flow)


def test_spline_flow_tails_layer_sits_next_to_the_standardisation():
    from nfcourse.flows.elementwise import SinhArcsinh

    flow = spline_flow(2)
    assert isinstance(flow.transform[-2], SinhArcsinh)
    assert not any(isinstance(t, SinhArcsinh) for t in spline_flow(2, tails=False).transform)


def test_autoregressive_layer_is_triangular_in_its_order_and_one_pass_for_the_density():
    order = [2, 0, 1]
    layer = perturb(
        RationalQuadraticAutoregressive(3, hidden=(16,), order=order, bins=K, bound=B).double(),
        0.5,
    )
    x = torch.randn(3, dtype=torch.float64, generator=gen(9))
    jac = torch.autograd.functional.jacobian(lambda v: layer.inverse(v.unsqueeze(0))[0][0], x)
    rank = torch.tensor(order)
    # z_i depends on x_j only when j comes no later than i in the ordering
    later = rank.unsqueeze(0) > rank.unsqueeze(1)
    assert float(jac[later].abs().max()) == 0
    assert float(jac[~later].abs().min()) > 0
    calls = []
    handle = layer.conditioner.net.register_forward_hook(lambda *a: calls.append(1))
    layer.inverse(x.unsqueeze(0))
    assert len(calls) == 1
    layer(x.unsqueeze(0))
    assert len(calls) == 1 + 3
    handle.remove()


def test_spline_widget_draws_the_spline_through_its_knots_and_its_inverse():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nfcourse.widgets.spline import _draw_spline, spline_from_knots, spline_widget

    x, y, slope, knot_x, knot_y = spline_from_knots((-1.0, 2.5), (0.2, 5.0))
    # the curve passes through the knots with the chosen slopes, and is 1 outside
    at = [int((x - k).abs().argmin()) for k in knot_x]
    torch.testing.assert_close(y[at], knot_y, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        slope[at], torch.tensor([1.0, 0.2, 5.0, 1.0], dtype=torch.float64), atol=1e-9, rtol=0
    )
    assert bool((y.diff() > 0).all())
    fig = plt.figure()
    _draw_spline(fig, h2=2.5, d1=0.2, d2=5.0)
    spline_line, inverse_line = fig.axes[0].lines[1:3]
    # the inverse is the spline's mirror image in the diagonal
    assert list(inverse_line.get_xdata()) == list(spline_line.get_ydata())
    plt.close("all")
    box = spline_widget()
    assert len(box.children[0].children) == 3


def test_conditional_spline_flow_round_trips_and_depends_on_its_context():
    flow = perturb(
        spline_flow(
            3, n_layers=2, hidden=(16,), bins=K, layer="autoregressive", context_dim=2, seed=0
        ).double(),
        0.3,
    )
    assert flow.context_dim == 2
    x = torch.randn(20, 3, dtype=torch.float64, generator=gen(11))
    c1 = torch.randn(20, 2, dtype=torch.float64, generator=gen(12))
    c2 = torch.randn(20, 2, dtype=torch.float64, generator=gen(13))
    z, log_det = flow.transform.inverse(x, c1)
    x_back, log_det_back = flow.transform(z, c1)
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(log_det_back, -log_det, atol=1e-10, rtol=0)
    assert float((flow.log_prob(x, c1) - flow.log_prob(x, c2)).abs().min()) > 0
    one_dim = spline_flow(1, n_layers=2, layer="autoregressive", context_dim=2)
    assert all(
        isinstance(t, RationalQuadraticAutoregressive) for t in one_dim.transform if t.context_dim
    )
    with pytest.raises(ValueError, match="context_dim=2 needs layer='autoregressive'"):
        spline_flow(3, context_dim=2)
