"""The VAE with an IAF posterior: the log-density of its samples against the autograd
Jacobian, the autoregressive dependence of every step, the inverse, gradients and the
errors for bad options."""

import re

import pytest
import torch

import nfcourse
from nfcourse import testing, vae
from nfcourse.flows.autoregressive import IAF

D64 = torch.float64


def _params(step, z, h):
    """``(log sigma, mu)`` of one IAF step at points ``z`` with contexts ``h``."""
    return step._params(z, h)


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _images(batch, seed=0, dtype=D64, data_dim=64):
    g = _generator(seed)
    return torch.bernoulli(
        torch.rand(batch, data_dim, generator=g, dtype=dtype) * 0.6, generator=g
    )


def _model(
    latent_dim=4, n_flows=3, seed=0, hidden=32, data_dim=64, context=5, iaf_hidden=(16, 16)
):
    """A small IAF-posterior model whose steps are moved away from the identity."""
    torch.manual_seed(seed)
    model = vae.FlowPosteriorVAE(
        latent_dim,
        n_flows,
        hidden=hidden,
        data_dim=data_dim,
        posterior="iaf",
        iaf_hidden=iaf_hidden,
        iaf_context=context,
    ).double()
    g = _generator(seed + 100)
    with torch.no_grad():  # the MADEs' output layers start at zero: give them weights
        for step in model.iaf.transforms:
            last = step.conditioner.net[-1]
            last.weight.copy_(0.3 * torch.randn(last.weight.shape, generator=g, dtype=D64))
            last.bias.copy_(0.3 * torch.randn(last.bias.shape, generator=g, dtype=D64))
    return model


def test_the_posterior_is_a_compose_of_chapter_7s_iaf_layers_with_a_context():
    model = _model(latent_dim=4, n_flows=3)
    assert isinstance(model.iaf, nfcourse.Compose) and len(model.iaf) == 3
    assert all(isinstance(step, IAF) and step.context_dim == 5 for step in model.iaf)
    # without sample axes, forward(z0, h) is the Compose's forward(z, context)
    _, _, h = model.encoder(_images(4))
    z = torch.randn(4, 4, generator=_generator(7), dtype=D64)
    out, log_det = nfcourse.Compose.forward(model.iaf, z, h)
    torch.testing.assert_close((out, log_det), model.iaf(z, h))


def test_a_fresh_iaf_posterior_is_the_encoder_gaussian():
    torch.manual_seed(0)
    model = vae.FlowPosteriorVAE(3, 2, hidden=16, data_dim=64, posterior="iaf").double()
    s = model.sample_posterior(_images(4), n_samples=2)
    assert torch.equal(s.zK, s.z0)
    assert torch.equal(s.sum_log_abs_det, torch.zeros(2, 4, dtype=D64))


@pytest.mark.parametrize("latent_dim, n_flows", [(1, 1), (3, 2), (5, 3)])
def test_log_q_matches_the_autograd_jacobian_of_eps_to_z(latent_dim, n_flows):
    model = _model(latent_dim, n_flows)
    x = _images(4)
    eps = torch.randn(4, latent_dim, generator=_generator(1), dtype=D64)
    s = model.sample_posterior(x, eps=eps)
    assert (s.sum_log_abs_det.abs() > 1e-3).all()  # the steps are not the identity
    normal = torch.distributions.Normal(torch.zeros((), dtype=D64), 1.0)
    for i in range(4):

        def eps_to_z(e, i=i):
            return model.sample_posterior(x[i : i + 1], eps=e.unsqueeze(0)).zK[0]

        jac = torch.autograd.functional.jacobian(eps_to_z, eps[i])
        # q(z | x) = N(eps) / |det dz/deps|, with z as a function of eps for fixed x
        expected = normal.log_prob(eps[i]).sum() - torch.linalg.slogdet(jac)[1]
        got = s.log_q0[i] - s.sum_log_abs_det[i]
        assert torch.allclose(got, expected, atol=1e-10), (got, expected)


