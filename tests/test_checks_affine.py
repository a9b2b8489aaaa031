"""The chapter 2 exercise checks accept right answers and explain wrong ones."""

import pytest
import torch
from torch import nn

import nfcourse
from nfcourse.checks import ExerciseError
from nfcourse.checks.affine import (
    check_affine_layer,
    check_affine_log_det,
    check_combine_affine,
    check_triangular_log_det,
)


def _stub(*args):
    raise NotImplementedError()


# --- exercise 1: log-det of an elementwise affine map -------------------------------------

def test_affine_log_det_check_accepts_the_sum_of_log_abs_scales(capsys):
    check_affine_log_det(lambda a: torch.log(a.abs()).sum())
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, match", [
    (lambda a: torch.log(a).sum(), "negative"),
    (lambda a: a.prod(), r"prod\(a\)"),
    (lambda a: a.sum(), r"sum\(a\)"),
    (lambda a: torch.log(a.abs()), "one number"),
    (lambda a: torch.log(a.abs()).sum() + 1, "expected"),
    (lambda a: torch.log(a.abs()).sum().item(), "torch.Tensor"),
    (_stub, "not written yet"),
])
def test_affine_log_det_check_rejects_wrong_answers(wrong, match):
    with pytest.raises(ExerciseError, match=match):
        check_affine_log_det(wrong)


# --- exercise 2: the repaired tutorial layer -----------------------------------------------

class GoodLayer(nfcourse.Transform):
    def __init__(self, dim):
        super().__init__(dim)
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def _forward(self, z):
        return torch.exp(self.log_scale) * z + self.shift, self.log_scale.sum().expand(len(z))

    def _inverse(self, x):
        return (x - self.shift) * torch.exp(-self.log_scale), -self.log_scale.sum().expand(len(x))


class Uninitialised(GoodLayer):
    def __init__(self, dim):
        super().__init__(dim)
        self.log_scale = nn.Parameter(torch.Tensor(dim))


class RawScale(nfcourse.Transform):
    def __init__(self, dim):
        super().__init__(dim)
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def _forward(self, z):
        return self.scale * z + self.shift, torch.log(self.scale).sum().expand(len(z))

    def _inverse(self, x):
        return (x - self.shift) / self.scale, -torch.log(self.scale).sum().expand(len(x))


class ScalarLogDet(GoodLayer):
    def _forward(self, z):
        return torch.exp(self.log_scale) * z + self.shift, self.log_scale.sum()


class WrongSignLogDet(GoodLayer):
    def _forward(self, z):
        return torch.exp(self.log_scale) * z + self.shift, -self.log_scale.sum().expand(len(z))


class WrongInverse(GoodLayer):
    def _inverse(self, x):
        return x * torch.exp(-self.log_scale) - self.shift, -self.log_scale.sum().expand(len(x))


class NotIdentityAtStart(GoodLayer):
    def __init__(self, dim):
        super().__init__(dim)
        self.shift = nn.Parameter(torch.ones(dim))


class PlainModule(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(dim))


class StubInit(GoodLayer):
    def __init__(self, dim):
        super().__init__(dim)
        raise NotImplementedError()


def test_affine_layer_check_accepts_a_correct_layer(capsys):
    check_affine_layer(GoodLayer)
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, match", [
    (Uninitialised, "never set"),
    (RawScale, "exp\\(log_scale\\)"),
    (ScalarLogDet, "shape \\(B,\\)"),
    (WrongSignLogDet, "autograd Jacobian"),
    (WrongInverse, "inverse\\(forward\\(z\\)\\) misses z"),
    (NotIdentityAtStart, "identity"),
    (PlainModule, "nfcourse.Transform"),
    (StubInit, "not written yet"),
])
def test_affine_layer_check_rejects_wrong_layers(wrong, match):
    with pytest.raises(ExerciseError, match=match):
        check_affine_layer(wrong)


def test_affine_layer_check_restores_pytorch_settings():
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.utils.deterministic.fill_uninitialized_memory)
    check_affine_layer(GoodLayer)
    with pytest.raises(ExerciseError):
        check_affine_layer(StubInit)
    assert (torch.are_deterministic_algorithms_enabled(),
            torch.utils.deterministic.fill_uninitialized_memory) == before


# --- exercise 3: two affine maps are one --------------------------------------------------

def test_combine_affine_check_accepts_the_composed_map(capsys):
    check_combine_affine(lambda a1, b1, a2, b2: (a2 * a1, a2 * b1 + b2))
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, match", [
    (lambda a1, b1, a2, b2: (a1 + a2, a2 * b1 + b2), "scales multiply"),
    (lambda a1, b1, a2, b2: (a2 * a1, b1 + b2), "a2 \\* b1 \\+ b2"),
    (lambda a1, b1, a2, b2: (a2 * a1, a1 * b2 + b1), "combined shift b differs"),
    (lambda a1, b1, a2, b2: a2 * a1, "pair"),
    (_stub, "not written yet"),
])
def test_combine_affine_check_rejects_wrong_answers(wrong, match):
    with pytest.raises(ExerciseError, match=match):
        check_combine_affine(wrong)


# --- exercise 4: log-det of a triangular matrix -------------------------------------------

def test_triangular_log_det_check_accepts_the_diagonal_sum(capsys):
    check_triangular_log_det(lambda t: torch.log(torch.diagonal(t).abs()).sum())
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, match", [
    (lambda t: torch.log(torch.diagonal(t)).sum(), "negative diagonal"),
    (lambda t: torch.diagonal(t).abs().sum(), "sum of their logs"),
    (lambda t: torch.log(t.abs() + (t == 0)).sum(), "whole triangle"),
    (lambda t: torch.linalg.slogdet(t)[1], "O\\(D\\^3\\)"),
    (lambda t: torch.log(torch.det(t).abs()), "O\\(D\\^3\\)"),
    (lambda t: torch.log(torch.diagonal(t).abs()), "one number"),
    (_stub, "not written yet"),
])
def test_triangular_log_det_check_rejects_wrong_answers(wrong, match):
    with pytest.raises(ExerciseError, match=match):
        check_triangular_log_det(wrong)
