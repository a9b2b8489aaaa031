"""The exercise checks of chapter 8 accept right answers and name wrong ones."""

import math

import pytest
import torch
import torch.nn.functional as F
from check_tables import Right, Wrong, assert_right, assert_wrong, stub
from solution_code import solution

import nfcourse
from nfcourse.checks.spline import (
    _spline_cases,
    check_cubic_increasing,
    check_fit_moved_sine,
    check_knot_second_derivatives,
    check_rq_forward,
    check_rq_inverse,
    check_spline_knots,
)
from nfcourse.flows.spline import _rational_quadratic_spline

CH = "08_spline_flows"
knots_ref = solution(CH, "spline_knots")
forward_ref = solution(CH, "rq_forward")
inverse_ref = solution(CH, "rq_inverse")
second_ref = solution(CH, "knot_second_derivatives")
cubic_ref = solution(CH, "cubic_increasing")


def _knots(u, bound, minimum, renormalise=True, with_min=True, rescale=True):
    bins = u.shape[-1]
    q = torch.softmax(u, -1)
    if with_min:
        q = minimum + ((1 - bins * minimum) if renormalise else 1.0) * q
    cum = F.pad(q.cumsum(-1), (1, 0))
    return 2 * bound * cum - bound if rescale else cum


def knots_with(derivs=None, **kw):
    def answer(u_w, u_h, u_d, bound, m_w, m_h, m_d):
        x = _knots(u_w, bound, m_w, **kw)
        y = _knots(u_h, bound, m_h, **kw)
        if derivs is None:
            d = F.pad(m_d + F.softplus(u_d + math.log(math.expm1(1 - m_d))), (1, 1), value=1.0)
        else:
            d = derivs(u_d, m_d)
        return x, y, d

    return answer


def swapped_minimums(u_w, u_h, u_d, bound, m_w, m_h, m_d):
    x, y, d = knots_ref(u_w, u_h, u_d, bound, m_h, m_w, m_d)
    return x, y, d


def detached_knots(u_w, u_h, u_d, bound, m_w, m_h, m_d):
    return tuple(t.detach() for t in knots_ref(u_w, u_h, u_d, bound, m_w, m_h, m_d))


def forward_variant(formula):
    def answer(x, knot_x, knot_y, derivatives):
        k = (x.unsqueeze(1) >= knot_x[:, 1:-1]).sum(1, keepdim=True)

        def at(t, o=0):
            return t.gather(1, k + o).squeeze(1)

        xk, yk, dk = at(knot_x), at(knot_y), at(derivatives)
        w, h, dk1 = at(knot_x, 1) - xk, at(knot_y, 1) - yk, at(derivatives, 1)
        s = h / w
        xi = (x - xk) / w
        return formula(x=x, xk=xk, yk=yk, dk=dk, dk1=dk1, w=w, h=h, s=s, xi=xi, t=xi * (1 - xi))

    return answer


def _beta(v):
    return v["s"] + (v["dk1"] + v["dk"] - 2 * v["s"]) * v["t"]


def _y(v):
    return v["yk"] + v["h"] * (v["s"] * v["xi"] ** 2 + v["dk"] * v["t"]) / _beta(v)


def _num(v):
    return v["dk1"] * v["xi"] ** 2 + 2 * v["s"] * v["t"] + v["dk"] * (1 - v["xi"]) ** 2


def inverse_variant(root):
    def answer(y, knot_x, knot_y, derivatives):
        k = (y.unsqueeze(1) >= knot_y[:, 1:-1]).sum(1, keepdim=True)

        def at(t, o=0):
            return t.gather(1, k + o).squeeze(1)

        xk, yk, dk = at(knot_x), at(knot_y), at(derivatives)
        w, h, dk1 = at(knot_x, 1) - xk, at(knot_y, 1) - yk, at(derivatives, 1)
        s = h / w
        dy = y - yk
        cv = dk1 + dk - 2 * s
        a, b, c = h * (s - dk) + dy * cv, h * dk - dy * cv, -s * dy
        return root(a, b, c, xk, w)

    return answer


def second_variant(start_fn, end_fn, swap=False):
    """An answer for g'' at the knots from formulas for the start (xi = 0) and the end
    (xi = 1) of every bin, given w, s, d0, d1 per bin."""

    def answer(knot_x, knot_y, derivatives):
        w = knot_x.diff(dim=1)
        s = knot_y.diff(dim=1) / w
        d0, d1 = derivatives[:, :-1], derivatives[:, 1:]
        left, right = end_fn(w, s, d0, d1)[:, :-1], start_fn(w, s, d0, d1)[:, 1:]
        return (right, left) if swap else (left, right)

    return answer


