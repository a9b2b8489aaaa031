"""Anomaly and out-of-distribution detection with a density model (chapter 11).

A score ``s(x)`` ranks inputs from ordinary (low) to anomalous (high). Three scores:

* the negative log-likelihood, ``s(x) = -log p(x)``;
* a likelihood ratio against a background model ``p_0``,
  ``s(x) = -(log p(x) - log p_0(x))`` (Ren et al. 2019; Schirrmeister et al. 2020): what
  both models find easy, such as a flat image, cancels;
* a typicality score, ``s(x) = |-log p(x) - H|`` with ``H`` the mean negative
  log-likelihood of the training data (Nalisnick et al. 2019, "Detecting
  out-of-distribution inputs to deep generative models using typicality", for a batch of
  one): an input far *more* likely than the training data is as suspect as one far less.

``roc_auc`` measures how well a score separates in-distribution inputs (negatives) from
out-of-distribution inputs (positives): the probability that a random positive scores
above a random negative, ties counting one half (Mann-Whitney). 1 is perfect, 0.5 is
chance, and below 0.5 the score ranks the wrong way round.

The rest builds out-of-distribution images on the grid of scikit-learn's 8 x 8 digits
(integers ``0, ..., L - 1``): uniform noise, simple shapes, transformed digits, constant
images and blurred digits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..validation import FLOAT_DTYPES, check_batch, check_positive_int

__all__ = [
    "roc_auc",
    "roc_curve",
    "likelihood_ratio_score",
    "typicality_score",
    "noise_images",
    "shape_images",
    "transform_images",
    "constant_images",
    "blur_images",
]


def _scores(x: object, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{name} must hold floating-point scores, got a {x.dtype} "
                "tensor; convert it with .double()"
            )
        x = x.detach().cpu().numpy()
    elif not isinstance(x, np.ndarray):
        raise TypeError(
            f"{name} must be a 1-D torch.Tensor or numpy array of scores, got {type(x).__name__}"
        )
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of scores (one per input), got shape "
            f"{x.shape}; flatten it or pass one score per input"
        )
    if x.size == 0:
        raise ValueError(f"{name} is empty; pass at least one score")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x))
        raise ValueError(
            f"{name} holds non-finite scores (NaN or inf) at {bad[:5].tolist()};"
            " a log-likelihood of -inf means the model gives the input zero "
            "density: clip it or use a model with full support"
        )
    return x


def roc_auc(scores_in: Tensor | np.ndarray, scores_out: Tensor | np.ndarray) -> float:
    """Area under the ROC curve of a score that should be higher for out-of-distribution
    inputs: ``P(s_out > s_in) + P(s_out = s_in) / 2`` over all pairs.

    Args:
        scores_in: 1-D scores of in-distribution inputs (the negatives).
        scores_out: 1-D scores of out-of-distribution inputs (the positives).
    """
    s_in = _scores(scores_in, "scores_in")
    s_out = _scores(scores_out, "scores_out")
    # Mann-Whitney: average ranks over the pooled scores (ties share their mean rank).
    pooled = np.concatenate([s_in, s_out])
    order = np.argsort(pooled, kind="mergesort")
    sorted_scores = pooled[order]
    ranks = np.empty(len(pooled))
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(pooled)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = 0.5 * (start + end - 1) + 1
    n_in, n_out = len(s_in), len(s_out)
    rank_sum = ranks[n_in:].sum()
    return float((rank_sum - n_out * (n_out + 1) / 2) / (n_in * n_out))


def roc_curve(
    scores_in: Tensor | np.ndarray, scores_out: Tensor | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve: false-positive rates and true-positive rates of the rule
    "out-of-distribution when the score is at least t", for every threshold ``t`` from
    above the highest score down to the lowest. Both arrays start at 0 and end at 1."""
    s_in = _scores(scores_in, "scores_in")
    s_out = _scores(scores_out, "scores_out")
    thresholds = np.unique(np.concatenate([s_in, s_out]))[::-1]
    fpr = np.r_[0.0, [(s_in >= t).mean() for t in thresholds]]
    tpr = np.r_[0.0, [(s_out >= t).mean() for t in thresholds]]
    return fpr, tpr


