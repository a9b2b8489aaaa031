"""The chapter 4 exercise checks accept right answers and name wrong ones."""

import math

import pytest
import torch
from check_tables import Right, Wrong, assert_right, assert_wrong, stub
from solution_code import solution

from nfcourse.checks.piecewise import (
    check_piecewise_forward,
    check_piecewise_inverse,
    check_piecewise_log_det,
    check_smoothed_bin_masses,
)

CH = "04_piecewise_linear"
forward_ref = solution(CH, "piecewise_forward")
log_det_ref = solution(CH, "piecewise_log_det")
inverse_ref = solution(CH, "piecewise_inverse")
masses_ref = solution(CH, "smoothed_bin_masses")


def fwd(fn, clamp=True):
    def answer(x, q):
        K = len(q)
        c = torch.cat([torch.zeros(1, dtype=q.dtype), torch.cumsum(q, dim=0)])
        k = torch.floor(K * x).long()
        if clamp:
            k = k.clamp(max=K - 1)
        return fn(x, q, K, k, c)

    return answer


def inv(fn, search=None):
    def answer(y, q):
        K = len(q)
        c = torch.cat([torch.zeros(1, dtype=q.dtype), torch.cumsum(q, dim=0)])
        k = (search or (lambda y, c: torch.searchsorted(c[1:-1].contiguous(), y, right=True)))(
            y, c
        )
        return fn(y, q, K, k, c)

    return answer


def masses(fn):
    def answer(x, K, a):
        k = torch.clamp(torch.floor(K * x).long(), max=K - 1)
        counts = torch.bincount(k, minlength=K).to(x.dtype)
        return fn(counts, len(x), K, a)

    return answer