def _start(w, s, d0, d1):
    return 2 * (s**2 + s * d0 - d0**2 - d0 * d1) / (w * s)


def _end(w, s, d0, d1):
    return 2 * (d1**2 + d0 * d1 - s * d1 - s**2) / (w * s)


def _second_one_width(knot_x, knot_y, derivatives):
    # the left value computed with the width of the bin after the knot
    left, right = second_ref(knot_x, knot_y, derivatives)
    w = knot_x.diff(dim=1)
    return left * w[:, :-1] / w[:, 1:], right


def _second_by_autograd_offset(knot_x, knot_y, derivatives):
    # finite differences of the first derivative: close, but not the limit
    w = knot_x.diff(dim=1)
    s = knot_y.diff(dim=1) / w
    d0, d1 = derivatives[:, :-1], derivatives[:, 1:]
    eps = 1e-3

    def slope(xi):
        beta = s + (d1 + d0 - 2 * s) * xi * (1 - xi)
        num = d1 * xi**2 + 2 * s * xi * (1 - xi) + d0 * (1 - xi) ** 2
        return s**2 * num / beta**2

    start = (slope(eps) - slope(0.0)) / (eps * w)
    end = (slope(1.0) - slope(1 - eps)) / (eps * w)
    return end[:, :-1], start[:, 1:]


def cubic_variant(rule):
    def answer(alpha, beta):
        a, b = alpha + beta - 2, 3 - 2 * alpha - beta
        safe = torch.where(a == 0, torch.ones_like(a), a)
        return rule(alpha, beta, a, b, safe)

    return answer


def _cubic_grid(alpha, beta):
    xi = torch.linspace(0, 1, 2001, dtype=alpha.dtype)
    a, b = (alpha + beta - 2)[:, None], (3 - 2 * alpha - beta)[:, None]
    return (3 * a * xi**2 + 2 * b * xi + alpha[:, None]).min(1).values >= 0


def _cubic_float(alpha, beta):
    return cubic_ref(alpha, beta).double()


def _cubic_at_quarter_points(alpha, beta):
    # p' at a few points only: misses minimums between them
    xi = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=alpha.dtype)
    a, b = (alpha + beta - 2)[:, None], (3 - 2 * alpha - beta)[:, None]
    return (3 * a * xi**2 + 2 * b * xi + alpha[:, None]).min(1).values >= 0


def _fit_without_standardising(data, generator, steps=100):
    flow = nfcourse.spline_flow(2, hidden=(16,), standardize=False, tails=False)
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)

    def loss_fn(step):
        index = torch.randint(len(data), (256,), generator=generator)
        return -flow.log_prob(data[index]).mean()

    return flow, nfcourse.train(loss_fn, flow, steps, optimizer=optimizer, progress=False)


