"""The core contract: transforms, composition, the flow model, and input checks."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal, TransformedDistribution

import nfcourse as nf
from nfcourse.testing import (
    check_batch_shapes,
    check_gradients_reach,
    check_log_det,
    check_round_trip,
    parameters_without_gradient,
)


def _random_stack(dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    stack = nf.Compose(
        nf.SinhArcsinh(dim, skew=0.3, tail=1.3),
        nf.ElementwiseAffine(dim, scale=1.7, shift=-0.4),
        nf.SinhArcsinh(dim, skew=-0.2, tail=0.8),
    ).double()
    with torch.no_grad():
        for p in stack.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return stack


@pytest.fixture
def z():
    return torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def test_compose_log_dets_add_and_match_autograd_jacobian(z):
    stack = _random_stack()
    _, total = stack(z)
    parts = torch.zeros_like(total)
    h = z
    for layer in stack:
        h, log_det = layer(h)
        parts = parts + log_det
    torch.testing.assert_close(total, parts, atol=1e-12, rtol=0)
    assert check_log_det(stack, z, atol=1e-8) < 1e-8
    assert check_log_det(stack, z, atol=1e-8, direction="inverse") < 1e-8
    assert total.abs().min() > 1e-3  # the test is not vacuous: log-dets are non-trivial


def test_compose_round_trip_and_shapes(z):
    stack = _random_stack()
    assert check_round_trip(stack, z, atol=1e-10) < 1e-10
    check_batch_shapes(stack, 3)


def test_trajectory_ends_at_forward(z):
    stack = _random_stack()
    points = stack.trajectory(z)
    assert len(points) == len(stack) + 1
    torch.testing.assert_close(points[-1], stack(z)[0])


def test_inverse_transform_swaps_directions(z):
    stack = _random_stack()
    inv = stack.inv()
    x, log_det = stack(z)
    z_back, log_det_back = inv(x)
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(log_det_back, -log_det)
    check_log_det(inv, z, atol=1e-8)


def test_flow_log_prob_is_change_of_variables(z):
    stack = _random_stack()
    flow = nf.Flow(stack).double()
    x, log_det = stack(z)
    expected = nf.StandardNormal(3).double().log_prob(z) - log_det
    torch.testing.assert_close(flow.log_prob(x), expected)


def test_flow_density_integrates_to_one_in_1d():
    flow = nf.Flow([nf.SinhArcsinh(1, skew=0.5, tail=1.5), nf.ElementwiseAffine(1, 2.0, 1.0)])
    flow = flow.double()
    x = torch.linspace(-60, 60, 400_001, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        mass = flow.log_prob(x).exp().sum() * (x[1, 0] - x[0, 0])
    assert abs(float(mass) - 1) < 1e-4


def test_sample_and_log_prob_agrees_with_log_prob():
    flow = nf.Flow(_random_stack()).double()
    x, log_q = flow.sample_and_log_prob(50, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(log_q, flow.log_prob(x), atol=1e-10, rtol=0)


def test_sampling_is_reproducible_with_a_generator():
    flow = nf.Flow(_random_stack())
    a = flow.sample(5, generator=torch.Generator().manual_seed(7))
    b = flow.sample(5, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)


def test_forward_kl_and_reverse_kl_reach_every_parameter():
    flow = nf.Flow(_random_stack())
    x = nf.densities.SineWave().sample(64)[:, :1].repeat(1, 3)
    check_gradients_reach(flow, flow.forward_kl(x.double()))
    target = nf.StandardNormal(3).double()
    check_gradients_reach(flow, flow.reverse_kl(target.log_prob, 64))


def test_reverse_kl_is_zero_for_the_exact_model():
    flow = nf.Flow(nf.ElementwiseAffine(2, scale=1.0)).double()
    loss = flow.reverse_kl(nf.StandardNormal(2).double().log_prob, 100)
    assert abs(float(loss.detach())) < 1e-12


def test_parameters_without_gradient_names_unused_parameters():
    flow = nf.Flow(nf.ElementwiseAffine(2)).double()
    extra = torch.nn.Linear(2, 2).double()
    flow.unused = extra
    missing = parameters_without_gradient(flow, flow.forward_kl(torch.randn(4, 2).double()))
    assert missing == ["unused.weight", "unused.bias"]
    with pytest.raises(AssertionError, match="unused.weight"):
        check_gradients_reach(flow, flow.forward_kl(torch.randn(4, 2).double()))


def test_check_log_det_reports_the_sample_and_size_of_an_error(z):
    class WrongLogDet(nf.ElementwiseAffine):
        def _forward(self, z):
            x, log_det = super()._forward(z)
            return x, log_det + 0.7 * (torch.arange(len(z)) == 3)

    layer = WrongLogDet(3, scale=2.0).double()
    with pytest.raises(AssertionError, match=r"by 0\.7 at sample 3"):
        check_log_det(layer, z)


def test_works_inside_torch_transformed_distribution(z):
    stack = _random_stack()
    base = Independent(
        Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), 1
    )
    dist = TransformedDistribution(base, [nf.to_torch_transform(stack)])
    x = stack(z)[0].detach()
    torch.testing.assert_close(dist.log_prob(x), nf.Flow(stack).double().log_prob(x))
    assert dist.sample((4,)).shape == (4, 3)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (torch.zeros(4, 2), ValueError, r"expected shape \(B, 3\)"),
        (torch.zeros(3), ValueError, r"must have shape \(B, 3\)"),
        (torch.zeros(4, 3, dtype=torch.long), TypeError, "float32 or float64"),
        (torch.tensor([[0.0, math.nan, 0.0]]), ValueError, "non-finite"),
        ([[0.0, 0.0, 0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_gets_a_clear_error(bad, error, message):
    stack = _random_stack().float()
    with pytest.raises(error, match=message):
        stack(bad)
    with pytest.raises(error, match=message):
        nf.Flow(stack).log_prob(bad)


def test_compose_rejects_plain_modules_and_mixed_dims():
    with pytest.raises(TypeError, match="log-det"):
        nf.Compose(nf.ElementwiseAffine(2), torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="one dimension"):
        nf.Compose(nf.ElementwiseAffine(2), nf.ElementwiseAffine(3))


def test_flow_moves_to_a_device_with_its_base():
    flow = nf.Flow(nf.ElementwiseAffine(2)).to(nf.default_device())
    x = flow.sample(3)
    assert x.device.type == nf.default_device().type


def test_diagonal_normal_log_prob_is_the_gaussian_density_with_its_normaliser():
    base = nf.DiagonalNormal(3).double()
    with torch.no_grad():
        base.loc.copy_(torch.tensor([0.5, -1.0, 2.0]))
        base.log_scale.copy_(torch.log(torch.tensor([0.3, 2.0, 5.0])))
    z = torch.randn(20, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = Independent(Normal(base.loc.detach(), base.log_scale.detach().exp()), 1).log_prob(z)
    torch.testing.assert_close(base.log_prob(z), expected, atol=1e-12, rtol=0)
    # the -sum(log sigma) term makes the density integrate to one in every dimension
    x = torch.linspace(-40, 40, 200_001, dtype=torch.float64).unsqueeze(1)
    one_d = nf.DiagonalNormal(1).double()
    with torch.no_grad():
        one_d.log_scale.fill_(math.log(3.0))
    mass = one_d.log_prob(x).exp().sum() * (x[1, 0] - x[0, 0])
    assert abs(float(mass) - 1) < 1e-6


def test_diagonal_normal_samples_have_its_mean_and_scale():
    base = nf.DiagonalNormal(2).double()
    with torch.no_grad():
        base.loc.copy_(torch.tensor([1.0, -3.0]))
        base.log_scale.copy_(torch.log(torch.tensor([0.5, 4.0])))
    z = base.sample(200_000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), base.loc.detach(), atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0), base.log_scale.detach().exp(), atol=0.03, rtol=0)


def test_one_base_distribution_interface():
    for base in (nf.StandardNormal(2), nf.DiagonalNormal(2), nf.Uniform01(2)):
        assert isinstance(base, nf.BaseDistribution)
        z = base.sample(4, generator=torch.Generator().manual_seed(0))
        assert z.shape == (4, 2) and base.log_prob(z).shape == (4,)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        nf.StandardNormal(0)


def test_inverse_transform_keeps_the_dimension_and_a_transform_without_inverse_says_so():
    assert nf.ElementwiseAffine(4).inv().dim == 4

    class ForwardOnly(nf.Transform):
        def _forward(self, z):
            return z, z.new_zeros(z.shape[0])

    with pytest.raises(NotImplementedError, match="ForwardOnly has no inverse"):
        ForwardOnly(2).inverse(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        ForwardOnly(0)


def test_trajectory_checks_its_input_and_names_it():
    with pytest.raises(ValueError, match=r"z has 2 features"):
        _random_stack().trajectory(torch.zeros(4, 2, dtype=torch.float64))


def test_torch_transform_adapters_compare_by_the_wrapped_transform():
    stack = _random_stack()
    a, b = nf.to_torch_transform(stack), nf.to_torch_transform(stack)
    assert a == b
    assert a != nf.to_torch_transform(_random_stack())
    assert a != stack


def test_forward_kl_is_the_mean_negative_log_likelihood():
    flow = nf.Flow(_random_stack()).double()
    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(flow.forward_kl(x), -flow.log_prob(x).mean())


def test_generators_make_the_sampling_losses_repeat():
    flow = nf.Flow(_random_stack()).double()
    target = nf.StandardNormal(3).double().log_prob
    runs = [
        flow.reverse_kl(target, 20, generator=torch.Generator().manual_seed(2)) for _ in range(2)
    ]
    torch.testing.assert_close(runs[0], runs[1], atol=0, rtol=0)
    a = flow.sample_and_log_prob(5, generator=torch.Generator().manual_seed(8))
    b = flow.sample_and_log_prob(5, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, atol=0, rtol=0)


# --- the one protocol: context and event shape in the core ---------------------------------


class _ConditionalScale(nf.Transform):
    """A conditional elementwise affine map for the tests: ``x = exp(c A) * z + c B``."""

    def __init__(self, dim, context_dim, seed=0):
        super().__init__(dim, context_dim=context_dim)
        g = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Parameter(0.5 * torch.randn(context_dim, dim, generator=g))
        self.b = torch.nn.Parameter(torch.randn(context_dim, dim, generator=g))

    def _forward(self, z, context):
        s = context @ self.a
        return z * torch.exp(s) + context @ self.b, s.sum(dim=1)

    def _inverse(self, x, context):
        s = context @ self.a
        return (x - context @ self.b) * torch.exp(-s), -s.sum(dim=1)


class _Reshape(nf.Transform):
    """Flat vectors (D,) on the base side, images (C, H, W) on the data side."""

    def __init__(self, shape):
        super().__init__(event_shape=shape, latent_shape=(math.prod(shape),))

    def _forward(self, z):
        return z.reshape(len(z), *self.event_shape), z.new_zeros(len(z))

    def _inverse(self, x):
        return x.reshape(len(x), -1), x.new_zeros(len(x))


def _conditional_stack():
    return nf.Compose(
        nf.ElementwiseAffine(3, scale=1.5, shift=0.2),
        _ConditionalScale(3, 2),
        nf.SinhArcsinh(3, skew=0.3, tail=1.2),
        _ConditionalScale(3, 2, seed=1),
    ).double()


def test_compose_passes_the_context_to_the_layers_that_take_one():
    stack = _conditional_stack()
    assert stack.context_dim == 2 and stack.event_shape == (3,)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 3, generator=g, dtype=torch.float64)
    c = torch.randn(8, 2, generator=g, dtype=torch.float64)
    x, log_det = stack(z, c)
    x2, log_det2 = stack(z, torch.roll(c, 1, dims=0))
    assert (x - x2).abs().min() > 1e-6  # the context changes every coordinate
    # at a fixed context the map is an ordinary transform: log-det and both round trips
    for row in range(3):
        ci = c[row : row + 1].expand(8, 2)
        fixed = _FixedContext(stack, ci)
        check_log_det(fixed, z)
        check_log_det(fixed, x, direction="inverse")
        check_round_trip(fixed, z)
        check_round_trip(fixed.inv(), x)
    back, inverse_log_det = stack.inverse(x, c)
    torch.testing.assert_close(back, z)
    torch.testing.assert_close(inverse_log_det, -log_det)


class _FixedContext(nf.Transform):
    def __init__(self, transform, context):
        super().__init__(transform.dim)
        self.transform, self.context = transform, context

    def _forward(self, z):
        return self.transform._map(z, self.context[: len(z)])

    def _inverse(self, x):
        return self.transform._map(x, self.context[: len(x)], inverse=True)


def test_a_context_is_checked_once_with_errors_that_say_what_to_pass():
    stack = _conditional_stack()
    z = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"needs a context.*shape \(B, 2\)"):
        stack(z)
    with pytest.raises(ValueError, match=r"context has 3 rows but the points have 4"):
        stack(z, torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"context has 5 features.*dimension 2"):
        stack(z, torch.zeros(4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"takes no context.*context_dim=C"):
        nf.ElementwiseAffine(3)(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"contexts of sizes \[2, 3\]"):
        nf.Compose(_ConditionalScale(3, 2), _ConditionalScale(3, 3))
    with pytest.raises(
        TypeError,
        match=r"context is torch.float32 but Compose has "
        r"torch.float64 parameters.*\.double\(\)",
    ):
        stack(z, torch.zeros(4, 2))


def test_a_conditional_flow_is_a_flow_sample_n_per_context_row():
    flow = nf.Flow(_conditional_stack())
    assert flow.context_dim == 2
    contexts = torch.tensor([[0.0, 0.0], [3.0, -1.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = flow.sample(500, contexts, generator=g)
    assert x.shape == (1000, 3)
    assert (x[:500].mean(0) - x[500:].mean(0)).abs().max() > 0.5  # the context matters
    one = flow.sample(7, contexts[1], generator=g)  # a (C,) context
    assert one.shape == (7, 3)
    x, log_q = flow.sample_and_log_prob(6, contexts, generator=g)
    torch.testing.assert_close(log_q, flow.log_prob(x, contexts.repeat_interleave(6, 0)))
    torch.testing.assert_close(
        flow.decode(
            flow.encode(x, contexts.repeat_interleave(6, 0)), contexts.repeat_interleave(6, 0)
        ),
        x,
    )
    with pytest.raises(ValueError, match="needs a context"):
        flow.log_prob(x)


def test_the_inverse_of_a_conditional_transform_is_conditional():
    layer = _ConditionalScale(3, 2).double()
    inverse = layer.inv()
    assert inverse.context_dim == 2
    z = torch.randn(5, 3, dtype=torch.float64)
    c = torch.randn(5, 2, dtype=torch.float64)
    x, log_det = layer(z, c)
    back, inverse_log_det = inverse(x, c)
    torch.testing.assert_close(back, z)
    torch.testing.assert_close(inverse_log_det, -log_det)


def test_compose_checks_the_chain_of_shapes_and_a_flow_reshapes_its_base():
    flow = nf.Flow(nf.Compose(nf.ElementwiseAffine(12), _Reshape((3, 2, 2))))
    assert flow.event_shape == (3, 2, 2) and flow.latent_shape == (12,) and flow.dim == 12
    x = flow.sample(4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 2, 2)
    assert flow.log_prob(x).shape == (4,)
    assert flow.encode(x).shape == (4, 12)
    torch.testing.assert_close(flow.decode(flow.encode(x)), x)
    with pytest.raises(ValueError, match=r"takes samples of shape \(12,\).*outputs \(3, 2, 2\)"):
        nf.Compose(_Reshape((3, 2, 2)), nf.ElementwiseAffine(12))
    with pytest.raises(ValueError, match="share one dimension"):
        nf.Compose(nf.ElementwiseAffine(2), nf.ElementwiseAffine(3))
    with pytest.raises(ValueError, match=r"\(B, 3, 2, 2\)"):
        flow.log_prob(torch.zeros(4, 12))
    with pytest.raises(ValueError, match="must hold as many numbers"):
        nf.Transform(event_shape=(3, 2, 2), latent_shape=(10,))


@pytest.mark.parametrize("temperature", [0, -1, float("inf"), float("nan")])
def test_sampling_refuses_a_temperature_that_is_not_positive_and_finite(temperature):
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        nf.Flow(nf.ElementwiseAffine(2)).sample(3, temperature=temperature)


def test_a_temperature_scales_the_base_samples():
    flow = nf.Flow(nf.ElementwiseAffine(2, scale=1.0, shift=0.0))
    hot = flow.sample(4, generator=torch.Generator().manual_seed(0))
    cold = flow.sample(4, generator=torch.Generator().manual_seed(0), temperature=0.5)
    torch.testing.assert_close(cold, 0.5 * hot)


def test_samples_that_overflow_raise_instead_of_returning_inf():
    flow = nf.Flow(nf.ElementwiseAffine(2))
    with torch.no_grad():
        flow.transform.log_scale.fill_(100.0)  # exp(100) z overflows float32
    with pytest.raises(nf.core.NonFiniteSamples, match=r"overflowed.*float32.*\.double\(\)"):
        flow.sample(4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(nf.core.NonFiniteSamples, match="overflowed"):
        flow.sample_and_log_prob(4, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(flow.double().sample(4)).all()  # the same map fits float64


def test_overflowing_samples_in_training_are_a_divergence_at_their_step():
    flow = nf.Flow(nf.ElementwiseAffine(2))
    with torch.no_grad():
        flow.transform.log_scale.fill_(100.0)
    with pytest.raises(nf.TrainingDiverged, match="at step 0.*overflowed"):
        nf.fit_reverse_kl(flow, lambda x: -(x**2).sum(1), steps=2, progress=False)
