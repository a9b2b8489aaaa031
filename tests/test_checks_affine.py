"""The chapter 2 exercise checks accept right answers and name wrong ones."""

import math

import pytest
import torch
from check_tables import Right, Wrong, assert_right, assert_wrong, stub
from solution_code import solution
from torch import nn

import nfcourse
from nfcourse.checks import ExerciseError
from nfcourse.checks.affine import (
    check_affine_layer,
    check_affine_log_det,
    check_combine_affine,
    check_triangular_log_det,
)

CH = "02_affine_flows"
log_det_ref = solution(CH, "affine_log_det")
AffineLayer = solution(CH, "AffineLayer")
combine_ref = solution(CH, "combine_affine")
triangular_ref = solution(CH, "triangular_log_det")


def layer_variant(**methods):
    return type("AffineLayer", (AffineLayer,), methods)


class RawScaleAbs(nfcourse.Transform):
    """The half-fix chapter 2 warns about: a raw scale with log|scale|."""

    def __init__(self, dim):
        super().__init__(dim)
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def _forward(self, z):
        return self.scale * z + self.shift, torch.log(self.scale.abs()).sum().expand(len(z))

    def _inverse(self, x):
        return ((x - self.shift) / self.scale, -torch.log(self.scale.abs()).sum().expand(len(x)))


class RawScale(RawScaleAbs):
    def _forward(self, z):
        return self.scale * z + self.shift, torch.log(self.scale).sum().expand(len(z))


class SquaredScale(RawScaleAbs):
    def _forward(self, z):
        return (self.scale**2 * z + self.shift, torch.log(self.scale**2).sum().expand(len(z)))

    def _inverse(self, x):
        return ((x - self.shift) / self.scale**2, -torch.log(self.scale**2).sum().expand(len(x)))


def _init_uninitialised(self, dim):
    nfcourse.Transform.__init__(self, dim)
    self.log_scale = nn.Parameter(torch.Tensor(dim))
    self.shift = nn.Parameter(torch.zeros(dim))


def _init_plain_shift(self, dim):
    nfcourse.Transform.__init__(self, dim)
    self.log_scale = nn.Parameter(torch.zeros(dim))
    self.shift = torch.zeros(dim)


def _init_ones_shift(self, dim):
    nfcourse.Transform.__init__(self, dim)
    self.log_scale = nn.Parameter(torch.zeros(dim))
    self.shift = nn.Parameter(torch.ones(dim))


def _init_scalar(self, dim):
    nfcourse.Transform.__init__(self, dim)
    self.log_scale = nn.Parameter(torch.zeros(1))
    self.shift = nn.Parameter(torch.zeros(1))


def _fwd(log_det):
    def _forward(self, z):
        return torch.exp(self.log_scale) * z + self.shift, log_det(self, z)

    return _forward


def _fwd_detached_shift(self, z):
    return (
        torch.exp(self.log_scale) * z + self.shift.detach(),
        self.log_scale.sum().expand(len(z)),
    )


def _inv_wrong_order(self, x):
    return x * torch.exp(-self.log_scale) - self.shift, -self.log_scale.sum().expand(len(x))


def _inv_same_log_det(self, x):
    return (x - self.shift) * torch.exp(-self.log_scale), self.log_scale.sum().expand(len(x))


def _inv_in_place(self, x):
    x -= self.shift
    return x * torch.exp(-self.log_scale), -self.log_scale.sum().expand(len(x))


class PlainModule(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(dim))


def _init_stub(self, dim):
    raise NotImplementedError()


def _slow_triangular(t):
    return torch.linalg.slogdet(t)[1]


