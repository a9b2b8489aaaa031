"""Tests of the autoregressive flows of chapter 7 (``nfcourse.flows.autoregressive``): MAF,
IAF and the Transformer flow, in float64 with non-trivial random parameters."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nfcourse as nf
from nfcourse import testing
from nfcourse.flows.autoregressive import (
    IAF,
    MAF,
    Autoregressive,
    CausalTransformer,
    iaf_flow,
    layer_orders,
    maf_flow,
    transformer_flow,
)
from nfcourse.flows.made import MADE
from nfcourse.testing import perturb


def points(n=6, dim=5, seed=1, scale=1.0):
    return scale * torch.randn(
        n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


ORDER = [3, 0, 4, 1, 2]
LAYERS = {
    "maf": lambda: MAF(5, hidden=(16, 16), order=ORDER, seed=0),
    "iaf": lambda: IAF(5, hidden=(16, 16), order=ORDER, seed=0),
    "maf-transformer": lambda: MAF(
        5, conditioner=CausalTransformer(5, 2, width=8, n_heads=2, n_blocks=2, order=ORDER, seed=0)
    ),
    "iaf-transformer": lambda: IAF(
        5, conditioner=CausalTransformer(5, 2, width=8, n_heads=2, n_blocks=1, order=ORDER, seed=0)
    ),
}


def make_layer(kind, scale=0.5):
    return perturb(LAYERS[kind]().double(), scale=scale)


@pytest.mark.parametrize("kind", LAYERS)
def test_log_det_matches_autograd_jacobian_both_directions(kind):
    layer = make_layer(kind)
    z = points()
    testing.check_log_det(layer, z, atol=1e-8)
    testing.check_log_det(layer, layer(z)[0].detach(), atol=1e-8, direction="inverse")


@pytest.mark.parametrize("kind", LAYERS)
def test_round_trips_both_ways(kind):
    layer = make_layer(kind)
    x = points(n=30, scale=2.0)
    testing.check_round_trip(layer, x, atol=1e-8)  # z -> x -> z
    testing.check_round_trip(layer.inv(), x, atol=1e-8)  # x -> z -> x


@pytest.mark.parametrize("kind", LAYERS)
def test_round_trips_at_extreme_parameters_and_far_tails(kind):
    # The log-scale outputs blown up by 1e3 saturate at the bound (+-c); points far in the
    # tails drive the conditioner far from its training range. Both stay invertible.
    layer = make_layer(kind)
    last = (
        layer.conditioner.net[-1]
        if isinstance(layer.conditioner, MADE)
        else layer.conditioner.head
    )
    with torch.no_grad():
        last.weight[0::2].mul_(1e3)
        last.bias[0::2].mul_(1e3)
    x = points(n=40, scale=50.0)
    for direction in ("forward", "inverse"):
        out, log_abs_det = getattr(layer, direction)(x)
        assert torch.isfinite(out).all() and torch.isfinite(log_abs_det).all()
        assert log_abs_det.abs().max() <= 5 * layer.scale_bound + 1e-9
        ratio = log_abs_det / layer.scale_bound  # every s_i = +-c: a sum of five +-1
        assert (ratio - ratio.round()).abs().max() < 1e-6
    for transform in (layer, layer.inv()):  # z -> x -> z and x -> z -> x
        out = transform(x)[0]
        point_err, log_det_err = testing.round_trip_error(transform, x)
        # relative to the size of the intermediate point, which reaches ~1e3 here
        assert (point_err <= 1e-12 * (1 + out.abs().amax(dim=1))).all()
        assert (log_det_err <= 1e-9).all()


@pytest.mark.parametrize("kind", LAYERS)
def test_batch_shapes(kind):
    testing.check_batch_shapes(make_layer(kind), 5, batch_sizes=(1, 7, 64))


@pytest.mark.parametrize("kind", [MAF, IAF])
@pytest.mark.parametrize("dim", [1, 2, 4])
def test_the_d_passes_match_d_full_batch_passes(kind, dim):
    # The first of the D passes runs on one row of zeros and broadcasts; the result must
    # be that of D passes over the whole batch, log-det shape (B,) included (D = 1 too).
    layer = kind(dim, hidden=(8,), seed=0).double()
    perturb(layer, seed=2)
    y = points(n=7, dim=dim, seed=3)
    inverse = kind is IAF
    u, log_det = layer._d_passes(y, None, inverse=inverse)
    slow_u = torch.zeros_like(y)
    for _ in range(dim):
        slow_u, slow_log_det = layer._one_pass(slow_u, y, None, inverse)
    torch.testing.assert_close(u, slow_u)
    assert log_det.shape == (7,)
    torch.testing.assert_close(log_det, slow_log_det)


def _d_pass_users():
    """The four places that solve an autoregressive map in D passes, each with the
    direction that takes them: MAF sampling, IAF density, the spline layer's sampling and
    the inverse of the VAE's IAF posterior (chapter 6)."""
    from nfcourse.flows.spline import RationalQuadraticAutoregressive
    from nfcourse.vae import IAFPosterior

    torch.manual_seed(0)
    spline = RationalQuadraticAutoregressive(
        4, hidden=(16,), order=[1, 3, 0, 2], bins=5, bound=4.0, seed=0
    )
    posterior = IAFPosterior(4, 2, context_dim=3, hidden=(16,))
    return {
        "MAF.forward": (MAF(4, hidden=(16,), seed=0), "forward", 0),
        "IAF.inverse": (IAF(4, hidden=(16,), seed=0), "inverse", 0),
        "spline.forward": (spline, "forward", 0),
        "VAE posterior.inverse": (posterior, "inverse", 3),
    }


