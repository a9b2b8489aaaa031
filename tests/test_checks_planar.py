"""The chapter 3 exercise checks accept right answers and name wrong ones."""

import pytest
import torch
import torch.nn.functional as F
from check_tables import Right, Wrong, assert_right, assert_wrong, stub
from solution_code import solution

from nfcourse.checks.planar import (
    check_bisection,
    check_planar_log_det,
    check_radial_log_det,
    check_u_hat,
)

CH = "03_planar_flows"
planar_ref = solution(CH, "planar_log_det")
u_hat_ref = solution(CH, "u_hat")
bisect_ref = solution(CH, "bisect_projection")
radial_ref = solution(CH, "radial_log_det")


def planar(fn):
    def answer(z, u, w, b):
        h = torch.tanh(z @ w + b)
        return fn(z, u, w, b, h)

    return answer


def u_hat_with(m_fn, denominator=lambda w: w @ w):
    def answer(u, w):
        a = w @ u
        return u + (m_fn(a) - a) * w / denominator(w)

    return answer


def bisect(update="right", bracket="abs", n_iter=80, ret="mid"):
    def answer(y, m, b):
        width = m.abs() if bracket == "abs" else m
        lo, hi = y - width, y + width
        for _ in range(n_iter):
            mid = (lo + hi) / 2
            positive = mid + m * torch.tanh(mid + b) - y > 0
            if update == "right":
                hi, lo = torch.where(positive, mid, hi), torch.where(positive, lo, mid)
            elif update == "swapped":
                lo, hi = torch.where(positive, mid, lo), torch.where(positive, hi, mid)
            elif update == "only-hi":
                hi = torch.where(positive, mid, hi)
        return {"mid": (lo + hi) / 2, "lo": lo, "y": y}[ret]

    return answer


def radial(fn):
    def answer(z, z0, alpha, beta):
        r = (z - z0).norm(dim=1)
        h = 1 / (alpha + r)
        return fn(z.shape[1], r, h, alpha, beta)

    return answer