WRONG = [
    # exercise 1
    Wrong(check_affine_log_det, "log-no-abs", lambda a: torch.log(a).sum(), "negative"),
    Wrong(check_affine_log_det, "log-prod", lambda a: torch.log(a.prod()), r"log\(prod"),
    Wrong(
        check_affine_log_det,
        "log-abs-prod",
        lambda a: torch.log(a.prod().abs()),
        "under- or overflow",
    ),
    Wrong(check_affine_log_det, "logdet-diag", lambda a: torch.logdet(torch.diag(a)), "logdet"),
    Wrong(check_affine_log_det, "prod", lambda a: a.prod(), r"prod\(a\)"),
    Wrong(check_affine_log_det, "sum", lambda a: a.sum(), r"sum\(a\)"),
    Wrong(check_affine_log_det, "abs-of-log", lambda a: torch.log(a).abs().sum(), "negative"),
    Wrong(
        check_affine_log_det,
        "abs-outside",
        lambda a: torch.log(a.abs()).abs().sum(),
        "absolute value belongs inside",
    ),
    Wrong(check_affine_log_det, "mean", lambda a: torch.log(a.abs()).mean(), "averaged"),
    Wrong(check_affine_log_det, "log-square", lambda a: torch.log(a**2).sum(), r"a_i\^2|factor 2"),
    Wrong(check_affine_log_det, "no-sum", lambda a: torch.log(a.abs()), "sum"),
    Wrong(
        check_affine_log_det, "item", lambda a: torch.log(a.abs()).sum().item(), "Python number"
    ),
    Wrong(
        check_affine_log_det,
        "math-loop",
        lambda a: sum(math.log(v) for v in a.tolist()),
        "math domain|Python number",
    ),
    Wrong(
        check_affine_log_det,
        "rebuilt-tensor",
        lambda a: torch.tensor(float(torch.log(a.abs()).sum())),
        "gradient",
    ),
    Wrong(check_affine_log_det, "stub", stub, "not written yet"),
    # exercise 2: the repaired layer (erratum: the raw scale with abs() is refused)
    Wrong(check_affine_layer, "raw-scale-abs", RawScaleAbs, r"abs\(\).*raw scale|raw scale.*abs"),
    Wrong(check_affine_layer, "raw-scale", RawScale, "raw scale"),
    Wrong(check_affine_layer, "squared-scale", SquaredScale, "scale is 0|zero"),
    Wrong(
        check_affine_layer,
        "uninitialised",
        layer_variant(__init__=_init_uninitialised),
        "never set",
    ),
    Wrong(
        check_affine_layer,
        "plain-tensor",
        layer_variant(__init__=_init_plain_shift),
        "nn.Parameter",
    ),
    Wrong(
        check_affine_layer, "not-identity", layer_variant(__init__=_init_ones_shift), "identity"
    ),
    Wrong(
        check_affine_layer,
        "scalar-parameters",
        layer_variant(__init__=_init_scalar),
        r"shape \(3,\)",
    ),
    Wrong(
        check_affine_layer,
        "scalar-log-det",
        layer_variant(_forward=_fwd(lambda self, z: self.log_scale.sum())),
        "whole batch",
    ),
    Wrong(
        check_affine_layer,
        "per-coordinate-log-det",
        layer_variant(_forward=_fwd(lambda self, z: self.log_scale.expand(len(z), -1))),
        "one value per coordinate",
    ),
    Wrong(
        check_affine_layer,
        "log-det-sign",
        layer_variant(_forward=_fwd(lambda self, z: -self.log_scale.sum().expand(len(z)))),
        "inverse's log-det",
    ),
    Wrong(
        check_affine_layer,
        "log-det-exp",
        layer_variant(
            _forward=_fwd(lambda self, z: torch.exp(self.log_scale).sum().expand(len(z)))
        ),
        "sums exp",
    ),
    Wrong(
        check_affine_layer,
        "log-det-mean",
        layer_variant(_forward=_fwd(lambda self, z: self.log_scale.mean().expand(len(z)))),
        "averages",
    ),
    Wrong(
        check_affine_layer,
        "inverse-order",
        layer_variant(_inverse=_inv_wrong_order),
        r"inverse\(forward",
    ),
    Wrong(
        check_affine_layer,
        "inverse-log-det",
        layer_variant(_inverse=_inv_same_log_det),
        "must be its negative",
    ),
    Wrong(
        check_affine_layer, "inverse-in-place", layer_variant(_inverse=_inv_in_place), "in place"
    ),
    Wrong(
        check_affine_layer,
        "detached-shift",
        layer_variant(_forward=_fwd_detached_shift),
        "no gradient reaches shift",
    ),
    Wrong(check_affine_layer, "plain-module", PlainModule, "nfcourse.Transform"),
    Wrong(check_affine_layer, "stub", layer_variant(__init__=_init_stub), "not written yet"),
    # exercise 3
    Wrong(
        check_combine_affine,
        "add-scales",
        lambda a1, b1, a2, b2: (a1 + a2, a2 * b1 + b2),
        "scales multiply",
    ),
    Wrong(
        check_combine_affine,
        "add-shifts",
        lambda a1, b1, a2, b2: (a2 * a1, b1 + b2),
        r"b = a2 \* b1 \+ b2",
    ),
    Wrong(
        check_combine_affine, "add-both", lambda a1, b1, a2, b2: (a1 + a2, b1 + b2), "substitution"
    ),
    Wrong(
        check_combine_affine,
        "wrong-order",
        lambda a1, b1, a2, b2: (a2 * a1, a1 * b2 + b1),
        "wrong order",
    ),
    Wrong(
        check_combine_affine,
        "scale-both-shifts",
        lambda a1, b1, a2, b2: (a2 * a1, a2 * (b1 + b2)),
        "added after scaling",
    ),
    Wrong(
        check_combine_affine,
        "a1-scales-b1",
        lambda a1, b1, a2, b2: (a2 * a1, a1 * b1 + b2),
        "multiplies b1, not a1",
    ),
    Wrong(
        check_combine_affine,
        "abs-scale",
        lambda a1, b1, a2, b2: ((a2 * a1).abs(), a2 * b1 + b2),
        r"wrong for 1 \(a\[0\]\)",
    ),
    Wrong(check_combine_affine, "only-scale", lambda a1, b1, a2, b2: a2 * a1, "pair"),
    Wrong(check_combine_affine, "stub", stub, "not written yet"),
    # exercise 4
    Wrong(
        check_triangular_log_det,
        "log-no-abs",
        lambda t: torch.log(torch.diagonal(t)).sum(),
        "negative diagonal",
    ),
    Wrong(
        check_triangular_log_det,
        "log-prod",
        lambda t: torch.log(torch.prod(torch.diagonal(t))),
        r"log\(prod",
    ),
    Wrong(
        check_triangular_log_det,
        "log-abs-prod",
        lambda t: torch.log(torch.prod(torch.diagonal(t)).abs()),
        "underflow",
    ),
    Wrong(check_triangular_log_det, "trace", lambda t: torch.diagonal(t).abs().sum(), r"\|T_ii\|"),
    Wrong(
        check_triangular_log_det,
        "whole-triangle",
        lambda t: torch.log(t.abs() + (t == 0)).sum(),
        "whole triangle",
    ),
    Wrong(check_triangular_log_det, "slogdet", _slow_triangular, r"O\(D\^3\)"),
    Wrong(
        check_triangular_log_det,
        "det",
        lambda t: torch.log(torch.det(t).abs()),
        r"O\(D\^3\)|underflow",
    ),
    Wrong(check_triangular_log_det, "logdet", torch.logdet, "logdet"),
    Wrong(check_triangular_log_det, "no-sum", lambda t: torch.log(torch.diagonal(t).abs()), "sum"),
    Wrong(
        check_triangular_log_det,
        "first-row",
        lambda t: torch.log(t[0].abs() + (t[0] == 0)).sum(),
        "differs|only",
    ),
    Wrong(
        check_triangular_log_det,
        "item",
        lambda t: torch.log(torch.diagonal(t).abs()).sum().item(),
        "Python number",
    ),
    Wrong(check_triangular_log_det, "stub", stub, "not written yet"),
]


