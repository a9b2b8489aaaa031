"""Tests of the pretrained Glow that ``tools/train_image_flows.py`` writes into the
package: the files are found where an installed package has them, load with
``weights_only=True`` into the builder, give finite log-probabilities, and reproduce the
test bits per dimension that the results file records."""

from __future__ import annotations

import importlib.resources
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from nfcourse import Flow, pretrained
from nfcourse.flows.actnorm import ActNorm
from nfcourse.flows.dequantization import dequantization_nll, pixels_to_levels
from nfcourse.flows.glow import glow
from nfcourse.images import bits_per_dim, load_mnist
from nfcourse.pretrained import (
    PRETRAINED_GLOW_SETTINGS,
    pretrained_glow,
    pretrained_glow_paths,
)

ROOT = Path(__file__).resolve().parent.parent


def test_files_are_package_resources():
    weights, results = pretrained_glow_paths()
    package = importlib.resources.files("nfcourse.pretrained")
    for path in (weights, results):
        resource = package / path.name
        assert resource.is_file(), f"{path.name} is not a resource of nfcourse.pretrained"
        assert Path(str(resource)).resolve() == path
    size = weights.stat().st_size
    assert size < 1_000_000, f"the weights take {size:,} bytes; keep them small"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_package_data_ships_the_weights():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["nfcourse.pretrained"]
    weights, results = pretrained_glow_paths()
    for path in (weights, results):
        assert any(path.match(p) for p in patterns), f"{path.name} is not package data"


def test_weights_load_safely_into_the_builder():
    weights, _ = pretrained_glow_paths()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    flow = glow((1, 28, 28), **PRETRAINED_GLOW_SETTINGS)
    flow.load_state_dict(state)  # strict: every key present, none left over
    assert all(bool(v) for k, v in state.items() if k.endswith("initialized"))
    for key, value in flow.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_pretrained_glow_log_probs_and_recorded_bits():
    flow, record = pretrained_glow()
    assert isinstance(flow, Flow) and flow.event_shape == (1, 28, 28) and not flow.training
    for key in (
        "steps",
        "batch_size",
        "seed",
        "wall_seconds",
        "machine",
        "torch",
        "train_bits_per_dim",
        "test_bits_per_dim",
    ):
        assert key in record, f"the results file lacks {key!r}"
    _, test_grey = load_mnist()
    test = pixels_to_levels(test_grey).view(-1, 1, 28, 28)
    with torch.no_grad():
        log_p = flow.log_prob((test[:16] + 0.5) / 256)
        assert log_p.shape == (16,) and bool(torch.isfinite(log_p).all())
        # The evaluation of tools/train_image_flows.py: uniform noise from one generator
        # seeded with the recorded evaluation seed, in chunks of 500 images.
        noise = torch.Generator().manual_seed(record["evaluation_seed"])
        nll = torch.cat(
            [dequantization_nll(flow, part, 256, generator=noise) for part in test.split(500)]
        )
    bits = bits_per_dim(float(nll.mean()), 784, 256)
    assert math.isfinite(bits)
    assert abs(bits - record["test_bits_per_dim"]) < 1e-3, (bits, record)


def test_missing_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(
        pretrained,
        "pretrained_glow_paths",
        lambda: (tmp_path / "glow_mnist.pt", tmp_path / "glow_mnist.json"),
    )
    with pytest.raises(FileNotFoundError, match="glow_mnist.pt.*train_image_flows.py"):
        pretrained_glow()


def test_results_file_is_json_with_numbers():
    _, results = pretrained_glow_paths()
    record = json.loads(results.read_text())
    assert record["steps"] > 0 and record["batch_size"] > 0
    assert 0 < record["train_bits_per_dim"] < 8 and 0 < record["test_bits_per_dim"] < 8


def test_loaded_actnorms_are_not_initialised_again_in_training_mode():
    """The loaded state (``initialized = True``) is all the guard needs: a training-mode
    pass over a batch of other data leaves every ActNorm as loaded."""
    flow, _ = pretrained_glow()
    loaded = {k: v.clone() for k, v in flow.state_dict().items()}
    flow.train()
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 0.5
    with torch.no_grad():
        flow.log_prob(x)
    actnorms = [m for m in flow.modules() if isinstance(m, ActNorm)]
    assert actnorms and all(bool(m.initialized) for m in actnorms)
    for key, value in flow.state_dict().items():
        assert torch.equal(value, loaded[key]), key
