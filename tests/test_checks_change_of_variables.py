"""The exercise checks of chapter 1 accept right answers and name wrong ones."""

import math

import pytest
import torch
from check_tables import Right, Wrong, assert_right, assert_wrong, stub
from solution_code import solution
from torch.distributions import LogNormal, Normal

import nfcourse as nf
from nfcourse.checks.change_of_variables import (
    check_affine_log_prob,
    check_banana,
    check_lognormal_log_prob,
    check_polar_log_abs_det,
)

CH = "01_change_of_variables"
affine_ref = solution(CH, "affine_log_prob")
lognormal_ref = solution(CH, "lognormal_log_prob")
polar_ref = solution(CH, "polar_log_abs_det")
Banana = solution(CH, "Banana")


def pdf(z):
    return -0.5 * z**2 - 0.5 * math.log(2 * math.pi)


def banana_variant(forward=None, inverse=None, init=None):
    """The solution's Banana with one method replaced by a wrong one."""
    attrs = {}
    if forward:
        attrs["_forward"] = forward
    if inverse:
        attrs["_inverse"] = inverse
    if init:
        attrs["__init__"] = init
    return type("Banana", (Banana,), attrs)


def fwd_with_log_det(log_det):
    def _forward(self, z):
        x, _ = Banana._forward(self, z)
        return x, log_det(self, z)

    return _forward


def _cube_forward(self, z):
    x2 = math.exp(self.log_scale) * z[:, 1] + self.curvature * z[:, 0] ** 3
    return torch.stack([z[:, 0], x2], 1), torch.full_like(z[:, 0], self.log_scale)


def _scale_s_forward(self, z):
    x2 = self.log_scale * z[:, 1] + self.curvature * z[:, 0] ** 2
    return torch.stack([z[:, 0], x2], 1), torch.full_like(z[:, 0], self.log_scale)


def _inverse_no_curvature(self, x):
    z2 = x[:, 1] * math.exp(-self.log_scale)
    return torch.stack([x[:, 0], z2], 1), torch.full_like(x[:, 0], -self.log_scale)


def _inverse_plus_curvature(self, x):
    z2 = (x[:, 1] + self.curvature * x[:, 0] ** 2) * math.exp(-self.log_scale)
    return torch.stack([x[:, 0], z2], 1), torch.full_like(x[:, 0], -self.log_scale)


def _inverse_same_log_det(self, x):
    z, ld = Banana._inverse(self, x)
    return z, -ld


def _inverse_in_place(self, x):
    x[:, 1] = (x[:, 1] - self.curvature * x[:, 0] ** 2) * math.exp(-self.log_scale)
    return x, torch.full_like(x[:, 0], -self.log_scale)


def _hardcoded_init(self, curvature, log_scale):
    nf.Transform.__init__(self, dim=2)
    self.curvature, self.log_scale = 0.5, -0.7