def likelihood_ratio_score(log_p: Tensor, log_p_background: Tensor) -> Tensor:
    """``-(log p(x) - log p_0(x))``: high when the model explains ``x`` no better than the
    background model does. Both arguments are 1-D tensors of log-likelihoods of the same
    inputs."""
    log_p = _log_likelihoods(log_p, "log_p", "log-likelihoods", bad=math.inf)
    log_p_background = _log_likelihoods(
        log_p_background, "log_p_background", "log-likelihoods", bad=math.inf
    )
    if log_p.shape != log_p_background.shape:
        raise ValueError(
            f"log_p and log_p_background must score the same inputs: got "
            f"{len(log_p)} and {len(log_p_background)} values"
        )
    both = (log_p == -math.inf) & (log_p_background == -math.inf)
    if bool(both.any()):
        raise ValueError(
            f"log_p and log_p_background are both -inf at {_positions(both)}: both models "
            "give these inputs zero density and their ratio is undefined; drop them or use "
            "models with full support"
        )
    return log_p_background - log_p


def _positions(mask: Tensor) -> str:
    rows = mask.nonzero().flatten()
    return str(rows[:5].tolist()) + (" ..." if len(rows) > 5 else "")


def _log_likelihoods(value: object, name: str, what: str, bad: float) -> Tensor:
    """A non-empty 1-D float tensor without NaN and without the value ``bad`` (``+inf``
    for log-likelihoods, ``-inf`` for negative log-likelihoods; the other infinity is a
    zero density, a legitimate value)."""
    if not isinstance(value, Tensor) or value.dim() != 1 or value.numel() == 0:
        raise TypeError(
            f"{name} must be a non-empty 1-D tensor of {what}, one per input, got "
            f"{type(value).__name__} of shape {tuple(getattr(value, 'shape', ()))}"
        )
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must hold float32 or float64 {what}, got {value.dtype}; "
            "convert it with .double()"
        )
    wrong = torch.isnan(value) | (value == bad)
    if bool(wrong.any()):
        raise ValueError(
            f"{name} holds NaN or {bad:+} at {_positions(wrong)}; {what} must be finite "
            f"(or {-bad:+} for an input of zero density): check the model's output there"
        )
    return value


def typicality_score(nll: Tensor, train_nll: Tensor) -> Tensor:
    """``|nll - H|`` with ``H`` the mean of ``train_nll``, the negative log-likelihoods of
    the training data: the distance of each input's NLL from the typical one."""
    nll = _log_likelihoods(nll, "nll", "negative log-likelihoods", bad=-math.inf)
    train_nll = _log_likelihoods(train_nll, "train_nll", "negative log-likelihoods", -math.inf)
    if not bool(torch.isfinite(train_nll).all()):
        raise ValueError(
            f"train_nll holds +inf at {_positions(~torch.isfinite(train_nll))}: the model "
            "gives training inputs zero density and their mean H is infinite; fix the "
            "model before scoring"
        )
    return (nll - train_nll.mean()).abs()


# --- out-of-distribution images on a small grid ---------------------------------------------


def _check_grid(side: int, levels: int) -> None:
    if check_positive_int(side, "side") < 2:
        raise ValueError(f"side must be an integer >= 2 (the image is side x side), got {side}")
    if check_positive_int(levels, "levels", "the number of grey levels") < 2:
        raise ValueError(f"levels must be an integer >= 2 (pixels 0..levels-1), got {levels}")


def noise_images(
    n: int, side: int = 8, levels: int = 17, generator: torch.Generator | None = None
) -> Tensor:
    """``n`` images of independent uniform pixels in ``{0, ..., levels - 1}``, shape
    ``(n, side * side)``, float32."""
    n = check_positive_int(n, "n")
    _check_grid(side, levels)
    return torch.randint(levels, (n, side * side), generator=generator).float()


