"""Tests of chapter 9's converged flow and of the digit classifier that ship with the
package (``tools/train_digit_glow.py`` and ``tools/train_digit_classifier.py`` write them):
the files are package data, load with ``weights_only=True``, and scored again here they
give the numbers their records hold; no test digit costs more than the bound the chapter
states."""

from __future__ import annotations

import csv
import importlib.resources
import math
from pathlib import Path

import pytest
import torch

from nfcourse import pretrained
from nfcourse.applications.digit_quality import (
    DigitClassifier,
    confident_share,
    fit_digit_classifier,
    frechet_distance,
)
from nfcourse.flows.actnorm import ActNorm
from nfcourse.flows.dequantization import pixels_to_levels
from nfcourse.images import load_mnist
from nfcourse.pretrained import (
    DIGIT_GLOW_EVAL_SEED,
    DIGIT_GLOW_MAX_TEST_BITS,
    DIGIT_GLOW_RUNS,
    digit_classifier_paths,
    digit_glow_paths,
    per_image_bits,
    pretrained_digit_classifier,
    pretrained_digit_glow,
)

PACKAGE = Path(__file__).resolve().parent.parent / "nfcourse"


@pytest.fixture(scope="module")
def digits():
    return load_mnist(with_labels=True)


@pytest.fixture(scope="module")
def digit_glow():
    return pretrained_digit_glow()


def test_weights_are_package_data_and_small():
    package = importlib.resources.files("nfcourse.pretrained")
    for path in (*digit_glow_paths(), *digit_classifier_paths()):
        assert (package / path.name).is_file(), f"{path.name} is not in nfcourse.pretrained"
    shipped = sum(p.stat().st_size for p in (PACKAGE / "pretrained").iterdir() if p.is_file())
    assert shipped < 20 * 2**20, f"the shipped weights take {shipped:,} bytes, over 20 MB"


@pytest.mark.parametrize("name", DIGIT_GLOW_RUNS)
def test_each_shipped_run_gives_the_numbers_of_its_record(digits, name):
    flow, dequantizer, record = pretrained_digit_glow(name)
    assert not flow.training and not dequantizer.training
    _, _, test, _ = digits
    bits = per_image_bits(flow, dequantizer, pixels_to_levels(test).view(-1, 1, 28, 28))
    quantiles = torch.quantile(bits.double(), torch.tensor([0.5, 0.99], dtype=torch.float64))
    measured = {
        "mean": float(bits.mean()),
        "median": float(quantiles[0]),
        "p99": float(quantiles[1]),
        "max": float(bits.max()),
    }
    for key, value in measured.items():
        expected = record["bits_per_dim"]["test"][key]
        assert value == pytest.approx(expected, abs=2e-3, rel=1e-3), (name, key)
    assert record["evaluation_seed"] == DIGIT_GLOW_EVAL_SEED


def test_no_test_digit_exceeds_the_stated_bound(digits, digit_glow):
    flow, dequantizer, _ = digit_glow
    _, _, test, _ = digits
    bits = per_image_bits(flow, dequantizer, pixels_to_levels(test).view(-1, 1, 28, 28))
    worst = float(bits.max())
    assert math.isfinite(worst) and worst <= DIGIT_GLOW_MAX_TEST_BITS, worst


def test_record_states_budget_seeds_machine_and_torch(digit_glow):
    _, _, record = digit_glow
    for key in (
        "steps",
        "batch_size",
        "seed",
        "machine",
        "torch",
        "train_seconds",
        "peak_memory_mb",
        "command",
        "parameters",
    ):
        assert key in record, key
    assert record["train_seconds"] <= 2 * 3600, "the budget is two hours of one CPU thread"


def test_learning_curve_ends_at_the_recorded_test_score(digit_glow):
    _, _, record = digit_glow
    with digit_glow_paths()[2].open() as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(steps) and steps[-1] == record["steps"]
    assert float(rows[-1]["test_mean"]) == pytest.approx(
        record["bits_per_dim"]["test"]["mean"], abs=1e-3
    )


def test_classifier_gives_the_numbers_of_its_record(digits):
    classifier, record = pretrained_digit_classifier()
    _, _, test, test_labels = digits
    with torch.no_grad():
        accuracy = float((classifier(test).argmax(-1) == test_labels).float().mean())
    assert accuracy == pytest.approx(record["test_accuracy"], abs=1e-3)
    assert confident_share(classifier, test) == pytest.approx(
        record["confident_share_test"], abs=1e-3
    )
    assert confident_share(classifier, torch.zeros(10, 784)) == pytest.approx(
        record["confident_share_blank"], abs=1e-3
    )


def test_classifier_accepts_both_image_layouts_and_refuses_wrong_shapes():
    classifier = DigitClassifier()
    x = torch.rand(3, 784, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(classifier(x), classifier(x.view(3, 1, 28, 28)))
    with pytest.raises(ValueError, match="28 x 28"):
        classifier(torch.rand(3, 64))
    with pytest.raises(TypeError, match="float tensor"):
        classifier(torch.zeros(3, 784, dtype=torch.long))


def test_fit_digit_classifier_refuses_bad_labels():
    x = torch.rand(20, 784, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="labels must be an int64 tensor of shape"):
        fit_digit_classifier(x, torch.zeros(19, dtype=torch.long), steps=1)
    with pytest.raises(ValueError, match="digits 0-9"):
        fit_digit_classifier(x, torch.full((20,), 10), steps=1)


def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift(digits):
    classifier, _ = pretrained_digit_classifier()
    _, _, test, _ = digits
    assert frechet_distance(classifier, test, test) == pytest.approx(0.0, abs=1e-4)
    near = frechet_distance(classifier, test[:500], test[500:])
    far = frechet_distance(classifier, test[:500], (test[500:] + 0.3).clamp(0, 1))
    assert 0 < near < far


def test_missing_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(
        pretrained,
        "digit_glow_paths",
        lambda name="digit_glow": (tmp_path / "a.pt", tmp_path / "a.json", tmp_path / "c.csv"),
    )
    with pytest.raises(FileNotFoundError, match="a.pt.*train_digit_glow.py"):
        pretrained.pretrained_digit_glow()
    monkeypatch.setattr(
        pretrained,
        "digit_classifier_paths",
        lambda: (tmp_path / "digit_classifier.pt", tmp_path / "digit_classifier.json"),
    )
    with pytest.raises(FileNotFoundError, match="digit_classifier.pt.*train_digit_classifier"):
        pretrained.pretrained_digit_classifier()


def test_loaded_actnorms_are_not_initialised_again_in_training_mode(digit_glow):
    """The loaded state (``initialized = True``) is all the guard needs: a training-mode
    pass over other data leaves every ActNorm as loaded."""
    flow, _, _ = pretrained.pretrained_digit_glow()
    loaded = {k: v.clone() for k, v in flow.state_dict().items()}
    flow.train()
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 0.5
    with torch.no_grad():
        flow.log_prob(x)
    actnorms = [m for m in flow.modules() if isinstance(m, ActNorm)]
    assert actnorms and all(bool(m.initialized) for m in actnorms)
    for key, value in flow.state_dict().items():
        assert torch.equal(value, loaded[key]), key
