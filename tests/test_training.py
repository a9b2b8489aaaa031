"""The training loop: reproducible, returns the history, stops loudly on a NaN loss."""

import pytest
import torch

import nfcourse as nf


def _fit(seed):
    flow = nf.Flow(nf.ElementwiseAffine(1))
    data = nf.densities.GaussianMixture1D(means=(3.0,), stds=(0.5,)).sample(500)
    history = nf.fit_maximum_likelihood(flow, data, steps=300, lr=0.05, seed=seed, progress=False)
    return flow, history


def test_maximum_likelihood_recovers_a_gaussian():
    flow, history = _fit(0)
    assert len(history) == 300
    assert history[-1] < history[0]
    assert abs(float(flow.transform.shift) - 3.0) < 0.15
    assert abs(float(flow.transform.log_scale.exp()) - 0.5) < 0.1


def test_training_is_reproducible_with_a_seed():
    _, a = _fit(1)
    _, b = _fit(1)
    assert a == b


def test_nan_loss_raises_a_clear_error_naming_the_step():
    p = torch.nn.Parameter(torch.tensor(1.0))

    def loss_fn(step):
        return p * (float("nan") if step == 4 else 1.0)

    with pytest.raises(nf.TrainingDiverged, match=r"step 4.*smaller learning rate"):
        nf.train(loss_fn, [p], steps=10, progress=False)


def test_reverse_kl_fit_matches_a_shifted_gaussian():
    flow = nf.Flow(nf.ElementwiseAffine(2))
    target = nf.DiagonalNormal(2)
    with torch.no_grad():
        target.loc.copy_(torch.tensor([1.0, -2.0]))
        target.log_scale.copy_(torch.log(torch.tensor([0.5, 2.0])))
    target.requires_grad_(False)
    nf.fit_reverse_kl(flow, target.log_prob, steps=400, lr=0.05, progress=False)
    torch.testing.assert_close(flow.transform.shift.detach(), target.loc, atol=0.1, rtol=0)
    torch.testing.assert_close(
        flow.transform.log_scale.detach(), target.log_scale, atol=0.1, rtol=0
    )


def test_train_rejects_no_parameters():
    with pytest.raises(ValueError, match="no trainable parameters"):
        nf.train(lambda s: torch.tensor(0.0), [], steps=1, progress=False)


def test_maximum_likelihood_divergence_raises_training_diverged_not_a_data_error():
    # A learning rate far too large sends the parameters to inf/NaN: the fit must say that
    # training diverged, not that the data holds non-finite values.
    torch.manual_seed(0)
    flow = nf.Flow([nf.PlanarFlow(2) for _ in range(3)])
    data = nf.densities.GaussianRing().sample(512)
    with pytest.raises(nf.TrainingDiverged, match=r"training diverged.*step \d+.*learning rate"):
        nf.fit_maximum_likelihood(flow, data, steps=300, lr=1e6, progress=False)


def test_an_exploding_loss_raises_training_diverged():
    p = torch.nn.Parameter(torch.tensor(1.0))

    def loss_fn(step):
        return p * 10.0 ** (5 * step)

    with pytest.raises(
        nf.TrainingDiverged,
        match=r"exploded to [\d.]+e\+1[45] .*step 3.*"
        r"clip_grad_norm",
    ):
        nf.train(loss_fn, [p], steps=10, progress=False)
    history = nf.train(lambda step: p * 1e12, [p], steps=2, max_loss=1e13, progress=False)
    assert len(history) == 2


def test_seeded_training_leaves_the_global_random_state_alone():
    state = torch.get_rng_state()
    _fit(3)
    nf.coupling_flow("affine", 2, 2, seed=5)
    assert torch.equal(torch.get_rng_state(), state)


def test_seed_none_draws_from_the_global_random_state():
    torch.manual_seed(11)
    _, a = _fit(None)
    torch.manual_seed(11)
    _, b = _fit(None)
    _, c = _fit(None)
    assert a == b and a != c
    torch.manual_seed(0)
    f1 = nf.coupling_flow("affine", 2, 2, seed=None, zero_init=False)
    f2 = nf.coupling_flow("affine", 2, 2, seed=None, zero_init=False)
    assert not torch.equal(
        f1.transform[0].conditioner[0].weight, f2.transform[0].conditioner[0].weight
    )
    f3 = nf.coupling_flow("affine", 2, 2, seed=4, zero_init=False)
    f4 = nf.coupling_flow("affine", 2, 2, seed=4, zero_init=False)
    assert torch.equal(
        f3.transform[0].conditioner[0].weight, f4.transform[0].conditioner[0].weight
    )


def test_maximum_likelihood_without_batch_size_is_full_batch_gradient_descent():
    data = nf.densities.GaussianMixture1D(means=(3.0,), stds=(0.5,)).sample(200)
    flow, reference = nf.Flow(nf.ElementwiseAffine(1)), nf.Flow(nf.ElementwiseAffine(1))
    history = nf.fit_maximum_likelihood(flow, data, 20, batch_size=None, lr=0.05, progress=False)
    expected = nf.train(
        lambda step: reference.forward_kl(data), reference, 20, lr=0.05, progress=False
    )
    assert history == expected


def test_dequantized_fit_draws_indices_then_noise_from_one_generator():
    images = torch.randint(0, 17, (100, 4)).float()
    flow, reference = nf.Flow(nf.ElementwiseAffine(4)), nf.Flow(nf.ElementwiseAffine(4))
    history = nf.fit_maximum_likelihood(
        flow,
        images,
        10,
        batch_size=16,
        lr=3e-3,
        seed=1,
        dequantize_levels=17,
        schedule="cosine",
        progress=False,
    )
    draws = torch.Generator().manual_seed(1)

    def loss_fn(step):
        batch = images[torch.randint(len(images), (16,), generator=draws)]
        return reference.forward_kl(nf.images.dequantize(batch, 17, draws))

    optimizer = torch.optim.Adam(reference.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10)
    expected = nf.train(
        loss_fn, reference, 10, seed=1, optimizer=optimizer, scheduler=schedule, progress=False
    )
    assert history == expected
