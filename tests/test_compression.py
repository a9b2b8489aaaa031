"""Compression: exact discrete probabilities of a discretized MAF, integer tables that sum
to the coder's total with no zero, and a bit-exact round trip through the ANS coder."""

import copy
import math
import zlib

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
    # the payload's length is close to the tables' promise (constriction converts the
    # fractions q / 2^24 to its own fixed point, which may move a small entry a little);
    # the header and the checksum add exactly OVERHEAD_WORDS words
    ideal = compression.ideal_bits(x, tables)
    payload = len(words) - compression.OVERHEAD_WORDS
    assert abs(32 * payload - ideal) <= 0.02 * ideal + 64
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
    words, _ = compression.encode(model, _images(3, 6, 5))
    with pytest.raises(ValueError, match="positive integer .the number of images"):
        compression.decode(model, words, 0)
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        DiscretizedMAF(4, 1)


# A checked stream: decode returns exactly what was encoded, or raises.


def _stream(n=10, seed=0):
    model = _model(dim=6, levels=5, seed=seed)
    x = _images(n, 6, 5, seed=seed + 2)
    words, _ = compression.encode(model, x)
    return model, x, words


def _resealed(words):
    """The stream with its final CRC32 recomputed: a forger's edit that the checksum
    alone cannot see."""
    body = words[:-1].copy()
    return np.append(body, np.uint32(zlib.crc32(body.astype("<u4").tobytes())))


@pytest.mark.parametrize("n", [1, 2, 7, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decode_of_encode_is_exact_for_every_batch_size_and_needs_no_count(n, dtype):
    model = _model(dim=6, levels=5, dtype=dtype)
    x = _images(n, 6, 5, seed=n, dtype=dtype)
    words, _ = compression.encode(model, x)
    header = words[: compression.HEADER_WORDS]
    assert list(header[1:4]) == [n, 6, 5]
    assert int(header[4]) == compression.model_fingerprint(model)
    for decoded in (compression.decode(model, words), compression.decode(model, words, n)):
        assert decoded.dtype == dtype and torch.equal(decoded, x)


def _flip(words, position, bit):
    flipped = words.copy()
    flipped[position] ^= np.uint32(1 << bit)
    return flipped


# every header word, the payload's first, middle and last words, and the checksum word
POSITIONS = {
    **{f"header word {k}": k for k in range(compression.HEADER_WORDS)},
    "first payload word": compression.HEADER_WORDS,
    "middle payload word": "middle",
    "last payload word": -2,
    "checksum word": -1,
}


@pytest.mark.parametrize("bit", [0, 13, 31])
@pytest.mark.parametrize("where", list(POSITIONS))
def test_a_flipped_bit_anywhere_in_the_stream_raises(where, bit):
    model, x, words = _stream()
    position = POSITIONS[where]
    if position == "middle":
        position = (compression.HEADER_WORDS + len(words) - 1) // 2
    with pytest.raises(ValueError, match="words (fails its checksum|does not start)"):
        compression.decode(model, _flip(words, position, bit))


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda w: w[:-1], id="last word dropped"),
        pytest.param(lambda w: w[1:], id="first word dropped"),
        pytest.param(lambda w: np.delete(w, compression.HEADER_WORDS), id="payload word dropped"),
        pytest.param(lambda w: w[: compression.HEADER_WORDS], id="header only"),
        pytest.param(lambda w: w[:3], id="three words"),
    ],
)
def test_a_truncated_stream_raises(cut):
    model, _, words = _stream()
    with pytest.raises(ValueError, match="truncated"):
        compression.decode(model, cut(words))


def test_an_empty_stream_raises_whatever_n_says():
    model, _, _ = _stream()
    for n in (None, 1, 5):
        with pytest.raises(ValueError, match="holds 0 words.*empty or truncated"):
            compression.decode(model, np.zeros(0, dtype=np.uint32), n)


@pytest.mark.parametrize(
    "extend",
    [
        pytest.param(lambda w: np.append(w, np.uint32(0)), id="a zero word appended"),
        pytest.param(lambda w: np.append(w, w[-1]), id="the checksum repeated"),
        pytest.param(lambda w: np.concatenate([w, w]), id="two streams back to back"),
        pytest.param(
            lambda w: np.insert(w, compression.HEADER_WORDS, np.uint32(7)),
            id="a word inserted in the payload",
        ),
    ],
)
def test_an_extended_stream_raises(extend):
    model, _, words = _stream()
    with pytest.raises(ValueError, match="corrupted, truncated or extended"):
        compression.decode(model, extend(words))


@pytest.mark.parametrize("n", [5, 9, 11, 100])
def test_a_wrong_count_raises_and_names_the_recorded_one(n):
    model, _, words = _stream(n=10)
    with pytest.raises(ValueError, match=f"n={n}, but the stream's header records 10 images"):
        compression.decode(model, words, n)


def test_asking_an_untrained_model_for_more_images_than_encoded_raises():
    model = DiscretizedMAF(6, 5, hidden=(8,), seed=0).double()
    x = _images(3, 6, 5)
    words, _ = compression.encode(model, x)
    with pytest.raises(ValueError, match="records 3 images"):
        compression.decode(model, words, 4)


def _one_parameter_nudged(model):
    other = copy.deepcopy(model)
    with torch.no_grad():
        weight = next(other.parameters())
        weight.view(-1)[0] = torch.nextafter(weight.view(-1)[0], torch.tensor(math.inf))
    return other


def _rebound(model):
    other = DiscretizedMAF(6, 5, hidden=(8,), scale_bound=5.0, seed=0).double()
    other.load_state_dict(model.state_dict())
    return other


@pytest.mark.parametrize(
    "make_other, match",
    [
        pytest.param(lambda m: _model(dim=6, levels=5, seed=7), "another model", id="other seed"),
        pytest.param(_one_parameter_nudged, "another model", id="one parameter by one ulp"),
        pytest.param(lambda m: copy.deepcopy(m).float(), "another model", id="float32 copy"),
        pytest.param(_rebound, "another model", id="other scale_bound"),
        pytest.param(lambda m: _model(dim=7, levels=5), "7 pixels", id="other dimension"),
        pytest.param(lambda m: _model(dim=6, levels=4), "4 levels", id="other levels"),
    ],
)
def test_a_stream_decoded_with_another_model_raises(make_other, match):
    model, _, words = _stream()
    other = make_other(model)
    with pytest.raises(ValueError, match=match):
        compression.decode(other, words)
    assert torch.equal(compression.decode(model, words), _stream()[1])  # still decodes


def test_a_forged_header_is_caught_by_the_payload_and_image_checks():
    """Past the checksum and the fingerprint, decode still verifies what it returns: a
    header resealed with another model's fingerprint or another count decodes other
    images, which the leftover payload or the images' CRC32 expose."""
    model, _, words = _stream()
    other = _model(dim=6, levels=5, seed=7)
    forged = words.copy()
    forged[4] = compression.model_fingerprint(other)
    with pytest.raises(ValueError, match="left over|CRC32"):
        compression.decode(other, _resealed(forged))
    for count in (9, 11):
        forged = words.copy()
        forged[1] = count
        with pytest.raises(ValueError, match="left over|CRC32"):
            compression.decode(model, _resealed(forged))
