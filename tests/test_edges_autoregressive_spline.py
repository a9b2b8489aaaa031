"""Autoregressive and spline layers at their edges (issue 25): the log-det against the
float64 autograd Jacobian and both round trips, at ordinary parameters and with every
parameter multiplied by 10 and 100, at the spline knots, at the box edges ``+-B`` and far
in the tails, for several MADE orders, with and without a context.

A result is exact: the log-det within ``1e-8 (1 + |log det|)`` of autograd's, and each
round trip within ``1e-8 cond(J) (1 + |z| + |x|)``, ``cond(J)`` the condition number of
the autograd Jacobian at that point (the accuracy any float64 inverse can promise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nfcourse.flows.autoregressive import IAF, MAF
from nfcourse.flows.masks import half_mask
from nfcourse.flows.spline import (
    RationalQuadraticAutoregressive,
    RationalQuadraticCoupling,
    RationalQuadraticSpline,
    spline_parameters,
)

DIM, CTX, BOUND = 3, 2, 3.0
SCALES = (1.0, 10.0, 100.0)
ORDERS = {
    "identity": [0, 1, 2],
    "reversed": [2, 1, 0],
    "random": [1, 2, 0],  # neither of the two above
}


def _scaled(layer: torch.nn.Module, scale: float, seed: int = 0) -> torch.nn.Module:
    """Random parameters (the layers start as the identity), then all multiplied."""
    g = torch.Generator().manual_seed(seed)
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype)).mul_(scale)
    return layer


def _points(extra: list[float] | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    rows = [2 * torch.randn(4, DIM, generator=g, dtype=torch.float64)]
    values = [BOUND, -BOUND, 1e3, -1e3, 1e6, -1e6, 0.0] + (extra or [])
    for v in values:
        row = 0.5 * torch.randn(1, DIM, generator=g, dtype=torch.float64)
        row[0, int(abs(v)) % DIM] = v
        rows.append(row)
        rows.append(torch.full((1, DIM), float(v), dtype=torch.float64))
    return torch.cat(rows)


def _context(rows: int) -> torch.Tensor:
    return torch.randn(rows, CTX, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def _assert_exact(layer, z: torch.Tensor, context: torch.Tensor | None = None) -> None:
    """Log-dets against autograd and both round trips, row by row, in float64."""
    kwargs = {} if context is None else {"context": context}
    with torch.no_grad():
        x, log_det = layer.forward(z, **kwargs)
        z_back, log_det_inv = layer.inverse(x, **kwargs)
        z_inv, _ = layer.inverse(z, **kwargs)
        z_again, _ = layer.forward(z_inv, **kwargs)
    assert torch.isfinite(x).all() and torch.isfinite(log_det).all()
    for b in range(z.shape[0]):
        c = None if context is None else context[b : b + 1]

        def f(row, c=c):
            return layer._map(row.unsqueeze(0), c)[0][0]

        jac = torch.autograd.functional.jacobian(f, z[b])
        sign, ref = torch.linalg.slogdet(jac)
        assert sign != 0, f"singular Jacobian at row {b}"
        cond = float(torch.linalg.cond(jac))
        where = f"row {b}, z={z[b].tolist()}"
        assert abs(float(log_det[b]) - float(ref)) <= 1e-8 * (1 + abs(float(ref))), where
        assert abs(float(log_det[b] + log_det_inv[b])) <= 1e-8 * (1 + abs(float(ref))), where
        size = 1 + float(z[b].abs().max()) + float(x[b].abs().max())
        assert float((z_back[b] - z[b]).abs().max()) <= 1e-8 * cond * size, where
        # the other trip starts at z_inv = f^{-1}(z): the conditioning there is the one
        cond_inv = float(torch.linalg.cond(torch.autograd.functional.jacobian(f, z_inv[b])))
        size_inv = 1 + float(z[b].abs().max()) + float(z_inv[b].abs().max())
        assert float((z_again[b] - z[b]).abs().max()) <= 1e-8 * cond_inv * size_inv, where


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("kind", [MAF, IAF])
@pytest.mark.parametrize("context_dim", [0, CTX])
def test_affine_autoregressive_is_exact_at_any_parameter_scale_order_and_tail(
    kind, order, scale, context_dim
):
    layer = _scaled(
        kind(DIM, hidden=(16, 16), order=ORDERS[order], seed=0, context_dim=context_dim),
        scale,
    )
    z = _points()
    _assert_exact(layer, z, _context(len(z)) if context_dim else None)


def _knots(layer) -> list[float]:
    """A few interior knot positions of the layer's first spline (inside the box)."""
    if isinstance(layer, RationalQuadraticSpline):
        knot_x, knot_y, _ = spline_parameters(
            layer.unnormalized_widths,
            layer.unnormalized_heights,
            layer.unnormalized_derivatives,
            layer.bound,
        )
        return knot_x[0, 1:-1:2].tolist() + knot_y[0, 1:-1:3].tolist()
    # the conditioned splines: the knots of the spline at the zero input
    return [-BOUND / 2, BOUND / 4]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("context_dim", [0, CTX])