WRONG = [
    # exercise 1: x = a z + b
    Wrong(
        check_affine_log_prob,
        "log-a-nan",
        lambda x, a, b: pdf((x - b) / a) - torch.log(torch.tensor(a)),
        "absolute value",
    ),
    Wrong(
        check_affine_log_prob,
        "math-log-a",
        lambda x, a, b: pdf((x - b) / a) - math.log(a),
        "math domain.*absolute value",
    ),
    Wrong(
        check_affine_log_prob,
        "plus-log-a",
        lambda x, a, b: pdf((x - b) / a) + math.log(abs(a)),
        "should be subtracted",
    ),
    Wrong(
        check_affine_log_prob,
        "no-jacobian",
        lambda x, a, b: pdf((x - b) / a),
        "Jacobian term is missing",
    ),
    Wrong(
        check_affine_log_prob,
        "density-at-x",
        lambda x, a, b: pdf(x) - math.log(abs(a)),
        r"z = \(x - b\) / a",
    ),
    Wrong(
        check_affine_log_prob,
        "times-a",
        lambda x, a, b: pdf((x - b) * a) - math.log(abs(a)),
        "multiplied",
    ),
    Wrong(
        check_affine_log_prob,
        "x-over-a-minus-b",
        lambda x, a, b: pdf(x / a - b) - math.log(abs(a)),
        "subtract b before",
    ),
    Wrong(
        check_affine_log_prob,
        "no-2pi",
        lambda x, a, b: -0.5 * ((x - b) / a) ** 2 - math.log(abs(a)),
        r"log\(2 pi\)",
    ),
    Wrong(
        check_affine_log_prob,
        "normal-with-a",
        lambda x, a, b: Normal(b, a).log_prob(x) if a > 0 else Normal(b, -a).log_prob(-x),
        "wrong for some|negative slopes",
    ),
    Wrong(
        check_affine_log_prob,
        "variance-a2",
        lambda x, a, b: Normal(b, a**2).log_prob(x),
        "differs|slopes",
    ),
    Wrong(
        check_affine_log_prob,
        "python-float",
        lambda x, a, b: float(affine_ref(x, a, b)[0]),
        "Python number",
    ),
    Wrong(check_affine_log_prob, "numpy", lambda x, a, b: affine_ref(x, a, b).numpy(), "numpy"),
    Wrong(
        check_affine_log_prob,
        "keepdim",
        lambda x, a, b: affine_ref(x, a, b).unsqueeze(1),
        "extra axis",
    ),
    Wrong(
        check_affine_log_prob,
        "in-place",
        lambda x, a, b: pdf(x.sub_(b).div_(a)) - math.log(abs(a)),
        "in place",
    ),
    Wrong(check_affine_log_prob, "stub", stub, "not written yet"),
    # exercise 2: x = exp(mu + sigma z)
    Wrong(
        check_lognormal_log_prob,
        "no-log-x",
        lambda x, mu, s: pdf((torch.log(x) - mu) / s) - math.log(s),
        "-log x is missing",
    ),
    Wrong(
        check_lognormal_log_prob,
        "no-log-sigma",
        lambda x, mu, s: pdf((torch.log(x) - mu) / s) - torch.log(x),
        "-log sigma is missing",
    ),
    Wrong(
        check_lognormal_log_prob,
        "sign",
        lambda x, mu, s: pdf((torch.log(x) - mu) / s) + math.log(s) + torch.log(x),
        "wrong sign",
    ),
    Wrong(
        check_lognormal_log_prob,
        "no-half-log-2pi",
        lambda x, mu, s: -0.5 * ((torch.log(x) - mu) / s) ** 2 - math.log(s) - torch.log(x),
        r"0\.5 log\(2 pi\)",
    ),
    Wrong(
        check_lognormal_log_prob,
        "no-log-of-x",
        lambda x, mu, s: pdf((x - mu) / s) - math.log(s) - torch.log(x),
        "log of x",
    ),
    Wrong(
        check_lognormal_log_prob,
        "no-jacobian",
        lambda x, mu, s: pdf((torch.log(x) - mu) / s),
        "whole Jacobian",
    ),
    Wrong(
        check_lognormal_log_prob,
        "plus-log-x",
        lambda x, mu, s: pdf((torch.log(x) - mu) / s) - math.log(s) + torch.log(x),
        "-log x has the wrong sign",
    ),
    Wrong(
        check_lognormal_log_prob,
        "sigma-squared",
        lambda x, mu, s: pdf((torch.log(x) - mu) / s**2) - math.log(s) - torch.log(x),
        "differs|for \\d+ of",
    ),
    Wrong(
        check_lognormal_log_prob,
        "short",
        lambda x, mu, s: lognormal_ref(x, mu, s)[:-1],
        r"shape \(7,\); expected \(8,\)",
    ),
    Wrong(
        check_lognormal_log_prob,
        "math-log",
        lambda x, mu, s: pdf((math.log(x) - mu) / s),
        "torch function",
    ),
    Wrong(check_lognormal_log_prob, "stub", stub, "not written yet"),
    # exercise 3: polar coordinates
    Wrong(check_polar_log_abs_det, "r-squared", lambda z: torch.log(z[:, 0] ** 2), r"r\^2|twice"),
    Wrong(check_polar_log_abs_det, "det-itself", lambda z: z[:, 0], "logarithm"),
    Wrong(check_polar_log_abs_det, "sign", lambda z: -torch.log(z[:, 0]), "sign|inverse"),
    Wrong(check_polar_log_abs_det, "log-theta", lambda z: torch.log(z[:, 1]), "theta"),
    Wrong(check_polar_log_abs_det, "keepdim", lambda z: torch.log(z[:, :1]), "extra axis"),
    Wrong(
        check_polar_log_abs_det,
        "per-coordinate",
        lambda z: torch.log(z.abs()),
        "one value per coordinate",
    ),
    Wrong(
        check_polar_log_abs_det,
        "cos-minus-sin",
        lambda z: torch.log((z[:, 0] * (torch.cos(z[:, 1]) ** 2 - torch.sin(z[:, 1]) ** 2)).abs()),
        "sign slip",
    ),
    Wrong(
        check_polar_log_abs_det,
        "sum-over-batch",
        lambda z: torch.log(z[:, 0]).sum(),
        "whole batch",
    ),
    Wrong(check_polar_log_abs_det, "math-log", lambda z: math.log(z[0, 0]), "Python number"),
    Wrong(
        check_polar_log_abs_det,
        "one-sample-off",
        lambda z: torch.log(z[:, 0]) + 0.7 * (torch.arange(len(z)) == 3),
        r"wrong for 1 .*sample 3",
    ),
    Wrong(check_polar_log_abs_det, "stub", stub, "not written yet"),
    # exercise 4: the banana
    Wrong(
        check_banana,
        "log-det-zero",
        banana_variant(forward=fwd_with_log_det(lambda self, z: torch.zeros_like(z[:, 0]))),
        "log-det is 0",
    ),
    Wrong(
        check_banana,
        "inverse-log-det-in-forward",
        banana_variant(
            forward=fwd_with_log_det(lambda self, z: torch.full_like(z[:, 0], -self.log_scale))
        ),
        "inverse's log-det",
    ),
    Wrong(
        check_banana,
        "log-det-exp-s",
        banana_variant(
            forward=fwd_with_log_det(
                lambda self, z: torch.full_like(z[:, 0], math.exp(self.log_scale))
            )
        ),
        r"scale itself|\|det J\| itself",
    ),
    Wrong(
        check_banana,
        "scalar-log-det",
        banana_variant(
            forward=fwd_with_log_det(lambda self, z: torch.tensor(self.log_scale, dtype=z.dtype))
        ),
        "whole batch",
    ),
    Wrong(check_banana, "cube", banana_variant(forward=_cube_forward), "differs|z1\\^2"),
    Wrong(check_banana, "scale-s", banana_variant(forward=_scale_s_forward), "exp\\(s\\)"),
    Wrong(
        check_banana,
        "inverse-no-curvature",
        banana_variant(inverse=_inverse_no_curvature),
        "inverse\\(forward",
    ),
    Wrong(
        check_banana,
        "inverse-plus-curvature",
        banana_variant(inverse=_inverse_plus_curvature),
        "inverse\\(forward",
    ),
    Wrong(
        check_banana,
        "inverse-log-det-sign",
        banana_variant(inverse=_inverse_same_log_det),
        "must be its negative",
    ),
    Wrong(check_banana, "inverse-in-place", banana_variant(inverse=_inverse_in_place), "in place"),
    Wrong(
        check_banana, "hard-coded-parameters", banana_variant(init=_hardcoded_init), r"c = -1\.3"
    ),
    Wrong(check_banana, "stub-inverse", banana_variant(inverse=stub), "not written yet"),
]


