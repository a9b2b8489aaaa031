"""The exercise checks of chapter 5 accept right answers and explain wrong ones."""

from __future__ import annotations

import math

import pytest
import torch

from nfcourse.checks import ExerciseError
from nfcourse.checks.coupling import (
    check_affine_coupling_forward,
    check_affine_coupling_inverse,
    check_bits_per_dim,
    check_coupling_jacobian,
    check_dequantize,
    make_conditioner,
)


def forward_right(z, conditioner):
    d = z.shape[1] // 2
    s, t = conditioner(z[:, :d]).chunk(2, dim=1)
    return torch.cat([z[:, :d], z[:, d:] * torch.exp(s) + t], dim=1), s.sum(dim=1)


def inverse_right(x, conditioner):
    d = x.shape[1] // 2
    s, t = conditioner(x[:, :d]).chunk(2, dim=1)
    return torch.cat([x[:, :d], (x[:, d:] - t) * torch.exp(-s)], dim=1), -s.sum(dim=1)


def jacobian_right(layer, z):
    order = torch.cat([layer.cond_index, layer.trans_index])
    jac = torch.autograd.functional.jacobian(lambda v: layer(v.unsqueeze(0))[0][0], z)
    return jac[order][:, order]


def log_det_right(jac, n_cond):
    return torch.diagonal(jac)[n_cond:].abs().log().sum()


def dequantize_right(x, levels, generator):
    return (x + torch.rand(x.shape, generator=generator, dtype=x.dtype)) / levels


def bits_right(nll, dim, levels):
    return (nll + dim * math.log(levels)) / (dim * math.log(2))


def stub(*args):
    raise NotImplementedError()


def test_make_conditioner_outputs_scale_and_shift_for_each_transformed_coordinate():
    net = make_conditioner(6)
    assert net(torch.zeros(3, 3, dtype=torch.float64)).shape == (3, 6)
    with pytest.raises(ValueError):
        make_conditioner(5)


def test_right_answers_pass(capsys):
    check_affine_coupling_forward(forward_right)
    check_affine_coupling_inverse(inverse_right)
    check_coupling_jacobian(jacobian_right, log_det_right)
    check_dequantize(dequantize_right)
    check_bits_per_dim(bits_right)
    out = capsys.readouterr().out
    assert out.count("Correct") == 5


@pytest.mark.parametrize("check,args", [
    (check_affine_coupling_forward, (stub,)),
    (check_affine_coupling_inverse, (stub,)),
    (check_coupling_jacobian, (stub, log_det_right)),
    (check_coupling_jacobian, (jacobian_right, stub)),
    (check_dequantize, (stub,)),
    (check_bits_per_dim, (stub,)),
])
def test_unwritten_stubs_are_named(check, args):
    with pytest.raises(ExerciseError, match="not written yet"):
        check(*args)


@pytest.mark.parametrize("wrong,message", [
    (lambda z, c: forward_right(z, c)[0], "pair"),
    (lambda z, c: (z, forward_right(z, c)[1]), "x_B"),
    (lambda z, c: _move_first(forward_right(z, c)), "x_A must equal"),
    (lambda z, c: _swap(z, c), "swapped s and t"),
    (lambda z, c: _no_exp(z, c), "exp"),
    (lambda z, c: (forward_right(z, c)[0], _s(z, c)), r"expected \(6,\)"),
    (lambda z, c: (forward_right(z, c)[0], _s(z, c).exp().sum(1)), "not the sum of exp"),
    (lambda z, c: (forward_right(z, c)[0], _s(z, c).mean(1)), "not average"),
])
def test_forward_check_explains_common_mistakes(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_affine_coupling_forward(wrong)


def _move_first(out):
    x, log_det = out
    return torch.cat([x[:, :1] + 1, x[:, 1:]], dim=1), log_det


def _s(z, c):
    return c(z[:, : z.shape[1] // 2]).chunk(2, dim=1)[0]


def _swap(z, c):
    d = z.shape[1] // 2
    s, t = c(z[:, :d]).chunk(2, dim=1)
    return torch.cat([z[:, :d], z[:, d:] * torch.exp(t) + s], dim=1), s.sum(1)


def _no_exp(z, c):
    d = z.shape[1] // 2
    s, t = c(z[:, :d]).chunk(2, dim=1)
    return torch.cat([z[:, :d], z[:, d:] * s + t], dim=1), s.sum(1)


def _inverse_wrong_order(x, c):
    d = x.shape[1] // 2
    s, t = c(x[:, :d]).chunk(2, dim=1)
    return torch.cat([x[:, :d], x[:, d:] * torch.exp(-s) - t], dim=1), -s.sum(1)


@pytest.mark.parametrize("wrong,message", [
    (_inverse_wrong_order, "undo the shift before the scale"),
    (lambda x, c: (inverse_right(x, c)[0], -inverse_right(x, c)[1]), "minus the sum"),
    (lambda x, c: (x, inverse_right(x, c)[1]), "misses z"),
])
def test_inverse_check_explains_common_mistakes(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_affine_coupling_inverse(wrong)


def test_jacobian_check_explains_common_mistakes():
    def unordered(layer, z):
        return torch.autograd.functional.jacobian(lambda v: layer(v.unsqueeze(0))[0][0], z)

    with pytest.raises(ExerciseError, match="reorder"):
        check_coupling_jacobian(unordered, log_det_right)
    with pytest.raises(ExerciseError, match="transposed"):
        check_coupling_jacobian(lambda layer, z: jacobian_right(layer, z).T, log_det_right)
    with pytest.raises(ExerciseError, match="product of"):
        check_coupling_jacobian(jacobian_right, lambda jac, n: torch.diagonal(jac).sum())
    with pytest.raises(ExerciseError, match="differs from the layer"):
        check_coupling_jacobian(jacobian_right, lambda jac, n: torch.diagonal(jac)[:n].sum())


@pytest.mark.parametrize("wrong,message", [
    (lambda x, levels, g: x + torch.rand(x.shape, generator=g, dtype=x.dtype), "divide by"),
    (lambda x, levels, g: x / levels + torch.rand(x.shape, generator=g, dtype=x.dtype) * 0.999,
     "before dividing"),
    (lambda x, levels, g: (x + 0.5) / levels, "constant"),
    (lambda x, levels, g: (x + 0.5 * torch.rand(x.shape, generator=g, dtype=x.dtype)) / levels,
     "mean"),
])
def test_dequantize_check_explains_common_mistakes(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_dequantize(wrong)


@pytest.mark.parametrize("wrong,message", [
    (lambda nll, d, levels: nll / (d * math.log(2)), "add the scaling term"),
    (lambda nll, d, levels: (nll - d * math.log(levels)) / (d * math.log(2)), "not subtracted"),
    (lambda nll, d, levels: (nll + d * math.log(levels)) / d, "divide by ln 2"),
    (lambda nll, d, levels: (nll + d * math.log(levels)) / math.log(2), "number of dimensions"),
    (lambda nll, d, levels: "4.09", "expected"),
    (lambda nll, d, levels: None, "a number"),
])
def test_bits_per_dim_check_explains_common_mistakes(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_bits_per_dim(wrong)