def test_each_step_output_depends_only_on_earlier_coordinates():
    model = _model(latent_dim=5, n_flows=2, iaf_hidden=(64, 64))
    _, _, h = model.encoder(_images(1))
    z = torch.randn(16, 5, generator=_generator(3), dtype=D64)
    for t, made in enumerate(model.iaf.transforms):
        order = made.order
        expected = order[:, None] > order[None, :]  # row i may see column j
        for k in (0, 1):  # log sigma and mu
            # summed over a few points, so that a ReLU off at one point hides nothing
            jac = sum(
                torch.autograd.functional.jacobian(
                    lambda v, made=made, k=k: _params(made, v.unsqueeze(0), h)[k][0], zi
                ).abs()
                for zi in z
            )
            assert torch.all(jac[~expected] == 0), f"step {t} sees a later coordinate"
            assert torch.all(jac[expected] > 0), f"step {t} misses an earlier coordinate"
        # a diagonal Jacobian entry of the step itself is sigma_i: z_i scales only itself
        step = torch.autograd.functional.jacobian(
            lambda v, made=made: (
                _params(made, v.unsqueeze(0), h)[1][0]
                + _params(made, v.unsqueeze(0), h)[0][0].exp() * v
            ),
            z[0],
        )
        assert torch.allclose(torch.diag(step), _params(made, z[:1], h)[0][0].exp())
        assert torch.all(step[order[None, :] > order[:, None]] == 0)
    orders = [made.order.tolist() for made in model.iaf.transforms]
    assert orders == [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]]


def test_the_context_reaches_every_coordinate_of_every_step():
    model = _model(latent_dim=3, n_flows=2, iaf_hidden=(64, 64))
    z = torch.randn(1, 3, generator=_generator(4), dtype=D64)
    h = torch.randn(8, 5, generator=_generator(5), dtype=D64)
    for made in model.iaf.transforms:
        jac = sum(
            torch.autograd.functional.jacobian(
                lambda c, made=made: _params(made, z, c.unsqueeze(0))[1][0], hi
            ).abs()
            for hi in h
        )
        assert (jac.sum(dim=1) > 0).all()  # even the first coordinate sees h


def test_inverse_round_trips_and_posterior_log_prob_matches_the_samples():
    model = _model(latent_dim=4, n_flows=3)
    x = _images(5)
    s = model.sample_posterior(x, n_samples=6)
    with torch.no_grad():
        _, _, h = model.encoder(x)
        z0, total = model.iaf.inverse(s.zK, h)
        got = model.posterior_log_prob(x, s.zK)
    assert torch.allclose(z0, s.z0, atol=1e-10)
    assert torch.allclose(total, -s.sum_log_abs_det, atol=1e-10)
    assert torch.allclose(got, s.log_q0 - s.sum_log_abs_det, atol=1e-10)


def test_samples_stay_finite_for_extreme_network_outputs():
    model = _model(latent_dim=3, n_flows=2)
    with torch.no_grad():
        for step in model.iaf.transforms:
            step.conditioner.net[-1].bias.fill_(1e4)
    s = model.sample_posterior(_images(3), n_samples=2)
    assert torch.isfinite(s.zK).all()
    bound = model.iaf.scale_bound * len(model.iaf) * 3
    assert (s.sum_log_abs_det.abs() <= bound).all()


def test_gradients_reach_every_parameter_and_shapes_follow_the_planar_model():
    model = _model(latent_dim=3, n_flows=2)
    x = _images(6)
    testing.check_gradients_reach(model, model.loss(x))
    names = {n for n, _ in model.named_parameters()}
    assert any(n.startswith("encoder.context") for n in names)
    assert any(n.startswith("iaf.transforms.1") for n in names)
    assert model.elbo(x).shape == (6,)
    assert model.elbo(x, n_samples=4).shape == (4, 6)
    assert model.log_weights(x, 7, chunk_size=3).shape == (7, 6)
    assert model.reconstruct(x).shape == (6, 64)


def test_fit_vae_trains_an_iaf_posterior():
    torch.manual_seed(0)
    model = vae.FlowPosteriorVAE(2, 2, hidden=16, data_dim=64, posterior="iaf")
    images = torch.rand(40, 64, generator=_generator(0)) * 0.8
    history = nfcourse.fit_vae(model, images, 60, batch_size=20, lr=1e-2, progress=False)
    assert sum(history[-10:]) < sum(history[:10])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(posterior="maf"), "posterior must be 'planar' or 'iaf', got 'maf'"),
        (dict(iaf_hidden=(8,)), "posterior='iaf' only"),
        (dict(iaf_context=4), "posterior='iaf' only"),
        (dict(posterior="iaf", n_flows=0), "n_flows >= 1"),
        (dict(posterior="iaf", iaf_context=0), "iaf_context must be a positive integer"),
        (dict(posterior="iaf", iaf_hidden=()), "hidden must list at least one"),
    ],
)
def test_bad_options_give_a_clear_error(kwargs, message):
    args = dict(latent_dim=3, n_flows=2, hidden=8, data_dim=64) | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        vae.FlowPosteriorVAE(**args)