def _affine_base_detached(x, a, b):
    z = (x - b) / a
    return pdf(z.detach()) - math.log(abs(a))


def _affine_no_grad(x, a, b):
    with torch.no_grad():
        base = pdf((x - b) / a)
    return base - math.log(abs(a))


def _lognormal_log_x_detached(x, mu, sigma):
    z = (torch.log(x) - mu) / sigma
    return pdf(z) - math.log(sigma) - torch.log(x).detach()


def _lognormal_numpy_jacobian(x, mu, sigma):
    z = (torch.log(x) - mu) / sigma
    return pdf(z) - math.log(sigma) - torch.tensor(x.detach().numpy()).log()


def _forward_detached(self, z):
    x, log_det = Banana._forward(self, z)
    return x.detach(), log_det


# Values right, gradients cut from the graph: accepted by value checks alone.
WRONG += [
    Wrong(
        check_affine_log_prob,
        "base-term-detached",
        _affine_base_detached,
        r"without the base term.*cut from the autograd graph",
    ),
    Wrong(
        check_affine_log_prob,
        "base-term-no-grad",
        _affine_no_grad,
        r"without the base term.*cut from the autograd graph",
    ),
    Wrong(
        check_lognormal_log_prob,
        "log-x-detached",
        _lognormal_log_x_detached,
        r"without the Jacobian term.*cut from the autograd graph",
    ),
    Wrong(
        check_lognormal_log_prob,
        "log-x-through-numpy",
        _lognormal_numpy_jacobian,
        r"without the Jacobian term.*cut from the autograd graph",
    ),
    Wrong(
        check_polar_log_abs_det,
        "detached",
        lambda z: torch.log(z[:, 0]).detach(),
        r"carries no gradient.*cut from the autograd graph",
    ),
    Wrong(
        check_polar_log_abs_det,
        "item-per-point",
        lambda z: torch.tensor([math.log(r) for r in z[:, 0].tolist()], dtype=z.dtype),
        r"cut from the autograd graph",
    ),
    Wrong(
        check_banana,
        "forward-detached",
        banana_variant(forward=_forward_detached),
        r"cut from the autograd graph",
    ),
]


