"""Feedback for the exercises of chapter 6, a VAE with a flow posterior.

Each check calls the student's function on fixed random inputs, compares with
``nfcourse.vae`` and, when the answer is wrong, looks for the usual slips (a missing term,
a wrong sign, an unstable logarithm) to say which one it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Normal

from .. import testing, vae
from .. import vae as _vae
from ..flows.planar import planar_forward
from ..images import load_digits
from . import call_student
from ._toolkit import (
    ExerciseError,
    Slip,
    as_tensor,
    check_gradients,
    compare,
    compare_gradients,
    known_constants,
    run,
    tolerances,
)
from ._training import (
    Goal,
    Measurement,
    check_fit,
)

__all__ = [
    "DIGITS_GOAL",
    "check_fit_digits",
    "check_flow_elbo",
    "check_iw_bound",
    "check_planar_stack",
    "check_reparameterise",
]

D64 = torch.float64
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _as_pair(result: object, name: str, what: str) -> tuple[Any, Any]:
    """The pair the student's function returns, or an ``ExerciseError`` naming what came."""
    if not isinstance(result, tuple | list) or len(result) != 2:
        kind = type(result).__name__ + (
            f" of shape {tuple(result.shape)}" if isinstance(result, Tensor) else ""
        )
        raise ExerciseError(f"{name} should return a pair {what}, got a {kind}")
    return tuple(result)


def check_reparameterise(
    reparameterise: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]],
) -> None:
    """``reparameterise(mu, log_sigma, eps) -> (z0, log_q0)``: the sample
    ``z0 = mu + exp(log_sigma) * eps`` and ``log N(z0; mu, diag sigma^2)`` summed over the
    latent dimensions; gradients must reach ``mu`` and ``log_sigma``."""
    g = _generator(0)
    mu = torch.randn(6, 3, generator=g, dtype=D64).requires_grad_()
    log_sigma = (0.7 * torch.randn(6, 3, generator=g, dtype=D64)).requires_grad_()
    eps = torch.randn(6, 3, generator=g, dtype=D64)
    z0, log_q0 = _as_pair(
        run(reparameterise, mu, log_sigma, eps.clone(), name="reparameterise"),
        "reparameterise",
        "(z0, log_q0)",
    )
    z0 = as_tensor(z0, "z0", (6, 3), ("batch", "latent dimensions"))
    log_q0 = as_tensor(log_q0, "log_q0", (6,), ("batch",))
    m, ls = mu.detach(), log_sigma.detach()
    sigma = ls.exp()
    expected_z0 = m + sigma * eps
    compare(
        z0,
        expected_z0,
        "z0",
        slips=[
            Slip(
                "z0 multiplies eps by log_sigma; the scale is sigma = exp(log_sigma)", m + ls * eps
            ),
            Slip(
                "z0 multiplies eps by the variance sigma^2 = exp(2 log_sigma); the scale is "
                "sigma = exp(log_sigma)",
                m + sigma**2 * eps,
            ),
            Slip(
                "z0 multiplies eps by exp(log_sigma / 2); log_sigma is the log of the standard "
                "deviation, so the scale is exp(log_sigma)",
                m + (ls / 2).exp() * eps,
            ),
            Slip("z0 = mu + sigma * eps: the scale sigma is missing", m + eps),
            Slip("z0 = mu + sigma * eps: the mean mu is missing", sigma * eps),
        ],
    )
    check_gradients(z0, {"mu": mu, "log_sigma": log_sigma}, "z0")
    expected = Normal(m, sigma).log_prob(expected_z0).sum(dim=1)
    sum_ls = ls.sum(1)
    compare(
        log_q0,
        expected,
        "log_q0",
        constants=known_constants(3),
        terms={
            "the term -sum log sigma": -sum_ls,
            "the term -sum eps^2 / 2": -0.5 * (eps**2).sum(1),
            "sum sigma": sigma.sum(1),
            "sum mu": m.sum(1),
            "-sum (sigma eps)^2 / 2, (z0 - mu)^2 not divided by sigma^2": -0.5
            * ((sigma * eps) ** 2).sum(1),
            "-sum (sigma^2 eps)^2 / 2": -0.5 * ((sigma**2 * eps) ** 2).sum(1),
        },
        slips=[
            Slip(
                "log_q0 misses the term -log sigma (summed over dimensions): the Gaussian's "
                "normalising constant depends on its scale",
                expected + sum_ls,
            ),
            Slip(
                "log_q0 adds log sigma; the Gaussian's density divides by sigma, so subtract it",
                expected + 2 * sum_ls,
            ),
            Slip("log_q0 misses -0.5 log(2 pi) per dimension", expected + 3 * HALF_LOG_2PI),
            Slip(
                "log_q0 subtracts 2 log sigma (the log-variance); the density divides by sigma "
                "once, -log sigma",
                expected - sum_ls,
            ),
            Slip(
                "that is log N(z0; 0, I), the prior; log q0 is the density of z0 under "
                "N(mu, sigma^2), which at z0 = mu + sigma eps is -eps^2 / 2 - log sigma - "
                "0.5 log(2 pi) per dimension",
                Normal(torch.zeros_like(m), torch.ones_like(m)).log_prob(expected_z0).sum(1),
            ),
            Slip(
                "log q0 at z0 = mu + sigma eps needs -eps^2 / 2 (squared)",
                (-0.5 * eps - ls - HALF_LOG_2PI).sum(1),
            ),
            Slip(
                "log q0 subtracts log sigma, not sigma itself",
                (-0.5 * eps**2 - sigma - HALF_LOG_2PI).sum(1),
            ),
            Slip(
                "log_q0 averages over the latent dimensions; it sums them (independent "
                "coordinates: the log-densities add)",
                expected / 3,
            ),
        ],
    )
    for k, what, reference in (
        (0, "z0", lambda m, ls, e: m + ls.exp() * e),
        (1, "log_q0", lambda m, ls, e: Normal(m, ls.exp()).log_prob(m + ls.exp() * e).sum(1)),
    ):
        compare_gradients(
            reparameterise,
            reference,
            [mu, log_sigma, eps],
            what,
            wrt={0: "mu", 1: "log_sigma"},
            pick=lambda out, k=k: out[k],
            name="reparameterise",
            advice="the ELBO is trained through z0 AND log_q0: compute log_q0 as the density "
            "of the z0 you return, with torch operations on mu and log_sigma (at "
            "z0 = mu + sigma eps it is -eps^2 / 2 - log sigma - 0.5 log(2 pi) per "
            "dimension, whose gradient with respect to mu is zero)",
        )
    print(
        "Correct: z0 = mu + sigma * eps is differentiable in mu and log_sigma, and log_q0 is "
        "its Gaussian log-density."
    )


