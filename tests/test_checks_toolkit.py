"""The shared machinery of the exercise checks: tolerances, coercion, error explanations,
named slips and the structural description of a mismatch."""

import math

import pytest
import torch
from torch import nn

from nfcourse.checks import (
    ExerciseError,
    Slip,
    as_number,
    as_tensor,
    check_gradients,
    compare,
    run,
    tolerances,
)
from nfcourse.checks._toolkit import compare_gradients, compare_gradients_numerically

F64 = torch.float64


def test_tolerances_follow_the_least_precise_dtype():
    a64, a32 = torch.zeros(2, dtype=F64), torch.zeros(2, dtype=torch.float32)
    assert tolerances(a64) < tolerances(a32) < tolerances(a64.half())
    assert tolerances(a64, a32) == tolerances(a32)


def test_compare_accepts_float32_answers_and_refuses_float64_ones_off_by_as_much():
    expected = torch.linspace(-3, 3, 7, dtype=F64) * 10
    compare(expected.float(), expected, "x")
    with pytest.raises(ExerciseError):
        compare(expected + 1e-5, expected, "x")


def _halves(z):
    z_a, z_b = torch.split(z, 2)
    return z_a


@pytest.mark.parametrize(
    "error, pattern",
    [
        (lambda: math.log(-1.0), "math domain.*absolute value"),
        (lambda: [1, 2, 3][5], "out of range"),
        (lambda: torch.zeros(3) + torch.zeros(4), "do not line up"),
        (lambda: _halves(torch.zeros(6, 4)), r"torch\.split\(z, 2\)"),
        (lambda: math.exp(torch.zeros(3)), "torch function"),
    ],
)
def test_run_explains_the_python_errors_students_meet(error, pattern):
    with pytest.raises(ExerciseError, match=pattern):
        run(error, name="f")


def test_run_refuses_an_input_modified_in_place():
    with pytest.raises(ExerciseError, match="in place"):
        run(lambda x: x.mul_(2), torch.ones(3), name="f")


@pytest.mark.parametrize(
    "value, pattern",
    [
        (1.5, "Python number"),
        (None, "return"),
        ((torch.zeros(3), torch.zeros(3)), "one tensor"),
        (torch.zeros(3).numpy(), "numpy"),
        (torch.zeros(3, 1), "extra axis"),
        (torch.zeros(()), "whole batch"),
        (torch.zeros(3, 2), "one value per coordinate"),
    ],
)
def test_as_tensor_says_what_came_back_instead(value, pattern):
    with pytest.raises(ExerciseError, match=pattern):
        as_tensor(value, "the answer", (3,), ("batch",))


def test_as_number_accepts_numbers_and_one_element_tensors():
    assert float(as_number(2.0, "n")) == 2.0
    assert as_number(torch.tensor([2.0], dtype=torch.float32), "n").dtype == torch.float32
    with pytest.raises(ExerciseError, match="one number"):
        as_number(torch.zeros(3), "n")


x = torch.linspace(0.5, 3.0, 6, dtype=F64)
right = torch.log(x) - 0.5 * x**2


@pytest.mark.parametrize(
    "got, pattern, kwargs",
    [
        (-right, "wrong sign", {}),
        (2 * right, r"2 times the right value", {}),
        (right - 0.5 * math.log(2 * math.pi), r"missing 0\.5 log\(2 pi\)", {}),
        (right + 0.3, r"same constant \+0\.3", {}),
        (
            right + torch.log(x),
            r"plus 1 x \(the term log x\)",
            {"terms": {"the term log x": torch.log(x)}},
        ),
        (
            torch.where(x > 2.5, right + 1, right),
            "exactly for the edge",
            {"groups": {"the edge": x > 2.5}},
        ),
        (torch.where(x > 2.5, math.inf, right), "overflows", {"large": x > 2.5}),
        (torch.where(x < 1, math.nan, right), "NaN", {}),
    ],
)
def test_compare_describes_the_structure_of_a_mismatch(got, pattern, kwargs):
    with pytest.raises(ExerciseError, match=pattern):
        compare(got, right, "your answer", **kwargs)


