"""Lossless compression with a flow: exact discrete probabilities and an ANS bitstream
(chapter 11).

A density on dequantized pixels promises a code length, its bits per dimension; to write
a file, an entropy coder needs, for every pixel, the exact probability of each of its
``L`` values given what the decoder already knows. One MAF layer (chapter 7) gives them.
Its pixel ``x_i``, on the dequantized scale ``y = (x + u) / L``, is
``y_i = t_i + exp(s_i) z_i`` with ``z_i ~ N(0, 1)`` and ``(s_i, t_i)`` computed from the
pixels before it, so the conditional CDF of ``y_i`` is ``Phi((y - t_i) exp(-s_i))`` and the
value ``k`` has probability

    P(x_i = k | x_<i) = Phi((e_{k+1} - t_i) exp(-s_i)) - Phi((e_k - t_i) exp(-s_i)),

with bin edges ``e_k = k / L`` except ``e_0 = -inf`` and ``e_L = +inf``: the two outer
values take the Gaussian's tails, so the ``L`` probabilities sum to one exactly. The
earlier pixels enter the conditioner at their bin centres ``(x + 1/2) / L``.
``DiscretizedMAF`` is this model; it trains on the exact discrete log-likelihood.

The coder (``constriction``'s ANS coder, Duda 2009; Bamler 2022) works with integer
frequencies that sum to ``2^precision``: ``quantize_probabilities`` rounds each table to
such integers and gives every value at least 1, so that no pixel value is ever
unencodable. The coder receives them as the fractions ``q / 2^precision`` and converts
them to its own fixed point (``perfect=False``, its fast conversion, which also keeps every
value above zero and may move the smallest entries by a unit or so). ``encode`` and
``decode`` compute the tables in the same order, from the same inputs, so the decoder
reproduces every table bit for bit.

The stream is self-describing and checked, so that ``decode`` returns the images that were
encoded or raises: never other data. ``encode`` writes ``HEADER_WORDS`` words before the
ANS payload and one after it,

    [marker, N, D, L, model fingerprint, CRC32 of the images] + payload + [CRC32 of all before],

where the fingerprint is a CRC32 of everything that fixes the tables (the model's
architecture, dtype, parameters and buffers, and ``PRECISION``). ``decode`` checks the
final CRC first (a flipped bit, a truncated or extended stream), then the shape and the
fingerprint against its model (another model, or the same one after a parameter changed),
then that the payload is used up exactly and that the decoded images have the recorded
CRC32. These ``OVERHEAD_WORDS`` words (224 bits) are part of the file and of its size.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..flows.autoregressive import MAF
from ..validation import (
    FLOAT_DTYPES,
    check_batch,
    check_pixel_values,
    check_positive_int,
    module_dtype,
)

__all__ = [
    "DiscretizedMAF",
    "quantize_probabilities",
    "encode",
    "decode",
    "ideal_bits",
    "PRECISION",
    "HEADER_WORDS",
    "OVERHEAD_WORDS",
    "model_fingerprint",
]

PRECISION = 24  # constriction's default ANS coder: probabilities in units of 2^-24


MAGIC = 0x4E464301  # "NFC" and format version 1: the first word of every stream
HEADER_WORDS = 6  # marker, N, D, L, model fingerprint, CRC32 of the images
OVERHEAD_WORDS = HEADER_WORDS + 1  # and the CRC32 of the whole stream, at the end

_FAR = 1e4  # the outer bin edges, in standard deviations


class DiscretizedMAF(nn.Module):
    """An exact discrete model of images whose pixels are integers ``0, ..., L - 1``: one
    MAF layer whose Gaussian conditionals are integrated over the pixel bins.

    Args:
        dim: the number of pixels ``D``.
        levels: the number of pixel values ``L``.
        hidden: the MADE's hidden widths.
        scale_bound: the largest log-scale; a large bound lets a conditional be sharp
            enough to put most of its mass on one bin of width ``1 / L``.
        seed: initial weights (see ``nfcourse.seeding``).
    """

    def __init__(
        self,
        dim: int,
        levels: int,
        hidden: Sequence[int] = (64,),
        scale_bound: float = 6.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(
                f"levels must be an integer >= 2 (pixels 0..levels-1), got {levels!r}"
            )
        self.layer = MAF(dim, hidden, scale_bound=scale_bound, seed=seed)
        self.dim = dim
        self.levels = levels
        # positions in the autoregressive order: pixel steps[p] is the p-th to be coded
        self.register_buffer("steps", torch.argsort(self.layer.order))

    def _check_pixels(self, x: Tensor, name: str = "x") -> Tensor:
        """Check that ``x`` is a ``(N, D)`` float tensor of integers ``0..L-1`` in the
        model's dtype."""
        check_batch(x, self.dim, name, dtype=module_dtype(self), owner="the model")
        return check_pixel_values(
            x,
            name,
            self.levels - 1,
            integers=True,
            fix="dequantized or rescaled images? pass the integer pixel values",
        )

    def _log_probabilities(self, known: Tensor, pixel: int | None = None) -> Tensor:
        """``(N, D, L)`` log-probability tables from ``known``, the pixels the conditioner
        may see, at their bin centres (unseen pixels may hold anything: the masks ignore
        them); ``(N, L)`` for one ``pixel`` only."""
        s, t = self.layer._params(known)
        if pixel is not None:
            s, t = s[:, pixel], t[:, pixel]
        inner = torch.arange(1, self.levels, dtype=known.dtype, device=known.device) / self.levels
        a = (inner - t.unsqueeze(-1)) * torch.exp(-s).unsqueeze(-1)  # (N, D, L - 1)
        # The outer edges at -+_FAR standard deviations: the Gaussian's mass beyond them is
        # below the smallest float64, and they keep every gradient finite.
        far = torch.full_like(a[..., :1], _FAR)
        lo = torch.cat([-far, a], dim=-1)
        hi = torch.cat([a, far], dim=-1)
        # log(Phi(hi) - Phi(lo)) from the nearer tail: a bin above the mean is reflected,
        # Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi), so that log_ndtr stays accurate.
        flip = (lo + hi) > 0
        lo, hi = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
        log_hi = torch.special.log_ndtr(hi)
        return log_hi + torch.log(-torch.expm1(torch.special.log_ndtr(lo) - log_hi))

    def centres(self, x: Tensor) -> Tensor:
        """Bin centres ``(x + 1/2) / L`` of integer pixels."""
        return (x + 0.5) / self.levels

    def probabilities(self, x: Tensor) -> Tensor:
        """``P(x_i = k | x_<i)`` for every image, pixel and value: shape ``(N, D, L)``,
        summing to one over the last axis (one pass of the MADE)."""
        return self._log_probabilities(self.centres(self._check_pixels(x))).exp()

    def log_prob(self, x: Tensor) -> Tensor:
        """The exact discrete log-probability ``log P(x)`` of each image, in nats, ``(N,)``."""
        log_p = self._log_probabilities(self.centres(self._check_pixels(x)))
        return log_p.gather(-1, x.long().unsqueeze(-1)).squeeze(-1).sum(dim=1)