@pytest.mark.parametrize("name", list(_d_pass_users()))
def test_one_d_pass_solver_serves_maf_iaf_the_spline_layer_and_the_vae_posterior(
    name, monkeypatch
):
    transform, slow, context_dim = _d_pass_users()[name]
    transform = perturb(transform.double(), scale=0.4, seed=3)
    layers = list(transform) if isinstance(transform, nf.Compose) else [transform]
    assert all(isinstance(layer, Autoregressive) for layer in layers)
    assert all(type(layer)._d_passes is Autoregressive._d_passes for layer in layers)
    calls = []
    solver = Autoregressive._d_passes

    def counted(self, y, context, inverse):
        calls.append(inverse)
        return solver(self, y, context, inverse)

    monkeypatch.setattr(Autoregressive, "_d_passes", counted)
    y = points(n=9, dim=4, seed=5)
    c = points(n=9, dim=context_dim, seed=6) if context_dim else None
    fast = "inverse" if slow == "forward" else "forward"
    out, log_det = getattr(transform, slow)(y, c)
    assert calls == [slow == "inverse"] * len(layers)
    # the D passes give the exact inverse of the one-pass direction
    back, log_det_back = getattr(transform, fast)(out, c)
    torch.testing.assert_close(back, y, atol=1e-12, rtol=0)
    torch.testing.assert_close(log_det_back, -log_det, atol=1e-12, rtol=0)
    assert len(calls) == len(layers)


def test_conditional_maf_and_iaf_take_the_context_of_their_made():
    for kind in (MAF, IAF):
        layer = perturb(kind(3, hidden=(16,), seed=0, context_dim=2).double())
        assert layer.context_dim == 2 and layer.conditioner.context_dim == 2
        x, c = points(n=5, dim=3), points(n=5, dim=2, seed=4)
        z, log_det = layer.inverse(x, c)
        x_back, log_det_back = layer(z, c)
        torch.testing.assert_close(x_back, x, atol=1e-12, rtol=0)
        torch.testing.assert_close(log_det_back, -log_det, atol=1e-12, rtol=0)
    made = MADE(3, (8,), 2, context_dim=2)
    assert MAF(3, conditioner=made).context_dim == 2
    with pytest.raises(
        ValueError, match="context_dim=3 but the conditioner takes contexts of size 2"
    ):
        MAF(3, conditioner=made, context_dim=3)
    assert CausalTransformer(3).context_dim == 0


