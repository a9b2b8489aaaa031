"""The exercise checks of chapter 5 accept right answers and name wrong ones."""

import math

import pytest
import torch
from check_tables import Right, Wrong, assert_right, assert_wrong, stub
from solution_code import solution

from nfcourse.checks.coupling import (
    check_affine_coupling_forward,
    check_affine_coupling_inverse,
    check_bits_per_dim,
    check_coupling_jacobian,
    check_dequantize,
    make_conditioner,
)

CH = "05_coupling_flows"
forward_ref = solution(CH, "affine_coupling_forward")
inverse_ref = solution(CH, "affine_coupling_inverse")
jacobian_ref = solution(CH, "coupling_jacobian")
log_det_ref = solution(CH, "triangular_log_det")
dequantize_ref = solution(CH, "dequantize")
bits_ref = solution(CH, "bits_per_dim")


def coupling(fn):
    def answer(z, conditioner):
        d = z.shape[1] // 2
        za, zb = z[:, :d], z[:, d:]
        s, t = conditioner(za).chunk(2, dim=1)
        return fn(za, zb, s, t, conditioner)

    return answer


def cat(a, b):
    return torch.cat([a, b], dim=1)


def split_trap(z, conditioner):
    z_a, z_b = torch.split(z, 2)
    s, t = conditioner(z_a).chunk(2, dim=1)
    return cat(z_a, torch.exp(s) * z_b + t), s.sum(1)


def no_grad_forward(z, conditioner):
    with torch.no_grad():
        return forward_ref(z, conditioner)


def jac(fn):
    def answer(layer, z):
        order = torch.cat([layer.cond_index, layer.trans_index])
        full = torch.autograd.functional.jacobian(lambda v: layer(v.unsqueeze(0))[0][0], z)
        return fn(full, order)

    return answer


def check_coupling_log_det(answer):
    return check_coupling_jacobian(jacobian_ref, answer)


def check_coupling_matrix(answer):
    return check_coupling_jacobian(answer, log_det_ref)


def dequant(fn):
    def answer(x, levels, generator):
        return fn(x, levels, generator)

    return answer