def test_compare_names_a_listed_slip_before_describing_the_difference():
    with pytest.raises(ExerciseError, match="forgot the log"):
        compare(x - 0.5 * x**2, right, "f", slips=[Slip("forgot the log", x - 0.5 * x**2)])


def test_check_gradients_names_the_parameters_that_no_gradient_reaches():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    with pytest.raises(ExerciseError, match="reaches b"):
        check_gradients(a * 2 + b.detach(), {"a": a, "b": b}, "out")
    with pytest.raises(ExerciseError, match="no gradient"):
        with torch.no_grad():
            out = a * 2
        check_gradients(out, {"a": a}, "out")


# --- gradients compared with the reference's ------------------------------------------------


def _log_density(x, a):
    return -0.5 * ((x / a) ** 2) - math.log(abs(a))


def _log_density_base_detached(x, a):
    return -0.5 * ((x.detach() / a) ** 2) - math.log(abs(a))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_compare_gradients_accepts_the_reference_in_float32_and_float64(dtype):
    x = torch.linspace(-2, 2, 5, dtype=F64)
    compare_gradients(
        lambda x, a: _log_density(x.to(dtype), a), _log_density, [x, -0.5], "f", wrt={0: "x"}
    )


def test_compare_gradients_names_a_term_cut_from_the_graph():
    x = torch.linspace(-2, 2, 5, dtype=F64)
    with pytest.raises(ExerciseError, match=r"without the base term.*cut from the autograd"):
        compare_gradients(
            _log_density_base_detached,
            _log_density,
            [x, -0.5],
            "f",
            wrt={0: "x"},
            terms={"the base term": lambda x, a: -0.5 * (x / a) ** 2},
        )


@pytest.mark.parametrize(
    "answer, pattern",
    [
        (lambda x: (x**2).detach(), r"carries no gradient.*detach / no_grad / \.item\(\) / numpy"),
        (lambda x: torch.tensor((x**2).tolist(), dtype=x.dtype), "carries no gradient"),
        (lambda x: x.detach() * x, r"wrong gradient with respect to x.*cut from the autograd"),
    ],
)
def test_compare_gradients_rejects_answers_cut_from_the_graph(answer, pattern):
    x = torch.tensor([0.5, -1.5, 2.0], dtype=F64)
    with pytest.raises(ExerciseError, match=pattern):
        compare_gradients(answer, lambda x: x**2, [x], "f", wrt={0: "x"})


def test_compare_gradients_compares_parameter_gradients_and_picks_an_output():
    net = nn.Linear(2, 2).double()
    x = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    params = dict(net.named_parameters())
    compare_gradients(
        lambda x, n: (n(x), n(x).sum(1)),
        lambda x, n: n(x).sum(1),
        [x, net],
        "y",
        wrt={0: "x"},
        params=params,
        pick=lambda out: out[1],
    )
    with pytest.raises(ExerciseError, match="weight"):
        compare_gradients(
            lambda x, n: x @ n.weight.detach().T + n.bias,
            lambda x, n: n(x),
            [x, net],
            "y",
            wrt={0: "x"},
            params=params,
        )


class _Scale(nn.Module):
    def __init__(self, detached=False, dtype=F64):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor([0.3, -0.2], dtype=F64))
        self.detached, self.dtype = detached, dtype

    def log_det(self, n):
        ls = self.log_scale.detach() if self.detached else self.log_scale
        return ls.sum().expand(n).to(self.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_compare_gradients_numerically_accepts_a_right_log_det(dtype):
    layer = _Scale(dtype=dtype)
    compare_gradients_numerically(lambda: layer.log_det(4), dict(layer.named_parameters()), "ld")


def test_compare_gradients_numerically_rejects_a_detached_log_det():
    layer = _Scale(detached=True)
    with pytest.raises(ExerciseError, match=r"finite differences.*cut from the autograd graph"):
        compare_gradients_numerically(
            lambda: layer.log_det(4), dict(layer.named_parameters()), "ld"
        )
    assert torch.equal(layer.log_scale.detach(), torch.tensor([0.3, -0.2], dtype=F64))
