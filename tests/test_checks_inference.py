"""The exercise checks of chapter 12 accept right answers and name wrong ones."""

import math
import re

import pytest
import torch
from check_tables import Right, Wrong, assert_right, assert_wrong, outcome, stub
from solution_code import solution

import nfcourse as nf
from nfcourse.checks.inference import (
    check_conditional_log_prob,
    check_effective_sample_size,
    check_fit_posterior,
    check_log_z_estimate,
)
from nfcourse.flows.autoregressive import maf_flow

CH = "12_augmentation_and_inference"
ess_ref = solution(CH, "effective_sample_size")
log_z_ref = solution(CH, "log_z_hat")
cond_ref = solution(CH, "conditional_log_prob")


def log_normal(z):
    return -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def layer(log_q):
    def answer(x, c, net):
        s, t = net(c)
        return log_q(x, s, t)

    return answer


WRONG = [
    Wrong(
        check_effective_sample_size, "fraction", lambda lw: ess_ref(lw) / lw.numel(), "fraction"
    ),
    Wrong(check_effective_sample_size, "upside-down", lambda lw: 1 / ess_ref(lw), "upside down"),
    Wrong(
        check_effective_sample_size,
        "log-weights-as-weights",
        lambda lw: lw.sum() ** 2 / (lw**2).sum(),
        "exponentiate",
    ),
    Wrong(
        check_effective_sample_size,
        "naive-exp",
        lambda lw: lw.exp().sum() ** 2 / (lw.exp() ** 2).sum(),
        "overflow",
    ),
    Wrong(check_effective_sample_size, "stub", stub, "not written yet"),
    Wrong(check_log_z_estimate, "elbo", lambda lw: lw.mean(), "ELBO"),
    Wrong(check_log_z_estimate, "no-log-n", lambda lw: torch.logsumexp(lw, 0), "log n is missing"),
    Wrong(
        check_log_z_estimate,
        "plus-log-n",
        lambda lw: torch.logsumexp(lw, 0) + math.log(lw.numel()),
        "log n is added",
    ),
    Wrong(check_log_z_estimate, "no-log", lambda lw: log_z_ref(lw).exp(), "without the log"),
    Wrong(check_log_z_estimate, "naive-exp", lambda lw: lw.exp().mean().log(), "overflow"),
    Wrong(check_log_z_estimate, "stub", stub, "not written yet"),
    Wrong(
        check_conditional_log_prob,
        "sign",
        layer(lambda x, s, t: log_normal((x - t) * torch.exp(-s)) + s.sum(1)),
        "sign of the log-det",
    ),
    Wrong(
        check_conditional_log_prob,
        "multiply-scale",
        layer(lambda x, s, t: log_normal((x - t) * torch.exp(s)) - s.sum(1)),
        "divides by the scale",
    ),
    Wrong(
        check_conditional_log_prob,
        "shift-order",
        layer(lambda x, s, t: log_normal(x * torch.exp(-s) - t) - s.sum(1)),
        "subtract the shift",
    ),
    Wrong(
        check_conditional_log_prob,
        "base-at-x",
        layer(lambda x, s, t: log_normal(x) - s.sum(1)),
        "not of x",
    ),
    Wrong(
        check_conditional_log_prob,
        "no-constant",
        layer(lambda x, s, t: -0.5 * (((x - t) * torch.exp(-s)) ** 2).sum(1) - s.sum(1)),
        "constant",
    ),
    Wrong(
        check_conditional_log_prob,
        "no-log-det",
        layer(lambda x, s, t: log_normal((x - t) * torch.exp(-s))),
        "missing",
    ),
    Wrong(
        check_conditional_log_prob,
        "no-grad",
        lambda x, c, net: cond_ref(x, c, net).detach(),
        "no gradient|carries no",
    ),
    Wrong(check_conditional_log_prob, "stub", stub, "not written yet"),
]

RIGHT = [
    Right(check_effective_sample_size, "solution", ess_ref),
    Right(check_effective_sample_size, "float32", lambda lw: ess_ref(lw.float())),
    Right(
        check_effective_sample_size,
        "shifted",
        lambda lw: (lambda w: w.sum() ** 2 / (w**2).sum())((lw - lw.max()).exp()),
    ),
    Right(check_effective_sample_size, "python-float", lambda lw: float(ess_ref(lw))),
    Right(check_log_z_estimate, "solution", log_z_ref),
    Right(check_log_z_estimate, "float32", lambda lw: log_z_ref(lw.float())),
    Right(
        check_log_z_estimate, "max-trick", lambda lw: lw.max() + (lw - lw.max()).exp().mean().log()
    ),
    Right(check_conditional_log_prob, "solution", cond_ref),
    Right(check_conditional_log_prob, "float32", lambda x, c, net: cond_ref(x, c, net).float()),
    Right(
        check_conditional_log_prob,
        "torch-distribution",
        layer(lambda x, s, t: torch.distributions.Normal(t, s.exp()).log_prob(x).sum(1)),
    ),
]


@pytest.mark.parametrize("row", [w.param() for w in WRONG])
def test_check_rejects_and_names_the_mistake(row):
    assert_wrong(row)


@pytest.mark.parametrize("row", [r.param() for r in RIGHT])
def test_check_accepts_right_answers_written_differently(row):
    assert_right(row)


# --- the build-and-train exercise ---------------------------------------------------------


def _posterior(swap=False, sign=1.0, steps=600):
    def fit_posterior(theta, x):
        inputs, context = (x, theta) if swap else (theta, x)
        flow = maf_flow(
            inputs.shape[1], n_layers=3, hidden=(32, 32), seed=0, context_dim=context.shape[1]
        )
        optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)

        def loss_fn(step):
            index = torch.randint(len(theta), (256,), generator=g)
            return sign * flow.forward_kl(inputs[index], context[index])

        return flow, nf.train(loss_fn, flow, steps, optimizer=optimizer, progress=False)

    return fit_posterior


def test_fit_posterior_reference_answer_reaches_the_goal_with_margin():
    raised, message = outcome(
        Right(check_fit_posterior, "solution", solution(CH, "fit_posterior"))
    )
    assert not raised, message
    kl = float(re.search(r"KL = ([0-9.]+)", message).group(1))
    assert kl < 0.5 * 0.1


@pytest.mark.parametrize(
    "wrong, match",
    [
        (_posterior(swap=True, steps=50), "swapped|failed"),
        (_posterior(sign=-1.0, steps=100), "not its negative|went up|diverged"),
    ],
)
def test_fit_posterior_check_names_the_cause_of_a_miss(wrong, match):
    assert_wrong(Wrong(check_fit_posterior, "miss", wrong, match))