@pytest.mark.parametrize("kind", LAYERS)
def test_gradients_reach_every_parameter(kind):
    layer = make_layer(kind)
    for direction in ("forward", "inverse"):
        out, log_det = getattr(layer, direction)(points())
        testing.check_gradients_reach(layer, (out**2).sum() + log_det.sum())


@pytest.mark.parametrize("kind", LAYERS)
def test_fresh_layer_is_the_identity(kind):
    layer = LAYERS[kind]().double()
    z = points()
    for direction in ("forward", "inverse"):
        out, log_det = getattr(layer, direction)(z)
        assert torch.equal(out, z)
        assert torch.equal(log_det, torch.zeros(len(z), dtype=z.dtype))


@pytest.mark.parametrize("kind", LAYERS)
def test_jacobian_is_triangular_in_the_ordering_with_the_scales_on_the_diagonal(kind):
    layer = make_layer(kind)
    z = points(n=1)[0]
    jac = torch.autograd.functional.jacobian(lambda v: layer(v.unsqueeze(0))[0][0], z)
    order = torch.tensor(ORDER)
    later = order.unsqueeze(0) > order.unsqueeze(1)  # later[i, j]: j comes after i
    assert torch.equal(jac[later], torch.zeros_like(jac[later]))
    assert jac[order.unsqueeze(0) < order.unsqueeze(1)].abs().max() > 0
    torch.testing.assert_close(
        torch.diagonal(jac).log().sum(), layer(z.unsqueeze(0))[1][0], atol=1e-10, rtol=0
    )


def test_maf_normalizes_in_one_pass_and_iaf_samples_in_one_pass():
    # Count conditioner calls: the cheap direction is one pass, the other D passes.
    for kind, cheap in (("maf", "inverse"), ("iaf", "forward")):
        layer = make_layer(kind)
        calls = []
        net = layer.conditioner._net
        layer.conditioner._net = lambda u, net=net, calls=calls: (calls.append(1), net(u))[1]
        for direction in ("forward", "inverse"):
            calls.clear()
            getattr(layer, direction)(points())
            assert len(calls) == (1 if direction == cheap else 5), (kind, direction)


def test_maf_inverse_matches_its_formula():
    layer = make_layer("maf")
    x = points()
    h = layer.conditioner(x)
    s = layer.scale_bound * torch.tanh(h[..., 0] / layer.scale_bound)
    z, log_det = layer.inverse(x)
    torch.testing.assert_close(z, (x - h[..., 1]) * torch.exp(-s))
    torch.testing.assert_close(log_det, -s.sum(dim=1))


def test_iaf_forward_matches_its_formula():
    layer = make_layer("iaf")
    z = points()
    h = layer.conditioner(z)
    s = layer.scale_bound * torch.tanh(h[..., 0] / layer.scale_bound)
    x, log_det = layer(z)
    torch.testing.assert_close(x, z * torch.exp(s) + h[..., 1])
    torch.testing.assert_close(log_det, s.sum(dim=1))


@settings(max_examples=15, deadline=None)
@given(
    dim=st.integers(1, 6),
    width=st.sampled_from([4, 8]),
    heads=st.sampled_from([1, 2, 4]),
    blocks=st.integers(1, 2),
    seed=st.integers(0, 10_000),
)
def test_causal_transformer_output_depends_only_on_earlier_coordinates(
    dim, width, heads, blocks, seed
):
    order = torch.randperm(dim, generator=torch.Generator().manual_seed(seed))
    net = perturb(
        CausalTransformer(dim, 2, width, heads, blocks, order=order, seed=seed).double(), seed=seed
    )
    x = torch.randn(dim, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0))[0], x)
    seen = jac.abs().amax(dim=1) > 0
    allowed = order.unsqueeze(0) < order.unsqueeze(1)
    assert not (seen & ~allowed).any()
    if dim > 1:  # attention does reach back: the last position sees every coordinate
        last = int(torch.argmax(order))
        assert seen[last].sum() == dim - 1