def quantize_probabilities(
    probabilities: Tensor | np.ndarray, precision: int = PRECISION
) -> np.ndarray:
    """Round probability tables (last axis: the ``L`` values) to integers that sum to
    ``2^precision`` in every table, each at least 1.

    Every value first gets 1; the remaining ``2^precision - L`` units are shared in
    proportion to the probabilities, rounding down, and what rounding down left over goes
    to the most likely value. Returns an ``int64`` array of the same shape.
    """
    if isinstance(probabilities, Tensor):
        probabilities = probabilities.detach().cpu().double().numpy()
    if not isinstance(probabilities, np.ndarray):
        raise TypeError(
            f"probabilities must be a tensor or numpy array of shape (..., L), "
            f"got {type(probabilities).__name__}"
        )
    p = probabilities.astype(np.float64)
    if p.ndim < 1 or p.shape[-1] < 2:
        raise ValueError(
            f"probabilities must have at least 2 values on the last axis, got shape {p.shape}"
        )
    if (
        isinstance(precision, bool)
        or not isinstance(precision, int)
        or not 2**precision >= 2 * p.shape[-1]
        or precision > 32
    ):
        raise ValueError(
            f"precision must be an integer with 2 * L <= 2^precision and at "
            f"most 32 (L = {p.shape[-1]} values), got {precision!r}"
        )
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError(
            "probabilities must be finite and non-negative; got "
            f"values in [{np.nanmin(p):.3g}, {np.nanmax(p):.3g}]"
            + (" and NaN" if np.isnan(p).any() else "")
        )
    totals = p.sum(axis=-1, keepdims=True)
    if (totals <= 0).any():
        raise ValueError("every probability table needs a positive total; got a table of zeros")
    total = 2**precision
    levels = p.shape[-1]
    q = 1 + np.floor(p / totals * (total - levels)).astype(np.int64)
    left = total - q.sum(axis=-1, keepdims=True)
    top = np.argmax(q, axis=-1)[..., None]
    np.put_along_axis(q, top, np.take_along_axis(q, top, axis=-1) + left, axis=-1)
    return q