def _elbo_inputs() -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(x, logits, zK, log_q0, log_dets)`` for five images, one decoder confident."""
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


def _elbo_formula(
    x: Tensor, logits: Tensor, zK: Tensor, log_q0: Tensor, log_dets: Tensor
) -> Tensor:
    return (
        vae.bernoulli_log_likelihood(x, logits)
        + vae.standard_normal_log_prob(zK)
        - log_q0
        + log_dets.sum(dim=1)
    )


def check_flow_elbo(flow_elbo: Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]) -> None:
    """``flow_elbo(x, logits, zK, log_q0, log_dets) -> (B,)``: the single-sample ELBO
    ``log p(x | zK) + log p(zK) - log q0 + sum_k log |det J_k|`` with a Bernoulli decoder
    (``logits``), a standard normal prior, and per-layer log-dets of shape ``(B, K)``."""
    x, logits, zK, log_q0, log_dets = _elbo_inputs()
    got = as_tensor(
        run(
            flow_elbo,
            x.clone(),
            logits.clone(),
            zK.clone(),
            log_q0.clone(),
            log_dets.clone(),
            name="flow_elbo",
        ),
        "flow_elbo",
        (5,),
        ("batch",),
    )
    log_lik = vae.bernoulli_log_likelihood(x, logits)
    log_prior = vae.standard_normal_log_prob(zK)
    sum_ld = log_dets.sum(dim=1)
    expected = log_lik + log_prior - log_q0 + sum_ld
    confident = torch.arange(5) == 0
    compare(
        got,
        expected,
        "your ELBO",
        constants=known_constants(2),
        terms={
            "the term log p(x | zK)": log_lik,
            "the term log p(zK)": log_prior,
            "the term -log q0": -log_q0,
            "the term + sum_k log|det J_k|": sum_ld,
            "the last layer's log-det": log_dets[:, -1],
            "the first layer's log-det": log_dets[:, 0],
        },
        labels=[f"image {i}" for i in range(5)],
        groups={"image 0, whose decoder logits reach +-60": confident},
        nan_hint="image 0 has logits of +-60: log(sigmoid(l)) underflows; compute the "
        "Bernoulli log-likelihood from the logits, sum x*l - softplus(l)",
        slips=[
            Slip(
                "the log-dets enter with the wrong sign: log qK = log q0 - sum log|det J|, "
                "and the ELBO has -log qK, so add them",
                expected - 2 * sum_ld,
            ),
            Slip("the prior term log p(zK) = log N(zK; 0, I) is missing", expected - log_prior),
            Slip(
                "log q0 enters with the wrong sign: the ELBO subtracts it", expected + 2 * log_q0
            ),
            Slip(
                "the term -log q0 is missing: the ELBO is log p(x, zK) - log qK(zK), "
                "and log qK = log q0 - sum log|det J|",
                expected + log_q0,
            ),
            Slip("the flow's log-dets are missing", expected - sum_ld),
            Slip("the decoder's log-likelihood log p(x | zK) is missing", expected - log_lik),
            Slip(
                "the decoder's log-likelihood has the wrong sign: a binary cross-entropy "
                "is MINUS the log-likelihood",
                expected - 2 * log_lik,
            ),
            Slip(
                "the log-likelihood averages over the pixels; the pixels are independent, "
                "so their log-probabilities add (sum over dim=1)",
                expected - log_lik + log_lik / x.shape[1],
            ),
            Slip(
                "the log-dets were summed over the whole batch (one number added to "
                "every image); sum over the layers only, dim=1",
                expected - sum_ld + log_dets.sum(),
            ),
            Slip(
                "the log-likelihood uses log(sigmoid(l)), which underflows at logits of "
                "+-60 (clamped or infinite): compute it from the logits, "
                "x*l - softplus(l)",
                (
                    x * torch.log(torch.sigmoid(logits)).clamp(min=-100)
                    + (1 - x) * torch.log(1 - torch.sigmoid(logits)).clamp(min=-100)
                ).sum(1)
                + log_prior
                - log_q0
                + sum_ld,
            ),
            Slip(
                "the Bernoulli log-likelihood is x*l - softplus(l); you have "
                "x*l - log(1 + l) or another form that drops the exponential",
                (x * logits - torch.log1p(logits.abs())).sum(1) + log_prior - log_q0 + sum_ld,
            ),
        ],
    )
    compare_gradients(
        flow_elbo,
        _elbo_formula,
        [x, logits, zK, log_q0, log_dets],
        "your ELBO",
        wrt={1: "the logits", 2: "zK", 3: "log_q0", 4: "log_dets"},
        name="flow_elbo",
        terms={
            "the term log p(x | zK)": lambda x, lg, z, q, d: vae.bernoulli_log_likelihood(x, lg),
            "the term log p(zK)": lambda x, lg, z, q, d: vae.standard_normal_log_prob(z),
            "the term -log q0": lambda x, lg, z, q, d: -q,
            "the term + sum_k log|det J_k|": lambda x, lg, z, q, d: d.sum(dim=1),
        },
        advice="the VAE is trained by the ELBO's gradient, so every term must stay a "
        "torch operation on its inputs",
    )
    print(
        "Correct: your ELBO matches log p(x | zK) + log p(zK) - log q0 + sum log|det J| "
        "for 5 images, a confident decoder included."
    )


def _stack_inputs(seed: int = 2) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(z0, u_hat, w, b)`` for four images and three planar layers."""
    g = _generator(seed)
    b, k, d = 4, 3, 2
    u = 1.5 * torch.randn(b, k, d, generator=g, dtype=D64)
    w = 1.5 * torch.randn(b, k, d, generator=g, dtype=D64)
    from ..flows.planar import constrained_u

    return (
        torch.randn(b, d, generator=g, dtype=D64),
        constrained_u(u, w),
        w,
        torch.randn(b, k, generator=g, dtype=D64),
    )


