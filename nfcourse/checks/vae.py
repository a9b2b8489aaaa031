"""Feedback for the exercises of chapter 6, a VAE with a flow posterior.

Each check calls the student's function on fixed random inputs, compares with
``nfcourse.vae`` and, when the answer is wrong, looks for the usual slips (a missing term,
a wrong sign, an unstable logarithm) to say which one it is.
"""

from __future__ import annotations

import contextlib
import io
import math

import torch
from torch import Tensor
from torch.distributions import Normal

from .. import testing, vae
from ..flows.planar import planar_forward
from . import ExerciseError, call_student, check_close

__all__ = [
    "check_reparameterise",
    "check_flow_elbo",
    "check_planar_stack",
    "check_iw_bound",
]

D64 = torch.float64


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _is_close(a: Tensor, b: Tensor, atol: float = 1e-6) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.detach().to(D64), b.to(D64), atol=atol))


def _quiet(got, expected, what: str, atol: float = 1e-6) -> None:
    """``check_close`` without its confirmation: the check prints one at the end."""
    with contextlib.redirect_stdout(io.StringIO()):
        check_close(got, expected, what, atol=atol)


def _as_pair(result, name: str, what: str) -> tuple[Tensor, Tensor]:
    if not isinstance(result, tuple) or len(result) != 2:
        raise ExerciseError(f"{name} should return a pair {what}, got {type(result).__name__}")
    return result


def check_reparameterise(reparameterise) -> None:
    """``reparameterise(mu, log_sigma, eps) -> (z0, log_q0)``: the sample
    ``z0 = mu + exp(log_sigma) * eps`` and ``log N(z0; mu, diag sigma^2)`` summed over the
    latent dimensions."""
    g = _generator(0)
    mu = torch.randn(6, 3, generator=g, dtype=D64).requires_grad_()
    log_sigma = (0.5 * torch.randn(6, 3, generator=g, dtype=D64)).requires_grad_()
    eps = torch.randn(6, 3, generator=g, dtype=D64)
    z0, log_q0 = _as_pair(call_student(reparameterise, mu, log_sigma, eps),
                          "reparameterise", "(z0, log_q0)")
    sigma = log_sigma.detach().exp()
    expected_z0 = mu.detach() + sigma * eps
    if isinstance(z0, Tensor) and _is_close(z0, mu.detach() + log_sigma.detach() * eps):
        raise ExerciseError("z0 multiplies eps by log_sigma; the scale is sigma = "
                            "exp(log_sigma)")
    _quiet(z0, expected_z0, "z0")
    if not z0.requires_grad:
        raise ExerciseError("z0 carries no gradient: it must be computed from mu and log_sigma "
                            "(the reparameterisation), not sampled afresh or detached")
    expected = Normal(mu.detach(), sigma).log_prob(expected_z0).sum(dim=1)
    if isinstance(log_q0, Tensor) and log_q0.shape == (6, 3):
        raise ExerciseError("log_q0 has one value per latent dimension, shape (6, 3); sum over "
                            "the last axis to get log q0(z0 | x) of shape (B,)")
    if isinstance(log_q0, Tensor) and log_q0.shape == expected.shape:
        diff = (log_q0.detach().to(D64) - expected)
        if torch.allclose(diff, log_sigma.detach().sum(1), atol=1e-6):
            raise ExerciseError("log_q0 misses the term -log sigma (summed over dimensions): "
                                "the Gaussian's normalising constant depends on its scale")
        if torch.allclose(diff, torch.full_like(diff, 1.5 * math.log(2 * math.pi)), atol=1e-6):
            raise ExerciseError("log_q0 misses -0.5 log(2 pi) per dimension")
    _quiet(log_q0, expected, "log_q0")
    print("Correct: z0 = mu + sigma * eps is differentiable in mu and log_sigma, and log_q0 is "
          "its Gaussian log-density.")


def _elbo_inputs():
    g = _generator(1)
    b, d, k, n = 5, 2, 3, 12
    x = torch.bernoulli(torch.full((b, n), 0.4, dtype=D64), generator=g)
    logits = 4 * torch.randn(b, n, generator=g, dtype=D64)
    logits[0, :3] = torch.tensor([60.0, -60.0, 45.0], dtype=D64)  # a confident decoder
    x[0, :3] = torch.tensor([0.0, 1.0, 1.0], dtype=D64)
    zK = torch.randn(b, d, generator=g, dtype=D64)
    log_q0 = -2 + torch.randn(b, generator=g, dtype=D64)
    log_dets = 0.3 * torch.randn(b, k, generator=g, dtype=D64)
    return x, logits, zK, log_q0, log_dets