WRONG = [
    # planar log-det
    Wrong(
        check_planar_log_det,
        "sign",
        planar(lambda z, u, w, b, h: torch.log(torch.abs(1 - (1 - h**2) * (w @ u)))),
        "sign error",
    ),
    Wrong(
        check_planar_log_det,
        "no-derivative",
        planar(lambda z, u, w, b, h: torch.log(torch.abs(1 + w @ u)).expand(len(z))),
        "missing the derivative",
    ),
    Wrong(
        check_planar_log_det,
        "tanh-not-derivative",
        planar(lambda z, u, w, b, h: torch.log(torch.abs(1 + h * (w @ u)))),
        "derivative 1 - tanh",
    ),
    Wrong(
        check_planar_log_det,
        "tanh-squared",
        planar(lambda z, u, w, b, h: torch.log(torch.abs(1 + h**2 * (w @ u)))),
        r"not tanh\^2",
    ),
    Wrong(
        check_planar_log_det,
        "no-log",
        planar(lambda z, u, w, b, h: 1 + (1 - h**2) * (w @ u)),
        "log \\|",
    ),
    Wrong(
        check_planar_log_det,
        "no-abs",
        planar(lambda z, u, w, b, h: torch.log(1 + (1 - h**2) * (w @ u))),
        "absolute value",
    ),
    Wrong(
        check_planar_log_det,
        "no-bias",
        planar(
            lambda z, u, w, b, h: torch.log(torch.abs(1 + (1 - torch.tanh(z @ w) ** 2) * (w @ u)))
        ),
        "bias b",
    ),
    Wrong(
        check_planar_log_det,
        "u-dot-u",
        planar(lambda z, u, w, b, h: torch.log(torch.abs(1 + (1 - h**2) * (u @ u)))),
        "u\\^T u",
    ),
    Wrong(
        check_planar_log_det,
        "keepdim",
        planar(lambda z, u, w, b, h: torch.log(torch.abs(1 + (1 - h**2) * (w @ u))).unsqueeze(1)),
        "extra axis",
    ),
    Wrong(
        check_planar_log_det,
        "per-coordinate",
        planar(lambda z, u, w, b, h: torch.log(torch.abs(1 + (1 - h**2)[:, None] * w * u))),
        "one value per coordinate",
    ),
    Wrong(
        check_planar_log_det,
        "python-loop-math",
        planar(
            lambda z, u, w, b, h: (
                torch.tensor(
                    [float(torch.log(torch.abs(1 + (1 - v**2) * (w @ u)))) for v in h]
                ).float()
                * 0
                + torch.log1p((1 - h**2) * (w @ u))
            )
        ),
        "NaN|absolute",
    ),
    Wrong(check_planar_log_det, "stub", stub, "not written yet"),
    # u_hat
    Wrong(
        check_u_hat,
        "norm-not-squared",
        u_hat_with(lambda a: -1 + F.softplus(a), lambda w: w.norm()),
        r"\|\|w\|\|\^2",
    ),
    Wrong(
        check_u_hat,
        "log-softplus",
        u_hat_with(lambda a: -1 + torch.log1p(F.softplus(a))),
        r"log\(1 \+ softplus",
    ),
    Wrong(check_u_hat, "no-minus-one", u_hat_with(lambda a: F.softplus(a)), "-1 is missing"),
    Wrong(check_u_hat, "exp", u_hat_with(lambda a: -1 + torch.exp(a)), "not exp"),
    Wrong(
        check_u_hat, "overflow", u_hat_with(lambda a: -1 + torch.log(1 + torch.exp(a))), "overflow"
    ),
    Wrong(
        check_u_hat,
        "reversed-correction",
        lambda u, w: u - (-1 + F.softplus(w @ u) - w @ u) * w / (w @ w),
        "sign reversed",
    ),
    Wrong(
        check_u_hat,
        "along-u",
        lambda u, w: u + (-1 + F.softplus(w @ u) - w @ u) * u / (w @ w),
        "along w",
    ),
    Wrong(
        check_u_hat,
        "no-minus-a",
        lambda u, w: u + (-1 + F.softplus(w @ u)) * w / (w @ w),
        "left out",
    ),
    Wrong(
        check_u_hat,
        "in-place",
        lambda u, w: u.add_((-1 + F.softplus(w @ u) - w @ u) * w / (w @ w)),
        "in place",
    ),
    Wrong(check_u_hat, "item", lambda u, w: float(u_hat_ref(u, w)[0]), "Python number"),
    Wrong(check_u_hat, "stub", stub, "not written yet"),
    # bisection: wrong update rules are named, not sent to "more halvings"
    Wrong(check_bisection, "swapped", bisect(update="swapped"), "wrong half"),
    Wrong(check_bisection, "bracket-no-abs", bisect(bracket="raw"), "upside-down"),
    Wrong(
        check_bisection,
        "only-hi",
        bisect(update="only-hi"),
        "end of the bracket moves|wrong half|left the bracket",
    ),
    Wrong(check_bisection, "return-y", bisect(ret="y"), "does not solve|left"),
    Wrong(check_bisection, "few-halvings", bisect(n_iter=12), "more halvings"),
    Wrong(check_bisection, "minus-b", lambda y, m, b: bisect()(y, m, -b), r"tanh\(alpha - b\)"),
    Wrong(
        check_bisection,
        "no-y",
        lambda y, m, b: bisect()(y, m, b) * 0 + bisect()(torch.zeros_like(y), m, b) + y - m.abs(),
        "does not solve|left|not right",
    ),
    Wrong(
        check_bisection,
        "python-number",
        lambda y, m, b: float(bisect()(y, m, b)[0]),
        "Python number",
    ),
    Wrong(check_bisection, "stub", stub, "not written yet"),
    # radial
    Wrong(
        check_radial_log_det,
        "D-times",
        radial(lambda d, r, h, a, b: d * torch.log1p(b * h) + torch.log1p(b * a * h**2)),
        "D - 1 times",
    ),
    Wrong(
        check_radial_log_det,
        "h-prime-sign",
        radial(
            lambda d, r, h, a, b: (d - 1) * torch.log1p(b * h) + torch.log1p(b * h + b * r * h**2)
        ),
        "minus sign",
    ),
    Wrong(
        check_radial_log_det,
        "no-h-prime",
        radial(lambda d, r, h, a, b: d * torch.log1p(b * h)),
        "h'\\(r\\) r",
    ),
    Wrong(
        check_radial_log_det,
        "r-squared",
        lambda z, z0, a, b: (
            radial_ref(z, z0, a, b) * 0
            + radial(
                lambda d, r, h, a, b: (
                    (d - 1) * torch.log1p(b / (a + r**2)) + torch.log1p(b * a / (a + r**2) ** 2)
                )
            )(z, z0, a, b)
        ),
        r"r\^2",
    ),
    Wrong(
        check_radial_log_det,
        "h-not-squared",
        radial(lambda d, r, h, a, b: (d - 1) * torch.log1p(b * h) + torch.log1p(b * a * h)),
        "squared",
    ),
    Wrong(
        check_radial_log_det,
        "power-one",
        radial(lambda d, r, h, a, b: torch.log1p(b * h) + torch.log1p(b * a * h**2)),
        "power D - 1",
    ),
    Wrong(
        check_radial_log_det,
        "product",
        radial(lambda d, r, h, a, b: (d - 1) * torch.log1p(b * h) * torch.log1p(b * a * h**2)),
        "sum of logs",
    ),
    Wrong(
        check_radial_log_det,
        "sum-over-batch",
        lambda z, z0, a, b: radial_ref(z, z0, a, b).sum(),
        "whole batch",
    ),
    Wrong(
        check_radial_log_det,
        "norm-over-batch",
        lambda z, z0, a, b: (
            radial_ref(z, z0, a, b) + 0 * (z - z0).norm(dim=0).sum() + ((z - z0).norm(dim=1) > 1e9)
        ),
        "not right|differs|D = ",
    ),
    Wrong(check_radial_log_det, "stub", stub, "not written yet"),
]
# the last radial row is a right answer in disguise: keep the table honest
WRONG = [w for w in WRONG if w.id != "norm-over-batch"]


