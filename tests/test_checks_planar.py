"""The exercise checks of chapter 3 accept right answers and explain wrong ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nfcourse.checks import ExerciseError
from nfcourse.checks.planar import (check_bisection, check_planar_log_det,
                                    check_radial_log_det, check_u_hat)


# Reference answers, written as a student would.
def planar_log_det(z, u, w, b):
    h = torch.tanh(z @ w + b)
    return torch.log(torch.abs(1 + (1 - h**2) * (w @ u)))


def u_hat(u, w):
    a = w @ u
    return u + (-1 + F.softplus(a) - a) * w / (w @ w)


def bisect_projection(y, m, b, n_iter=80):
    lo, hi = y - m.abs(), y + m.abs()
    for _ in range(n_iter):
        mid = (lo + hi) / 2
        positive = mid + m * torch.tanh(mid + b) - y > 0
        hi = torch.where(positive, mid, hi)
        lo = torch.where(positive, lo, mid)
    return (lo + hi) / 2


def radial_log_det(z, z0, alpha, beta):
    r = (z - z0).norm(dim=1)
    h = 1 / (alpha + r)
    return (z.shape[1] - 1) * torch.log(1 + beta * h) + torch.log(1 + beta * alpha * h**2)


def stub(*args):
    raise NotImplementedError()


def test_checks_accept_right_answers(capsys):
    check_planar_log_det(planar_log_det)
    check_u_hat(u_hat)
    check_bisection(bisect_projection)
    check_radial_log_det(radial_log_det)
    assert capsys.readouterr().out.count("Correct:") == 4


@pytest.mark.parametrize("check", [check_planar_log_det, check_u_hat, check_bisection,
                                   check_radial_log_det])
def test_checks_say_which_exercise_is_still_a_stub(check):
    with pytest.raises(ExerciseError, match="not written yet"):
        check(stub)


@pytest.mark.parametrize("wrong, message", [
    (lambda z, u, w, b: torch.log(torch.abs(1 - (1 - torch.tanh(z @ w + b) ** 2) * (w @ u)))
     + 0 * z[:, 0], "sign error"),
    (lambda z, u, w, b: torch.log(torch.abs(1 + w @ u)) + 0 * z[:, 0], "derivative"),
    (lambda z, u, w, b: torch.log(torch.abs(1 + torch.tanh(z @ w + b) * (w @ u))),
     "uses tanh"),
    (lambda z, u, w, b: planar_log_det(z, u, w, b).unsqueeze(1), "wrong shape"),
    (lambda z, u, w, b: torch.log(1 + (1 - torch.tanh(z @ w + b) ** 2) * (w @ u)),
     "absolute value"),
    (lambda z, u, w, b: planar_log_det(z, u, w, b) + 0.1, "autograd Jacobian by 0.1"),
])
def test_planar_log_det_check_names_the_slip(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_planar_log_det(wrong)


def test_u_hat_check_catches_the_known_slips_of_public_code():
    def divides_by_norm(u, w):
        a = w @ u
        return u + (-1 + F.softplus(a) - a) * w / w.norm()

    def log_of_softplus(u, w):
        a = w @ u
        return u + (-1 + torch.log1p(F.softplus(a)) - a) * w / (w @ w)

    with pytest.raises(ExerciseError, match=r"divide by \|\|w\|\|\^2"):
        check_u_hat(divides_by_norm)
    with pytest.raises(ExerciseError, match=r"m\(a\) = -1 \+ softplus\(a\)"):
        check_u_hat(log_of_softplus)
    with pytest.raises(ExerciseError, match="not be invertible"):
        check_u_hat(lambda u, w: u)


def test_bisection_check_explains_too_few_steps_and_a_wrong_bracket():
    with pytest.raises(ExerciseError, match="more halvings"):
        check_bisection(lambda y, m, b: bisect_projection(y, m, b, n_iter=5))
    with pytest.raises(ExerciseError, match="left the bracket"):
        check_bisection(lambda y, m, b: y + 10 * m.abs() + 1)


def test_radial_log_det_check_names_the_slip():
    def d_times(z, z0, alpha, beta):
        r = (z - z0).norm(dim=1)
        h = 1 / (alpha + r)
        return z.shape[1] * torch.log(1 + beta * h) + torch.log(1 + beta * alpha * h**2)

    def wrong_sign(z, z0, alpha, beta):
        r = (z - z0).norm(dim=1)
        h = 1 / (alpha + r)
        return ((z.shape[1] - 1) * torch.log(1 + beta * h)
                + torch.log(1 + beta * h + beta * r * h**2))

    with pytest.raises(ExerciseError, match="D - 1 times"):
        check_radial_log_det(d_times)
    with pytest.raises(ExerciseError, match="minus sign"):
        check_radial_log_det(wrong_sign)
    with pytest.raises(ExerciseError, match="autograd Jacobian"):
        check_radial_log_det(lambda z, z0, a, b: radial_log_det(z, z0, a, b) * 1.1)
