"""Data augmentation with a class-conditional flow (chapter 12).

With few labelled digits per class, fit a class-conditional flow ``q(x | y)`` to them,
draw new digits of every class, and train the classifier on real and generated digits
together. The flow works in a small principal-component code of the labelled digits
(``PCACode``): with ten digits per class, a flow on all 64 pixels has far more directions
than data. A class-conditional Gaussian in the same code (``gaussian_samples``) is the
control: a flow should beat it to be worth its cost.

The classifier is multinomial logistic regression on the pixels (scikit-learn).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..flows.autoregressive import maf_flow
from ..seeding import generator as make_generator
from ..training import fit_maximum_likelihood
from ..validation import check_batch, check_positive_int

__all__ = [
    "N_CLASSES",
    "load_labelled_digits",
    "few_labels_split",
    "one_hot",
    "PCACode",
    "flow_samples",
    "gaussian_samples",
    "classifier_accuracy",
]

N_CLASSES = 10


def load_labelled_digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 digits: pixels ``(N, 64)`` as float32 in ``0..16`` and labels
    ``(N,)`` as int64."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (
        torch.from_numpy(data.data).to(torch.float32),
        torch.from_numpy(data.target).to(torch.long),
    )


def few_labels_split(
    labels: Tensor, per_class: int, n_test: int = 700, seed: int = 0, test_seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Indices ``(train, test)``: a fixed test set of ``n_test`` digits (``test_seed``)
    and ``per_class`` labelled training digits of each class drawn from the rest
    (``seed``, one draw per trial)."""
    per_class = check_positive_int(per_class, "per_class")
    _check_labels(labels)
    n = labels.shape[0]
    n_test = check_positive_int(n_test, "n_test", "a number of test digits")
    if not n_test < n:
        raise ValueError(f"n_test must be between 1 and {n - 1}, got {n_test!r}")
    perm = torch.randperm(n, generator=make_generator(test_seed))
    test, pool = perm[:n_test], perm[n_test:]
    g = make_generator(seed)
    train = []
    for k in range(N_CLASSES):
        members = pool[labels[pool] == k]
        if len(members) < per_class:
            raise ValueError(
                f"class {k} has only {len(members)} digits outside the test "
                f"set; ask for per_class <= {len(members)}"
            )
        train.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return torch.cat(train), test


def _check_labels(labels: object) -> None:
    if (
        not isinstance(labels, Tensor)
        or labels.dim() != 1
        or labels.is_floating_point()
        or labels.dtype == torch.bool
    ):
        raise ValueError(
            f"labels must be a 1D integer tensor of class labels 0..{N_CLASSES - 1}, got "
            f"{labels!r}; convert it with torch.as_tensor(labels, dtype=torch.long)"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= N_CLASSES):
        raise ValueError(
            f"labels must lie in 0..{N_CLASSES - 1}, got values in "
            f"{int(labels.min())}..{int(labels.max())}"
        )


def one_hot(labels: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(B,)`` class labels to ``(B, 10)`` one-hot rows (the flow's context)."""
    _check_labels(labels)
    return torch.nn.functional.one_hot(labels, N_CLASSES).to(dtype)


class PCACode:
    """A principal-component code of dimension ``dim``, fitted to ``x`` ``(N, D)``:
    ``encode(x) = (x - mean) V / scale`` has unit variance per component on ``x``, and
    ``decode`` maps a code back to the ``D`` pixels."""

    def __init__(self, x: Tensor, dim: int) -> None:
        x = check_batch(x, None, "x").double()
        dim = check_positive_int(dim, "dim")
        if dim > min(x.shape):
            raise ValueError(f"dim must be at most min(N, D) = {min(x.shape)}, got {dim}")
        self.mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - self.mean, full_matrices=False)
        self.components = vh[:dim].T  # (D, dim)
        self.scale = s[:dim] / max(x.shape[0] - 1, 1) ** 0.5
        self.dim = dim

    def encode(self, x: Tensor) -> Tensor:
        """``(B, D)`` points to ``(B, dim)`` codes, float32."""
        x = check_batch(x, len(self.mean), "x", owner="this PCA code")
        return ((x.double() - self.mean) @ self.components / self.scale).float()

    def decode(self, code: Tensor) -> Tensor:
        """``(B, dim)`` codes to ``(B, D)`` points, float32."""
        code = check_batch(code, self.dim, "code", owner="this PCA code")
        return (code.double() * self.scale @ self.components.T + self.mean).float()


def _labels_for(per_class: int) -> Tensor:
    return torch.arange(N_CLASSES).repeat_interleave(per_class)


def flow_samples(
    x: Tensor,
    y: Tensor,
    per_class: int,
    code_dim: int = 12,
    n_layers: int = 3,
    hidden: tuple[int, ...] = (64,),
    steps: int = 400,
    lr: float = 3e-3,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Fit a class-conditional MAF to the PCA codes of the labelled digits ``(x, y)`` and
    return ``per_class`` new digits of each class, pixels clipped to ``0..16``, with their
    labels."""
    code = PCACode(x, code_dim)
    flow = maf_flow(code_dim, n_layers=n_layers, hidden=hidden, seed=seed, context_dim=N_CLASSES)
    fit_maximum_likelihood(
        flow,
        code.encode(x),
        steps,
        batch_size=len(x),
        lr=lr,
        seed=seed,
        context=one_hot(y),
        progress=False,
    )
    labels = _labels_for(per_class)
    with torch.no_grad():
        z = flow.sample(
            per_class, one_hot(torch.arange(N_CLASSES)), generator=make_generator(seed + 1)
        )
    return code.decode(z).clamp(0, 16), labels


def gaussian_samples(
    x: Tensor, y: Tensor, per_class: int, code_dim: int = 12, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """The control: in the same PCA code, a Gaussian per class with the class mean and
    the covariance pooled over the classes; ``per_class`` new digits of each class."""
    code = PCACode(x, code_dim)
    c = code.encode(x).double()
    means = torch.stack([c[y == k].mean(0) for k in range(N_CLASSES)])
    resid = c - means[y]
    cov = resid.T @ resid / max(len(c) - N_CLASSES, 1)
    chol = torch.linalg.cholesky(cov + 1e-6 * torch.eye(code_dim, dtype=torch.float64))
    labels = _labels_for(per_class)
    eps = torch.randn(
        len(labels), code_dim, generator=make_generator(seed + 1), dtype=torch.float64
    )
    return code.decode(means[labels] + eps @ chol.T).clamp(0, 16), labels


def classifier_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor) -> float:
    """Test accuracy of multinomial logistic regression trained on ``(train_x,
    train_y)``, pixels scaled to ``[0, 1]``."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=2000, C=1.0)
    model.fit(np.asarray(train_x / 16.0), np.asarray(train_y))
    return float(model.score(np.asarray(test_x / 16.0), np.asarray(test_y)))