def _reference_stack(
    z: Tensor, u_hat: Tensor, w: Tensor, b: Tensor, at_input: bool = True
) -> tuple[Tensor, Tensor]:
    """``K`` planar layers image by image; ``at_input=False`` takes every log-det at
    ``z0`` (a slip)."""
    total = z.new_zeros(z.shape[0])
    z_first = z
    for k in range(u_hat.shape[1]):
        z_new, log_det = planar_forward(z, u_hat[:, k], w[:, k], b[:, k])
        if not at_input:
            _, log_det = planar_forward(z_first, u_hat[:, k], w[:, k], b[:, k])
        z = z_new
        total = total + log_det
    return z, total


def check_planar_stack(
    planar_stack: Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]],
) -> None:
    """``planar_stack(z0, u_hat, w, b) -> (zK, sum_log_det)``: ``K`` planar layers, image by
    image, with parameters ``u_hat, w`` of shape ``(B, K, D)`` and ``b`` of shape ``(B, K)``;
    checked against the autograd Jacobian of the whole stack, image by image."""
    z0, u_hat, w, b = _stack_inputs()
    zK, total = _as_pair(
        run(planar_stack, z0.clone(), u_hat, w, b, name="planar_stack"),
        "planar_stack",
        "(zK, sum_log_det)",
    )
    expected_zK, expected_total = _reference_stack(z0, u_hat, w, b)
    zK = as_tensor(zK, "zK", tuple(expected_zK.shape), ("batch", "latent dimensions"))
    total = as_tensor(total, "sum_log_det", tuple(expected_total.shape), ("batch",))
    backwards = _reference_stack(z0, u_hat.flip(1), w.flip(1), b.flip(1))
    first_only = planar_forward(z0, u_hat[:, 0], w[:, 0], b[:, 0])
    compare(
        zK,
        expected_zK,
        "zK",
        atol=1e-8,
        slips=[
            Slip(
                "the layers run in reverse order: apply layer 0 first, then layer 1, ..., "
                "layer K-1 last",
                backwards[0],
            ),
            Slip(
                "only the first layer was applied: loop over all K layers, feeding each "
                "layer's output to the next",
                first_only[0],
            ),
            Slip(
                "each layer must act on the previous layer's output; yours all act on z0",
                z0
                + sum(
                    planar_forward(z0, u_hat[:, k], w[:, k], b[:, k])[0] - z0
                    for k in range(u_hat.shape[1])
                ),
            ),
        ],
    )
    compare(
        total,
        expected_total,
        "sum_log_det",
        atol=1e-8,
        slips=[
            Slip(
                "each layer's log-det must be evaluated at that layer's input; yours are all "
                "evaluated at z0",
                _reference_stack(z0, u_hat, w, b, at_input=False)[1],
            ),
            Slip(
                "sum_log_det has the log-det of the last layer only: add up all K",
                planar_forward(
                    _reference_stack(z0, u_hat[:, :-1], w[:, :-1], b[:, :-1])[0],
                    u_hat[:, -1],
                    w[:, -1],
                    b[:, -1],
                )[1],
            ),
            Slip(
                "sum_log_det has the log-det of the first layer only: add up all K", first_only[1]
            ),
            Slip(
                "the log-dets are summed in reverse order of layers, with each evaluated at "
                "the reversed stack's inputs",
                backwards[1],
            ),
        ],
    )
    for i in range(z0.shape[0]):

        def stack(v: Tensor, i: int = i) -> Tensor:
            return planar_stack(v, u_hat[i : i + 1], w[i : i + 1], b[i : i + 1])[0]

        autograd = testing.autograd_log_abs_det(stack, z0[i : i + 1])
        error = float((total[i].detach().to(D64) - autograd[0].to(D64)).abs())
        if error > max(1e-6, 10 * tolerances(total, zK)[0]):
            raise ExerciseError(
                f"your sum of log-dets differs from log|det| of the autograd Jacobian of the "
                f"whole stack by {error:.3g} at image {i}; each layer's log-det is "
                "log|1 + (1 - tanh^2(w^T z + b)) w^T u_hat|, evaluated at that layer's input"
            )
    for k, what in enumerate(("zK", "sum_log_det")):
        compare_gradients(
            planar_stack,
            lambda z, u, w, b, k=k: _reference_stack(z, u, w, b)[k],
            [z0, u_hat, w, b],
            what,
            wrt={0: "z0", 1: "u_hat", 2: "w", 3: "b"},
            pick=lambda out, k=k: out[k],
            name="planar_stack",
            advice="the encoder that outputs u_hat, w and b is trained through zK and the "
            "log-dets: keep every layer's output and log-det in the graph",
        )
    print(
        f"Correct: zK and the summed log-dets match the autograd Jacobian of all "
        f"{u_hat.shape[1]} layers for each of {z0.shape[0]} images."
    )


