"""The exercise checks of chapter 6 accept right answers and name the usual slips."""

import math

import pytest
import torch
import torch.nn.functional as F

from nfcourse.checks import ExerciseError
from nfcourse.checks.vae import (check_flow_elbo, check_iw_bound, check_planar_stack,
                                 check_reparameterise)


def _stub(*args):
    raise NotImplementedError()


# --- right answers ------------------------------------------------------------------------

def reparameterise(mu, log_sigma, eps):
    return (mu + log_sigma.exp() * eps,
            (-0.5 * eps**2 - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1))


def planar_stack(z, u_hat, w, b):
    total = z.new_zeros(z.shape[0])
    for k in range(u_hat.shape[1]):
        h = torch.tanh((w[:, k] * z).sum(1) + b[:, k])
        total = total + torch.log(torch.abs(1 + (1 - h**2) * (w[:, k] * u_hat[:, k]).sum(1)))
        z = z + u_hat[:, k] * h[:, None]
    return z, total


def log_likelihood(x, logits):
    return (x * logits - F.softplus(logits)).sum(1)


def log_prior(z):
    return (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(1)


def flow_elbo(x, logits, zK, log_q0, log_dets):
    return log_likelihood(x, logits) + log_prior(zK) - log_q0 + log_dets.sum(1)


def iw_bound(log_weights):
    return torch.logsumexp(log_weights, 0) - math.log(log_weights.shape[0])


@pytest.mark.parametrize("check, answer", [
    (check_reparameterise, reparameterise), (check_planar_stack, planar_stack),
    (check_flow_elbo, flow_elbo), (check_iw_bound, iw_bound),
])
def test_right_answers_pass_and_stubs_are_reported(check, answer, capsys):
    check(answer)
    assert "Correct" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="not written yet"):
        check(_stub)


# --- the usual slips -------------------------------------------------------------------------

@pytest.mark.parametrize("wrong, message", [
    (lambda m, s, e: (m + s * e, reparameterise(m, s, e)[1]), "multiplies eps by log_sigma"),
    (lambda m, s, e: ((m + s.exp() * e).detach(), reparameterise(m, s, e)[1]), "no gradient"),
    (lambda m, s, e: (reparameterise(m, s, e)[0],
                      -0.5 * e**2 - s - 0.5 * math.log(2 * math.pi)), "sum over"),
    (lambda m, s, e: (reparameterise(m, s, e)[0],
                      (-0.5 * e**2 - 0.5 * math.log(2 * math.pi)).sum(-1)), "-log sigma"),
    (lambda m, s, e: (reparameterise(m, s, e)[0], (-0.5 * e**2 - s).sum(-1)), "2 pi"),
    (lambda m, s, e: reparameterise(m, s, e)[0], "should return a pair"),
])
def test_reparameterise_slips_are_named(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_reparameterise(wrong)


def _reversed_stack(z, u_hat, w, b):
    return planar_stack(z, u_hat.flip(1), w.flip(1), b.flip(1))


def _log_det_after_update(z, u_hat, w, b):
    total = z.new_zeros(z.shape[0])
    for k in range(u_hat.shape[1]):
        h = torch.tanh((w[:, k] * z).sum(1) + b[:, k])
        z = z + u_hat[:, k] * h[:, None]
        h_new = torch.tanh((w[:, k] * z).sum(1) + b[:, k])  # evaluated at the output: wrong
        total = total + torch.log(torch.abs(1 + (1 - h_new**2) * (w[:, k] * u_hat[:, k]).sum(1)))
    return z, total


@pytest.mark.parametrize("wrong, message", [
    (_reversed_stack, "reverse order"),
    (_log_det_after_update, "autograd Jacobian"),
    (lambda z, u, w, b: (planar_stack(z, u, w, b)[0], -planar_stack(z, u, w, b)[1]),
     "autograd Jacobian"),
    (lambda z, u, w, b: (planar_stack(z, u, w, b)[0], planar_stack(z, u, w, b)[1][:, None]),
     "one value per image"),
])
def test_planar_stack_slips_are_named(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_planar_stack(wrong)


@pytest.mark.parametrize("wrong, message", [
    (lambda x, l, z, q, d: log_likelihood(x, l) + log_prior(z) - q - d.sum(1), "wrong sign"),
    (lambda x, l, z, q, d: log_likelihood(x, l) - q + d.sum(1), "prior"),
    (lambda x, l, z, q, d: log_likelihood(x, l) + log_prior(z) + q + d.sum(1),
     "log q0 enters with the wrong sign"),
    (lambda x, l, z, q, d: log_likelihood(x, l) + log_prior(z) - q, "log-dets are missing"),
    (lambda x, l, z, q, d: log_prior(z) - q + d.sum(1), "log-likelihood"),
    (lambda x, l, z, q, d: (x * torch.log(torch.sigmoid(l))
                            + (1 - x) * torch.log(1 - torch.sigmoid(l))).sum(1)
     + log_prior(z) - q + d.sum(1), "softplus"),
    (lambda x, l, z, q, d: (log_likelihood(x, l) + log_prior(z) - q)[:, None] + d,
     "sum the log-dets"),
])
def test_flow_elbo_slips_are_named(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_flow_elbo(wrong)


@pytest.mark.parametrize("wrong, message", [
    (lambda lw: lw.mean(0), "mean of the log-weights"),
    (lambda lw: torch.logsumexp(lw, 0), "subtract log S"),
    (lambda lw: torch.log(torch.exp(lw).mean(0)), "logsumexp"),
    (lambda lw: torch.logsumexp(lw, 1) - math.log(lw.shape[1]), "shape"),
])
def test_iw_bound_slips_are_named(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_iw_bound(wrong)
