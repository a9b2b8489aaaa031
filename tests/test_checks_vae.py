"""The exercise checks of chapter 6 accept right answers and name wrong ones."""

import math

import pytest
import torch
import torch.nn.functional as F
from check_tables import Right, Wrong, assert_right, assert_wrong, stub
from solution_code import solution

from nfcourse.checks.vae import (
    check_flow_elbo,
    check_iw_bound,
    check_planar_stack,
    check_reparameterise,
)

CH = "06_vae_flow_posterior"
reparam_ref = solution(CH, "reparameterise")
stack_ref = solution(CH, "planar_stack")
elbo_ref = solution(CH, "flow_elbo")
iw_ref = solution(CH, "iw_bound")
HALF = 0.5 * math.log(2 * math.pi)


def reparam(z_fn, q_fn):
    def answer(mu, log_sigma, eps):
        return z_fn(mu, log_sigma, eps), q_fn(mu, log_sigma, eps)

    return answer


def right_z(mu, ls, eps):
    return mu + torch.exp(ls) * eps


def right_q(mu, ls, eps):
    return (-0.5 * eps**2 - ls - HALF).sum(-1)


def elbo(fn):
    def answer(x, logits, zK, log_q0, log_dets):
        log_lik = (x * logits - F.softplus(logits)).sum(1)
        log_prior = (-0.5 * zK**2 - HALF).sum(1)
        return fn(x, logits, zK, log_q0, log_dets, log_lik, log_prior)

    return answer


def layer(z, u, w, b):
    h = torch.tanh((w * z).sum(1) + b)
    log_det = torch.log(torch.abs(1 + (1 - h**2) * (w * u).sum(1)))
    return z + u * h.unsqueeze(1), log_det


def stack_reversed(z0, u, w, b):
    z, total = z0, z0.new_zeros(len(z0))
    for k in reversed(range(u.shape[1])):
        z, ld = layer(z, u[:, k], w[:, k], b[:, k])
        total = total + ld
    return z, total


def stack_log_det_at_z0(z0, u, w, b):
    z, total = z0, z0.new_zeros(len(z0))
    for k in range(u.shape[1]):
        total = total + layer(z0, u[:, k], w[:, k], b[:, k])[1]
        z = layer(z, u[:, k], w[:, k], b[:, k])[0]
    return z, total


def stack_all_on_z0(z0, u, w, b):
    z, total = z0, z0.new_zeros(len(z0))
    for k in range(u.shape[1]):
        z_k, ld = layer(z0, u[:, k], w[:, k], b[:, k])
        z = z + (z_k - z0)
        total = total + ld
    return z, total


def stack_last_log_det(z0, u, w, b):
    z = z0
    for k in range(u.shape[1]):
        z, ld = layer(z, u[:, k], w[:, k], b[:, k])
    return z, ld


def stack_first_only(z0, u, w, b):
    return layer(z0, u[:, 0], w[:, 0], b[:, 0])


def stack_in_place(z0, u, w, b):
    total = z0.new_zeros(len(z0))
    for k in range(u.shape[1]):
        h = torch.tanh((w[:, k] * z0).sum(1) + b[:, k])
        total = total + torch.log(torch.abs(1 + (1 - h**2) * (w[:, k] * u[:, k]).sum(1)))
        z0 += u[:, k] * h.unsqueeze(1)
    return z0, total