def check_iw_bound(iw_bound: Callable[[Tensor], Tensor]) -> None:
    """``iw_bound(log_weights) -> (B,)``: ``log (1/S) sum_s exp(log_weights[s])`` over the
    first axis, stable for very negative log-weights, equal to the log-weight for S = 1."""
    g = _generator(3)
    log_weights = 3 * torch.randn(50, 4, generator=g, dtype=D64) - 5
    expected = vae.importance_weighted_bound(log_weights)
    got = as_tensor(
        run(iw_bound, log_weights.clone(), name="iw_bound"), "your bound", (4,), ("batch",)
    )
    compare(
        got,
        expected,
        "your bound",
        constants={math.log(50): "log S with S = 50"},
        slips=[
            Slip(
                "that is the mean of the log-weights, the ELBO estimate; the bound "
                "averages the weights themselves, then takes the log",
                log_weights.mean(0),
            ),
            Slip(
                "you summed the weights without dividing by S: subtract log S",
                expected + math.log(50),
            ),
            Slip(
                "that is the largest log-weight; the bound averages all S weights "
                "(logsumexp - log S)",
                log_weights.max(0).values,
            ),
            Slip(
                "log S is subtracted, not divided: log((1/S) sum w) = logsumexp - log S",
                torch.logsumexp(log_weights, 0) / math.log(50),
            ),
        ],
    )
    tiny = log_weights - 1000.0  # the size of log-weights of real images (in nats)
    got_tiny = as_tensor(
        run(iw_bound, tiny.clone(), name="iw_bound"), "your bound", (4,), ("batch",)
    )
    if not bool(torch.isfinite(got_tiny.detach()).all()):
        raise ExerciseError(
            "with log-weights around -1000 your bound is -inf: exp(-1000) is "
            "0 in floating point (an underflow). Use torch.logsumexp, which "
            "factors out the largest log-weight first"
        )
    compare(got_tiny, expected - 1000.0, "your bound for log-weights near -1000")
    # Images at very different scales (real images differ by hundreds of nats): one
    # shift for the whole batch leaves the low image at exp(-1600) = 0.
    spread = log_weights.clone()
    spread[:, 0] += 800.0
    spread[:, 1] -= 800.0
    expected_spread = vae.importance_weighted_bound(spread)
    what = "your bound for images whose log-weights lie near +800, -800 and -5"
    got_spread = as_tensor(run(iw_bound, spread.clone(), name="iw_bound"), what, (4,), ("batch",))
    top = spread.max()
    compare(
        got_spread,
        expected_spread,
        what,
        labels=[
            f"image {b} (log-weights near {float(spread[:, b].mean()):.0f})" for b in range(4)
        ],
        slips=[
            Slip(
                "max-shift over the whole batch instead of per row: you subtract one "
                "maximum for all images, so the image whose log-weights lie near -800 "
                "gets exp(-1600) = 0 and a bound of -inf. Shift each image by its own "
                "maximum over the S samples, m = log_weights.max(dim=0, keepdim=True), "
                "or use torch.logsumexp(log_weights, dim=0)",
                top + torch.log(torch.exp(spread - top).mean(0)),
            ),
            Slip(
                "max-shift over the wrong axis: the maximum must be taken per image, over "
                "the S samples (dim=0), not over the images",
                (lambda m: m.mean() + torch.log(torch.exp(spread - m).mean(0)))(
                    spread.max(dim=1, keepdim=True).values
                ),
            ),
            Slip(
                "exp of log-weights near +800 overflows to inf: subtract each image's "
                "largest log-weight before exponentiating (torch.logsumexp does)",
                torch.log(torch.exp(spread).mean(0)),
            ),
        ],
        nan_hint="a max-shift over the whole batch instead of per row (per image) leaves "
        "exp(-1600) = 0 for the low image; shift each image by its own maximum over dim=0",
    )
    compare_gradients(
        iw_bound,
        vae.importance_weighted_bound,
        [log_weights],
        "your bound",
        wrt={0: "the log-weights"},
        name="iw_bound",
        advice="the importance-weighted bound is a training objective too, so keep it a "
        "torch operation on the log-weights (a detached maximum shift is fine: it cancels)",
    )
    single = as_tensor(
        run(iw_bound, log_weights[:1].clone(), name="iw_bound"),
        "your bound with S = 1",
        (4,),
        ("batch",),
    )
    compare(single, log_weights[0], "your bound with S = 1 (it must equal the log-weight)")
    print(
        "Correct: your bound matches logsumexp - log S, stays finite for log-weights near "
        "-1000, and equals the log-weight when S = 1."
    )