WRONG = [
    Wrong(check_spline_knots, "no-rescale", knots_with(rescale=False), "from -B to B"),
    Wrong(
        check_spline_knots, "no-minimum", knots_with(with_min=False), "minimum fraction is missing"
    ),
    Wrong(
        check_spline_knots,
        "no-renormalise",
        knots_with(renormalise=False),
        "multiply the softmax by \\(1 - K m\\)",
    ),
    Wrong(check_spline_knots, "swapped-minimums", swapped_minimums, "min_bin_width for knot_x"),
    Wrong(
        check_spline_knots,
        "no-shift",
        knots_with(lambda u, m: F.pad(m + F.softplus(u), (1, 1), value=1.0)),
        "without the shift",
    ),
    Wrong(
        check_spline_knots,
        "exp-derivative",
        knots_with(lambda u, m: F.pad(m + torch.exp(u + math.log(1 - m)), (1, 1), value=1.0)),
        "softplus",
    ),
    Wrong(
        check_spline_knots,
        "zero-ends",
        knots_with(lambda u, m: F.pad(m + F.softplus(u + math.log(math.expm1(1 - m))), (1, 1))),
        "end derivatives are 1",
    ),
    Wrong(check_spline_knots, "detached", detached_knots, "no gradient|carries no gradient"),
    Wrong(check_spline_knots, "stub", stub, "NotImplementedError"),
    Wrong(
        check_rq_forward,
        "swapped-derivatives",
        forward_variant(
            lambda **v: (
                v["yk"] + v["h"] * (v["s"] * v["xi"] ** 2 + v["dk1"] * v["t"]) / _beta(v),
                torch.log(_num(v)),
            )
        ),
        "swapped",
    ),
    Wrong(
        check_rq_forward,
        "no-yk",
        forward_variant(
            lambda **v: (
                _y(v) - v["yk"],
                2 * torch.log(v["s"]) + torch.log(_num(v)) - 2 * torch.log(_beta(v)),
            )
        ),
        "left out y_k",
    ),
    Wrong(
        check_rq_forward,
        "s-not-squared",
        forward_variant(
            lambda **v: (_y(v), torch.log(v["s"]) + torch.log(_num(v)) - 2 * torch.log(_beta(v)))
        ),
        "s_k enters squared",
    ),
    Wrong(
        check_rq_forward,
        "beta-not-squared",
        forward_variant(
            lambda **v: (_y(v), 2 * torch.log(v["s"]) + torch.log(_num(v)) - torch.log(_beta(v)))
        ),
        "beta enters squared",
    ),
    Wrong(
        check_rq_forward,
        "not-log",
        forward_variant(lambda **v: (_y(v), v["s"] ** 2 * _num(v) / _beta(v) ** 2)),
        "logarithm of g'",
    ),
    Wrong(
        check_rq_forward,
        "inverse-sign",
        forward_variant(
            lambda **v: (
                _y(v),
                -(2 * torch.log(v["s"]) + torch.log(_num(v)) - 2 * torch.log(_beta(v))),
            )
        ),
        "of the inverse",
    ),
    Wrong(
        check_rq_inverse,
        "textbook-root",
        inverse_variant(
            lambda a, b, c, xk, w: xk + w * (-b + torch.sqrt(b * b - 4 * a * c)) / (2 * a)
        ),
        "textbook root",
    ),
    Wrong(
        check_rq_inverse,
        "other-root",
        inverse_variant(
            lambda a, b, c, xk, w: xk + w * (-b - torch.sqrt(b * b - 4 * a * c)) / (2 * a)
        ),
        "other root",
    ),
    Wrong(
        check_rq_inverse,
        "returns-xi",
        inverse_variant(lambda a, b, c, xk, w: 2 * c / (-b - torch.sqrt(b * b - 4 * a * c))),
        "you returned xi",
    ),
    Wrong(
        check_knot_second_derivatives,
        "swapped",
        second_variant(_start, _end, swap=True),
        "left and right are swapped",
    ),
    Wrong(
        check_knot_second_derivatives,
        "no-chain-rule",
        second_variant(
            lambda w, s, d0, d1: _start(w, s, d0, d1) * w,
            lambda w, s, d0, d1: _end(w, s, d0, d1) * w,
        ),
        "divide the derivative in xi",
    ),
    Wrong(
        check_knot_second_derivatives,
        "quotient-rule-without-2",
        second_variant(
            lambda w, s, d0, d1: ((2 * s - 2 * d0) * s - d0 * (d1 + d0 - 2 * s)) / (w * s),
            lambda w, s, d0, d1: ((2 * d1 - 2 * s) * s + d1 * (d1 + d0 - 2 * s)) / (w * s),
        ),
        "factor 2 of beta",
    ),
    Wrong(check_knot_second_derivatives, "one-width", _second_one_width, "its own bin's width"),
    Wrong(
        check_knot_second_derivatives,
        "one-s",
        second_variant(
            lambda w, s, d0, d1: _start(w, s, d0, d1) / s,
            lambda w, s, d0, d1: _end(w, s, d0, d1) / s,
        ),
        "s_k squared",
    ),
    Wrong(
        check_knot_second_derivatives,
        "first-derivatives",
        lambda kx, ky, d: (d[:, 1:-1], d[:, 1:-1]),
        "these are first derivatives",
    ),
    Wrong(
        check_knot_second_derivatives,
        "finite-difference",
        _second_by_autograd_offset,
        "differentiate g'",
    ),
    Wrong(check_knot_second_derivatives, "stub", stub, "NotImplementedError"),
    Wrong(
        check_cubic_increasing,
        "ends-only",
        lambda alpha, beta: torch.ones_like(alpha, dtype=torch.bool),
        "minimum can lie inside",
    ),
    Wrong(
        check_cubic_increasing,
        "vertex-anywhere",
        cubic_variant(lambda al, be, a, b, safe: (a <= 0) | (al - b**2 / (3 * safe) >= 0)),
        "Check 0 < xi\\* < 1",
    ),
    Wrong(
        check_cubic_increasing,
        "circle",
        lambda alpha, beta: alpha**2 + beta**2 <= 9,
        "circle\\) is sufficient",
    ),
    Wrong(
        check_cubic_increasing,
        "box",
        lambda alpha, beta: (alpha <= 3) & (beta <= 3),
        "alpha, beta <= 3 is sufficient",
    ),
    Wrong(
        check_cubic_increasing,
        "negated",
        lambda alpha, beta: ~cubic_ref(alpha, beta),
        "opposite",
    ),
    Wrong(
        check_cubic_increasing,
        "vertex-sign",
        cubic_variant(
            lambda al, be, a, b, safe: (
                ~((a > 0) & (b / (3 * safe) > 0) & (b / (3 * safe) < 1))
                | (al - b**2 / (3 * safe) >= 0)
            )
        ),
        "sign of the vertex",
    ),
    Wrong(
        check_cubic_increasing,
        "no-three",
        cubic_variant(
            lambda al, be, a, b, safe: (
                ~((a > 0) & (-b / safe > 0) & (-b / safe < 1)) | (al - b**2 / (3 * safe) >= 0)
            )
        ),
        "derivative of xi\\^3",
    ),
    Wrong(
        check_cubic_increasing,
        "coarse-grid",
        _cubic_at_quarter_points,
        "wrong for \\d+ of \\d+ pairs",
    ),
    Wrong(check_cubic_increasing, "stub", stub, "NotImplementedError"),
    Wrong(
        check_fit_moved_sine,
        "not-standardised",
        _fit_without_standardising,
        "Standardise the data first",
    ),
]