WRONG = [
    Wrong(
        check_reparameterise,
        "log-sigma-scale",
        reparam(lambda m, ls, e: m + ls * e, right_q),
        "by log_sigma",
    ),
    Wrong(
        check_reparameterise,
        "variance-scale",
        reparam(lambda m, ls, e: m + torch.exp(2 * ls) * e, right_q),
        "variance",
    ),
    Wrong(
        check_reparameterise,
        "half-log-sigma",
        reparam(lambda m, ls, e: m + torch.exp(ls / 2) * e, right_q),
        "log_sigma / 2",
    ),
    Wrong(
        check_reparameterise,
        "no-scale",
        reparam(lambda m, ls, e: m + e, right_q),
        "scale sigma is missing",
    ),
    Wrong(
        check_reparameterise,
        "detached",
        reparam(lambda m, ls, e: (m + torch.exp(ls) * e).detach(), right_q),
        "carries no gradient",
    ),
    Wrong(
        check_reparameterise,
        "detached-sigma",
        reparam(lambda m, ls, e: m + torch.exp(ls.detach()) * e, right_q),
        "no gradient reaches log_sigma",
    ),
    Wrong(
        check_reparameterise,
        "no-log-sigma",
        reparam(right_z, lambda m, ls, e: (-0.5 * e**2 - HALF).sum(-1)),
        "-log sigma",
    ),
    Wrong(
        check_reparameterise,
        "plus-log-sigma",
        reparam(right_z, lambda m, ls, e: (-0.5 * e**2 + ls - HALF).sum(-1)),
        "adds log sigma",
    ),
    Wrong(
        check_reparameterise,
        "no-2pi",
        reparam(right_z, lambda m, ls, e: (-0.5 * e**2 - ls).sum(-1)),
        r"log\(2 pi\)",
    ),
    Wrong(
        check_reparameterise,
        "prior-density",
        reparam(right_z, lambda m, ls, e: (-0.5 * (m + ls.exp() * e) ** 2 - HALF).sum(-1)),
        "the prior",
    ),
    Wrong(
        check_reparameterise,
        "per-dimension",
        reparam(right_z, lambda m, ls, e: -0.5 * e**2 - ls - HALF),
        "one value per coordinate",
    ),
    Wrong(
        check_reparameterise,
        "mean-over-dims",
        reparam(right_z, lambda m, ls, e: (-0.5 * e**2 - ls - HALF).mean(-1)),
        "averages",
    ),
    Wrong(check_reparameterise, "single-output", lambda m, ls, e: m + ls.exp() * e, "pair"),
    Wrong(check_reparameterise, "stub", stub, "not written yet"),
    Wrong(
        check_flow_elbo,
        "no-log-q0",
        elbo(lambda x, lg, z, q, d, ll, lp: ll + lp + d.sum(1)),
        "-log q0 is missing",
    ),
    Wrong(
        check_flow_elbo,
        "log-det-sign",
        elbo(lambda x, lg, z, q, d, ll, lp: ll + lp - q - d.sum(1)),
        "wrong sign",
    ),
    Wrong(
        check_flow_elbo,
        "no-prior",
        elbo(lambda x, lg, z, q, d, ll, lp: ll - q + d.sum(1)),
        "prior",
    ),
    Wrong(
        check_flow_elbo,
        "q0-sign",
        elbo(lambda x, lg, z, q, d, ll, lp: ll + lp + q + d.sum(1)),
        "log q0 enters with the wrong sign",
    ),
    Wrong(
        check_flow_elbo,
        "no-log-dets",
        elbo(lambda x, lg, z, q, d, ll, lp: ll + lp - q),
        "log-dets are missing",
    ),
    Wrong(
        check_flow_elbo,
        "no-likelihood",
        elbo(lambda x, lg, z, q, d, ll, lp: lp - q + d.sum(1)),
        "log-likelihood log p",
    ),
    Wrong(
        check_flow_elbo,
        "bce-sign",
        elbo(
            lambda x, lg, z, q, d, ll, lp: (
                F.binary_cross_entropy_with_logits(lg, x, reduction="none").sum(1)
                + lp
                - q
                + d.sum(1)
            )
        ),
        "cross-entropy",
    ),
    Wrong(
        check_flow_elbo,
        "mean-pixels",
        elbo(lambda x, lg, z, q, d, ll, lp: ll / x.shape[1] + lp - q + d.sum(1)),
        "averages over the pixels",
    ),
    Wrong(
        check_flow_elbo,
        "log-sigmoid",
        elbo(
            lambda x, lg, z, q, d, ll, lp: (
                (
                    x * torch.log(torch.sigmoid(lg)) + (1 - x) * torch.log(1 - torch.sigmoid(lg))
                ).sum(1)
                + lp
                - q
                + d.sum(1)
            )
        ),
        "underflow|softplus",
    ),
    Wrong(
        check_flow_elbo,
        "no-2pi-prior",
        elbo(lambda x, lg, z, q, d, ll, lp: ll + (-0.5 * z**2).sum(1) - q + d.sum(1)),
        r"log\(2 pi\)",
    ),
    Wrong(
        check_flow_elbo,
        "log-dets-over-batch",
        elbo(lambda x, lg, z, q, d, ll, lp: ll + lp - q + d.sum()),
        "whole batch",
    ),
    Wrong(
        check_flow_elbo,
        "log-dets-unsummed",
        elbo(lambda x, lg, z, q, d, ll, lp: (ll + lp - q)[:, None] + d),
        r"shape \(5, 3\)",
    ),
    Wrong(check_flow_elbo, "stub", stub, "not written yet"),
    Wrong(check_planar_stack, "reversed", stack_reversed, "reverse order"),
    Wrong(check_planar_stack, "log-det-at-z0", stack_log_det_at_z0, "that layer's input"),
    Wrong(check_planar_stack, "all-on-z0", stack_all_on_z0, "previous layer's output"),
    Wrong(check_planar_stack, "last-log-det", stack_last_log_det, "last layer only"),
    Wrong(check_planar_stack, "first-only", stack_first_only, "only the first layer"),
    Wrong(check_planar_stack, "in-place", stack_in_place, "in place"),
    Wrong(check_planar_stack, "stub", stub, "not written yet"),
    Wrong(check_iw_bound, "mean-log-weights", lambda lw: lw.mean(0), "ELBO estimate"),
    Wrong(check_iw_bound, "no-divide", lambda lw: torch.logsumexp(lw, 0), "dividing by S"),
    Wrong(check_iw_bound, "max", lambda lw: lw.max(0).values, "largest log-weight"),
    Wrong(
        check_iw_bound,
        "divide-log-S",
        lambda lw: torch.logsumexp(lw, 0) / math.log(lw.shape[0]),
        "subtracted, not divided",
    ),
    Wrong(check_iw_bound, "naive", lambda lw: torch.log(torch.exp(lw).mean(0)), "underflow"),
    Wrong(
        check_iw_bound,
        "wrong-axis",
        lambda lw: torch.logsumexp(lw, 1) - math.log(lw.shape[1]),
        "shape",
    ),
    Wrong(check_iw_bound, "stub", stub, "not written yet"),
]