# --- Exercise: assemble the flow ELBO from the model's parts and train on digits ------------


DIGITS_GOAL = Goal(
    -26.5,
    steps=300,
    n=359,
    higher=True,
    nonnegative=False,
    digits=2,
    phrases=(
        "your ELBO formula matches nfcourse.vae, and {subject} an ELBO of {value:.2f} nats per "
        "test digit",
        "{subject} an ELBO of {value:.4g} nats per test digit",
    ),
)
DIGITS_FLOOR = (
    0.0,
    "minus the ELBO of binary images is positive, since the ELBO lies below "
    "log p(x) <= 0; a negative loss means you maximise minus the ELBO: the "
    "loss is -model_elbo(...).mean()",
)


def _digit_images() -> tuple[Tensor, Tensor]:
    """scikit-learn's 8 x 8 digits as grey levels in ``[0, 1]``: ``(train, test)`` of shapes
    ``(1438, 64)`` and ``(359, 64)`` (``nfcourse.images.load_digits`` divided by 16)."""
    train, test = load_digits()
    return train / 16, test / 16


def _elbo_slips(
    model: _vae.FlowPosteriorVAE, x: Tensor, eps: Tensor
) -> tuple[Tensor, list[tuple[Tensor, str]]]:
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
            (
                log_lik + log_prior - log_q0 - sum_log_det,
                "the log-dets enter with the wrong sign: log qK(zK) = log q0(z0) - sum_k "
                "log|det J_k|, and the ELBO subtracts log qK, so it adds the log-dets",
            ),
            (
                log_lik + log_prior + sum_log_det,
                "log q0(z0 | x) is missing: without it nothing keeps the posterior from "
                "shrinking to a point",
            ),
            (
                log_lik + log_prior - log_q0,
                "the flow's log-dets are missing: the flow changes the density of z",
            ),
            (
                _vae.bernoulli_log_likelihood(x, model.decoder(z0))
                + log_prior
                - log_q0
                + sum_log_det,
                "the decoder is fed z0; it must decode zK, the point after the flow",
            ),
            (
                log_lik + _vae.standard_normal_log_prob(z0) - log_q0 + sum_log_det,
                "the prior is evaluated at z0; it must be log p(zK), at the point after the flow",
            ),
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
        raise ExerciseError(
            f"model_elbo should return a tensor of shape (B,), got {type(got).__name__}"
        )
    expected, slips = _elbo_slips(model, x, eps)
    if got.shape != expected.shape:
        raise ExerciseError(
            f"model_elbo returned shape {tuple(got.shape)} for 6 images; "
            f"expected {tuple(expected.shape)}, one ELBO per image"
        )
    value = got.detach().double()
    if not bool(torch.allclose(value, expected, atol=1e-6, rtol=1e-6)):
        for wrong, message in slips:
            if bool(torch.allclose(value, wrong, atol=1e-6, rtol=1e-6)):
                raise ExerciseError(f"your ELBO is off: {message}")
        k = int((value - expected).abs().argmax())
        raise ExerciseError(
            f"your ELBO differs from nfcourse.vae's by {float((value - expected)[k]):.4g} "
            f"nats for image {k}: build it from log p(x | zK), log p(zK), log q0(z0 | x) "
            "and the flow's log-dets"
        )
    encoder = [p for p in model.encoder.parameters() if p.requires_grad]
    if not got.requires_grad:
        grads = [None] * len(encoder)
    else:
        grads = torch.autograd.grad(got.sum(), encoder, allow_unused=True)
    references = torch.autograd.grad(model.elbo(x, eps=eps).sum(), encoder, allow_unused=True)
    if any(
        (ref is not None)
        and (mine is None or not bool(torch.allclose(mine, ref, atol=1e-6, rtol=1e-5)))
        for mine, ref in zip(grads, references, strict=False)
    ):
        raise ExerciseError(
            "your ELBO has the right value but the wrong gradient for the encoder: the "
            "sample must be z0 = mu + sigma * eps, a differentiable function of the "
            "encoder's outputs (not detached, not torch.normal(mu, sigma))"
        )


