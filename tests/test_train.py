"""The training loop: reproducible, returns the history, stops loudly on a NaN loss."""

import pytest
import torch

import nfcourse as nf


def _fit(seed):
    flow = nf.Flow(nf.ElementwiseAffine(1))
    data = nf.data.GaussianMixture1D(means=(3.0,), stds=(0.5,)).sample(500)
    history = nf.fit_maximum_likelihood(flow, data, steps=300, lr=0.05, seed=seed,
                                        progress=False)
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
    torch.testing.assert_close(flow.transform.log_scale.detach(), target.log_scale,
                               atol=0.1, rtol=0)


def test_train_rejects_no_parameters():
    with pytest.raises(ValueError, match="no trainable parameters"):
        nf.train(lambda s: torch.tensor(0.0), [], steps=1, progress=False)