WRONG = [
    Wrong(
        check_affine_coupling_forward,
        "scale-s",
        coupling(lambda za, zb, s, t, c: (cat(za, s * zb + t), s.sum(1))),
        "exp\\(s\\), not s",
    ),
    Wrong(
        check_affine_coupling_forward,
        "swap-s-t",
        coupling(lambda za, zb, s, t, c: (cat(za, torch.exp(t) * zb + s), t.sum(1))),
        "swapped s and t",
    ),
    Wrong(
        check_affine_coupling_forward,
        "shift-first",
        coupling(lambda za, zb, s, t, c: (cat(za, torch.exp(s) * (zb + t)), s.sum(1))),
        "shift after scaling",
    ),
    Wrong(
        check_affine_coupling_forward,
        "exp-minus-s",
        coupling(lambda za, zb, s, t, c: (cat(za, torch.exp(-s) * zb + t), s.sum(1))),
        "exp\\(-s\\) belongs",
    ),
    Wrong(
        check_affine_coupling_forward,
        "conditioner-on-zb",
        lambda z, c: _cond_on_b(z, c),
        "fed it z_B",
    ),
    Wrong(
        check_affine_coupling_forward,
        "log-det-exp",
        coupling(lambda za, zb, s, t, c: (cat(za, torch.exp(s) * zb + t), torch.exp(s).sum(1))),
        "not the sum of exp",
    ),
    Wrong(
        check_affine_coupling_forward,
        "log-det-mean",
        coupling(lambda za, zb, s, t, c: (cat(za, torch.exp(s) * zb + t), s.mean(1))),
        "not average",
    ),
    Wrong(
        check_affine_coupling_forward,
        "inverse-log-det",
        coupling(lambda za, zb, s, t, c: (cat(za, torch.exp(s) * zb + t), -s.sum(1))),
        "inverse's log-det",
    ),
    Wrong(
        check_affine_coupling_forward,
        "log-det-over-batch",
        coupling(lambda za, zb, s, t, c: (cat(za, torch.exp(s) * zb + t), s.sum())),
        "whole batch",
    ),
    Wrong(
        check_affine_coupling_forward,
        "log-det-dim0",
        coupling(lambda za, zb, s, t, c: (cat(za, torch.exp(s) * zb + t), s.sum(0))),
        "wrong axis|reduce",
    ),
    Wrong(check_affine_coupling_forward, "split-trap", split_trap, r"torch\.split\(z, 2\)"),
    Wrong(check_affine_coupling_forward, "no-grad", no_grad_forward, "no gradient|carries no"),
    Wrong(
        check_affine_coupling_forward,
        "only-x",
        coupling(lambda za, zb, s, t, c: cat(za, torch.exp(s) * zb + t)),
        "pair",
    ),
    Wrong(check_affine_coupling_forward, "stub", stub, "not written yet"),
    Wrong(
        check_affine_coupling_inverse,
        "order",
        coupling(lambda xa, xb, s, t, c: (cat(xa, xb * torch.exp(-s) - t), -s.sum(1))),
        "undo the shift before",
    ),
    Wrong(
        check_affine_coupling_inverse,
        "exp-s",
        coupling(lambda xa, xb, s, t, c: (cat(xa, (xb - t) * torch.exp(s)), -s.sum(1))),
        "multiply by exp\\(-s\\)",
    ),
    Wrong(
        check_affine_coupling_inverse,
        "plus-t",
        coupling(lambda xa, xb, s, t, c: (cat(xa, (xb + t) * torch.exp(-s)), -s.sum(1))),
        "subtracting t",
    ),
    Wrong(
        check_affine_coupling_inverse,
        "divide-s",
        coupling(lambda xa, xb, s, t, c: (cat(xa, (xb - t) / s), -s.sum(1))),
        "not s",
    ),
    Wrong(
        check_affine_coupling_inverse,
        "forward-log-det",
        coupling(lambda xa, xb, s, t, c: (cat(xa, (xb - t) * torch.exp(-s)), s.sum(1))),
        "forward map's log-det",
    ),
    Wrong(
        check_affine_coupling_inverse,
        "mean-log-det",
        coupling(lambda xa, xb, s, t, c: (cat(xa, (xb - t) * torch.exp(-s)), -s.mean(1))),
        "not average",
    ),
    Wrong(
        check_affine_coupling_inverse,
        "conditioner-on-xb",
        lambda x, c: _inv_cond_on_b(x, c),
        "fed it x_B",
    ),
    Wrong(
        check_affine_coupling_inverse,
        "swap-s-t",
        coupling(lambda xa, xb, s, t, c: (cat(xa, (xb - s) * torch.exp(-t)), -s.sum(1))),
        "swapped s and t",
    ),
    Wrong(check_affine_coupling_inverse, "stub", stub, "not written yet"),
    Wrong(check_coupling_matrix, "not-reordered", jac(lambda full, order: full), "reorder"),
    Wrong(
        check_coupling_matrix,
        "transposed",
        jac(lambda full, order: full[order][:, order].T),
        "transposed",
    ),
    Wrong(
        check_coupling_matrix, "rows-only", jac(lambda full, order: full[order]), "AND the columns"
    ),
    Wrong(
        check_coupling_matrix,
        "columns-only",
        jac(lambda full, order: full[:, order]),
        "columns as well",
    ),
    Wrong(
        check_coupling_matrix,
        "inverse-jacobian",
        jac(lambda full, order: torch.linalg.inv(full[order][:, order])),
        "inverse map",
    ),
    Wrong(check_coupling_matrix, "stub", stub, "not written yet"),
    Wrong(
        check_coupling_log_det,
        "sum-diagonal",
        lambda j, n: torch.diagonal(j).sum(),
        "not the J_ii",
    ),
    Wrong(
        check_coupling_log_det,
        "all-entries",
        lambda j, n: torch.log(j.abs() + (j == 0)).sum(),
        "not of every entry",
    ),
    Wrong(
        check_coupling_log_det,
        "abs-of-log",
        lambda j, n: torch.diagonal(j).abs().log().abs().sum(),
        r"sum \|log J_ii\|",
    ),
    Wrong(
        check_coupling_log_det,
        "negative",
        lambda j, n: -torch.diagonal(j).abs().log().sum(),
        "log-det of the inverse",
    ),
    Wrong(check_coupling_log_det, "det", lambda j, n: torch.diagonal(j).prod(), "det J itself"),
    Wrong(
        check_coupling_log_det,
        "first-entries",
        lambda j, n: torch.diagonal(j)[:-n].abs().log().sum(),
        "LAST",
    ),
    Wrong(
        check_dequantize,
        "shared-noise",
        lambda x, L, g: (x + torch.rand(x.shape[1], generator=g, dtype=x.dtype)) / L,
        "same noise vector",
    ),
    Wrong(
        check_dequantize,
        "per-image-noise",
        lambda x, L, g: (x + torch.rand(x.shape[0], 1, generator=g, dtype=x.dtype)) / L,
        "every pixel of an image",
    ),
    Wrong(
        check_dequantize,
        "scalar-noise",
        lambda x, L, g: (x + torch.rand((), generator=g, dtype=x.dtype)) / L,
        "constant|same",
    ),
    Wrong(check_dequantize, "centre", lambda x, L, g: (x + 0.5) / L, "constant"),
    Wrong(
        check_dequantize,
        "no-divide",
        lambda x, L, g: x + torch.rand(x.shape, generator=g, dtype=x.dtype),
        "divide by",
    ),
    Wrong(
        check_dequantize,
        "divide-first",
        lambda x, L, g: x / L + torch.rand(x.shape, generator=g, dtype=x.dtype),
        "before dividing",
    ),
    Wrong(
        check_dequantize,
        "L-minus-1",
        lambda x, L, g: (x + torch.rand(x.shape, generator=g, dtype=x.dtype)) / (L - 1),
        "L - 1",
    ),
    Wrong(
        check_dequantize,
        "gaussian",
        lambda x, L, g: (x + torch.randn(x.shape, generator=g, dtype=x.dtype)) / L,
        "randn|normal",
    ),
    Wrong(check_dequantize, "no-noise", lambda x, L, g: x / L, "noise u is missing|constant"),
    Wrong(
        check_dequantize,
        "global-rng",
        lambda x, L, g: (x + torch.rand(x.shape, dtype=x.dtype)) / L,
        "generator",
    ),
    Wrong(check_dequantize, "stub", stub, "not written yet"),
    Wrong(
        check_bits_per_dim,
        "no-scaling",
        lambda n, d, L: n / (d * math.log(2)),
        "scaling term D ln L to the NLL",
    ),
    Wrong(
        check_bits_per_dim,
        "minus-scaling",
        lambda n, d, L: (n - d * math.log(L)) / (d * math.log(2)),
        "added, not subtracted",
    ),
    Wrong(check_bits_per_dim, "nats", lambda n, d, L: (n + d * math.log(L)) / d, "nats per"),
    Wrong(
        check_bits_per_dim,
        "no-D",
        lambda n, d, L: (n + d * math.log(L)) / math.log(2),
        "number of dimensions",
    ),
    Wrong(
        check_bits_per_dim,
        "log2-L",
        lambda n, d, L: (n + d * math.log2(L)) / (d * math.log(2)),
        "log2 L",
    ),
    Wrong(
        check_bits_per_dim,
        "once-ln-L",
        lambda n, d, L: (n + math.log(L)) / (d * math.log(2)),
        "ln L once",
    ),
    Wrong(
        check_bits_per_dim,
        "times-ln2",
        lambda n, d, L: (n + d * math.log(L)) * math.log(2) / d,
        "multiplied",
    ),
    Wrong(
        check_bits_per_dim,
        "nll-sign",
        lambda n, d, L: (-n + d * math.log(L)) / (d * math.log(2)),
        "plus sign",
    ),
    Wrong(
        check_bits_per_dim,
        "vector",
        lambda n, d, L: torch.full((d,), bits_ref(n, d, L)),
        "one number",
    ),
    Wrong(check_bits_per_dim, "stub", stub, "not written yet"),
]


