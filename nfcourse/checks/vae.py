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
        raise ExerciseError(f"model_elbo should return a tensor of shape (B,), got "
                            f"{type(got).__name__}")
    if got.shape == log_dets.shape or got.shape == (x.shape[0], x.shape[0]):
        raise ExerciseError(f"model_elbo returned shape {tuple(got.shape)}; expected "
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
        z, log_det = vae.amortised_planar(z, u_hat[:, k], w[:, k], b[:, k])
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


# --- Exercise: assemble the flow ELBO from the model's parts and train on digits ------------

import math  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from .. import vae as _vae  # noqa: E402
from . import ExerciseError, call_student  # noqa: E402
from ._training import describe_shortfall, run_training  # noqa: E402

DIGITS_STEPS = 300
DIGITS_ELBO_GOAL = -26.5
_DIGITS_FLOOR = (0.0, "minus the ELBO of binary images is positive, since the ELBO lies below "
                      "log p(x) <= 0; a negative loss means you maximise minus the ELBO: the "
                      "loss is -model_elbo(...).mean()")


def digit_images() -> tuple[Tensor, Tensor]:
    """scikit-learn's 8 x 8 digits as grey levels in ``[0, 1]``: ``(train, test)`` of shapes
    ``(1438, 64)`` and ``(359, 64)`` (``nfcourse.data.load_digits`` divided by 16)."""
    from ..data import load_digits

    train, test = load_digits()
    return train / 16, test / 16


def _elbo_slips(model, x: Tensor, eps: Tensor) -> tuple[Tensor, list[tuple[Tensor, str]]]:
    """The package's ELBO of ``model`` for noise ``eps``, and what common slips give."""
    with torch.no_grad():
        mu, log_sigma, (u_hat, w, b) = model.encoder(x)
        z0 = mu + torch.exp(log_sigma) * eps
        log_q0 = _vae.diagonal_normal_log_prob(z0, mu, log_sigma)
        zK, sum_log_det = model.flow(z0, u_hat, w, b)
        log_lik = _vae.bernoulli_log_likelihood(x, model.decoder(zK))
        log_prior = _vae.standard_normal_log_prob(zK)
        elbo = log_lik + log_prior - log_q0 + sum_log_det
        slips = [
            (log_lik + log_prior - log_q0 - sum_log_det,
             "the log-dets enter with the wrong sign: log qK(zK) = log q0(z0) - sum_k "
             "log|det J_k|, and the ELBO subtracts log qK, so it adds the log-dets"),
            (log_lik + log_prior + sum_log_det,
             "log q0(z0 | x) is missing: without it nothing keeps the posterior from "
             "shrinking to a point"),
            (log_lik + log_prior - log_q0,
             "the flow's log-dets are missing: the flow changes the density of z"),
            (_vae.bernoulli_log_likelihood(x, model.decoder(z0)) + log_prior - log_q0
             + sum_log_det,
             "the decoder is fed z0; it must decode zK, the point after the flow"),
            (log_lik + _vae.standard_normal_log_prob(z0) - log_q0 + sum_log_det,
             "the prior is evaluated at z0; it must be log p(zK), at the point after the "
             "flow"),
            (log_lik - log_q0 + sum_log_det, "the prior term log p(zK) is missing"),
            (-elbo, "your function returns minus the ELBO"),
        ]
    return elbo, slips


def _check_elbo_function(elbo_fn: Callable) -> None:
    """Compare the student's ``elbo_fn(model, x, eps)`` with the package on a small
    untrained model in float64: values, named slips, and gradients that reach the
    encoder through the sample."""
    g = torch.Generator().manual_seed(3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = _vae.FlowPosteriorVAE(2, n_flows=2, hidden=16, data_dim=64).double()
        with torch.no_grad():  # move the planar layers away from the identity
            named = list(model.encoder.named_parameters())
            flow_part = [p for n, p in named if "flow" in n] or [p for _, p in named]
            for p in flow_part:
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    x = torch.bernoulli(torch.full((6, 64), 0.3, dtype=torch.float64), generator=g)
    eps = torch.randn(6, 2, generator=g, dtype=torch.float64)
    got = call_student(elbo_fn, model, x, eps, name="model_elbo")
    if not isinstance(got, Tensor):
        raise ExerciseError(f"model_elbo should return a tensor of shape (B,), got "
                            f"{type(got).__name__}")
    expected, slips = _elbo_slips(model, x, eps)
    if got.shape != expected.shape:
        raise ExerciseError(f"model_elbo returned shape {tuple(got.shape)} for 6 images; "
                            f"expected {tuple(expected.shape)}, one ELBO per image")
    value = got.detach().double()
    if not bool(torch.allclose(value, expected, atol=1e-6, rtol=1e-6)):
        for wrong, message in slips:
            if bool(torch.allclose(value, wrong, atol=1e-6, rtol=1e-6)):
                raise ExerciseError(f"your ELBO is off: {message}")
        k = int((value - expected).abs().argmax())
        raise ExerciseError(
            f"your ELBO differs from nfcourse.vae's by {float((value - expected)[k]):.4g} "
            f"nats for image {k}: build it from log p(x | zK), log p(zK), log q0(z0 | x) "
            "and the flow's log-dets")
    encoder = [p for p in model.encoder.parameters() if p.requires_grad]
    if not got.requires_grad:
        grads = [None] * len(encoder)
    else:
        grads = torch.autograd.grad(got.sum(), encoder, allow_unused=True)
    references = torch.autograd.grad(model.elbo(x, eps=eps).sum(), encoder,
                                     allow_unused=True)
    if any((ref is not None) and (mine is None or not bool(
            torch.allclose(mine, ref, atol=1e-6, rtol=1e-5)))
           for mine, ref in zip(grads, references)):
        raise ExerciseError(
            "your ELBO has the right value but the wrong gradient for the encoder: the "
            "sample must be z0 = mu + sigma * eps, a differentiable function of the "
            "encoder's outputs (not detached, not torch.normal(mu, sigma))")


def check_fit_digits(model_elbo: Callable, fit_digits: Callable, seed: int = 0) -> None:
    """Exercise: ``model_elbo(model, x, eps)`` assembles the single-sample ELBO from the
    encoder, the flow and the decoder of a ``FlowPosteriorVAE``; ``fit_digits(images,
    generator)`` trains such a model on the 8 x 8 digits with it and returns
    ``(model, history)``. The ELBO of the package on the test digits must exceed -26.5
    nats per image after at most 300 steps."""
    _check_elbo_function(model_elbo)
    train, test = digit_images()
    generator = torch.Generator().manual_seed(seed)
    model, history = run_training(
        fit_digits, train.clone(), generator, name="fit_digits", budget=DIGITS_STEPS,
        model_type=_vae.FlowPosteriorVAE, model_hint="the nfcourse.vae.FlowPosteriorVAE "
        "you trained", seed=seed, floor=_DIGITS_FLOOR)
    if model.data_dim != 64:
        raise ExerciseError(f"the model takes images of {model.data_dim} pixels; the digits "
                            "have 8 x 8 = 64: pass data_dim=64")
    g = torch.Generator().manual_seed(10_000 + seed)
    dtype = next(model.parameters()).dtype
    x = torch.bernoulli(test.double(), generator=g).to(dtype)
    eps = torch.randn(10, len(x), model.latent_dim, generator=g, dtype=torch.float64)
    with torch.no_grad():
        elbo = float(model.elbo(x, eps=eps.to(dtype)).mean())
    if math.isfinite(elbo) and elbo > DIGITS_ELBO_GOAL:
        print(f"Correct: your ELBO formula matches nfcourse.vae, and your model reaches an "
              f"ELBO of {elbo:.2f} nats per test digit (goal: above {DIGITS_ELBO_GOAL}) "
              f"after {len(history)} steps.")
        return
    reason = describe_shortfall(
        history, model, budget=DIGITS_STEPS,
        floor=_DIGITS_FLOOR,
        went_up="the loss is minus the ELBO, minimised; is its sign right, and the "
                "learning rate not too large?",
        fallback=("the model stopped short: use the whole step budget, a learning rate "
                  "near 3e-3, fresh batches of binarised images at every step, and start "
                  "the decoder from the average image (decoder.set_output_bias)"))
    raise ExerciseError(
        f"your model reaches an ELBO of {elbo:.4g} nats per test digit; the goal is above "
        f"{DIGITS_ELBO_GOAL}. Likely cause: {reason}")


__all__ += ["check_fit_digits", "digit_images"]