def check_fit_digits(
    model_elbo: Callable[[_vae.FlowPosteriorVAE, Tensor, Tensor], Tensor],
    fit_digits: Callable[[Tensor, torch.Generator], tuple[_vae.FlowPosteriorVAE, list[float]]],
    seed: int = 0,
) -> None:
    """Exercise: ``model_elbo(model, x, eps)`` assembles the single-sample ELBO from the
    encoder, the flow and the decoder of a ``FlowPosteriorVAE``; ``fit_digits(images,
    generator)`` trains such a model on the 8 x 8 digits with it and returns
    ``(model, history)``. The ELBO of the package on the test digits must exceed -26.5
    nats per image after at most 300 steps."""
    _check_elbo_function(model_elbo)
    train, test = _digit_images()

    def inspect(model: _vae.FlowPosteriorVAE) -> None:
        if model.data_dim != 64:
            raise ExerciseError(
                f"the model takes images of {model.data_dim} pixels; the "
                "digits have 8 x 8 = 64: pass data_dim=64"
            )

    def measure(model: _vae.FlowPosteriorVAE) -> Measurement:
        g = torch.Generator().manual_seed(10_000 + seed)
        dtype = next(model.parameters()).dtype
        x = torch.bernoulli(test.double(), generator=g).to(dtype)
        eps = torch.randn(10, len(x), model.latent_dim, generator=g, dtype=torch.float64)
        with torch.no_grad():
            per_image = model.elbo(x, eps=eps.to(dtype)).double().mean(dim=0)
        return Measurement(
            float(per_image.mean()), float(per_image.std() / math.sqrt(len(per_image)))
        )

    check_fit(
        fit_digits,
        train.clone(),
        torch.Generator().manual_seed(seed),
        name="fit_digits",
        goal=DIGITS_GOAL,
        seed=seed,
        model_type=_vae.FlowPosteriorVAE,
        model_hint="the nfcourse.vae.FlowPosteriorVAE you trained",
        floor=DIGITS_FLOOR,
        inspect=inspect,
        measure=measure,
        subject="your model reaches",
        went_up="the loss is minus the ELBO, minimised; is its sign right, and the "
        "learning rate not too large?",
        fallback=(
            "the model stopped short: use the whole step budget, a learning rate "
            "near 3e-3, fresh batches of binarised images at every step, and start "
            "the decoder from the average image (decoder.set_output_bias)"
        ),
    )
