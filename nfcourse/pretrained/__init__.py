"""Pretrained weights shipped with the package, the records of how they were trained, and
their loaders.

* ``digit_glow.pt``, ``digit_glow.json`` and ``digit_glow_curve.csv``: chapter 9's
  converged flow, a larger Glow with variational dequantization trained by
  ``tools/train_digit_glow.py``, its record and its learning curve;
  ``pretrained_digit_glow()`` loads them.
* ``digit_classifier.pt`` and ``digit_classifier.json``: the classifier that measures
  generated digits (``nfcourse.applications.digit_quality``), trained by
  ``tools/train_digit_classifier.py``; ``pretrained_digit_classifier()`` loads both.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..applications.digit_quality import DigitClassifier
from ..core import Flow
from ..flows.dequantization import VariationalDequantizer, dequantization_nll
from ..flows.glow import glow
from ..images import bits_per_dim

__all__ = [
    "DIGIT_GLOW_SETTINGS",
    "DIGIT_DEQUANTIZER_SETTINGS",
    "DIGIT_GLOW_EVAL_SEED",
    "DIGIT_GLOW_MAX_TEST_BITS",
    "DIGIT_GLOW_RUNS",
    "digit_glow_paths",
    "per_image_bits",
    "pretrained_digit_glow",
    "digit_glow_curve",
    "DIGIT_CLASSIFIER_SETTINGS",
    "digit_classifier_paths",
    "pretrained_digit_classifier",
]

#: The settings of ``glow`` and of its ``VariationalDequantizer`` for the converged flow
#: that ``tools/train_digit_glow.py`` trains, and the seed of its evaluation noise.
DIGIT_GLOW_SETTINGS = {"levels": 2, "steps": 8, "hidden": 48, "shift_bound": 10.0}
DIGIT_DEQUANTIZER_SETTINGS = {"layers": 2, "hidden": 16}
DIGIT_GLOW_EVAL_SEED = 5
#: The bound that no test digit exceeds under the converged flow, in bits per dimension
#: (chapter 9 states it; ``tests/test_pretrained_digits.py`` checks it).
DIGIT_GLOW_MAX_TEST_BITS = 2.5


#: The runs that ship: the converged flow; its ablation with unbounded coupling shifts on
#: the same schedule; and the ablation on a longer schedule (24,000 steps, so a higher
#: learning rate for longer), stopped where its tail had run away.
DIGIT_GLOW_RUNS = ("digit_glow", "digit_glow_unbounded", "digit_glow_unbounded_long")


def digit_glow_paths(name: str = "digit_glow") -> tuple[Path, Path, Path]:
    """The paths of a shipped run's weights, results file and learning curve inside the
    installed package; ``name`` is one of ``DIGIT_GLOW_RUNS``."""
    if name not in DIGIT_GLOW_RUNS:
        raise ValueError(f"name must be one of {DIGIT_GLOW_RUNS}, got {name!r}")
    folder = Path(__file__).resolve().parent
    return folder / f"{name}.pt", folder / f"{name}.json", folder / f"{name}_curve.csv"


def per_image_bits(
    flow: Flow,
    dequantizer: VariationalDequantizer | None,
    pixels: torch.Tensor,
    seed: int = DIGIT_GLOW_EVAL_SEED,
    levels: int = 256,
    batch: int = 250,
) -> torch.Tensor:
    """The dequantization bound of each image in bits per dimension, shape ``(N,)``, for
    integer ``pixels`` of shape ``(N, C, H, W)``: one draw of the noise per image from a
    generator seeded with ``seed`` (so the numbers repeat), batches of ``batch`` images,
    no gradients."""
    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        nll = torch.cat(
            [
                dequantization_nll(flow, part, levels, dequantizer, generator=noise)
                for part in pixels.split(batch)
            ]
        )
    return bits_per_dim(nll, pixels[0].numel(), levels)


def digit_glow_curve(name: str = "digit_glow") -> list[dict[str, str]]:
    """The learning curve that ``tools/train_digit_glow.py`` logged, one dict of strings
    per logged step: ``step``, ``seconds`` (of training), ``learning_rate``,
    ``train_batch_bits`` (the raw weights' loss on the batches since the last row, in
    bits per dimension) and ``grad_norm``; the rows where the averaged weights were scored
    also hold ``train_mean``, ``train_max``, ``test_mean``, ``test_median``, ``test_p99``
    and ``test_max`` (empty strings elsewhere)."""
    import csv

    path = digit_glow_paths(name)[2]
    if not path.is_file():
        raise FileNotFoundError(
            f"the learning curve {path} is missing from this installation of nfcourse; "
            "`python tools/train_digit_glow.py` writes it"
        )
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def pretrained_digit_glow(
    name: str = "digit_glow",
) -> tuple[Flow, VariationalDequantizer, dict]:
    """Chapter 9's converged image flow: ``glow((1, 28, 28), **DIGIT_GLOW_SETTINGS)``, its
    ``VariationalDequantizer((1, 28, 28), 256, **DIGIT_DEQUANTIZER_SETTINGS)`` and the
    record of their training (budget, seeds, machine, torch, wall time, peak memory, and
    the train and test bits per dimension: mean, median, 99th percentile, largest).

    ``name="digit_glow_unbounded"`` loads the ablation instead: the same flow trained with
    unbounded coupling shifts (``shift_bound=None``), whose cost on a few test digits runs
    away during training. Weights load with ``torch.load(..., weights_only=True)``; both
    modules are returned in evaluation mode. ``python tools/train_digit_glow.py`` (in the
    repository) writes them.

    Raises:
        FileNotFoundError: when the weights or the results file are missing.
    """
    weights, results, _ = digit_glow_paths(name)
    for path in (weights, results):
        if not path.is_file():
            raise FileNotFoundError(
                f"the converged digit flow needs {path}, which is missing from this "
                "installation of nfcourse; reinstall the package, or write it by running "
                "`python tools/train_digit_glow.py` in the repository"
            )
    record = json.loads(results.read_text())
    # a record states its shift bound; one without states the settings' (the main run)
    bound = record.get("shift_bound", DIGIT_GLOW_SETTINGS["shift_bound"])
    settings = {**DIGIT_GLOW_SETTINGS, "shift_bound": bound}
    flow = glow((1, 28, 28), seed=None, **settings)
    dequantizer = VariationalDequantizer((1, 28, 28), 256, seed=None, **DIGIT_DEQUANTIZER_SETTINGS)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    both = torch.nn.ModuleDict({"flow": flow, "dequantizer": dequantizer})
    both.load_state_dict(state)
    both.eval()
    return flow, dequantizer, record


#: The settings of ``fit_digit_classifier`` for the shipped classifier.
DIGIT_CLASSIFIER_SETTINGS = {
    "steps": 3000,
    "batch_size": 128,
    "lr": 1e-3,
    "outlier_exposure": True,
    "seed": 0,
}


def digit_classifier_paths() -> tuple[Path, Path]:
    """The paths of the digit classifier's weights and record inside the package."""
    folder = Path(__file__).resolve().parent
    return folder / "digit_classifier.pt", folder / "digit_classifier.json"


def pretrained_digit_classifier() -> tuple[DigitClassifier, dict]:
    """The classifier that measures generated digits, trained on the shipped training
    digits and their labels by ``tools/train_digit_classifier.py``, in evaluation mode,
    and its record (test accuracy; share of confident answers on real test digits, on
    uniform noise and on blank images). Weights load with ``weights_only=True``.

    Raises:
        FileNotFoundError: when the weights or the record are missing.
    """
    weights, record = digit_classifier_paths()
    for path in (weights, record):
        if not path.is_file():
            raise FileNotFoundError(
                f"the digit classifier needs {path}, which is missing from this "
                "installation of nfcourse; reinstall the package, or write it by running "
                "`python tools/train_digit_classifier.py` in the repository"
            )
    classifier = DigitClassifier()
    classifier.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return classifier.eval(), json.loads(record.read_text())