def _log_det_no_grad_for_negatives(a):
    with torch.no_grad():
        negative = torch.log(-a[a < 0]).sum()
    return torch.log(a[a > 0]).sum() + negative


def _triangular_first_detached(t):
    total = torch.log(t[0, 0].abs()).detach()
    for i in range(1, len(t)):
        total = total + torch.log(t[i, i].abs())
    return total


def _fwd_log_det_float(self, z):
    x = torch.exp(self.log_scale) * z + self.shift
    return x, torch.full((len(z),), self.log_scale.sum().item(), dtype=z.dtype)


def _inv_log_det_detached(self, x):
    z = (x - self.shift) * torch.exp(-self.log_scale)
    return z, -self.log_scale.detach().sum().expand(len(x))


# Values right, gradients cut from the graph.
WRONG += [
    Wrong(
        check_affine_log_det,
        "no-grad-for-negative-scales",
        _log_det_no_grad_for_negatives,
        r"wrong gradient with respect to the scales a.*cut from the autograd graph",
    ),
    Wrong(
        check_triangular_log_det,
        "first-entry-detached",
        _triangular_first_detached,
        r"wrong gradient with respect to the matrix T.*cut from the autograd graph",
    ),
    Wrong(
        check_affine_layer,
        "log-det-through-float",
        layer_variant(_forward=_fwd_log_det_float),
        r"log-det of AffineLayer.forward.*carries no gradient.*cut from the autograd graph",
    ),
    Wrong(
        check_affine_layer,
        "inverse-log-det-detached",
        layer_variant(_inverse=_inv_log_det_detached),
        r"log-det of AffineLayer.inverse.*cut from the autograd graph",
    ),
]


