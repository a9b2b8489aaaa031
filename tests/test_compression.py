"""Compression: exact discrete probabilities of a discretized MAF, integer tables that sum
to the coder's total with no zero, and a bit-exact round trip through the ANS coder."""

import math

import numpy as np
import pytest
import torch

from nfcourse.applications import compression
from nfcourse.applications.compression import DiscretizedMAF


def _model(dim=6, levels=5, seed=0, scale=0.7, dtype=torch.float64):
    model = DiscretizedMAF(dim, levels, hidden=(8,), seed=seed).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=dtype))
    return model


def _images(n, dim, levels, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(levels, (n, dim), generator=g).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_probabilities_sum_to_one_and_match_gaussian_bins(dtype):
    model = _model(dtype=dtype)
    x = _images(20, 6, 5, dtype=dtype)
    p = model.probabilities(x)
    assert p.shape == (20, 6, 5) and p.dtype == dtype
    assert torch.allclose(
        p.sum(-1), torch.ones(20, 6, dtype=dtype), atol=1e-6 if dtype == torch.float32 else 1e-12
    )
    # against the formula: differences of Phi at the edges k / L, outer edges infinite
    s, t = model.layer._params(model.centres(x))
    edges = torch.cat(
        [torch.tensor([-math.inf]), torch.arange(1, 5) / 5, torch.tensor([math.inf])]
    ).to(dtype)
    cdf = torch.special.ndtr((edges - t.unsqueeze(-1)) * torch.exp(-s).unsqueeze(-1))
    assert torch.allclose(p, cdf.diff(dim=-1), atol=1e-6 if dtype == torch.float32 else 1e-12)


def test_log_prob_is_autoregressive_and_normalised():
    model = _model(dim=3, levels=3)
    grid = torch.cartesian_prod(*[torch.arange(3.0, dtype=torch.float64)] * 3)
    with torch.no_grad():
        total = model.log_prob(grid).exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-12)
    # pixel i's table does not depend on pixels i, i + 1, ...
    model = _model(dim=6, levels=5)
    x = _images(4, 6, 5)
    y = x.clone()
    y[:, 3:] = (y[:, 3:] + 1) % 5
    p, q = model.probabilities(x), model.probabilities(y)
    assert torch.equal(p[:, :4], q[:, :4]) and not torch.equal(p[:, 4:], q[:, 4:])


def test_far_tails_keep_finite_log_probabilities_and_gradients():
    model = _model(scale=0.0)
    with torch.no_grad():  # a sharp conditional far from the data: tiny probabilities
        model.layer.conditioner.net[-1].bias.copy_(
            torch.tensor([-6.0, -3.0] * 6, dtype=torch.float64)
        )
    x = torch.full((2, 6), 4.0, dtype=torch.float64)
    lp = model.log_prob(x)
    assert bool(torch.isfinite(lp).all()) and float(lp.detach().max()) < -1000
    lp.sum().backward()
    assert all(
        p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters()
    )


def test_quantize_sums_to_total_and_never_zero():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(20 * torch.randn(500, 17, generator=g, dtype=torch.float64), -1)
    p[0] = 0.0
    p[0, 3] = 1.0  # a one-hot table: 16 values of probability zero
    for precision in (8, 16, 24):
        q = compression.quantize_probabilities(p, precision)
        assert q.dtype == np.int64 and q.shape == (500, 17)
        assert (q.sum(-1) == 2**precision).all() and q.min() >= 1
    q = compression.quantize_probabilities(p)
    assert q[0, 3] == 2**24 - 16 and (np.delete(q[0], 3) == 1).all()
    # close to the probabilities: off by less than L units of 2^-24 each
    assert np.abs(q / 2**24 - p.numpy()).max() < 17 / 2**24
    # unnormalised tables are normalised first
    assert (compression.quantize_probabilities(np.array([2.0, 6.0]), 4) == [4, 12]).all()


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([0.5, -0.1, 0.6]), "non-negative"),
        (np.array([0.5, np.nan]), "finite"),
        (np.zeros((2, 3)), "positive total"),
        (np.array([1.0]), "at least 2 values"),
        ([0.5, 0.5], "tensor or numpy array"),
    ],
)
def test_quantize_rejects_bad_tables(bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        compression.quantize_probabilities(bad)


def test_quantize_rejects_too_small_precision():
    with pytest.raises(ValueError, match="precision"):
        compression.quantize_probabilities(np.ones(17), precision=5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_is_bit_exact(dtype):
    model = _model(dim=16, levels=17, dtype=dtype)
    model.train()
    x = _images(40, 16, 17, seed=3, dtype=dtype)
    x[0] = 0.0
    x[1] = 16.0  # images the model may find unlikely still round-trip
    words, tables = compression.encode(model, x)
    assert words.dtype == np.uint32 and tables.shape == (40, 16, 17)
    decoded = compression.decode(model, words, 40)
    assert decoded.dtype == dtype and torch.equal(decoded, x)
    assert model.training  # the mode is restored
    # the file's length is close to the tables' promise (constriction converts the
    # fractions q / 2^24 to its own fixed point, which may move a small entry a little)
    ideal = compression.ideal_bits(x, tables)
    assert abs(32 * len(words) - ideal) <= 0.02 * ideal + 64
    # and the tables are the model's probabilities, rounded
    p = model.probabilities(x).detach().double().numpy()
    assert np.abs(tables / 2**24 - p).max() < 17 / 2**24 + 1e-6


def test_round_trip_with_another_ordering():
    model = DiscretizedMAF(5, 4, hidden=(8,), seed=0).double()
    model.layer.conditioner.order.copy_(torch.tensor([2, 0, 4, 1, 3]))
    model.steps.copy_(torch.argsort(model.layer.conditioner.order))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    x = _images(10, 5, 4, seed=1)
    words, _ = compression.encode(model, x)
    assert torch.equal(compression.decode(model, words, 10), x)


def test_wrong_model_or_count_does_not_pass_silently():
    model = _model(dim=6, levels=5)
    x = _images(10, 6, 5)
    words, _ = compression.encode(model, x)
    other = _model(dim=6, levels=5, seed=7)
    try:
        wrong = compression.decode(other, words, 10)
    except ValueError:
        wrong = None
    assert wrong is None or not torch.equal(wrong, x)
    with pytest.raises(ValueError, match="left over"):
        compression.decode(model, words, 5)


def test_clear_errors():
    model = _model(dim=6, levels=5)
    with pytest.raises(ValueError, match="integers 0..4.*integer pixel values"):
        compression.encode(model, torch.full((2, 6), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="integers 0..4.*integer pixel values"):
        model.log_prob(torch.full((2, 6), 5.0, dtype=torch.float64))
    with pytest.raises(TypeError, match="float64 parameters"):
        model.log_prob(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="5 features"):
        model.log_prob(torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="DiscretizedMAF"):
        compression.encode(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    with pytest.raises(TypeError, match="uint32"):
        compression.decode(model, [1, 2], 1)
    with pytest.raises(ValueError, match="positive integer .the number of images"):
        compression.decode(model, np.zeros(2, dtype=np.uint32), 0)
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        DiscretizedMAF(4, 1)
