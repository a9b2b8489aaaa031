"""Pretrained weights shipped with the package, the records of how they were trained, and
their loaders.

* ``glow_mnist.pt`` and ``glow_mnist.json``: chapter 9's Glow trained on the shipped MNIST
  digits by ``tools/train_image_flows.py``; ``pretrained_glow()`` loads both.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..core import Flow
from ..flows.glow import glow

__all__ = ["PRETRAINED_GLOW_SETTINGS", "pretrained_glow_paths", "pretrained_glow"]

#: The settings of ``glow`` for the weights that ``tools/train_image_flows.py`` trains.
PRETRAINED_GLOW_SETTINGS = {"levels": 2, "steps": 4, "hidden": 16}


def pretrained_glow_paths() -> tuple[Path, Path]:
    """The paths of the pretrained Glow's weights and of its results file, inside the
    installed package (``nfcourse/pretrained/glow_mnist.pt`` and ``glow_mnist.json``)."""
    folder = Path(__file__).resolve().parent
    return folder / "glow_mnist.pt", folder / "glow_mnist.json"


def pretrained_glow() -> tuple[Flow, dict]:
    """Chapter 9's Glow trained for a longer budget on the shipped MNIST digits, and the
    record of its training (steps, batch size, seed, wall time, machine, torch version,
    train and test bits per dimension).

    The weights are loaded with ``torch.load(..., weights_only=True)`` into
    ``glow((1, 28, 28), **PRETRAINED_GLOW_SETTINGS)``; they hold every ActNorm's
    ``initialized = True``, so no layer initialises again. The flow is returned in
    evaluation mode. ``python tools/train_image_flows.py`` (in the repository) writes them.

    Raises:
        FileNotFoundError: when the weights or the results file are missing.
    """
    weights, results = pretrained_glow_paths()
    for path in (weights, results):
        if not path.is_file():
            raise FileNotFoundError(
                f"the pretrained Glow needs {path}, which is missing from this installation "
                "of nfcourse; reinstall the package, or write it by running "
                "`python tools/train_image_flows.py` in the repository"
            )
    flow = glow((1, 28, 28), **PRETRAINED_GLOW_SETTINGS)  # weights replaced below
    flow.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    flow.eval()
    return flow, json.loads(results.read_text())