def _iw_global_shift(lw):
    m = lw.max()
    return m + torch.log(torch.exp(lw - m).mean(0))


def _iw_sum_detached(lw):
    m = lw.max(0).values
    return m + torch.log(torch.exp(lw - m).mean(0)).detach()


def _log_q0_of_detached_sample(mu, ls, eps):
    z0 = mu + torch.exp(ls) * eps
    return z0, torch.distributions.Normal(mu, ls.exp()).log_prob(z0.detach()).sum(-1)


def _elbo_prior_no_grad(x, lg, z, q, d, ll, lp):
    with torch.no_grad():
        prior = (-0.5 * z**2 - HALF).sum(1)
    return ll + prior - q + d.sum(1)


def _stack_log_det_detached(z0, u, w, b):
    z, total = z0, z0.new_zeros(len(z0))
    for k in range(u.shape[1]):
        z_new, ld = layer(z.detach(), u[:, k], w[:, k], b[:, k])
        z = z + u[:, k] * torch.tanh((w[:, k] * z).sum(1) + b[:, k]).unsqueeze(1)
        total = total + ld
    return z, total


WRONG += [
    Wrong(
        check_iw_bound,
        "global-max-shift",
        _iw_global_shift,
        r"max-shift over the whole batch instead of per row",
    ),
    Wrong(
        check_iw_bound,
        "log-mean-detached",
        _iw_sum_detached,
        r"wrong gradient with respect to the log-weights.*cut from the autograd graph",
    ),
    Wrong(
        check_reparameterise,
        "log-q0-of-detached-z0",
        _log_q0_of_detached_sample,
        r"log_q0 has the right values but the wrong gradient.*mu.*cut from the autograd",
    ),
    Wrong(
        check_flow_elbo,
        "prior-under-no-grad",
        elbo(_elbo_prior_no_grad),
        r"without the term log p\(zK\).*cut from the autograd graph",
    ),
    Wrong(
        check_planar_stack,
        "log-det-at-detached-input",
        _stack_log_det_detached,
        r"sum_log_det has the right values but the wrong gradient.*cut from the autograd",
    ),
]


def iw_manual(lw):
    m = lw.max(0, keepdim=True).values
    return (m + torch.log(torch.exp(lw - m).mean(0, keepdim=True)))[0]


RIGHT = [
    Right(check_reparameterise, "solution", reparam_ref),
    Right(
        check_reparameterise,
        "torch-normal",
        lambda m, ls, e: (
            lambda z: (z, torch.distributions.Normal(m, ls.exp()).log_prob(z).sum(-1))
        )(m + ls.exp() * e),
    ),
    Right(
        check_reparameterise,
        "float32",
        lambda m, ls, e: tuple(v.float() for v in reparam_ref(m, ls, e)),
    ),
    Right(check_flow_elbo, "solution", elbo_ref),
    Right(
        check_flow_elbo,
        "bce",
        elbo(
            lambda x, lg, z, q, d, ll, lp: (
                -F.binary_cross_entropy_with_logits(lg, x, reduction="none").sum(1)
                + lp
                - q
                + d.sum(1)
            )
        ),
    ),
    Right(check_flow_elbo, "float32", lambda *a: elbo_ref(*(t.float() for t in a))),
    Right(check_planar_stack, "solution", stack_ref),
    Right(check_planar_stack, "einsum", lambda z0, u, w, b: _einsum_stack(z0, u, w, b)),
    Right(
        check_planar_stack,
        "float32-output",
        lambda z0, u, w, b: tuple(v.float() for v in stack_ref(z0, u, w, b)),
    ),
    Right(check_iw_bound, "solution", iw_ref),
    Right(check_iw_bound, "max-shift", iw_manual),
    Right(check_iw_bound, "float32", lambda lw: iw_ref(lw.float())),
]


def _einsum_stack(z0, u, w, b):
    z, total = z0, torch.zeros(len(z0), dtype=z0.dtype)
    for k in range(u.shape[1]):
        a = torch.einsum("bd,bd->b", w[:, k], z) + b[:, k]
        h = torch.tanh(a)
        total = total + torch.log(
            torch.abs(1 + (1 - h**2) * torch.einsum("bd,bd->b", w[:, k], u[:, k]))
        )
        z = z + u[:, k] * h[:, None]
    return z, total


@pytest.mark.parametrize("row", [w.param() for w in WRONG])
def test_check_rejects_and_names_the_mistake(row):
    assert_wrong(row)


@pytest.mark.parametrize("row", [r.param() for r in RIGHT])
def test_check_accepts_right_answers_written_differently(row):
    assert_right(row)
