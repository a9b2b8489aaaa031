"""The exercise checks of chapter 1 accept right answers and explain wrong ones."""

import math

import pytest
import torch
from torch.distributions import Normal

import nfcourse as nf
from nfcourse.checks import ExerciseError
from nfcourse.checks.change_of_variables import (
    check_affine_log_prob,
    check_banana,
    check_lognormal_log_prob,
    check_polar_log_abs_det,
)


def _log_normal_pdf(z):
    return -0.5 * z**2 - 0.5 * math.log(2 * math.pi)


def stub(*args):
    raise NotImplementedError()


# Exercise 1: x = a z + b

def affine_right(x, a, b):
    return _log_normal_pdf((x - b) / a) - math.log(abs(a))


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda x, a, b: _log_normal_pdf((x - b) / a) - torch.log(torch.tensor(a)),
         "absolute value"),
        (lambda x, a, b: _log_normal_pdf((x - b) / a) + math.log(abs(a)), "subtracted"),
        (lambda x, a, b: _log_normal_pdf((x - b) / a), "Jacobian term is missing"),
        (lambda x, a, b: _log_normal_pdf(x) - math.log(abs(a)), r"z = \(x - b\) / a"),
        (lambda x, a, b: _log_normal_pdf((x - b) / a) - math.log(abs(a)) + 0.1 * (x > 2),
         r"differs from the expected value by 0\.1 at sample 7"),
        (lambda x, a, b: float(affine_right(x, a, b)[0]), "should be a torch.Tensor"),
        (stub, "affine_log_prob is not written yet"),
    ],
)
def test_affine_check_explains_wrong_answers(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_affine_log_prob(wrong)


def test_affine_check_accepts_the_right_answer(capsys):
    check_affine_log_prob(affine_right)
    assert capsys.readouterr().out.startswith("Correct:")


def test_affine_check_accepts_torch_normal():
    check_affine_log_prob(lambda x, a, b: Normal(b, abs(a)).log_prob(x))


# Exercise 2: x = exp(mu + sigma z)

def lognormal_right(x, mu, sigma):
    z = (torch.log(x) - mu) / sigma
    return _log_normal_pdf(z) - math.log(sigma) - torch.log(x)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda x, mu, s: _log_normal_pdf((torch.log(x) - mu) / s) - math.log(s),
         "-log x is missing"),
        (lambda x, mu, s: _log_normal_pdf((torch.log(x) - mu) / s) - torch.log(x),
         "-log sigma is missing"),
        (lambda x, mu, s: _log_normal_pdf((torch.log(x) - mu) / s) + math.log(s) + torch.log(x),
         "wrong sign"),
        (lambda x, mu, s: lognormal_right(x, mu, s)[:-1], r"has shape \(7,\); expected \(8,\)"),
        (stub, "lognormal_log_prob is not written yet"),
    ],
)
def test_lognormal_check_explains_wrong_answers(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_lognormal_log_prob(wrong)


def test_lognormal_check_accepts_the_right_answer(capsys):
    check_lognormal_log_prob(lognormal_right)
    assert "Correct" in capsys.readouterr().out


# Exercise 3: polar coordinates

@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda z: 2 * torch.log(z[:, 0]), "twice the right value"),
        (lambda z: z[:, 0], "return its logarithm"),
        (lambda z: torch.log(z[:, :1]), r"shape \(8, 1\).*one log-determinant per point"),
        (lambda z: torch.log(z[:, 0]) + 0.7 * (torch.arange(len(z)) == 3),
         r"differs from the autograd Jacobian by 0\.7 at sample 3 \(r = "),
        (lambda z: torch.log(z[:, 1]), r"is nan at sample 1 \(r = .*can be negative"),
        (lambda z: torch.log(z[:, 0] * torch.cos(z[:, 1]) ** 2 + 1), "differs from the autograd"),
        (stub, "polar_log_abs_det is not written yet"),
    ],
)
def test_polar_check_explains_wrong_answers(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_polar_log_abs_det(wrong)


def test_polar_check_accepts_the_right_answer(capsys):
    check_polar_log_abs_det(lambda z: torch.log(z[:, 0]))
    assert capsys.readouterr().out.startswith("Correct:")


# Exercise 4: the banana transform

def _make_banana(forward_log_det=None, inverse_shift=0.0, curvature_power=2, stub_inverse=False):
    class Banana(nf.Transform):
        def __init__(self, curvature, log_scale):
            super().__init__(dim=2)
            self.curvature, self.log_scale = curvature, log_scale

        def _forward(self, z):
            x2 = math.exp(self.log_scale) * z[:, 1] + self.curvature * z[:, 0] ** curvature_power
            log_det = torch.full_like(z[:, 0], self.log_scale)
            if forward_log_det is not None:
                log_det = forward_log_det(z)
            return torch.stack([z[:, 0], x2], dim=1), log_det

        def _inverse(self, x):
            if stub_inverse:
                raise NotImplementedError()
            z2 = (x[:, 1] - self.curvature * x[:, 0] ** 2) * math.exp(-self.log_scale)
            return (torch.stack([x[:, 0], z2 + inverse_shift], dim=1),
                    torch.full_like(x[:, 0], -self.log_scale))

    return Banana


def test_banana_check_accepts_the_right_answer(capsys):
    check_banana(_make_banana())
    assert capsys.readouterr().out.startswith("Correct:")


@pytest.mark.parametrize(
    "wrong, message",
    [
        (_make_banana(forward_log_det=lambda z: torch.zeros_like(z[:, 0])),
         "log-det differs from the autograd Jacobian by 0.7 at sample"),
        (_make_banana(inverse_shift=0.3), "inverse\\(forward\\(z\\)\\) misses z by 0.3"),
        (_make_banana(curvature_power=3), "the map is x1 = z1, x2 = exp\\(s\\) z2 \\+ c z1\\^2"),
        (_make_banana(stub_inverse=True), "Banana is not finished"),
    ],
)
def test_banana_check_explains_wrong_answers(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_banana(wrong)
