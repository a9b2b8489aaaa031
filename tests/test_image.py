"""Tests of the image flows of chapter 9 (``nfcourse.flows.image``, ``glow``,
``dequantization``, ``ActNorm2d``): every layer against the autograd Jacobian in float64 on
1 x 4 x 4 and 2 x 4 x 4 images, round trips in both directions, the checks on image shapes
and dtypes, the multi-scale log-det, ActNorm's initialisation guard, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from nfcourse import Compose, Flow, StandardNormal, testing
from nfcourse.flows.actnorm import ActNorm, ActNorm2d
from nfcourse.flows.coupling import coupling_flow
from nfcourse.flows.dequantization import (
    PRE_SIGMOID_BOUND,
    VariationalDequantizer,
    dequantization_nll,
    pixels_to_levels,
)
from nfcourse.flows.glow import flat_image_flow, glow
from nfcourse.flows.image import (
    ConvAffineCoupling,
    FlatToImage,
    InvertibleConv1x1,
    Logit,
    MultiScale,
    Squeeze,
    squeeze,
    unsqueeze,
)
from nfcourse.validation import check_images


def perturb(module, scale=0.3, seed=0):
    """``nfcourse.testing.perturb`` with a smaller default: image layers compound it."""
    return testing.perturb(module, scale, seed)


def flat(transform, direction):
    """The transform as a map of flat vectors ``(1, D) -> (1, D)`` for autograd."""
    src = transform.latent_shape if direction == "forward" else transform.event_shape
    fn = transform._forward if direction == "forward" else transform._inverse

    def apply(v):
        out, log_det = fn(v.reshape(len(v), *src))
        return out.reshape(len(v), -1), log_det

    return apply


def inputs(shape, n=3, seed=1, low=None):
    g = torch.Generator().manual_seed(seed)
    if low is not None:  # points inside the unit cube, edges included
        x = torch.rand(n, *shape, generator=g, dtype=torch.float64)
        x.view(n, -1)[0, :2] = torch.tensor([0.0, 1.0], dtype=torch.float64)
        return x
    return torch.randn(n, *shape, generator=g, dtype=torch.float64)


def check_layer(transform, data=None, atol=1e-9):
    """log-det against autograd both ways and round trips both ways."""
    transform = transform.double()
    if data is None:
        z = inputs(transform.latent_shape)
        x = transform._forward(z)[0].detach()
    else:  # base-side points that map to the given data (no saturated sigmoids)
        x = data
        z = transform._inverse(x)[0].detach() + 0.01 * inputs(transform.latent_shape)
    for direction, points in (("forward", z), ("inverse", x)):
        fn = flat(transform, direction)
        flat_points = points.reshape(len(points), -1)
        reported = fn(flat_points)[1].detach()
        expected = testing.autograd_log_abs_det(lambda v, fn=fn: fn(v)[0], flat_points)
        assert torch.allclose(reported, expected, atol=atol, rtol=1e-10), (
            direction,
            reported,
            expected,
        )
    x_out, ld_f = transform.forward(z)
    z_back, ld_i = transform.inverse(x_out)
    assert torch.allclose(z_back, z, atol=atol) and torch.allclose(
        ld_f + ld_i, 0 * ld_f, atol=atol
    )
    z2, ld_i2 = transform.inverse(x)
    x_back, ld_f2 = transform.forward(z2)
    assert torch.allclose(x_back, x, atol=atol) and torch.allclose(
        ld_f2 + ld_i2, 0 * ld_f2, atol=atol
    )
    return transform


SHAPES = [(1, 4, 4), (2, 4, 4)]


@pytest.mark.parametrize("shape", SHAPES)
def test_logit_jacobian_round_trip_and_edges(shape):
    layer = Logit(shape, alpha=0.05)
    check_layer(layer, data=inputs(shape, low=0.0))
    z, _ = layer.double().inverse(torch.zeros(1, *shape, dtype=torch.float64))
    assert torch.allclose(z, torch.full_like(z, math.log(0.05 / 0.95)))
    # far tails of the base side map inside the interval and keep a finite log-det
    x, log_det = layer.double().forward(torch.full((1, *shape), 40.0, dtype=torch.float64))
    assert bool(torch.isfinite(log_det).all()) and float(x.max()) <= 1 + 0.05 / 0.9


@pytest.mark.parametrize("shape", SHAPES)
def test_squeeze_layer(shape):
    check_layer(Squeeze(shape))


def test_squeeze_channel_order_and_inverse():
    x = torch.arange(2 * 4 * 4, dtype=torch.float64).view(1, 2, 4, 4)
    y = squeeze(x)
    assert y.shape == (1, 8, 2, 2)
    # channel 4c + 2a + b at (i, j) holds pixel (2i + a, 2j + b) of channel c
    for c in range(2):
        for a in range(2):
            for b in range(2):
                assert torch.equal(y[0, 4 * c + 2 * a + b], x[0, c, a::2, b::2])
    assert torch.equal(unsqueeze(y), x)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_pixel", [False, True])
def test_actnorm2d(shape, per_pixel):
    check_layer(perturb(ActNorm2d(shape, per_pixel=per_pixel, data_init=False)))


def test_actnorm2d_initialises_per_channel():
    layer = ActNorm2d((2, 4, 4)).double()
    x = inputs((2, 4, 4), n=50) * torch.tensor([3.0, 0.5]).view(1, 2, 1, 1) + 2.0
    z, _ = layer.inverse(x)
    per_channel = z.transpose(0, 1).reshape(2, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(2, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(per_channel.std(1), torch.ones(2, dtype=torch.float64), atol=1e-9)
    before = layer.shift.detach().clone()
    layer.inverse(x + 5.0)  # initialises once only
    assert torch.equal(layer.shift.detach(), before)


@pytest.mark.parametrize("shape", [(1, 4, 4), (2, 4, 4), (4, 2, 2)])
@pytest.mark.parametrize("lu", [True, False])
def test_invertible_conv(shape, lu):
    layer = perturb(InvertibleConv1x1(shape, lu=lu, seed=3))
    check_layer(layer)
    w = layer.matrix()
    expected = shape[1] * shape[2] * torch.linalg.slogdet(w)[1]
    assert torch.allclose(layer.forward(inputs(shape))[1], expected.expand(3))
    assert torch.allclose(layer.log_abs_det_matrix(), torch.linalg.slogdet(w)[1])


def test_invertible_conv_starts_as_rotation_and_lu_is_triangular():
    layer = InvertibleConv1x1((4, 2, 2), seed=0).double()
    w = layer.matrix()
    assert torch.allclose(w @ w.T, torch.eye(4, dtype=torch.float64), atol=1e-6)
    perturb(layer)
    lower = layer.lower * layer.lower_mask + torch.eye(4, dtype=torch.float64)
    assert torch.equal(torch.triu(lower, 1), torch.zeros(4, 4, dtype=torch.float64))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("parity", [0, 1])
def test_checkerboard_coupling(shape, parity):
    layer = check_layer(perturb(ConvAffineCoupling(shape, "checkerboard", parity, hidden=4)))
    z = inputs(shape)
    x, _ = layer.forward(z)
    keep = (torch.arange(4).view(4, 1) + torch.arange(4).view(1, 4)) % 2 != parity
    assert torch.equal(x[..., keep], z[..., keep])  # conditioning pixels pass unchanged
    assert not torch.allclose(x[..., ~keep], z[..., ~keep])


@pytest.mark.parametrize("parity", [0, 1])
def test_channel_coupling(parity):
    shape = (2, 4, 4)
    layer = check_layer(perturb(ConvAffineCoupling(shape, "channel", parity, hidden=4)))
    z = inputs(shape)
    x, _ = layer.forward(z)
    kept = 0 if parity == 0 else 1  # parity 0: the first half conditions
    assert torch.equal(x[:, kept], z[:, kept])
    assert not torch.allclose(x[:, 1 - kept], z[:, 1 - kept])


def test_coupling_starts_as_identity():
    layer = ConvAffineCoupling((2, 4, 4), "channel", hidden=4).double()
    z = inputs((2, 4, 4))
    x, log_det = layer.forward(z)
    assert torch.equal(x, z) and torch.equal(log_det, torch.zeros(3, dtype=torch.float64))


def small_glow(shape=(1, 4, 4), seed=0):
    return perturb(glow(shape, levels=2, steps=1, hidden=4, seed=seed), seed=seed).double()


@pytest.mark.parametrize("shape", SHAPES)
def test_glow_transform_jacobian_and_round_trips(shape):
    flow = small_glow(shape)
    check_layer(flow.transform, data=inputs(shape, low=0.0) * 0.98 + 0.01, atol=1e-8)


def test_multiscale_log_det_is_the_sum_of_its_parts():
    flow = small_glow((2, 4, 4))
    logit, multiscale = flow.transform[1], flow.transform[0]
    x = inputs((2, 4, 4), low=0.0) * 0.98 + 0.01
    h, total = logit.inverse(x)
    parts = [total]
    z_parts = []
    for k, block in enumerate(multiscale.blocks):
        out, log_det = block.inverse(h)
        parts.append(log_det)
        if k < len(multiscale.blocks) - 1:
            factored, h = out.chunk(2, dim=1)
            z_parts.append(factored.flatten(1))
        else:
            z_parts.append(out.flatten(1))
    z, log_det = flow.transform.inverse(x)
    assert torch.allclose(log_det, sum(parts), atol=1e-10)
    assert torch.allclose(z, torch.cat(z_parts, dim=1), atol=1e-12)
    # and each block's log-det is the sum of its layers'
    block = multiscale.blocks[0]
    h = logit.inverse(x)[0]
    layer_sum = torch.zeros(len(x), dtype=torch.float64)
    for layer in reversed(block.transforms):
        h, ld = layer.inverse(h)
        layer_sum = layer_sum + ld
    assert torch.allclose(layer_sum, block.inverse(logit.inverse(x)[0])[1], atol=1e-10)


def test_glow_on_mnist_shape_latent_sizes_and_sampling():
    flow = glow((1, 28, 28), levels=2, steps=1, hidden=4)
    assert flow.transform[0].sizes == [392, 392]
    g = torch.Generator().manual_seed(0)
    x = flow.sample(3, generator=g, temperature=0.7)
    assert x.shape == (3, 1, 28, 28)
    z = flow.encode(x.clamp(0, 1))
    assert z.shape == (3, 784)
    assert flow.log_prob(x.clamp(0, 1)).shape == (3,)


def test_image_flow_log_prob_matches_base_plus_log_det_and_decode():
    flow = small_glow((2, 4, 4))
    x = inputs((2, 4, 4), low=0.0) * 0.98 + 0.01
    z, log_det = flow.transform.inverse(x)
    expected = -0.5 * (z**2).sum(1) - 16 * math.log(2 * math.pi) + log_det
    assert torch.allclose(flow.log_prob(x), expected, atol=1e-10)
    assert torch.allclose(flow.decode(flow.encode(x)), x, atol=1e-9)


def test_flat_image_flow_matches_the_flat_flow():
    inner = perturb(coupling_flow("affine", 16, 2, hidden=(4,)), scale=0.1).double()
    flow = flat_image_flow(inner.transform, (1, 4, 4))
    x = inputs((1, 4, 4), low=0.0) * 0.98 + 0.01
    logit = Logit((1, 4, 4)).double()
    h, ld = logit.inverse(x)
    assert torch.allclose(flow.log_prob(x), inner.log_prob(h.flatten(1)) + ld, atol=1e-10)
    check_layer(FlatToImage(inner.transform, (1, 4, 4)))


def test_gradients_reach_every_parameter():
    flow = small_glow((2, 4, 4))
    deq = perturb(VariationalDequantizer((2, 4, 4), levels=8, layers=2, hidden=4)).double()
    pixels = torch.randint(0, 8, (5, 2, 4, 4), generator=torch.Generator().manual_seed(0))
    loss = dequantization_nll(
        flow, pixels.double(), 8, deq, torch.Generator().manual_seed(1)
    ).mean()
    testing.check_gradients_reach(flow, loss)
    loss = dequantization_nll(
        flow, pixels.double(), 8, deq, torch.Generator().manual_seed(1)
    ).mean()
    testing.check_gradients_reach(deq, loss)


def test_variational_dequantizer_density():
    """log q(u | x) = log N(eps) - log |det du/deps|, by autograd, with
    u = sigmoid(B tanh(h / B))."""
    deq = perturb(VariationalDequantizer((1, 4, 4), levels=8, layers=2, hidden=4)).double()
    x = torch.randint(0, 8, (2, 1, 4, 4), generator=torch.Generator().manual_seed(0)).double()
    g = torch.Generator().manual_seed(2)
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    u, log_q = deq(x, g)
    assert bool((u > 0).all()) and bool((u < 1).all())
    for b in range(2):
        context = 2 * x[b : b + 1] / 7 - 1

        def to_u(v, context=context):
            h = v.view(1, 1, 4, 4)
            for layer in deq.couplings:
                h = layer.couple(h, False, context)[0]
            return torch.sigmoid(PRE_SIGMOID_BOUND * torch.tanh(h / PRE_SIGMOID_BOUND)).flatten()

        jac = torch.autograd.functional.jacobian(to_u, eps[b].flatten())
        expected = (
            -0.5 * (eps[b] ** 2).sum() - 8 * math.log(2 * math.pi) - torch.linalg.slogdet(jac)[1]
        )
        assert torch.allclose(log_q[b], expected, atol=1e-9)


def test_uniform_dequantization_nll():
    flow = small_glow((1, 4, 4))
    pixels = torch.randint(0, 256, (4, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    nll = dequantization_nll(flow, pixels.double(), 256, None, torch.Generator().manual_seed(3))
    u = torch.rand(pixels.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(nll, -flow.log_prob((pixels + u) / 256), atol=1e-12)


def test_pixels_to_levels():
    x = torch.tensor([0.0, 1 / 255, 128 / 255, 1.0])
    assert torch.equal(pixels_to_levels(x), torch.tensor([0.0, 1.0, 128.0, 255.0]))
    with pytest.raises(ValueError, match=r"grey levels in \[0, 1\]"):
        pixels_to_levels(torch.tensor([2.0]))


# ------------------------------------------------------------------ errors


def test_shape_errors_name_the_shape_and_the_fix():
    layer = ActNorm2d((1, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, 1, 4, 4\).*got shape \(3, 16\).*view"):
        layer.inverse(torch.zeros(3, 16))
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        layer.inverse(torch.zeros(1, 4, 4).unsqueeze(0)[0])
    with pytest.raises(ValueError, match=r"unsqueeze\(1\)"):
        layer.inverse(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"images of shape \(2, 4, 4\).*\(1, 4, 4\)"):
        layer.forward(torch.zeros(3, 2, 4, 4))
    with pytest.raises(ValueError, match="empty batch"):
        layer.inverse(torch.zeros(0, 1, 4, 4))
    bad = torch.zeros(3, 1, 4, 4)
    bad[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite.*\[1\]"):
        layer.inverse(bad)
    with pytest.raises(TypeError, match="float64.*float32 parameters"):
        layer.inverse(torch.zeros(3, 1, 4, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_images([[0.0]], (1, 4, 4))


def test_flow_errors():
    flow = glow((1, 4, 4), levels=2, steps=1, hidden=4)
    with pytest.raises(ValueError, match=r"\[0, 1\].*dequantize"):
        flow.log_prob(torch.full((2, 1, 4, 4), 3.0))
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        flow.transform.forward(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="divisible by 4"):
        glow((1, 6, 6), levels=2)
    with pytest.raises(ValueError, match="integers 0..255.*pixels_to_levels"):
        dequantization_nll(flow, torch.full((2, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="temperature"):
        flow.sample(2, temperature=0.0)


def test_construction_errors():
    with pytest.raises(ValueError, match="even height and width"):
        Squeeze((1, 5, 4))
    with pytest.raises(ValueError, match="checkerboard"):
        ConvAffineCoupling((1, 4, 4), "channel")
    with pytest.raises(ValueError, match="mask must be"):
        ConvAffineCoupling((2, 4, 4), "diagonal")
    with pytest.raises(ValueError, match=r"Squeeze.*\(4, 2, 2\).*\(1, 4, 4\)"):
        Compose(ActNorm2d((1, 4, 4)), Squeeze((1, 4, 4)))
    with pytest.raises(ValueError, match="half of its 4 channels"):
        MultiScale([Squeeze((1, 4, 4)), ActNorm2d((4, 2, 2))])
    with pytest.raises(ValueError, match="dimension 16 but the base in dimension 15"):
        Flow(ActNorm2d((1, 4, 4)), StandardNormal(15))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ActNorm2d((4, 4))
    with pytest.raises(ValueError, match="alpha"):
        Logit((1, 4, 4), alpha=0.5)


LAYERS = {
    "logit": lambda: Logit((2, 4, 4)),
    "squeeze": lambda: Squeeze((2, 4, 4)),
    "actnorm": lambda: perturb(ActNorm2d((2, 4, 4), data_init=False)),
    "conv": lambda: perturb(InvertibleConv1x1((2, 4, 4), seed=1)),
    "checkerboard": lambda: perturb(ConvAffineCoupling((2, 4, 4), "checkerboard", hidden=4)),
    "channel": lambda: perturb(ConvAffineCoupling((2, 4, 4), "channel", hidden=4)),
    "glow": lambda: small_glow((2, 4, 4)).transform,
}


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("batch", [1, 7])
def test_batch_shapes(name, batch):
    layer = LAYERS[name]().double().eval()
    z = 0.5 * torch.randn(batch, *layer.latent_shape, dtype=torch.float64)
    x, log_det = layer.forward(z)
    assert x.shape == (batch, *layer.event_shape) and log_det.shape == (batch,)
    z_back, log_det_back = layer.inverse(x)
    assert z_back.shape == z.shape and log_det_back.shape == (batch,)


def test_extreme_parameters_stay_finite_and_invertible():
    """Huge conditioner weights: the soft-clamped log-scale keeps the coupling finite and
    exactly invertible; large 1 x 1 and ActNorm scales keep exact log-dets."""
    coupling = perturb(ConvAffineCoupling((2, 4, 4), "channel", hidden=4), scale=20.0)
    conv = perturb(InvertibleConv1x1((2, 4, 4), seed=2), scale=3.0)
    actnorm = ActNorm2d((2, 4, 4), data_init=False)
    with torch.no_grad():
        actnorm.log_scale.fill_(-12.0)
    for layer in (coupling, conv, actnorm):
        check_layer(layer, atol=1e-6)
    z = 10 * inputs((2, 4, 4))
    x, log_det = coupling.forward(z)
    assert bool(torch.isfinite(x).all()) and bool(torch.isfinite(log_det).all())
    assert float(log_det.detach().abs().max()) <= 16 * 3.0 + 1e-9  # c per transformed number


def test_glow_sample_is_repeatable_and_temperature_scales_the_latent():
    flow = small_glow((1, 4, 4))
    a = flow.sample(5, generator=torch.Generator().manual_seed(0), temperature=0.5)
    b = flow.sample(5, generator=torch.Generator().manual_seed(0), temperature=0.5)
    assert torch.equal(a, b)
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(a, flow.decode(0.5 * z))


# ------------------------------------------------------------------ one protocol


def test_image_layers_are_plain_transforms_with_event_shapes():
    squeeze_layer = Squeeze((1, 4, 4))
    assert squeeze_layer.event_shape == (1, 4, 4) and squeeze_layer.latent_shape == (4, 2, 2)
    flow = glow((1, 4, 4), levels=2, steps=1, hidden=4)
    assert type(flow) is Flow and type(flow.transform) is Compose
    assert flow.event_shape == (1, 4, 4) and flow.latent_shape == (16,)
    assert isinstance(ActNorm2d((2, 4, 4)), ActNorm)


def test_image_compose_checks_the_chain_of_shapes():
    """The data side of each layer must be the base side of the next: a squeeze's
    (4, 2, 2) base side after a layer on (1, 4, 4) images is refused, naming both."""
    with pytest.raises(ValueError, match=r"transform 1 \(Squeeze\).*\(4, 2, 2\).*\(1, 4, 4\)"):
        Compose(ActNorm2d((1, 4, 4)), Squeeze((1, 4, 4)))
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(1, 4, 4\)"):
        Compose(Logit((1, 4, 4)), Logit((2, 4, 4)))
    chain = Compose(Squeeze((1, 4, 4)), Logit((1, 4, 4)))
    assert chain.latent_shape == (4, 2, 2) and chain.event_shape == (1, 4, 4)


def test_tiny_float64_glow_log_det_matches_autograd_and_round_trips():
    flow = small_glow((1, 4, 4), seed=2)
    assert next(flow.parameters()).dtype == torch.float64
    x = inputs((1, 4, 4), n=4, low=0.0) * 0.98 + 0.01
    z, log_det = flow.transform.inverse(x)
    assert z.dtype == torch.float64 and z.shape == (4, 16)

    def normalize(v):
        return flow.transform.inverse(v.view(-1, 1, 4, 4))[0]

    expected = testing.autograd_log_abs_det(normalize, x.flatten(1))
    assert torch.allclose(log_det, expected, atol=1e-9, rtol=1e-10)
    x_back, forward_log_det = flow.transform.forward(z)
    assert torch.allclose(x_back, x, atol=1e-10)
    assert torch.allclose(forward_log_det, -log_det, atol=1e-10)
    assert torch.allclose(flow.decode(flow.encode(x)), x, atol=1e-10)
    samples = flow.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.dtype == torch.float64 and samples.shape == (3, 1, 4, 4)
    pixels = torch.randint(0, 256, (3, 1, 4, 4), generator=torch.Generator().manual_seed(1))
    assert dequantization_nll(flow, pixels.double()).dtype == torch.float64


def test_dtype_mismatch_gives_the_validation_error():
    flow = glow((1, 4, 4), levels=2, steps=1, hidden=4)  # float32
    x = torch.full((2, 1, 4, 4), 0.5, dtype=torch.float64)
    for call in (
        lambda: flow.log_prob(x),
        lambda: flow.encode(x),
        lambda: dequantization_nll(flow, torch.zeros_like(x)),
        lambda: flow.decode(torch.zeros(2, 16, dtype=torch.float64)),
    ):
        with pytest.raises(TypeError, match="float64 but the flow has torch.float32"):
            call()
    deq = VariationalDequantizer((1, 4, 4), levels=8, layers=1, hidden=4)
    with pytest.raises(TypeError, match="float64 but the dequantizer has torch.float32"):
        deq(torch.zeros(2, 1, 4, 4, dtype=torch.float64))


def _data(seed=0):
    return inputs((2, 4, 4), n=32, seed=seed) * torch.tensor([3.0, 0.5]).view(1, 2, 1, 1) + 2


def test_actnorm2d_is_not_initialised_after_an_optimiser_step():
    layer = ActNorm2d((2, 4, 4)).double()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer.eval()
    (layer.inverse(_data())[0] ** 2).sum().backward()
    optimizer.step()
    stepped = layer.shift.detach().clone()
    layer.train()
    layer.inverse(_data(1))
    assert torch.equal(layer.shift.detach(), stepped) and bool(layer.initialized)


def test_actnorm2d_is_not_initialised_after_sampling_in_training_mode():
    layer = ActNorm2d((2, 4, 4)).double()
    layer.forward(inputs((2, 4, 4)))
    layer.inverse(_data())
    assert torch.equal(layer.shift.detach(), torch.zeros(2, 1, 1, dtype=torch.float64))
    assert bool(layer.initialized)


@pytest.mark.parametrize("initialized", [True, False])
def test_actnorm2d_is_not_initialised_after_load_state_dict(initialized):
    source = ActNorm2d((2, 4, 4)).double()
    with torch.no_grad():
        source.shift.fill_(0.7)
        source.log_scale.fill_(-0.2)
        source.initialized.fill_(initialized)
    layer = ActNorm2d((2, 4, 4)).double()
    layer.load_state_dict(source.state_dict())
    layer.inverse(_data())
    assert torch.equal(layer.shift.detach(), source.shift.detach())
    assert torch.equal(layer.log_scale.detach(), source.log_scale.detach())
    assert bool(layer.initialized)


def test_actnorm_on_images_matches_the_flat_actnorm_per_pixel():
    """Per pixel, ActNorm on images is the flat ActNorm on the flattened image."""
    images = ActNorm(event_shape=(2, 4, 4), per_pixel=True).double()
    flat_layer = ActNorm(32).double()
    x = _data()
    z_image, ld_image = images.inverse(x)
    z_flat, ld_flat = flat_layer.inverse(x.flatten(1))
    assert torch.allclose(z_image.flatten(1), z_flat, atol=1e-12)
    assert torch.allclose(ld_image, ld_flat, atol=1e-12)