def _cond_on_b(z, c):
    d = z.shape[1] // 2
    s, t = c(z[:, d:]).chunk(2, dim=1)
    return cat(z[:, :d], torch.exp(s) * z[:, d:] + t), s.sum(1)


def _inv_cond_on_b(x, c):
    d = x.shape[1] // 2
    s, t = c(x[:, d:]).chunk(2, dim=1)
    return cat(x[:, :d], (x[:, d:] - t) * torch.exp(-s)), -s.sum(1)


def _forward_float32(z, conditioner):
    x, ld = forward_ref(z, conditioner)
    return x.float(), ld.float()


def _log_det_no_abs(j, n):
    return torch.log(torch.diagonal(j)[n:]).sum()


def _log_det_of_product(j, n):
    return torch.log(torch.diagonal(j)[n:].prod())


def _log_det_item(j, n):
    return torch.tensor(torch.diagonal(j)[n:].abs().log().sum().item())


def _forward_log_det_detached(z, conditioner):
    x, log_det = forward_ref(z, conditioner)
    return x, log_det.detach()


def _forward_shift_no_grad(z, conditioner):
    d = z.shape[1] // 2
    s, t = conditioner(z[:, :d]).chunk(2, dim=1)
    with torch.no_grad():
        shifted = z[:, d:] * torch.exp(s) + t
    return cat(z[:, :d], shifted), s.sum(1)


