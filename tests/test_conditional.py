"""Tests of the conditional flows of chapter 12: ``maf_flow(..., context_dim=C)`` and
conditional ``MAF`` layers inside ``Compose`` and ``Flow``, in float64 with non-trivial
random parameters."""

from __future__ import annotations

import pytest
import torch

import nfcourse
from nfcourse import testing
from nfcourse.core import Compose, Flow
from nfcourse.flows.actnorm import ActNorm
from nfcourse.flows.autoregressive import MAF, maf_flow
from nfcourse.testing import perturb


def randn(*shape, seed=1, scale=1.0):
    return scale * torch.randn(
        *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


DIM, CTX = 4, 3
MODELS = {
    "layer": lambda: MAF(DIM, hidden=(16, 16), order=[2, 0, 3, 1], seed=0, context_dim=CTX),
    "compose": lambda: Compose(
        MAF(DIM, hidden=(16,), seed=0, context_dim=CTX),
        ActNorm(DIM),
        MAF(DIM, hidden=(16,), order=[3, 2, 1, 0], seed=1, context_dim=CTX),
    ),
    "flow": lambda: maf_flow(DIM, n_layers=3, hidden=(16,), seed=0, context_dim=CTX),
    "flow-actnorm": lambda: maf_flow(
        DIM, n_layers=2, hidden=(16,), actnorm=True, seed=0, context_dim=CTX
    ),
}
TRANSFORMS = ("layer", "compose")


def make(kind, scale=0.5):
    return perturb(MODELS[kind]().double(), scale=scale)


def transform_of(model):
    return model.transform if isinstance(model, Flow) else model


def autograd_log_det(fn, x, c):
    out = []
    for b in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(
            lambda v, b=b: fn(v.unsqueeze(0), c[b : b + 1])[0][0], x[b]
        )
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_log_det_matches_float64_autograd_jacobian(kind, direction):
    transform = transform_of(make(kind))
    x, c = randn(6, DIM), randn(6, CTX, seed=2)
    fn = transform.forward if direction == "forward" else transform.inverse
    _, reported = fn(x, c)
    torch.testing.assert_close(reported, autograd_log_det(fn, x, c), atol=1e-8, rtol=0)


class _AtContext(nfcourse.Transform):
    """``f(.; c)`` for one fixed context row ``c``: an unconditional transform."""

    def __init__(self, transform, context):
        super().__init__(transform.dim)
        self.transform, self.context = transform, context

    def _forward(self, z):
        return self.transform._map(z, self.context.expand(z.shape[0], -1))

    def _inverse(self, x):
        return self.transform._map(x, self.context.expand(x.shape[0], -1), inverse=True)


def test_conditional_maf_at_a_fixed_context_passes_the_jacobian_check():
    # For a fixed c the layer is an ordinary transform of z: the package's float64
    # Jacobian check applies to it as to any other layer.
    layer = make("layer")
    c = randn(1, CTX, seed=7)
    at_c = _AtContext(layer, c)
    z = randn(5, DIM, seed=8)
    testing.check_log_det(at_c, z, atol=1e-8)
    testing.check_log_det(
        at_c, layer(z, c.expand(5, -1))[0].detach(), atol=1e-8, direction="inverse"
    )


@pytest.mark.parametrize("kind", ["flow", "flow-actnorm"])
def test_log_prob_is_change_of_variables_and_normalised(kind):
    # log q(x | c) = log N(z) + log|det dz/dx|, and for a fixed c it integrates to 1 (a
    # 1D conditional flow on a grid).
    model = make(kind)
    x, c = randn(5, DIM), randn(5, CTX, seed=2)
    z, lad = model.transform.inverse(x, c)
    base = -0.5 * (z**2).sum(1) - 0.5 * DIM * torch.log(torch.tensor(2 * torch.pi))
    torch.testing.assert_close(model.log_prob(x, c), base.double() + lad)
    flow1 = perturb(maf_flow(1, n_layers=2, hidden=(8,), seed=3, context_dim=2).double())
    grid = torch.linspace(-30, 30, 60001, dtype=torch.float64).unsqueeze(1)
    for row in randn(3, 2, seed=4):
        density = flow1.log_prob(grid, row.expand(len(grid), 2)).exp().detach()
        mass = torch.trapezoid(density, grid[:, 0])
        assert abs(float(mass) - 1) < 1e-6


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_round_trips_both_directions(kind, scale):
    model = transform_of(make(kind))
    x, c = randn(40, DIM, scale=scale), randn(40, CTX, seed=2, scale=scale)
    z, lad = model.inverse(x, c)
    x_back, lad_back = model.forward(z, c)
    torch.testing.assert_close(x_back, x, atol=1e-7 * scale, rtol=1e-7)
    torch.testing.assert_close(lad_back, -lad, atol=1e-7, rtol=1e-7)
    x2, _ = model.forward(x, c)
    torch.testing.assert_close(model.inverse(x2, c)[0], x, atol=1e-7 * scale, rtol=1e-7)


def test_round_trip_at_saturated_scales():
    layer = make("layer")
    last = layer.conditioner.net[-1]
    with torch.no_grad():
        last.weight[0::2].mul_(1e3)
        last.bias[0::2].mul_(1e3)
    x, c = randn(20, DIM, scale=10.0), randn(20, CTX, seed=2)
    z, lad = layer.inverse(x, c)
    assert bool(torch.isfinite(z).all()) and bool((lad.abs() <= DIM * 3.0 + 1e-9).all())
    torch.testing.assert_close(layer.forward(z, c)[0], x, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", MODELS)
def test_the_context_changes_the_output(kind):
    model = make(kind)
    transform = transform_of(model)
    x = randn(8, DIM)
    c1, c2 = randn(8, CTX, seed=2), randn(8, CTX, seed=3)
    z1, _ = transform.inverse(x, c1)
    z2, _ = transform.inverse(x, c2)
    assert float((z1 - z2).abs().min()) > 1e-6  # every coordinate, the first included
    if kind not in TRANSFORMS:
        assert float((model.log_prob(x, c1) - model.log_prob(x, c2)).abs().min()) > 1e-6


def test_first_coordinate_depends_on_context_but_not_on_itself_or_later():
    layer = make("layer")  # order [2, 0, 3, 1]: x_1 comes first
    x, c = randn(1, DIM).requires_grad_(), randn(1, CTX, seed=2).requires_grad_()
    z, _ = layer.inverse(x, c)
    gx, gc = torch.autograd.grad(z[0, 1], (x, c))
    assert float(gc.abs().sum()) > 0
    assert gx[0, 0] == 0 and gx[0, 2] == 0 and gx[0, 3] == 0


@pytest.mark.parametrize("kind", MODELS)
def test_gradients_reach_every_parameter(kind):
    model = make(kind)
    loss = (
        model.forward_kl(randn(16, DIM), randn(16, CTX, seed=2))
        if kind not in TRANSFORMS
        else model.inverse(randn(16, DIM), randn(16, CTX, seed=2))[0].pow(2).sum()
    )
    testing.check_gradients_reach(model, loss)


def test_sample_shapes_order_and_log_prob():
    flow = make("flow")
    g = torch.Generator().manual_seed(0)
    contexts = randn(3, CTX, seed=5)
    x, log_q = flow.sample_and_log_prob(7, contexts, generator=g)
    assert x.shape == (21, DIM) and log_q.shape == (21,)
    torch.testing.assert_close(log_q, flow.log_prob(x, contexts.repeat_interleave(7, 0)))
    one = flow.sample(5, contexts[0], generator=torch.Generator().manual_seed(1))
    assert one.shape == (5, DIM)
    # n samples per context row, the n of row m together: each block follows its row
    again = flow.sample(7, contexts, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, x)
    for b in (1, 9):
        out, lad = flow.transform(randn(b, DIM), randn(b, CTX))
        assert out.shape == (b, DIM) and lad.shape == (b,)


def test_fit_maximum_likelihood_learns_a_context_dependent_mean():
    # x | c ~ N(3 c, 0.5^2) in 1D: after training the flow's mean follows the context.
    g = torch.Generator().manual_seed(0)
    c = torch.randn(2000, 1, generator=g)
    x = 3 * c + 0.5 * torch.randn(2000, 1, generator=g)
    flow = maf_flow(1, n_layers=2, hidden=(32,), seed=0, context_dim=1)
    losses = nfcourse.fit_maximum_likelihood(flow, x, 400, lr=1e-2, context=c, progress=False)
    assert losses[-1] < losses[0]
    with torch.no_grad():
        s = flow.sample(
            4000, torch.tensor([[1.0], [-1.0]]), generator=torch.Generator().manual_seed(2)
        )
    assert abs(float(s[:4000].mean()) - 3) < 0.2 and abs(float(s[4000:].mean()) + 3) < 0.2
    assert abs(float(s[:4000].std()) - 0.5) < 0.1


def test_missing_extra_or_ill_shaped_context_errors_name_the_argument():
    flow = maf_flow(DIM, n_layers=2, hidden=(8,), seed=0, context_dim=CTX)
    x = torch.randn(5, DIM)
    with pytest.raises(ValueError, match=r"needs a context.*\(B, 3\)"):
        flow.log_prob(x)
    with pytest.raises(ValueError, match=r"context has 2 features.*\(B, 3\)"):
        flow.log_prob(x, torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"context has 4 rows but the points have 5"):
        flow.log_prob(x, torch.randn(4, CTX))
    with pytest.raises(ValueError, match=r"context must have shape"):
        flow.log_prob(x, torch.randn(5, CTX, 1))
    with pytest.raises(TypeError, match=r"context is torch.float64"):
        flow.log_prob(x, torch.randn(5, CTX, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"context contains non-finite"):
        flow.log_prob(x, torch.full((5, CTX), float("nan")))
    with pytest.raises(ValueError, match=r"needs a context"):
        flow.sample(3)
    with pytest.raises(ValueError, match=r"needs a context"):
        MAF(DIM, seed=0, context_dim=CTX).inverse(x)
    with pytest.raises(ValueError, match=r"needs a context"):
        nfcourse.fit_maximum_likelihood(flow, x, 1, progress=False)
    # a context given to an unconditional flow or layer
    plain = maf_flow(DIM, n_layers=2, hidden=(8,), seed=0)
    with pytest.raises(ValueError, match=r"takes no context \(context_dim=0\)"):
        plain.log_prob(x, torch.randn(5, CTX))
    with pytest.raises(ValueError, match=r"takes no context"):
        MAF(DIM, seed=0)(x, torch.randn(5, CTX))
    with pytest.raises(ValueError, match=r"context_dim must be a non-negative integer"):
        MAF(DIM, context_dim=-1)
    with pytest.raises(ValueError, match=r"contexts of sizes \[2, 3\]"):
        Compose(MAF(DIM, context_dim=2), MAF(DIM, context_dim=3))
    with pytest.raises(TypeError, match=r"Compose takes nfcourse Transforms"):
        Compose(MAF(DIM, context_dim=CTX), torch.nn.Linear(DIM, DIM))
    mixed = Compose(ActNorm(DIM), MAF(DIM, context_dim=CTX))
    assert isinstance(mixed, Compose) and mixed.context_dim == CTX