def _float32(fn, n_tensors=None):
    def answer(*args):
        args = [a.float() if isinstance(a, torch.Tensor) else a for a in args]
        out = fn(*args)
        return out

    return answer


def _inverse_with_where(y, knot_x, knot_y, derivatives):
    return inverse_ref(y, knot_x, knot_y, derivatives)


def _forward_searchsorted(x, knot_x, knot_y, derivatives):
    k = torch.searchsorted(knot_x[:, 1:-1].contiguous(), x.unsqueeze(1), right=True)
    onehot = F.one_hot(k[:, 0], knot_x.shape[1] - 1).to(x.dtype)
    # the same formula, written with a one-hot selection instead of gather
    xk = (knot_x[:, :-1] * onehot).sum(1)
    yk = (knot_y[:, :-1] * onehot).sum(1)
    w = (knot_x.diff(dim=1) * onehot).sum(1)
    h = (knot_y.diff(dim=1) * onehot).sum(1)
    dk = (derivatives[:, :-1] * onehot).sum(1)
    dk1 = (derivatives[:, 1:] * onehot).sum(1)
    s, xi = h / w, (x - xk) / w
    t = xi * (1 - xi)
    beta = s + (dk1 + dk - 2 * s) * t
    y = yk + h * (s * xi**2 + dk * t) / beta
    g = s**2 * (dk1 * xi**2 + 2 * s * t + dk * (1 - xi) ** 2) / beta**2
    return y, torch.log(g)


RIGHT = [
    Right(check_spline_knots, "solution", knots_ref),
    Right(check_spline_knots, "float32", _float32(knots_ref)),
    Right(check_rq_forward, "solution", forward_ref),
    Right(check_rq_forward, "float32", _float32(forward_ref)),
    Right(check_rq_forward, "one-hot", _forward_searchsorted),
    Right(check_rq_inverse, "solution", inverse_ref),
    Right(check_rq_inverse, "float32", _float32(inverse_ref)),
    Right(check_knot_second_derivatives, "solution", second_ref),
    Right(check_knot_second_derivatives, "float32", _float32(second_ref)),
    Right(check_knot_second_derivatives, "expanded", second_variant(_start, _end)),
    Right(check_cubic_increasing, "solution", cubic_ref),
    Right(check_cubic_increasing, "float32", _float32(cubic_ref)),
    Right(check_cubic_increasing, "fine-grid", _cubic_grid),
    Right(check_cubic_increasing, "as-float", _cubic_float),
]


@pytest.mark.parametrize("row", [w.param() for w in WRONG])
def test_check_rejects_and_names_the_mistake(row):
    assert_wrong(row)


@pytest.mark.parametrize("row", [r.param() for r in RIGHT])
def test_check_accepts_right_answers_written_differently(row):
    assert_right(row)


def test_the_published_training_answer_reaches_the_goal():
    assert_right(Right(check_fit_moved_sine, "solution", solution(CH, "fit_moved_sine")))


def test_second_derivative_reference_is_the_limit_of_autograd_at_the_knots():
    params, knot_x, knot_y, deriv, _, bound = _spline_cases(0, n=12, bins=5)
    left, right = second_ref(knot_x, knot_y, deriv)

    def second(x):
        x = x.clone().requires_grad_()
        y, _ = _rational_quadratic_spline(x, *params, False, bound, 1e-3, 1e-3, 1e-3)
        (slope,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        return torch.autograd.grad(slope.sum(), x)[0]

    for j in range(1, knot_x.shape[1] - 1):
        for values, offset in ((right, 1e-9), (left, -1e-9)):
            got = second(knot_x[:, j] + offset)
            scale = 1 + values[:, j - 1].abs()
            assert float(((got - values[:, j - 1]).abs() / scale).max()) < 1e-5