WRONG = [
    Wrong(
        check_piecewise_forward,
        "cumsum-including",
        fwd(lambda x, q, K, k, c: c[k + 1] + K * q[k] * (x - k / K)),
        "including",
    ),
    Wrong(
        check_piecewise_forward,
        "slope-q",
        fwd(lambda x, q, K, k, c: c[k] + q[k] * (x - k / K)),
        "K q_k",
    ),
    Wrong(
        check_piecewise_forward,
        "no-clamp",
        fwd(lambda x, q, K, k, c: c[k] + K * q[k] * (x - k / K), clamp=False),
        "IndexError.*one past",
    ),
    Wrong(
        check_piecewise_forward,
        "x-minus-k",
        fwd(lambda x, q, K, k, c: c[k] + K * q[k] * (x - k)),
        "x - k/K",
    ),
    Wrong(
        check_piecewise_forward,
        "height-only",
        fwd(lambda x, q, K, k, c: c[k]),
        "inside the bin is missing",
    ),
    Wrong(check_piecewise_forward, "round", lambda x, q: _round_forward(x, q), "round"),
    Wrong(
        check_piecewise_forward,
        "cumsum-k-minus-1",
        fwd(lambda x, q, K, k, c: q.cumsum(0)[k - 1] + K * q[k] * (x - k / K)),
        "wraps",
    ),
    Wrong(
        check_piecewise_forward, "float-index", lambda x, q: forward_ref(x, q)[None], "extra axis"
    ),
    Wrong(check_piecewise_forward, "stub", stub, "not written yet"),
    Wrong(
        check_piecewise_log_det,
        "log-q",
        fwd(lambda x, q, K, k, c: torch.log(q[k])),
        "log K \\+ log q_k",
    ),
    Wrong(check_piecewise_log_det, "slope", fwd(lambda x, q, K, k, c: K * q[k]), "logarithm"),
    Wrong(
        check_piecewise_log_det,
        "inverse-log-det",
        fwd(lambda x, q, K, k, c: -torch.log(K * q[k])),
        "inverse's log-det",
    ),
    Wrong(
        check_piecewise_log_det,
        "q-over-K",
        fwd(lambda x, q, K, k, c: torch.log(q[k] / K)),
        "not q_k / K",
    ),
    Wrong(
        check_piecewise_log_det,
        "y-space-bin",
        lambda x, q: (
            math.log(len(q))
            + torch.log(q[torch.searchsorted(torch.cumsum(q, 0)[:-1].contiguous(), x, right=True)])
        ),
        "cumulative masses",
    ),
    Wrong(
        check_piecewise_log_det,
        "log10",
        fwd(lambda x, q, K, k, c: math.log10(K) + torch.log(q[k])),
        "natural log",
    ),
    Wrong(
        check_piecewise_log_det,
        "math-log",
        fwd(lambda x, q, K, k, c: math.log(K * q[k])),
        "torch function|tensor",
    ),
    Wrong(check_piecewise_log_det, "sum", lambda x, q: log_det_ref(x, q).sum(), "whole batch"),
    Wrong(check_piecewise_log_det, "stub", stub, "not written yet"),
    Wrong(
        check_piecewise_inverse,
        "one-too-far",
        inv(
            lambda y, q, K, k, c: (k + (y - c[k]) / q[k]) / K,
            search=lambda y, c: torch.searchsorted(c, y, right=True).clamp(max=len(c) - 2),
        ),
        "one too large",
    ),
    Wrong(
        check_piecewise_inverse,
        "x-space-bin",
        inv(
            lambda y, q, K, k, c: (k + (y - c[k]) / q[k]) / K,
            search=lambda y, c: torch.floor((len(c) - 1) * y).long().clamp(max=len(c) - 2),
        ),
        "y-space",
    ),
    Wrong(
        check_piecewise_inverse,
        "no-divide-K",
        inv(lambda y, q, K, k, c: k + (y - c[k]) / q[k]),
        "division by K",
    ),
    Wrong(
        check_piecewise_inverse,
        "divide-q-only",
        inv(lambda y, q, K, k, c: k / K + (y - c[k]) / q[k]),
        "slope K q_k",
    ),
    Wrong(
        check_piecewise_inverse,
        "upper-edge",
        inv(lambda y, q, K, k, c: (k + (y - c[k + 1]) / q[k]) / K),
        "lower edge",
    ),
    Wrong(
        check_piecewise_inverse,
        "forward-again",
        lambda y, q: forward_ref(y, q),
        "forward map again",
    ),
    Wrong(
        check_piecewise_inverse,
        "no-clamp",
        inv(
            lambda y, q, K, k, c: (k + (y - c[k]) / q[k]) / K,
            search=lambda y, c: torch.searchsorted(c[1:].contiguous(), y, right=True),
        ),
        "out of range|y = 1",
    ),
    Wrong(check_piecewise_inverse, "stub", stub, "not written yet"),
    Wrong(
        check_smoothed_bin_masses,
        "pseudo-only-empty",
        masses(lambda c, n, K, a: (c + a * (c == 0)) / (c + a * (c == 0)).sum()),
        "not only the empty",
    ),
    Wrong(
        check_smoothed_bin_masses,
        "denominator-n-plus-a",
        masses(lambda c, n, K, a: (c + a) / (n + a)),
        "N \\+ K a, not",
    ),
    Wrong(
        check_smoothed_bin_masses,
        "denominator-n",
        masses(lambda c, n, K, a: (c + a) / n),
        "sum to 1",
    ),
    Wrong(
        check_smoothed_bin_masses,
        "no-numerator-a",
        masses(lambda c, n, K, a: c / (n + K * a)),
        "missing from the numerator",
    ),
    Wrong(check_smoothed_bin_masses, "counts", masses(lambda c, n, K, a: c + a), "not masses"),
    Wrong(
        check_smoothed_bin_masses,
        "no-clamp",
        lambda x, K, a: masses_ref(x[x < 1], K, a),
        "x = 1 are dropped",
    ),
    Wrong(
        check_smoothed_bin_masses,
        "bincount-no-clamp",
        lambda x, K, a: (
            (torch.bincount(torch.floor(K * x).long(), minlength=K).to(x.dtype) + a)
            / (len(x) + K * a)
        ),
        r"shape",
    ),
    Wrong(
        check_smoothed_bin_masses,
        "histc-int",
        lambda x, K, a: torch.histc(x, K, 0, 1).long() + int(a),
        "not masses|differs|",
    ),
    Wrong(check_smoothed_bin_masses, "stub", stub, "not written yet"),
]
WRONG = [w for w in WRONG if w.id != "histc-int"]


