"""The chapter 4 exercise checks accept right answers and explain wrong ones."""

import math

import pytest
import torch

from nfcourse.checks import ExerciseError
from nfcourse.checks.piecewise import (
    check_piecewise_forward,
    check_piecewise_inverse,
    check_piecewise_log_det,
    check_smoothed_bin_masses,
)


def _stub(*args):
    raise NotImplementedError()


def _cumulative(q):
    return torch.cat([torch.zeros(1, dtype=q.dtype), torch.cumsum(q, dim=0)])


def _bin(x, K):
    return torch.clamp(torch.floor(K * x).long(), max=K - 1)


# --- exercise 1: the map -----------------------------------------------------------------

def forward_right(x, q):
    K = len(q)
    c, k = _cumulative(q), _bin(x, K)
    return c[k] + K * q[k] * (x - k / K)


def forward_inclusive_cumsum(x, q):
    K = len(q)
    c, k = _cumulative(q), _bin(x, K)
    return c[k + 1] + K * q[k] * (x - k / K)


def forward_slope_q(x, q):
    K = len(q)
    c, k = _cumulative(q), _bin(x, K)
    return c[k] + q[k] * (x - k / K)


def forward_no_clamp(x, q):
    K = len(q)
    c, k = _cumulative(q), torch.floor(K * x).long()
    return c[k] + K * q[k] * (x - k / K)


def forward_drops_last_point(x, q):
    y = forward_right(x, q)
    return torch.where(x == 1, y - 0.01, y)


def test_forward_check_accepts_the_formula(capsys):
    check_piecewise_forward(forward_right)
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, match", [
    (forward_inclusive_cumsum, "before"),
    (forward_slope_q, "K q_k; you used q_k"),
    (forward_no_clamp, "clamp the bin index"),
    (forward_drops_last_point, r"g\(1\) should be 1"),
    (lambda x, q: forward_right(x, q) + 1e-3, r"g\(0\) should be 0"),
    (lambda x, q: forward_right(x, q)[:-1], "shape"),
    (lambda x, q: forward_right(x, q).tolist(), "torch.Tensor"),
    (_stub, "not written yet"),
])
def test_forward_check_rejects_wrong_answers(wrong, match):
    with pytest.raises(ExerciseError, match=match):
        check_piecewise_forward(wrong)


def test_forward_check_reports_where_a_random_point_is_off():
    def off_in_one_bin(x, q):
        y = forward_right(x, q)
        return torch.where((x > 0.45) & (x < 0.55), y + 0.01, y)

    with pytest.raises(ExerciseError, match="differs from the expected value"):
        check_piecewise_forward(off_in_one_bin)


# --- exercise 2: the log-det ---------------------------------------------------------------

def test_log_det_check_accepts_log_k_q(capsys):
    check_piecewise_log_det(lambda x, q: math.log(len(q)) + torch.log(q[_bin(x, len(q))]))
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, match", [
    (lambda x, q: torch.log(q[_bin(x, len(q))]), "log K"),
    (lambda x, q: len(q) * q[_bin(x, len(q))], "its logarithm"),
    (lambda x, q: -math.log(len(q)) - torch.log(q[_bin(x, len(q))]), "differs"),
    (lambda x, q: torch.log(q[torch.floor(len(q) * x).long() + 1]), "failed with IndexError"),
    (_stub, "not written yet"),
])
def test_log_det_check_rejects_wrong_answers(wrong, match):
    with pytest.raises(ExerciseError, match=match):
        check_piecewise_log_det(wrong)


# --- exercise 3: the inverse ---------------------------------------------------------------

def inverse_right(y, q):
    K = len(q)
    c = _cumulative(q)
    k = torch.searchsorted(c[1:-1].contiguous(), y, right=True)
    return (k + (y - c[k]) / q[k]) / K


def inverse_searches_all_edges(y, q):
    K = len(q)
    c = _cumulative(q)
    k = torch.searchsorted(c, y, right=True).clamp(max=K - 1)
    return (k + (y - c[k]) / q[k]) / K


def inverse_unclamped_search(y, q):
    K = len(q)
    c = _cumulative(q)
    k = torch.searchsorted(c, y, right=True)
    return (k + (y - c[k]) / q[k]) / K


def inverse_wrong_slope(y, q):
    K = len(q)
    c = _cumulative(q)
    k = torch.searchsorted(c[1:-1].contiguous(), y, right=True)
    return k / K + (y - c[k]) / q[k]


def test_inverse_check_accepts_the_searchsorted_solution(capsys):
    check_piecewise_inverse(inverse_right)
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, match", [
    (inverse_searches_all_edges, "one too large"),
    (inverse_unclamped_search, "inner edges"),
    (inverse_wrong_slope, r"g\(your inverse\(y\)\) misses y"),
    (lambda y, q: inverse_right(y, q) / 0.0, "NaN or inf"),
    (_stub, "not written yet"),
])
def test_inverse_check_rejects_wrong_answers(wrong, match):
    with pytest.raises(ExerciseError, match=match):
        check_piecewise_inverse(wrong)


# --- exercise 4: smoothed bin masses ------------------------------------------------------

def smoothed_right(x, K, a):
    counts = torch.bincount(_bin(x, K), minlength=K).to(x.dtype)
    return (counts + a) / (len(x) + K * a)


def test_smoothed_masses_check_accepts_the_formula(capsys):
    check_smoothed_bin_masses(smoothed_right)
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, match", [
    (lambda x, K, a: (torch.bincount(_bin(x, K), minlength=K) + a) / (len(x) + a), "sum to"),
    (lambda x, K, a: torch.bincount(_bin(x, K), minlength=K).double() / len(x), "differs"),
    (lambda x, K, a: smoothed_right(x, K, a)[:-1], "shape"),
    (lambda x, K, a: torch.bincount(torch.floor(K * x).long(), minlength=K)[:K] + 0.0,
     "sum to"),
    (_stub, "not written yet"),
])
def test_smoothed_masses_check_rejects_wrong_answers(wrong, match):
    with pytest.raises(ExerciseError, match=match):
        check_smoothed_bin_masses(wrong)