def check_flow_elbo(flow_elbo) -> None:
    """``flow_elbo(x, logits, zK, log_q0, log_dets) -> (B,)``: the single-sample ELBO
    ``log p(x | zK) + log p(zK) - log q0 + sum_k log |det J_k|`` with a Bernoulli decoder
    (``logits``), a standard normal prior, and per-layer log-dets of shape ``(B, K)``."""
    x, logits, zK, log_q0, log_dets = _elbo_inputs()
    got = call_student(flow_elbo, x, logits, zK, log_q0, log_dets)
    log_lik = vae.bernoulli_log_likelihood(x, logits)
    log_prior = vae.standard_normal_log_prob(zK)
    expected = log_lik + log_prior - log_q0 + log_dets.sum(dim=1)
    if not isinstance(got, Tensor):
        raise ExerciseError(f"flow_elbo should return a tensor of shape (B,), got "
                            f"{type(got).__name__}")
    if got.shape == log_dets.shape or got.shape == (x.shape[0], x.shape[0]):
        raise ExerciseError(f"flow_elbo returned shape {tuple(got.shape)}; expected "
                            f"{tuple(expected.shape)}: sum the log-dets over the layers "
                            "(dim=1) before adding them")
    if got.shape == expected.shape and not bool(torch.isfinite(got).all()):
        raise ExerciseError("the ELBO is infinite or NaN for an image whose logits are large "
                            "(+-60): log(sigmoid(l)) underflows; compute the Bernoulli "
                            "log-likelihood from the logits, sum x*l - softplus(l)")
    if got.shape == expected.shape:
        diff = got.detach().to(D64) - expected
        slips = [
            (-2 * log_dets.sum(1), "the log-dets enter with the wrong sign: log qK = log q0 - "
                                   "sum log|det J|, and the ELBO has -log qK, so add them"),
            (-log_prior, "the prior term log p(zK) = log N(zK; 0, I) is missing"),
            (2 * log_q0, "log q0 enters with the wrong sign: the ELBO subtracts it"),
            (-log_dets.sum(1), "the flow's log-dets are missing"),
            (-log_lik, "the decoder's log-likelihood log p(x | zK) is missing"),
        ]
        for delta, message in slips:
            if torch.allclose(diff, delta, atol=1e-6):
                raise ExerciseError(message)
    check_close(got, expected, "your ELBO")


def _stack_inputs(seed: int = 2):
    g = _generator(seed)
    b, k, d = 4, 3, 2
    u = 1.5 * torch.randn(b, k, d, generator=g, dtype=D64)
    w = 1.5 * torch.randn(b, k, d, generator=g, dtype=D64)
    from ..flows.planar import constrained_u

    return (torch.randn(b, d, generator=g, dtype=D64), constrained_u(u, w), w,
            torch.randn(b, k, generator=g, dtype=D64))


def _reference_stack(z, u_hat, w, b):
    total = z.new_zeros(z.shape[0])
    for k in range(u_hat.shape[1]):
        z, log_det = planar_forward(z, u_hat[:, k], w[:, k], b[:, k])
        total = total + log_det
    return z, total


def check_planar_stack(planar_stack) -> None:
    """``planar_stack(z0, u_hat, w, b) -> (zK, sum_log_det)``: ``K`` planar layers, image by
    image, with parameters ``u_hat, w`` of shape ``(B, K, D)`` and ``b`` of shape ``(B, K)``;
    checked against the autograd Jacobian of the whole stack, image by image."""
    z0, u_hat, w, b = _stack_inputs()
    zK, total = _as_pair(call_student(planar_stack, z0, u_hat, w, b), "planar_stack",
                         "(zK, sum_log_det)")
    expected_zK, expected_total = _reference_stack(z0, u_hat, w, b)
    if isinstance(zK, Tensor) and zK.shape == expected_zK.shape and \
            not _is_close(zK, expected_zK, 1e-8):
        backwards, _ = _reference_stack(z0, u_hat.flip(1), w.flip(1), b.flip(1))
        if _is_close(zK, backwards, 1e-8):
            raise ExerciseError("the layers run in reverse order: apply layer 0 first, "
                                "then layer 1, ..., layer K-1 last")
    _quiet(zK, expected_zK, "zK", atol=1e-8)
    if not isinstance(total, Tensor) or total.shape != expected_total.shape:
        raise ExerciseError(f"sum_log_det should be a tensor of shape "
                            f"{tuple(expected_total.shape)}, one value per image")
    for i in range(z0.shape[0]):
        def stack(v, i=i):
            return planar_stack(v, u_hat[i:i + 1], w[i:i + 1], b[i:i + 1])[0]

        autograd = testing.autograd_log_abs_det(stack, z0[i:i + 1])
        error = float((total[i].detach() - autograd[0]).abs())
        if error > 1e-8:
            raise ExerciseError(
                f"your sum of log-dets differs from log|det| of the autograd Jacobian of the "
                f"whole stack by {error:.3g} at image {i}; each layer's log-det is "
                "log|1 + (1 - tanh^2(w^T z + b)) w^T u_hat|, evaluated at that layer's input")
    print(f"Correct: zK and the summed log-dets match the autograd Jacobian of all "
          f"{u_hat.shape[1]} layers for each of {z0.shape[0]} images.")


def check_iw_bound(iw_bound) -> None:
    """``iw_bound(log_weights) -> (B,)``: ``log (1/S) sum_s exp(log_weights[s])`` over the
    first axis, stable for very negative log-weights."""
    g = _generator(3)
    log_weights = 3 * torch.randn(50, 4, generator=g, dtype=D64) - 5
    expected = vae.importance_weighted_bound(log_weights)
    got = call_student(iw_bound, log_weights)
    if isinstance(got, Tensor) and got.shape == expected.shape:
        if _is_close(got, log_weights.mean(0)):
            raise ExerciseError("that is the mean of the log-weights, the ELBO estimate; the "
                                "bound averages the weights themselves, then takes the log")
        if _is_close(got, expected + math.log(50)):
            raise ExerciseError("you summed the weights without dividing by S: subtract "
                                "log S")
    _quiet(got, expected, "your bound")
    tiny = log_weights - 1000.0  # the size of log-weights of real images (in nats)
    got = call_student(iw_bound, tiny)
    if not bool(torch.isfinite(got).all()):
        raise ExerciseError("with log-weights around -1000 your bound is -inf: exp(-1000) is "
                            "0 in floating point. Use torch.logsumexp, which factors out the "
                            "largest log-weight first")
    _quiet(got, expected - 1000.0, "your bound for log-weights near -1000")
    single = call_student(iw_bound, log_weights[:1])
    _quiet(single, log_weights[0], "your bound with S = 1 (it must equal the log-weight)")
    print("Correct: your bound matches logsumexp - log S, stays finite for log-weights near "
          "-1000, and equals the log-weight when S = 1.")