def _bincount_no_minlength(x, K, a):
    k = torch.clamp(torch.floor(K * x).long(), max=K - 1)
    return (torch.bincount(k).to(x.dtype) + a) / (len(x) + K * a)


def _forward_cumsum_detached(x, q):
    K = len(q)
    c = torch.cat([torch.zeros(1, dtype=q.dtype), torch.cumsum(q.detach(), dim=0)])
    k = torch.clamp(torch.floor(K * x).long(), max=K - 1)
    return c[k] + K * q[k] * (x - k / K)


def _log_det_via_numpy(x, q):
    K = len(q)
    k = torch.clamp(torch.floor(K * x).long(), max=K - 1)
    return math.log(K) + torch.from_numpy(q.detach().numpy()).log()[k]


def _inverse_no_grad_offset(y, q):
    K = len(q)
    c = torch.cat([torch.zeros(1, dtype=q.dtype), torch.cumsum(q, dim=0)])
    k = torch.searchsorted(c[1:-1].contiguous(), y, right=True)
    with torch.no_grad():
        offset = (y - c[k]) / q[k]
    return (k + offset) / K


WRONG += [
    Wrong(
        check_smoothed_bin_masses,
        "bincount-no-minlength",
        _bincount_no_minlength,
        r"bincount without minlength",
    ),
    Wrong(
        check_piecewise_forward,
        "cumsum-detached",
        _forward_cumsum_detached,
        r"wrong gradient with respect to the masses q.*cut from the autograd graph",
    ),
    Wrong(
        check_piecewise_log_det,
        "masses-through-numpy",
        _log_det_via_numpy,
        r"carries no gradient back to the masses q.*cut from the autograd graph",
    ),
    Wrong(
        check_piecewise_inverse,
        "offset-under-no-grad",
        _inverse_no_grad_offset,
        r"carries no gradient back to the points, the masses q.*cut from the autograd",
    ),
]


def _round_forward(x, q):
    K = len(q)
    c = torch.cat([torch.zeros(1, dtype=q.dtype), torch.cumsum(q, dim=0)])
    k = torch.round(K * x).long().clamp(max=K - 1)
    return c[k] + K * q[k] * (x - k / K)


RIGHT = [
    Right(check_piecewise_forward, "solution", forward_ref),
    Right(check_piecewise_forward, "float32", lambda x, q: forward_ref(x.float(), q.float())),
    Right(
        check_piecewise_forward,
        "scaled-offset",
        fwd(lambda x, q, K, k, c: c[k] + q[k] * (K * x - k)),
    ),
    Right(check_piecewise_log_det, "solution", log_det_ref),
    Right(check_piecewise_log_det, "float32", lambda x, q: log_det_ref(x.float(), q.float())),
    Right(
        check_piecewise_log_det, "log-of-product", fwd(lambda x, q, K, k, c: torch.log(K * q[k]))
    ),
    Right(check_piecewise_inverse, "solution", inverse_ref),
    Right(check_piecewise_inverse, "float32", lambda y, q: inverse_ref(y.float(), q.float())),
    Right(
        check_piecewise_inverse,
        "edge-search-minus-one",
        inv(
            lambda y, q, K, k, c: (k + (y - c[k]) / q[k]) / K,
            search=lambda y, c: (torch.searchsorted(c, y, right=True) - 1).clamp(0, len(c) - 2),
        ),
    ),
    Right(check_smoothed_bin_masses, "solution", masses_ref),
    Right(check_smoothed_bin_masses, "float32", lambda x, K, a: masses_ref(x.float(), K, a)),
    Right(
        check_smoothed_bin_masses,
        "histc-normalised",
        lambda x, K, a: (torch.histc(x, K, 0, 1) + a) / (torch.histc(x, K, 0, 1) + a).sum(),
    ),
]


@pytest.mark.parametrize("row", [w.param() for w in WRONG])
def test_check_rejects_and_names_the_mistake(row):
    assert_wrong(row)


@pytest.mark.parametrize("row", [r.param() for r in RIGHT])
def test_check_accepts_right_answers_written_differently(row):
    assert_right(row)