def _inverse_s_detached(x, conditioner):
    d = x.shape[1] // 2
    s, t = conditioner(x[:, :d]).chunk(2, dim=1)
    s = s.detach()
    return cat(x[:, :d], (x[:, d:] - t) * torch.exp(-s)), -s.sum(1)


WRONG += [
    Wrong(check_coupling_log_det, "no-abs", _log_det_no_abs, r"missing abs"),
    Wrong(check_coupling_log_det, "log-of-product", _log_det_of_product, r"missing abs"),
    Wrong(
        check_coupling_log_det,
        "item",
        _log_det_item,
        r"carries no gradient.*cut from the autograd graph",
    ),
    Wrong(
        check_affine_coupling_forward,
        "log-det-detached",
        _forward_log_det_detached,
        r"log_det of .*carries no gradient.*cut from the autograd graph",
    ),
    Wrong(
        check_affine_coupling_forward,
        "x-b-under-no-grad",
        _forward_shift_no_grad,
        r"the x of .*wrong gradient.*cut from the autograd graph",
    ),
    Wrong(
        check_affine_coupling_inverse,
        "s-detached",
        _inverse_s_detached,
        r"the z of .*wrong gradient.*conditioner.*cut from the autograd graph",
    ),
]


RIGHT = [
    Right(check_affine_coupling_forward, "solution", forward_ref),
    Right(check_affine_coupling_forward, "float32", _forward_float32),
    Right(
        check_affine_coupling_forward,
        "split-dim1",
        lambda z, c: (
            lambda za, zb: (lambda s, t: (cat(za, zb * s.exp() + t), s.sum(-1)))(
                *torch.split(c(za), z.shape[1] // 2, dim=1)
            )
        )(*torch.split(z, z.shape[1] // 2, dim=1)),
    ),
    Right(check_affine_coupling_inverse, "solution", inverse_ref),
    Right(
        check_affine_coupling_inverse,
        "divide",
        coupling(lambda xa, xb, s, t, c: (cat(xa, (xb - t) / torch.exp(s)), -s.sum(1))),
    ),
    Right(
        check_affine_coupling_inverse,
        "float32",
        lambda x, c: tuple(v.float() for v in inverse_ref(x, c)),
    ),
    Right(check_coupling_matrix, "solution", jacobian_ref),
    Right(
        check_coupling_matrix,
        "jacrev",
        jac(lambda full, order: full.index_select(0, order).index_select(1, order)),
    ),
    Right(check_coupling_matrix, "float32", lambda layer, z: jacobian_ref(layer, z).float()),
    Right(check_coupling_log_det, "solution", log_det_ref),
    Right(
        check_coupling_log_det,
        "whole-diagonal",
        lambda j, n: torch.log(torch.diagonal(j).abs()).sum(),
    ),
    Right(check_coupling_log_det, "float32", lambda j, n: log_det_ref(j.float(), n)),
    Right(check_dequantize, "solution", dequantize_ref),
    Right(
        check_dequantize,
        "float32",
        lambda x, L, g: (x.float() + torch.rand(x.shape, generator=g)) / L,
    ),
    Right(
        check_dequantize,
        "rand-like",
        lambda x, L, g: (x + torch.empty_like(x).uniform_(0, 1, generator=g)) / L,
    ),
    Right(check_bits_per_dim, "solution", bits_ref),
    Right(
        check_bits_per_dim,
        "float32-tensor",
        lambda n, d, L: (
            (torch.tensor(n, dtype=torch.float32) + d * math.log(L)) / (d * math.log(2))
        ),
    ),
    Right(check_bits_per_dim, "log2", lambda n, d, L: n / (d * math.log(2)) + math.log2(L)),
    Right(
        check_bits_per_dim,
        "float32-item",
        lambda n, d, L: (
            (torch.tensor(n, dtype=torch.float32) + d * math.log(L)) / (d * math.log(2))
        ).item(),
    ),
]


def test_make_conditioner_outputs_scale_and_shift_for_each_transformed_coordinate():
    net = make_conditioner(6)
    assert net(torch.zeros(3, 3, dtype=torch.float64)).shape == (3, 6)
    with pytest.raises(ValueError):
        make_conditioner(5)


@pytest.mark.parametrize("row", [w.param() for w in WRONG])
def test_check_rejects_and_names_the_mistake(row):
    assert_wrong(row)


@pytest.mark.parametrize("row", [r.param() for r in RIGHT])
def test_check_accepts_right_answers_written_differently(row):
    assert_right(row)