def ideal_bits(x: Tensor, frequencies: np.ndarray, precision: int = PRECISION) -> float:
    """The code length, in bits, that the integer tables promise for the pixels ``x``:
    ``sum -log2(q / 2^precision)`` of each pixel's own value."""
    k = x.long().cpu().numpy()[..., None]
    q = np.take_along_axis(frequencies, k, axis=-1)
    return float(precision * q.size - np.log2(q).sum())


@torch.no_grad()
def _tables(model: DiscretizedMAF, step: int, known: Tensor) -> np.ndarray:
    pixel = int(model.steps[step])
    return quantize_probabilities(model._log_probabilities(known, pixel).exp())


def _check_model(model: object) -> DiscretizedMAF:
    if not isinstance(model, DiscretizedMAF):
        raise TypeError(f"model must be a DiscretizedMAF, got {type(model).__name__}")
    return model


def _crc32(data: bytes, start: int = 0) -> int:
    return zlib.crc32(data, start) & 0xFFFFFFFF


def model_fingerprint(model: DiscretizedMAF) -> int:
    """A CRC32 of everything that fixes the coding tables: the model's architecture (its
    ``repr``, with ``scale_bound`` and the MADE's widths), its dtype, every parameter and
    buffer bit for bit, and ``PRECISION``. Two models that could give different tables get
    different fingerprints, except with probability about ``2^-32``."""
    model = _check_model(model)
    crc = _crc32(f"{model!r}|precision={PRECISION}".encode())
    for name, tensor in model.state_dict().items():
        array = tensor.detach().cpu().contiguous().numpy()
        crc = _crc32(f"|{name}:{array.dtype.str}:{array.shape}|".encode(), crc)
        crc = _crc32(array.astype(array.dtype.newbyteorder("<")).tobytes(), crc)
    return crc


def _images_crc(x: Tensor) -> int:
    return _crc32(x.detach().cpu().long().numpy().astype("<i8").tobytes())


def _stream_crc(words: np.ndarray) -> int:
    return _crc32(words.astype("<u4").tobytes())