def _planar_psi_detached(z, u, w, b):
    psi = (1 - torch.tanh(z @ w + b) ** 2).unsqueeze(1) * w
    return torch.log(torch.abs(1 + psi.detach() @ u))


def _u_hat_item(u, w):
    a = (w @ u).item()
    return u + (-1 + F.softplus(torch.tensor(a, dtype=u.dtype)) - a) * w / (w @ w)


def _radial_h_no_grad(z, z0, alpha, beta):
    with torch.no_grad():
        h = 1 / (alpha + (z - z0).norm(dim=1))
    return (z.shape[1] - 1) * torch.log1p(beta * h) + torch.log1p(beta * alpha * h**2)


# Values right, gradients cut from the graph.
WRONG += [
    Wrong(
        check_planar_log_det,
        "psi-detached",
        _planar_psi_detached,
        r"wrong gradient with respect to z, w, b.*cut from the autograd graph",
    ),
    Wrong(
        check_u_hat,
        "w-dot-u-item",
        _u_hat_item,
        r"wrong gradient with respect to u, w.*cut from the autograd graph",
    ),
    Wrong(
        check_radial_log_det,
        "h-under-no-grad",
        _radial_h_no_grad,
        r"wrong gradient with respect to z, z0, alpha.*cut from the autograd graph",
    ),
]


def newton(y, m, b):
    alpha = y.clone()
    lo, hi = y - m.abs(), y + m.abs()
    for _ in range(200):
        mid = (lo + hi) / 2
        positive = mid + m * torch.tanh(mid + b) - y > 0
        hi, lo = torch.where(positive, mid, hi), torch.where(positive, lo, mid)
    alpha = (lo + hi) / 2
    return alpha


RIGHT = [
    Right(check_planar_log_det, "solution", planar_ref),
    Right(
        check_planar_log_det,
        "float32",
        lambda z, u, w, b: planar_ref(z.float(), u.float(), w.float(), b.float()),
    ),
    Right(
        check_planar_log_det,
        "cosh",
        lambda z, u, w, b: torch.log(torch.abs(1 + (w @ u) / torch.cosh(z @ w + b) ** 2)),
    ),
    Right(check_u_hat, "solution", u_hat_ref),
    Right(check_u_hat, "float32", lambda u, w: u_hat_ref(u.float(), w.float())),
    Right(
        check_u_hat,
        "dot-products",
        lambda u, w: (
            u + (-1 + F.softplus(torch.dot(w, u)) - torch.dot(w, u)) * w / torch.dot(w, w)
        ),
    ),
    Right(check_bisection, "solution", bisect_ref),
    Right(
        check_bisection,
        "float32",
        lambda y, m, b: bisect_ref(y.float(), m.float(), b.float(), n_iter=40),
    ),
    Right(check_bisection, "more-iterations", newton),
    Right(check_radial_log_det, "solution", radial_ref),
    Right(
        check_radial_log_det,
        "float32",
        lambda z, z0, a, b: radial_ref(z.float(), z0.float(), a.float(), b.float()),
    ),
    Right(
        check_radial_log_det,
        "h-prime-written-out",
        radial(
            lambda d, r, h, a, b: (
                (d - 1) * torch.log(1 + b * h) + torch.log(1 + b * h - b * r / (a + r) ** 2)
            )
        ),
    ),
]


@pytest.mark.parametrize("row", [w.param() for w in WRONG])
def test_check_rejects_and_names_the_mistake(row):
    assert_wrong(row)


@pytest.mark.parametrize("row", [r.param() for r in RIGHT])
def test_check_accepts_right_answers_written_differently(row):
    assert_right(row)