def shape_images(
    n: int, side: int = 8, levels: int = 17, generator: torch.Generator | None = None
) -> Tensor:
    """``n`` images of one simple shape each, drawn at full intensity ``levels - 1`` on a
    black background at a random place and size: a filled rectangle, a ring (the outline
    of a rectangle) or a disc, in turn. Shape ``(n, side * side)``, float32."""
    n = check_positive_int(n, "n")
    _check_grid(side, levels)
    rows = torch.arange(side).view(side, 1).float()
    cols = torch.arange(side).view(1, side).float()
    images = torch.zeros(n, side, side)
    for k in range(n):
        lo = torch.randint(0, side // 2, (2,), generator=generator)
        size = torch.randint(3, side - side // 4 + 1, (2,), generator=generator)
        r0, c0 = int(lo[0]), int(lo[1])
        r1, c1 = min(side, r0 + int(size[0])), min(side, c0 + int(size[1]))
        box = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
        if k % 3 == 0:
            mask = box
        elif k % 3 == 1:
            inner = (rows > r0) & (rows < r1 - 1) & (cols > c0) & (cols < c1 - 1)
            mask = box & ~inner
        else:
            cr, cc = (r0 + r1 - 1) / 2, (c0 + c1 - 1) / 2
            radius = min(r1 - r0, c1 - c0) / 2
            mask = (rows - cr) ** 2 + (cols - cc) ** 2 <= radius**2
        images[k][mask] = levels - 1
    return images.view(n, side * side)


def _as_images(x: Tensor, name: str) -> tuple[Tensor, int]:
    if not isinstance(x, Tensor) or x.dtype not in FLOAT_DTYPES or x.dim() != 2:
        raise TypeError(
            f"{name} must be a float tensor of flattened square images, shape "
            f"(N, side * side), got {type(x).__name__} of shape "
            f"{tuple(getattr(x, 'shape', ()))}"
        )
    check_batch(x, None, name)
    side = int(round(x.shape[1] ** 0.5))
    if side * side != x.shape[1]:
        raise ValueError(
            f"{name} must hold square images, (N, side * side) pixels; "
            f"{x.shape[1]} is not a square"
        )
    return x.view(len(x), side, side), side


TRANSFORMS = ("flip", "rotate", "invert")


def transform_images(x: Tensor, kind: str, levels: int = 17) -> Tensor:
    """Digits turned into something else: ``"flip"`` upside down, ``"rotate"`` by 90
    degrees, ``"invert"`` (``levels - 1 - x``, white on black becomes black on white)."""
    images, side = _as_images(x, "x")
    if check_positive_int(levels, "levels", "the number of grey levels") < 2:
        raise ValueError(f"levels must be an integer >= 2 (pixels 0..levels-1), got {levels}")
    if kind == "flip":
        out = images.flip(1)
    elif kind == "rotate":
        out = images.rot90(1, dims=(1, 2))
    elif kind == "invert":
        out = (levels - 1) - images
    else:
        raise ValueError(f"kind must be one of {TRANSFORMS}, got {kind!r}")
    return out.reshape(len(x), side * side)


def constant_images(values: Tensor | list[int], side: int = 8, levels: int = 17) -> Tensor:
    """One constant image per value in ``values`` (integers in ``0..levels - 1``), shape
    ``(len(values), side * side)``, float32. All zeros is a blank image."""
    _check_grid(side, levels)
    v = torch.as_tensor(values, dtype=torch.float32).flatten()
    if v.numel() == 0 or bool(((v < 0) | (v > levels - 1) | (v != v.round())).any()):
        raise ValueError(
            f"values must be integers in 0..{levels - 1}, at least one, got {v.tolist()}"
        )
    return v.view(-1, 1).expand(-1, side * side).clone()


def blur_images(x: Tensor, passes: int = 1) -> Tensor:
    """Digits smoothed by ``passes`` passes of a 3 x 3 box filter (zero padding), rounded
    back to integers: the same digits with less detail."""
    images, side = _as_images(x, "x")
    passes = check_positive_int(passes, "passes")
    out = images.unsqueeze(1)
    kernel = torch.ones(1, 1, 3, 3, dtype=x.dtype) / 9
    for _ in range(passes):
        out = torch.nn.functional.conv2d(out, kernel, padding=1)
    return out.round().reshape(len(x), side * side)
