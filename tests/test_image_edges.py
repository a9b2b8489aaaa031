"""The image layers of chapter 9 at their edges: every layer at ordinary parameters and with
every parameter multiplied by 10 and by 100, on 1 x 4 x 4 and 2 x 4 x 4 images, in float64.

The contract: a call is exact (log-det against the autograd Jacobian, both round trips, to
1e-8 relative to the Jacobian's conditioning) or raises a clear ``ValueError``; it never
returns a silent inf or NaN. The logit at its ends and in its far tails, the variational
dequantizer at large parameters, and the input checks of the image entry points."""

from __future__ import annotations

import math

import pytest
import torch

from nfcourse import testing
from nfcourse.flows.actnorm import ActNorm2d
from nfcourse.flows.coupling import coupling_flow
from nfcourse.flows.dequantization import VariationalDequantizer, dequantization_nll
from nfcourse.flows.glow import flat_image_flow, glow
from nfcourse.flows.image import ConvAffineCoupling, InvertibleConv1x1, Logit, Squeeze

SHAPES = [(1, 4, 4), (2, 4, 4)]
MULTIPLIERS = [1.0, 10.0, 100.0]


def scaled(layer, multiplier, seed=0):
    """The layer in float64, perturbed off its identity start, every parameter times
    ``multiplier``."""
    layer = testing.perturb(layer.double(), 0.3, seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(multiplier)
    return layer


def points(shape, n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64)


def jacobian(layer, z):
    """The autograd Jacobian of ``forward`` at one base-side point, as a ``D x D`` matrix."""

    def fn(v):
        return layer._forward(v.reshape(1, *layer.latent_shape))[0].reshape(-1)

    return torch.autograd.functional.jacobian(fn, z.reshape(-1))


def chain_conditioning(layer, z):
    """The product of the condition numbers of the layers of a composition along the path of
    ``z`` (1 for a single layer): rounding errors made inside the chain are amplified by the
    layers after them, so a composition is exact only to this product."""
    if hasattr(layer, "blocks") and len(layer.blocks) == 1:  # one level: its one block
        layer = layer.blocks[0]
        z = z.reshape(len(z), *layer.latent_shape)
    if not hasattr(layer, "transforms"):
        return 1.0
    product, h = 1.0, z
    for inner in layer.transforms:
        singular = torch.linalg.svdvals(jacobian(inner, h))
        product *= float(singular.max() / singular.min())
        h = inner._forward(h)[0].detach()
    return product


def assert_exact_or_clear_error(layer, z):
    """Exact to 1e-8 relative to the conditioning of the Jacobian ``J`` (its condition number
    for the log-det, ``|J^-1| |x|`` for a point), or a clear ValueError; returns
    ``"exact"`` or ``"error"``."""
    try:
        x, log_det = layer.forward(z)
        z_back, log_det_back = layer.inverse(x)
    except ValueError as error:
        assert "overflow" in str(error) or "must" in str(error), str(error)
        return "error"
    x, log_det, z_back, log_det_back = (t.detach() for t in (x, log_det, z_back, log_det_back))
    for t in (x, log_det, z_back, log_det_back):
        assert bool(torch.isfinite(t).all()), "a silent inf or NaN"
    for b in range(len(z)):
        jac = jacobian(layer, z[b])
        singular = torch.linalg.svdvals(jac)
        cond = max(float(singular.max() / singular.min()), chain_conditioning(layer, z[b : b + 1]))
        expected = float(torch.linalg.slogdet(jac)[1])
        scale = 1e-8 * max(1.0, cond)
        assert abs(float(log_det[b].detach()) - expected) <= scale * max(1.0, abs(expected)), (
            float(log_det[b].detach()),
            expected,
            cond,
        )
        # a perturbation of size eps |x| of the data side moves z by up to |J^-1| eps |x|
        size = max(1.0, float(z[b].abs().max()), float(x[b].abs().max() / singular.min()))
        assert float((z_back[b] - z[b]).abs().max()) <= scale * size
        assert abs(float(log_det[b] + log_det_back[b])) <= scale * max(1.0, abs(expected))
    # the other round trip, from the data side
    z2, ld_i = layer.inverse(x)
    x2, ld_f = layer.forward(z2)
    size = max(1.0, float(x.abs().max()))
    assert float((x2.detach() - x).abs().max()) <= 1e-8 * max(1.0, cond) * size
    return "exact"


LAYERS = {
    "squeeze": lambda shape: Squeeze(shape),
    "actnorm2d": lambda shape: ActNorm2d(shape, data_init=False),
    "conv1x1_lu": lambda shape: InvertibleConv1x1(shape, lu=True, seed=3),
    "conv1x1_free": lambda shape: InvertibleConv1x1(shape, lu=False, seed=3),
    "checkerboard_coupling": lambda shape: ConvAffineCoupling(shape, "checkerboard", hidden=4),
    "multiscale": lambda shape: glow(shape, levels=1, steps=2, hidden=4).transform.transforms[0],
}


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_image_layer_is_exact_at_ordinary_and_large_parameters(name, shape, multiplier):
    layer = scaled(LAYERS[name](shape), multiplier)
    outcome = assert_exact_or_clear_error(layer, points(layer.latent_shape))
    if multiplier == 1.0 or name in ("squeeze", "checkerboard_coupling", "actnorm2d"):
        assert outcome == "exact"  # bounded log-scales (coupling), exp(+-30) (actnorm)


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
@pytest.mark.parametrize("parity", [0, 1])
def test_channel_coupling_is_exact_at_ordinary_and_large_parameters(parity, multiplier):
    layer = scaled(ConvAffineCoupling((2, 4, 4), "channel", parity=parity, hidden=4), multiplier)
    assert assert_exact_or_clear_error(layer, points((2, 4, 4))) == "exact"


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_shift_bounded_coupling_is_exact_where_the_bound_saturates(mask, multiplier):
    """With ``shift_bound`` the shift is ``b tanh(g / b)``; at x100 parameters it sits at
    the bound, and both round trips and the log-det stay exact."""
    layer = scaled(ConvAffineCoupling((2, 4, 4), mask, hidden=4, shift_bound=2.0), multiplier)
    assert assert_exact_or_clear_error(layer, 5 * points((2, 4, 4))) == "exact"
    with torch.no_grad():
        _, shift = layer._net(
            torch.randn(3, *layer.conditioner[0].weight.shape[1:2], 4, 4, dtype=torch.float64),
            None,
        )
    assert float(shift.abs().max()) <= 2.0


@pytest.mark.parametrize("bound", [0, -1.0, math.inf, math.nan, True, "2"])
def test_shift_bound_refuses_what_is_not_a_positive_finite_number(bound):
    with pytest.raises(ValueError, match="shift_bound must be a positive finite number"):
        ConvAffineCoupling((2, 4, 4), "channel", hidden=4, shift_bound=bound)


# --------------------------------------------------------------------------------------
# The logit at its ends and in its far tails
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_logit_is_exact_on_ordinary_points(shape):
    layer = Logit(shape).double()
    assert assert_exact_or_clear_error(layer, 3 * points(shape)) == "exact"


@pytest.mark.parametrize("magnitude", [30.0, 50.0, 700.0])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_logit_far_tails_stay_in_the_accepted_interval(sign, magnitude):
    """Forward outputs lie in the closed image [-e, 1 + e] that the inverse accepts; the
    forward log-det is exact (logsigmoid); the inverse returns |z| <= logit(1 - eps), and is
    exact up to the conditioning eps e^|z| where the dtype still resolves z."""
    alpha = 0.05
    layer = Logit((1, 4, 4), alpha).double()
    z = torch.full((1, 1, 4, 4), sign * magnitude, dtype=torch.float64)
    x, log_det = layer.forward(z)
    edge = alpha / (1 - 2 * alpha)
    assert float(x.min()) >= -edge and float(x.max()) <= 1 + edge
    exact = 16 * (-magnitude - 2 * math.log1p(math.exp(-magnitude)) - math.log1p(-2 * alpha))
    assert float(log_det) == pytest.approx(exact, rel=1e-12)
    z_back, log_det_back = layer.inverse(x)  # accepted: no ValueError
    assert bool(torch.isfinite(z_back).all()) and bool(torch.isfinite(log_det_back).all())
    eps = torch.finfo(torch.float64).eps
    bound = math.log((1 - eps) / eps)
    assert float(z_back.abs().max()) <= bound + 1e-9
    if magnitude < bound:
        conditioning = eps * math.exp(magnitude) / alpha
        assert float((z_back - z).abs().max()) <= 10 * conditioning
    else:
        assert torch.allclose(z_back, torch.full_like(z, sign * bound))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logit_inverse_accepts_its_ends_and_rejects_beyond(dtype):
    alpha = 0.05
    edge = alpha / (1 - 2 * alpha)
    layer = Logit((1, 4, 4), alpha).to(dtype)
    ends = torch.tensor([-edge, 1 + edge], dtype=dtype).repeat(8).reshape(1, 1, 4, 4)
    z, log_det = layer.inverse(ends)
    assert bool(torch.isfinite(z).all()) and bool(torch.isfinite(log_det).all())
    pixels = torch.tensor([0.0, 1.0], dtype=dtype).repeat(8).reshape(1, 1, 4, 4)
    z, _ = layer.inverse(pixels)
    assert torch.allclose(z.abs(), torch.full_like(z, math.log(0.95 / 0.05)))
    with pytest.raises(ValueError, match=r"x must hold dequantized pixels in \[0, 1\]"):
        layer.inverse(ends + 0.01)
    with pytest.raises(ValueError, match="divide 8-bit pixels by 256"):
        layer.inverse(255 * pixels)


@pytest.mark.parametrize("alpha", [0, 0.0, 1e-9, -0.1, 0.5])
def test_logit_refuses_alpha_zero_and_out_of_range(alpha):
    with pytest.raises(ValueError, match=r"alpha must lie in \[1e-06, 0.5\).*black pixels"):
        Logit((1, 4, 4), alpha=alpha)


def test_logit_forward_names_an_overflow_before_it():
    layer = Logit((1, 4, 4)).double()
    z = torch.full((1, 1, 4, 4), float("inf"), dtype=torch.float64)
    with pytest.raises(ValueError, match="overflowed"):
        layer._forward(z)


# --------------------------------------------------------------------------------------
# Flows that accept their own samples
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("multiplier", MULTIPLIERS)
def test_glow_accepts_its_own_forward_outputs(dtype, multiplier):
    """Even where the logit saturates, log_prob takes the flow's own samples: a finite
    log-density or a clear error, never a rejection of its own output or a silent inf or
    NaN."""
    flow = glow((1, 4, 4), levels=1, steps=2, hidden=4).to(dtype)
    flow = testing.perturb(flow, 0.3)
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(multiplier)
        try:
            x = flow.sample(4, generator=torch.Generator().manual_seed(0))
        except ValueError as error:
            assert "overflowed" in str(error)
            return
        assert bool(torch.isfinite(x).all())
        try:
            log_prob = flow.log_prob(x)
        except FloatingPointError as error:  # NonFiniteLogProb among them
            assert multiplier != 1.0 and ".double()" in str(error)
            return
    assert bool(torch.isfinite(log_prob).all())


def test_flat_image_flow_accepts_its_own_forward_outputs():
    flow = flat_image_flow(
        coupling_flow("affine", 16, n_layers=2, hidden=(8,)).transform, (1, 4, 4)
    )
    flow = testing.perturb(flow, 2.0)
    with torch.no_grad():
        x = flow.sample(16, generator=torch.Generator().manual_seed(0))
        assert bool(torch.isfinite(flow.log_prob(x)).all())


def test_glow_at_ordinary_parameters_round_trips_through_the_logit():
    flow = testing.perturb(glow((2, 4, 4), levels=1, steps=2, hidden=4).double(), 0.05)
    assert assert_exact_or_clear_error(flow.transform, points((32,))) == "exact"


def test_glow_rejects_float64_images_with_the_shared_dtype_error():
    flow = glow((1, 4, 4), levels=1, steps=1, hidden=4)
    with pytest.raises(TypeError, match=r"x is torch.float64 but the .* has torch.float32"):
        flow.log_prob(torch.rand(2, 1, 4, 4, dtype=torch.float64))


# --------------------------------------------------------------------------------------
# The variational dequantizer
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("multiplier", MULTIPLIERS)
def test_variational_noise_stays_strictly_inside_the_cell(dtype, multiplier):
    deq = VariationalDequantizer((1, 4, 4), levels=256, hidden=4).to(dtype)
    deq = testing.perturb(deq, 0.5)
    with torch.no_grad():
        for p in deq.parameters():
            p.mul_(multiplier)
        pixels = torch.randint(0, 256, (4, 1, 4, 4), generator=torch.Generator().manual_seed(0))
        u, log_q = deq(pixels.to(dtype), torch.Generator().manual_seed(1))
    assert float(u.min()) > 0 and float(u.max()) < 1
    assert bool(torch.isfinite(log_q).all())


def test_variational_log_q_matches_the_change_of_variables():
    """log q(u | x) against the autograd Jacobian of eps -> u, in float64 (at parameters
    where autograd's tanh' has not yet rounded to zero)."""
    deq = testing.perturb(VariationalDequantizer((1, 2, 2), levels=4, hidden=4).double(), 0.5)
    pixels = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]], dtype=torch.float64)
    u, log_q = deq(pixels, torch.Generator().manual_seed(3))
    eps = torch.randn(
        pixels.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    context = 2 * pixels / 3 - 1

    def noise(e):
        h = e.reshape(pixels.shape)
        for layer in deq.couplings:
            h, _ = layer.couple(h, context=context)
        return torch.sigmoid(12.0 * torch.tanh(h / 12.0)).reshape(-1)

    assert torch.allclose(noise(eps).reshape(u.shape), u)
    jac = torch.autograd.functional.jacobian(noise, eps.reshape(-1))
    normal = -0.5 * float((eps**2).sum()) - 2 * math.log(2 * math.pi)
    expected = normal - float(torch.linalg.slogdet(jac)[1])
    assert float(log_q.detach()) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("levels", [0, 1])
def test_dequantizer_needs_at_least_two_levels(levels):
    with pytest.raises(ValueError, match="levels must be"):
        VariationalDequantizer((1, 4, 4), levels=levels)


def test_dequantizer_rejects_non_integer_pixels():
    deq = VariationalDequantizer((1, 4, 4), levels=256, hidden=4)
    with pytest.raises(ValueError, match=r"x must hold integers 0..255.*pixels_to_levels"):
        deq(torch.full((1, 1, 4, 4), 0.5))


def test_dequantization_nll_needs_matching_levels():
    flow = glow((1, 4, 4), levels=1, steps=1, hidden=4)
    deq = VariationalDequantizer((1, 4, 4), levels=16, hidden=4)
    with pytest.raises(ValueError, match="levels=16 but levels=256"):
        dequantization_nll(flow, torch.zeros(1, 1, 4, 4), 256, deq)


# --------------------------------------------------------------------------------------
# A coupling with a context
# --------------------------------------------------------------------------------------


def test_coupling_with_context_channels_needs_a_context():
    layer = ConvAffineCoupling((2, 4, 4), "checkerboard", hidden=4, context_channels=1)
    z = torch.zeros(3, 2, 4, 4)
    with pytest.raises(
        ValueError, match=r"context_channels=1 and needs a context.*\(3, 1, 4, 4\)"
    ):
        layer.couple(z)
    with pytest.raises(ValueError, match="needs a context"):
        layer.forward(z)


def test_coupling_with_context_channels_rejects_a_context_of_the_wrong_shape():
    layer = ConvAffineCoupling((2, 4, 4), "checkerboard", hidden=4, context_channels=1)
    z = torch.zeros(3, 2, 4, 4)
    with pytest.raises(
        ValueError, match=r"context must have shape \(3, 1, 4, 4\).*\(3, 2, 4, 4\)"
    ):
        layer.couple(z, context=torch.zeros(3, 2, 4, 4))
    with pytest.raises(ValueError, match=r"context must have shape"):
        layer.couple(z, context=torch.zeros(2, 1, 4, 4))
    x, log_det = layer.couple(z, context=torch.zeros(3, 1, 4, 4))
    assert x.shape == z.shape and log_det.shape == (3,)


def test_coupling_without_context_channels_rejects_a_context():
    layer = ConvAffineCoupling((2, 4, 4), "checkerboard", hidden=4)
    with pytest.raises(ValueError, match="takes no context"):
        layer.couple(torch.zeros(1, 2, 4, 4), context=torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_coupling_context_channels_must_be_a_count(bad):
    with pytest.raises((TypeError, ValueError), match="context_channels"):
        ConvAffineCoupling((2, 4, 4), context_channels=bad)


@pytest.mark.parametrize("scale", [10.0, 100.0])
def test_glow_with_huge_parameters_gives_a_number_or_a_clear_error(scale):
    """In float32, parameters x10 overflow the base log-density of a 28 x 28 Glow and x100
    make its 1 x 1 convolutions singular: each is a named error, never a silent -inf; in
    float64 the same flows give finite log-densities."""
    from nfcourse.core import NonFiniteLogProb

    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    flow = glow((1, 28, 28), levels=2, steps=2, hidden=8)
    flow.log_prob(x)  # initialises ActNorm
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(scale)
    with pytest.raises((NonFiniteLogProb, FloatingPointError), match=r"\.double\(\)"):
        flow.log_prob(x)
    assert torch.isfinite(flow.double().log_prob(x.double())).all()


def test_log_prob_keeps_minus_inf_outside_a_bounded_base():
    from nfcourse.core import Compose, Flow
    from nfcourse.distributions import Uniform01
    from nfcourse.flows.affine import ElementwiseAffine

    flow = Flow(Compose(ElementwiseAffine(2)), base=Uniform01(2))
    out = flow.log_prob(torch.tensor([[0.5, 0.5], [2.0, 0.5]]))
    assert out[0] == 0 and out[1] == -math.inf