class Float32Layer(AffineLayer):
    def _forward(self, z):
        x, ld = AffineLayer._forward(self, z)
        return x.float(), ld.float()


class SoftplusLayer(nfcourse.Transform):
    """A positive scale through softplus: another valid fix."""

    def __init__(self, dim):
        super().__init__(dim)
        self.raw = nn.Parameter(torch.full((dim,), math.log(math.e - 1)))
        self.shift = nn.Parameter(torch.zeros(dim))

    def _forward(self, z):
        scale = nn.functional.softplus(self.raw)
        return scale * z + self.shift, torch.log(scale).sum().expand(len(z))

    def _inverse(self, x):
        scale = nn.functional.softplus(self.raw)
        return (x - self.shift) / scale, -torch.log(scale).sum().expand(len(x))


RIGHT = [
    Right(check_affine_log_det, "solution", log_det_ref),
    Right(check_affine_log_det, "slogdet-diag", lambda a: torch.linalg.slogdet(torch.diag(a))[1]),
    Right(check_affine_log_det, "half-log-square", lambda a: 0.5 * torch.log(a**2).sum()),
    Right(check_affine_log_det, "float32", lambda a: torch.log(a.float().abs()).sum()),
    Right(check_affine_layer, "solution", AffineLayer),
    Right(check_affine_layer, "float32-forward", Float32Layer),
    Right(check_affine_layer, "softplus-scale", SoftplusLayer),
    Right(check_combine_affine, "solution", combine_ref),
    Right(
        check_combine_affine,
        "float32",
        lambda a1, b1, a2, b2: ((a2 * a1).float(), (a2 * b1 + b2).float()),
    ),
    Right(check_combine_affine, "expanded", lambda a1, b1, a2, b2: (a1 * a2, b2 + b1 * a2)),
    Right(check_triangular_log_det, "solution", triangular_ref),
    Right(check_triangular_log_det, "diag", lambda t: torch.diag(t).abs().log().sum()),
    Right(
        check_triangular_log_det,
        "float32",
        lambda t: torch.log(torch.diagonal(t).float().abs()).sum(),
    ),
]


@pytest.mark.parametrize("row", [w.param() for w in WRONG])
def test_check_rejects_and_names_the_mistake(row):
    assert_wrong(row)


@pytest.mark.parametrize("row", [r.param() for r in RIGHT])
def test_check_accepts_right_answers_written_differently(row):
    assert_right(row)


def test_affine_layer_check_restores_pytorch_settings():
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    check_affine_layer(AffineLayer)
    with pytest.raises(ExerciseError):
        check_affine_layer(layer_variant(__init__=_init_stub))
    assert (
        torch.are_deterministic_algorithms_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    ) == before
