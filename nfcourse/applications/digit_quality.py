"""Measuring generated digits with a classifier (chapter 9).

A sample of an image model is a good digit when a classifier trained on real digits
recognises it without hesitation. ``DigitClassifier`` is a small convolutional network
trained on the shipped 28 x 28 training digits and their labels by
``fit_digit_classifier`` (``tools/train_digit_classifier.py`` trains the copy that ships
with the package, ``nfcourse.pretrained.pretrained_digit_classifier``);
``confident_share`` is the share of images to which it gives a top-class probability of
at least 0.9, the measure chapter 9 prints for the samples of a flow beside the same share
for real test digits. ``frechet_distance`` compares two sets of
images in the classifier's hidden features (the Frechet distance of Gaussians fitted to
the features, as in FID, Heusel et al. 2017, with this small classifier in place of an
Inception network).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..seeding import generator as make_generator
from ..seeding import seeded
from ..validation import check_positive_int

__all__ = ["DigitClassifier", "fit_digit_classifier", "confident_share", "frechet_distance"]

N_PIXELS, N_CLASSES = 784, 10


def _flat_images(images: object, name: str = "images") -> Tensor:
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise TypeError(
            f"{name} must be a float tensor of 28 x 28 images with grey levels in [0, 1], "
            f"shape (N, 784) or (N, 1, 28, 28); got "
            f"{images.dtype if isinstance(images, Tensor) else type(images).__name__}"
        )
    if images.numel() == 0 or images[0].numel() != N_PIXELS:
        raise ValueError(
            f"{name} must hold 28 x 28 images, shape (N, 784) or (N, 1, 28, 28); got shape "
            f"{tuple(images.shape)}"
        )
    flat = images.reshape(len(images), N_PIXELS)
    if not torch.isfinite(flat).all():
        raise ValueError(f"{name} holds NaN or infinite pixels")
    return flat


class DigitClassifier(nn.Module):
    """Two 5 x 5 convolutions of stride 2 (16 and 32 channels, ReLU) take a 28 x 28 image
    to 32 x 7 x 7 numbers; a hidden layer of 64 units (ReLU) gives the ``features`` and a
    linear layer the 10 logits. Images come as ``(N, 784)`` or ``(N, 1, 28, 28)`` grey
    levels in ``[0, 1]``."""

    def __init__(self) -> None:
        super().__init__()
        self.convolutions = nn.Sequential(
            nn.Conv2d(1, 16, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.hidden = nn.Linear(32 * 7 * 7, 64)
        self.out = nn.Linear(64, N_CLASSES)

    def features(self, images: Tensor) -> Tensor:
        x = _flat_images(images).view(-1, 1, 28, 28).to(self.out.weight.dtype)
        return torch.relu(self.hidden(self.convolutions(x)))

    def forward(self, images: Tensor) -> Tensor:
        return self.out(self.features(images))


def _outliers(x: Tensor, n: int, noise: torch.Generator) -> Tensor:
    """``n`` images that are not digits: half uniform noise, half training digits with
    their pixels shuffled (the same ink, no strokes)."""
    half = n // 2
    uniform = torch.rand(half, N_PIXELS, generator=noise, dtype=x.dtype)
    picked = x[torch.randint(len(x), (n - half,), generator=noise)]
    order = torch.rand(n - half, N_PIXELS, generator=noise).argsort(dim=1)
    return torch.cat([uniform, picked.gather(1, order)])


def fit_digit_classifier(
    images: Tensor,
    labels: Tensor,
    steps: int = 3000,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    outlier_exposure: bool = True,
    seed: int = 0,
) -> DigitClassifier:
    """A ``DigitClassifier`` trained by Adam on the cross-entropy of ``(images, labels)``
    (``load_mnist(with_labels=True)`` gives both), in evaluation mode.

    With ``outlier_exposure`` (Hendrycks et al. 2019), every batch also holds half as many
    images that are not digits (uniform noise and digits with shuffled pixels), whose
    target is the uniform distribution over the ten classes: the classifier learns to
    hesitate on them, so that a confident answer means a digit and not merely ink."""
    x = _flat_images(images)
    if not isinstance(labels, Tensor) or labels.shape != (len(x),) or labels.dtype != torch.long:
        raise ValueError(
            f"labels must be an int64 tensor of shape ({len(x)},), one digit 0-9 per image; "
            f"got {labels.dtype if isinstance(labels, Tensor) else type(labels).__name__}"
            + (f" of shape {tuple(labels.shape)}" if isinstance(labels, Tensor) else "")
        )
    if int(labels.min()) < 0 or int(labels.max()) >= N_CLASSES:
        raise ValueError(
            f"labels must be digits 0-9, got values from {int(labels.min())} to "
            f"{int(labels.max())}"
        )
    steps = check_positive_int(steps, "steps")
    with seeded(seed):
        model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    noise = make_generator(seed)
    for _ in range(steps):
        index = torch.randint(len(x), (batch_size,), generator=noise)
        loss = nn.functional.cross_entropy(model(x[index]), labels[index])
        if outlier_exposure:
            logits = model(_outliers(x, batch_size // 2, noise))
            loss = loss - 0.5 * logits.log_softmax(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def confident_share(classifier: DigitClassifier, images: Tensor, threshold: float = 0.9) -> float:
    """The share of ``images`` to which ``classifier`` gives a top-class probability of at
    least ``threshold``."""
    with torch.no_grad():
        top = classifier(images).softmax(-1).max(-1).values
    return float((top >= threshold).float().mean())


def frechet_distance(classifier: DigitClassifier, a: Tensor, b: Tensor) -> float:
    """``|m_a - m_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` for the means and covariances
    of the classifier's features of the image sets ``a`` and ``b`` (float64)."""
    with torch.no_grad():
        fa = classifier.features(a).double().numpy()
        fb = classifier.features(b).double().numpy()
    ma, mb = fa.mean(0), fb.mean(0)
    sa, sb = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    # tr (S_a S_b)^(1/2) = sum of the square roots of the eigenvalues of the symmetric
    # S_a^(1/2) S_b S_a^(1/2): stable when a covariance is singular (dead features)
    values, vectors = np.linalg.eigh(sa)
    root_a = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    cross = np.sqrt(np.linalg.eigvalsh(root_a @ sb @ root_a).clip(min=0)).sum()
    distance = ((ma - mb) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * cross
    return max(0.0, float(distance))  # >= 0; rounding can dip below by 1e-6