def test_spline_autoregressive_is_exact_at_any_parameter_scale_order_and_tail(
    order, scale, context_dim, request
):
    if scale == 100.0 and order == "reversed":
        # The documented bound (nfcourse.flows.spline): the knot derivatives have no
        # maximum, and with every MADE weight x100 they reach 1e11, so the spline is a
        # float64 step function and its D-pass inverse loses digits beyond what the
        # Jacobian's conditioning at the point explains. Bounding the derivatives would
        # change chapter 8's formula and its exercise; this test shows when it is done.
        request.applymarker(
            pytest.mark.xfail(strict=True, reason="unbounded spline derivatives at x100")
        )
    layer = _scaled(
        RationalQuadraticAutoregressive(
            DIM,
            hidden=(16, 16),
            order=ORDERS[order],
            bins=5,
            bound=BOUND,
            seed=0,
            context_dim=context_dim,
        ),
        scale,
    )
    z = _points(_knots(layer))
    _assert_exact(layer, z, _context(len(z)) if context_dim else None)


@pytest.mark.parametrize("scale", SCALES)
def test_spline_coupling_is_exact_at_any_parameter_scale_and_tail(scale):
    layer = _scaled(
        RationalQuadraticCoupling(half_mask(DIM), hidden=(16, 16), bins=5, bound=BOUND), scale
    )
    _assert_exact(layer, _points(_knots(layer)))


@pytest.mark.parametrize("scale", SCALES)
def test_elementwise_spline_is_exact_at_its_knots_edges_and_tails(scale):
    layer = _scaled(RationalQuadraticSpline(DIM, bins=6, bound=BOUND), scale)
    z = _points(_knots(layer))
    _assert_exact(layer, z)
    # exactly at each knot of every coordinate's spline, the map hits the knot's height
    knot_x, knot_y, _ = spline_parameters(
        layer.unnormalized_widths,
        layer.unnormalized_heights,
        layer.unnormalized_derivatives,
        layer.bound,
    )
    with torch.no_grad():
        y, _ = layer.forward(knot_x.T.contiguous())
        x, _ = layer.inverse(knot_y.T.contiguous())
    assert torch.allclose(y, knot_y.T, atol=1e-12, rtol=0)
    assert torch.allclose(x, knot_x.T, atol=1e-12, rtol=0)


def test_spline_is_the_identity_in_the_tails_whatever_its_parameters():
    layer = _scaled(RationalQuadraticSpline(DIM, bins=6, bound=BOUND), 100.0)
    z = torch.tensor([[1e6, -1e6, 3.0 + 1e-9], [-1e3, 1e3, -3.0 - 1e-9]], dtype=torch.float64)
    with torch.no_grad():
        x, log_det = layer.forward(z)
    assert torch.equal(x, z) and torch.equal(log_det, torch.zeros(2, dtype=torch.float64))