@settings(max_examples=10, deadline=None)
@given(
    dim=st.integers(1, 6),
    widths=st.lists(st.integers(2, 10), min_size=1, max_size=2),
    seed=st.integers(0, 10_000),
    inverse_autoregressive=st.booleans(),
)
def test_random_orders_and_widths_invert_with_exact_log_det(
    dim, widths, seed, inverse_autoregressive
):
    order = torch.randperm(dim, generator=torch.Generator().manual_seed(seed))
    kind = IAF if inverse_autoregressive else MAF
    layer = perturb(kind(dim, hidden=widths, order=order, seed=seed).double(), seed=seed)
    z = points(n=4, dim=dim, seed=seed)
    testing.check_log_det(layer, z, atol=1e-8)
    testing.check_round_trip(layer, z, atol=1e-8)
    testing.check_round_trip(layer.inv(), z, atol=1e-8)


@pytest.mark.parametrize("builder", [maf_flow, iaf_flow, transformer_flow])
def test_builders_return_flows_whose_density_integrates_like_a_density(builder):
    flow = builder(3, n_layers=3, seed=0).double()
    perturb(flow, scale=0.1)
    x = points(n=8, dim=3)
    log_p = flow.log_prob(x)
    z, log_det = flow.transform.inverse(x)
    torch.testing.assert_close(log_p, nf.StandardNormal(3).double().log_prob(z) + log_det)
    samples, log_q = flow.sample_and_log_prob(16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(log_q, flow.log_prob(samples), atol=1e-8, rtol=0)


def test_builder_orders_alternate_and_seed_repeats():
    flow = maf_flow(4, n_layers=3, hidden=(8,), seed=3)
    orders = [layer.order.tolist() for layer in flow.transform]
    assert orders == [[0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3]]
    again = maf_flow(4, n_layers=3, hidden=(8,), seed=3)
    for p, q in zip(flow.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)
    random_orders = layer_orders(5, 3, "random", seed=1)
    assert [o.tolist() for o in random_orders] == [
        o.tolist() for o in layer_orders(5, 3, "random", seed=1)
    ]
    assert all(sorted(o.tolist()) == list(range(5)) for o in random_orders)
    with_actnorm = maf_flow(4, n_layers=2, hidden=(8,), actnorm=True)
    assert [type(t).__name__ for t in with_actnorm.transform] == ["MAF", "ActNorm"] * 2


def test_clear_errors():
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        MAF(0)
    with pytest.raises(ValueError, match="needs 2 conditioner outputs"):
        MAF(3, conditioner=MADE(3, (8,), 3))
    with pytest.raises(TypeError, match="conditioner must be a MADE or a CausalTransformer"):
        IAF(3, conditioner=torch.nn.Linear(3, 6))
    with pytest.raises(ValueError, match="scale_bound must be a finite positive number"):
        MAF(3, scale_bound=0.0)
    with pytest.raises(ValueError, match="width must be a multiple of n_heads"):
        CausalTransformer(3, width=10, n_heads=4)
    with pytest.raises(ValueError, match="order must be 'reverse', 'random'"):
        maf_flow(3, order="forward")
    with pytest.raises(ValueError, match="got 1 orders for n_layers=2"):
        maf_flow(3, n_layers=2, order=[[0, 1, 2]])
    with pytest.raises(ValueError, match="n_layers must be a positive integer"):
        iaf_flow(3, n_layers=0)
    flow = maf_flow(3, n_layers=2, hidden=(8,))
    with pytest.raises(ValueError, match=r"expected shape \(B, 3\)"):
        flow.log_prob(torch.randn(4, 2))
    with pytest.raises(TypeError, match="convert the input"):
        flow.log_prob(torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        flow.log_prob(torch.tensor([[0.0, float("nan"), 1.0]]))