def _affine_normal(x, a, b):
    return Normal(b, abs(a)).log_prob(x)


def _lognormal_torch(x, mu, sigma):
    return LogNormal(mu, sigma).log_prob(x)


class BananaFloat32(Banana):
    def _forward(self, z):
        return Banana._forward(self, z.float())


RIGHT = [
    Right(check_affine_log_prob, "solution", affine_ref),
    Right(check_affine_log_prob, "torch-normal", _affine_normal),
    Right(check_affine_log_prob, "float32", lambda x, a, b: affine_ref(x.float(), a, b)),
    Right(
        check_affine_log_prob,
        "log-of-pdf",
        lambda x, a, b: torch.log(
            torch.exp(-(((x - b) / a) ** 2) / 2) / math.sqrt(2 * math.pi) / abs(a)
        ),
    ),
    Right(check_lognormal_log_prob, "solution", lognormal_ref),
    Right(check_lognormal_log_prob, "torch-lognormal", _lognormal_torch),
    Right(check_lognormal_log_prob, "float32", lambda x, mu, s: lognormal_ref(x.float(), mu, s)),
    Right(check_polar_log_abs_det, "solution", polar_ref),
    Right(check_polar_log_abs_det, "float32", lambda z: torch.log(z[:, 0].float())),
    Right(check_polar_log_abs_det, "half-log-r2", lambda z: 0.5 * torch.log(z[:, 0] ** 2)),
    Right(check_banana, "solution", Banana),
    Right(check_banana, "float32-forward", BananaFloat32),
]


@pytest.mark.parametrize("row", [w.param() for w in WRONG])
def test_check_rejects_and_names_the_mistake(row):
    assert_wrong(row)


@pytest.mark.parametrize("row", [r.param() for r in RIGHT])
def test_check_accepts_right_answers_written_differently(row):
    assert_right(row)