# --- the probes of issue 25: bad options are refused with a clear message ------------------


def test_made_refuses_a_fractional_hidden_width_and_accepts_numpy_integers():
    from nfcourse.flows.made import MADE

    with pytest.raises(TypeError, match=r"hidden\[0\] must be a positive integer.*8\.7"):
        MADE(3, (8.7,), 2)
    with pytest.raises(ValueError, match=r"hidden\[1\] must be a positive integer"):
        MADE(3, (8, -2), 2)
    made = MADE(3, (np.int64(8), np.int32(4)), 2, context_dim=np.int64(2))
    assert made.hidden == (8, 4) and made.context_dim == 2
    assert all(type(h) is int for h in made.hidden)


def test_made_refuses_orders_that_are_not_permutations():
    from nfcourse.flows.made import MADE

    for order in ([0, 0, 1], [0, 1], [1, 2, 3]):
        with pytest.raises(ValueError, match="order must hold each of 0, ..., 2 exactly once"):
            MADE(3, (8,), 2, order=order)
    with pytest.raises(ValueError, match="order must hold each of 0, ..., 2 exactly once"):
        MAF(3, order=[2, 2, 0])


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_scale_bound_must_be_finite_and_positive(bad):
    with pytest.raises(ValueError, match="scale_bound must be a finite positive number"):
        MAF(2, scale_bound=bad)
    with pytest.raises(ValueError, match="scale_bound must be a finite positive number"):
        IAF(2, scale_bound=bad)


def test_scale_bound_accepts_numpy_floats_and_refuses_strings():
    assert MAF(2, scale_bound=np.float32(2.0)).scale_bound == 2.0
    with pytest.raises(TypeError, match="scale_bound must be a finite positive number"):
        MAF(2, scale_bound="3")


def test_a_spline_needs_two_bins_because_one_bin_is_the_identity():
    with pytest.raises(ValueError, match="bins must be at least 2.*identity"):
        RationalQuadraticSpline(2, bins=1)
    with pytest.raises(ValueError, match="bins must be at least 2"):
        RationalQuadraticCoupling(half_mask(2), bins=1)


def test_spline_minimums_must_be_positive_so_no_slope_or_bin_collapses():
    with pytest.raises(ValueError, match=r"min_derivative must be a number in \(0, 1\)"):
        RationalQuadraticSpline(2, min_derivative=0)
    with pytest.raises(ValueError, match=r"min_bin_width must be a number in \(0, 1/bins\)"):
        RationalQuadraticSpline(2, min_bin_width=0.0)
    with pytest.raises(ValueError, match=r"min_bin_height must be a number in \(0, 1/bins\)"):
        RationalQuadraticSpline(2, bins=4, min_bin_height=0.25)


def test_spline_options_accept_numpy_scalars():
    layer = RationalQuadraticSpline(2, bins=np.int64(4), bound=np.float32(3.0))
    assert layer.bins == 4 and type(layer.bins) is int and layer.bound == 3.0
    assert layer.unnormalized_derivatives.shape == (2, 3)


def test_spline_flow_overflow_comes_from_actnorm_not_from_the_splines():
    """Documented bound: with every parameter x100 the splines stay finite; only
    ActNorm's exp(log_scale) can overflow, and only in the forward map (sampling)."""
    from nfcourse.flows.spline import spline_flow

    flow = spline_flow(2, hidden=(16,)).double()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    flow.log_prob(3 * x + 1)  # initialises ActNorm from the data
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(100)
        assert torch.isfinite(flow.log_prob(x)).all()
        h = torch.randn(8, 2, dtype=torch.float64)
        for layer in list(flow.transform.transforms)[:-1]:  # all but ActNorm
            h, log_det = layer._map(h, None)
            assert torch.isfinite(h).all() and torch.isfinite(log_det).all()