def encode(model: DiscretizedMAF, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Compress the images ``x`` (``(N, D)``, integer pixels) into a checked bitstream.

    Returns ``(words, frequencies)``: the stream as ``uint32`` words (a header of
    ``HEADER_WORDS`` words with ``N``, ``D``, ``L``, the model's fingerprint and a CRC32 of
    the images, the ANS payload, and a CRC32 of all of it; see the module docstring) and
    the integer tables used, ``(N, D, L)``. The pixels are pushed on the ANS stack last one
    first, so that ``decode`` pops them in the order it can compute their tables."""
    import constriction

    model = _check_model(model)
    model._check_pixels(x, "x")
    was_training = model.training
    model.eval()
    known = torch.zeros_like(x)
    frequencies = np.empty((len(x), model.dim, model.levels), dtype=np.int64)
    for step in range(model.dim):  # the decoder's order, and the decoder's inputs
        pixel = int(model.steps[step])
        frequencies[:, pixel] = _tables(model, step, known)
        known[:, pixel] = model.centres(x[:, pixel])
    model.train(was_training)
    coder = constriction.stream.stack.AnsCoder()
    family = constriction.stream.model.Categorical(perfect=False)
    symbols = x.long().cpu().numpy().astype(np.int32)
    scale = 2.0**PRECISION
    for step in reversed(range(model.dim)):
        pixel = int(model.steps[step])
        coder.encode_reverse(symbols[:, pixel], family, frequencies[:, pixel] / scale)
    header = [MAGIC, len(x), model.dim, model.levels, model_fingerprint(model), _images_crc(x)]
    if max(header) > 0xFFFFFFFF:
        raise ValueError(
            f"x holds {len(x)} images of {model.dim} pixels; a stream's header records "
            "counts below 2^32: encode the images in smaller batches"
        )
    body = np.concatenate([np.array(header, dtype=np.uint32), coder.get_compressed()])
    words = np.append(body, np.uint32(_stream_crc(body)))
    return words, frequencies


def _check_words(words: object) -> np.ndarray:
    if not isinstance(words, np.ndarray) or words.dtype != np.uint32 or words.ndim != 1:
        raise TypeError(
            f"words must be the 1-D uint32 numpy array that encode returned, "
            f"got {type(words).__name__} "
            f"{getattr(words, 'dtype', '')} {getattr(words, 'shape', '')}"
        )
    if len(words) < OVERHEAD_WORDS:
        raise ValueError(
            f"words holds {len(words)} words, but a stream from encode has a "
            f"{HEADER_WORDS}-word header, an ANS payload and a checksum word (at least "
            f"{OVERHEAD_WORDS} words): the stream is empty or truncated; pass the whole "
            "array that encode returned"
        )
    if int(words[0]) != MAGIC:
        raise ValueError(
            f"words does not start with the stream marker {MAGIC:#010x} (got "
            f"{int(words[0]):#010x}): not a stream written by encode, or one corrupted or "
            "truncated at its start; pass the array that encode returned, unchanged"
        )
    stored, actual = int(words[-1]), _stream_crc(words[:-1])
    if stored != actual:
        raise ValueError(
            f"words fails its checksum (CRC32 {actual:#010x} of the first "
            f"{len(words) - 1} words, {stored:#010x} recorded in the last word): the "
            "stream was corrupted, truncated or extended; pass the array that encode "
            "returned, unchanged"
        )
    return words


def decode(model: DiscretizedMAF, words: np.ndarray, n: int | None = None) -> Tensor:
    """Recover the images from the ``uint32`` words written by ``encode`` with the same
    model; returns an ``(N, D)`` tensor of integer pixels in the model's dtype.

    The header records ``N``, so ``n`` is optional; when given it must equal ``N``. Every
    mismatch raises a ``ValueError`` before any image is returned: a stream corrupted,
    truncated or extended (the final CRC32), a stream of another shape or another model
    (the header's ``D``, ``L`` and fingerprint), a payload not used up exactly, or decoded
    images whose CRC32 differs from the one recorded at encoding."""
    import constriction

    model = _check_model(model)
    words = _check_words(words)
    _, count, dim, levels, fingerprint, images_crc = (int(w) for w in words[:HEADER_WORDS])
    if n is not None:
        n = check_positive_int(n, "n", "the number of images encoded")
        if n != count:
            raise ValueError(
                f"n={n}, but the stream's header records {count} images: pass n={count}, "
                "or leave n out (the header holds the count)"
            )
    if (dim, levels) != (model.dim, model.levels):
        raise ValueError(
            f"words holds images of {dim} pixels with {levels} levels, but the model "
            f"codes {model.dim} pixels with {model.levels} levels: decode with the model "
            "that encoded the stream"
        )
    if fingerprint != model_fingerprint(model):
        raise ValueError(
            f"words was encoded by another model (fingerprint {fingerprint:#010x}; this "
            f"model's is {model_fingerprint(model):#010x}): its parameters, buffers, dtype "
            "or architecture differ, so its tables would decode other images; decode with "
            "the very model, in the same dtype, that encoded the stream"
        )
    dtype = module_dtype(model) or torch.float32
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"the model must have float32 or float64 parameters, got {dtype}")
    device = model.steps.device
    was_training = model.training
    model.eval()
    coder = constriction.stream.stack.AnsCoder(words[HEADER_WORDS:-1].copy())
    family = constriction.stream.model.Categorical(perfect=False)
    known = torch.zeros(count, model.dim, dtype=dtype, device=device)
    out = torch.zeros(count, model.dim, dtype=dtype, device=device)
    scale = 2.0**PRECISION
    try:
        for step in range(model.dim):
            pixel = int(model.steps[step])
            table = _tables(model, step, known)
            values = coder.decode(family, table / scale)
            out[:, pixel] = torch.as_tensor(values.astype(np.int64), dtype=dtype, device=device)
            known[:, pixel] = model.centres(out[:, pixel])
    finally:
        model.train(was_training)
    if not coder.is_empty():
        raise ValueError(
            f"words has ANS payload left over after decoding the {count} images its header "
            "records: the tables this model computes differ from the encoder's; decode "
            "with the model, dtype and device that encoded the stream"
        )
    if _images_crc(out) != images_crc:
        raise ValueError(
            f"the decoded images' CRC32 {_images_crc(out):#010x} differs from the "
            f"{images_crc:#010x} recorded at encoding: the tables this model computes "
            "differ from the encoder's; decode with the model, dtype and device that "
            "encoded the stream"
        )
    return out
