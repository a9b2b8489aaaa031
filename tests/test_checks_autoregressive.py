"""The exercise checks of chapter 7 accept right answers and name wrong ones."""

import math
import re

import pytest
import torch
from check_tables import Right, Wrong, assert_right, assert_wrong, outcome, stub
from solution_code import solution

import nfcourse as nf
from nfcourse.checks.autoregressive import (
    ORDERING_REFERENCE,
    check_fit_ring,
    check_iaf_sample_and_log_prob,
    check_inverse_reverse_kl,
    check_made_masks,
    check_maf_sample,
    check_ordering,
    make_conditioner,
    ordering_target_log_prob,
    ordering_target_sample,
)

CH = "07_autoregressive_flows"
masks_ref = solution(CH, "made_masks_from_degrees")
sample_ref = solution(CH, "maf_sample")
iaf_ref = solution(CH, "iaf_sample_and_log_prob")
duality_ref = solution(CH, "inverse_reverse_kl")
order_ref = solution(CH, "choose_order")


def log_normal(z):
    return -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def maf_passes(passes, log_det=lambda s, x, z, c: s.sum(1), start=torch.zeros_like):
    def answer(z, c):
        x = start(z)
        s = torch.zeros_like(z)
        for _ in range(passes(z)):
            s, t = c(x)
            x = torch.exp(s) * z + t
        return x, log_det(s, x, z, c)

    return answer


def duality(kl):
    """An answer to the duality exercise from ``kl(log_pi, log_det, u, x)``."""

    def answer(normalize, log_pi, x):
        u, log_det = normalize(x)
        return kl(log_pi(x), log_det, u, x)

    return answer


def iaf(log_q):
    def answer(z, c):
        s, t = c(z)
        x = torch.exp(s) * z + t
        return x, log_q(z, x, s)

    return answer


WRONG = [
    Wrong(
        check_made_masks,
        "self-seeing",
        lambda i, h: ((h[:, None] >= i[None, :]).float(), (i[:, None] >= h[None, :]).float()),
        "see itself",
    ),
    Wrong(
        check_made_masks,
        "strict-hidden",
        lambda i, h: ((h[:, None] > i[None, :]).float(), (i[:, None] > h[None, :]).float()),
        "including",
    ),
    Wrong(
        check_made_masks,
        "reversed-hidden",
        lambda i, h: ((h[:, None] <= i[None, :]).float(), (i[:, None] > h[None, :]).float()),
        "reversed",
    ),
    Wrong(
        check_made_masks,
        "reversed-out",
        lambda i, h: ((h[:, None] >= i[None, :]).float(), (i[:, None] < h[None, :]).float()),
        "reversed",
    ),
    Wrong(
        check_made_masks,
        "transposed",
        lambda i, h: ((i[:, None] <= h[None, :]).float(), (h[:, None] < i[None, :]).float()),
        "transposed",
    ),
    Wrong(check_made_masks, "one-mask", lambda i, h: (h[:, None] >= i[None, :]).float(), "pair"),
    Wrong(check_made_masks, "stub", stub, "not written yet"),
    Wrong(check_maf_sample, "one-pass-from-z", iaf(lambda z, x, s: s.sum(1)), "that is IAF"),
    Wrong(
        check_maf_sample,
        "one-pass-from-zeros",
        maf_passes(lambda z: 1),
        "only the first coordinate",
    ),
    Wrong(check_maf_sample, "d-minus-1", maf_passes(lambda z: z.shape[1] - 1), "one too few"),
    Wrong(
        check_maf_sample,
        "inverse-formula",
        lambda z, c: (lambda s, t: ((z - t) * torch.exp(-s), -s.sum(1)))(*c(torch.zeros_like(z))),
        "inverse formula",
    ),
    Wrong(
        check_maf_sample,
        "log-det-sign",
        maf_passes(lambda z: z.shape[1], lambda s, x, z, c: -s.sum(1)),
        "normalizing",
    ),
    Wrong(
        check_maf_sample,
        "log-det-from-z",
        maf_passes(lambda z: z.shape[1], lambda s, x, z, c: c(z)[0].sum(1)),
        "from z",
    ),
    Wrong(
        check_maf_sample,
        "log-det-exp",
        maf_passes(lambda z: z.shape[1], lambda s, x, z, c: s.exp().sum(1)),
        "exp\\(s\\)",
    ),
    Wrong(
        check_maf_sample,
        "log-det-first-pass",
        maf_passes(lambda z: z.shape[1], lambda s, x, z, c: c(torch.zeros_like(z))[0].sum(1)),
        "first pass",
    ),
    Wrong(
        check_maf_sample,
        "log-det-over-batch",
        maf_passes(lambda z: z.shape[1], lambda s, x, z, c: s.sum()),
        "whole batch",
    ),
    Wrong(
        check_maf_sample,
        "no-grad",
        lambda z, c: tuple(v.detach() for v in sample_ref(z, c)),
        "no gradient|carries no",
    ),
    Wrong(
        check_maf_sample,
        "in-place",
        lambda z, c: (lambda out: (z.mul_(1.0 + 1e-3), out)[1])(sample_ref(z, c)),
        "in place",
    ),
    Wrong(check_maf_sample, "stub", stub, "not written yet"),
    Wrong(
        check_iaf_sample_and_log_prob,
        "log-det-sign",
        iaf(lambda z, x, s: log_normal(z) + s.sum(1)),
        "sign of the log-det",
    ),
    Wrong(
        check_iaf_sample_and_log_prob,
        "base-at-x",
        iaf(lambda z, x, s: log_normal(x) - s.sum(1)),
        "not N\\(x",
    ),
    Wrong(
        check_iaf_sample_and_log_prob,
        "no-constant",
        iaf(lambda z, x, s: -0.5 * (z**2).sum(1) - s.sum(1)),
        "constant",
    ),
    Wrong(
        check_iaf_sample_and_log_prob, "no-log-det", iaf(lambda z, x, s: log_normal(z)), "missing"
    ),
    Wrong(
        check_iaf_sample_and_log_prob,
        "scale-s",
        lambda z, c: (lambda s, t: (z * s + t, log_normal(z) - s.sum(1)))(*c(z)),
        "exp\\(s\\)",
    ),
    Wrong(
        check_iaf_sample_and_log_prob,
        "exp-minus-s",
        lambda z, c: (lambda s, t: (z * torch.exp(-s) + t, log_normal(z) - s.sum(1)))(*c(z)),
        "inverse",
    ),
    Wrong(check_iaf_sample_and_log_prob, "stub", stub, "not written yet"),
    Wrong(
        check_inverse_reverse_kl,
        "log-det-sign",
        duality(lambda lp, ld, u, x: (lp + ld - log_normal(u)).mean()),
        "log-det enters with a minus",
    ),
    Wrong(
        check_inverse_reverse_kl,
        "nll-only",
        duality(lambda lp, ld, u, x: (-ld - log_normal(u)).mean()),
        "negative log-likelihood",
    ),
    Wrong(
        check_inverse_reverse_kl,
        "reversed",
        duality(lambda lp, ld, u, x: (log_normal(u) + ld - lp).mean()),
        "other way round",
    ),
    Wrong(
        check_inverse_reverse_kl,
        "no-constant",
        duality(lambda lp, ld, u, x: (lp - ld + 0.5 * (u**2).sum(1)).mean()),
        "constant",
    ),
    Wrong(
        check_inverse_reverse_kl,
        "normal-at-x",
        duality(lambda lp, ld, u, x: (lp - ld - log_normal(x)).mean()),
        "taken at x",
    ),
    Wrong(
        check_inverse_reverse_kl,
        "sum",
        duality(lambda lp, ld, u, x: (lp - ld - log_normal(u)).sum()),
        "mean",
    ),
    Wrong(
        check_inverse_reverse_kl,
        "no-log-det",
        duality(lambda lp, ld, u, x: (lp - log_normal(u)).mean()),
        "log-det term is missing",
    ),
    Wrong(
        check_inverse_reverse_kl,
        "detached-log-det",
        duality(lambda lp, ld, u, x: (lp - ld.detach() - log_normal(u)).mean()),
        "log-det is cut from the graph",
    ),
    Wrong(
        check_inverse_reverse_kl,
        "detached-u",
        duality(lambda lp, ld, u, x: (lp - ld - log_normal(u.detach())).mean()),
        "u = g\\(x\\) is cut from the graph",
    ),
    Wrong(
        check_inverse_reverse_kl,
        "item",
        duality(lambda lp, ld, u, x: (lp - ld - log_normal(u)).mean().item()),
        "carries no gradient",
    ),
    Wrong(check_inverse_reverse_kl, "stub", stub, "not written yet"),
    Wrong(check_ordering, "inverse-permutation", lambda: [1, 2, 0], "invert your permutation"),
    Wrong(check_ordering, "natural", lambda: [0, 1, 2], "puts x_0 first"),
    Wrong(check_ordering, "x2-first", lambda: [2, 1, 0], "puts x_2 first"),
    Wrong(check_ordering, "x0-before-x2", lambda: [1, 0, 2], "x_0 comes before x_2"),
    Wrong(check_ordering, "not-a-permutation", lambda: [1, 1, 0], "permutation"),
    Wrong(check_ordering, "stub", stub, "not written yet"),
]

RIGHT = [
    Right(check_made_masks, "solution", masks_ref),
    Right(
        check_made_masks, "bool", lambda i, h: (h[:, None] >= i[None, :], i[:, None] > h[None, :])
    ),
    Right(
        check_made_masks,
        "float64-loops",
        lambda i, h: (
            torch.tensor([[float(a >= b) for b in i] for a in h], dtype=torch.float64),
            torch.tensor([[float(a > b) for b in h] for a in i], dtype=torch.float64),
        ),
    ),
    Right(check_maf_sample, "solution", sample_ref),
    Right(check_maf_sample, "float32", lambda z, c: tuple(v.float() for v in sample_ref(z, c))),
    Right(check_maf_sample, "start-from-z", maf_passes(lambda z: z.shape[1], start=torch.clone)),
    Right(check_maf_sample, "coordinate-by-coordinate", lambda z, c: _one_at_a_time(z, c)),
    Right(check_iaf_sample_and_log_prob, "solution", iaf_ref),
    Right(
        check_iaf_sample_and_log_prob,
        "float32",
        lambda z, c: tuple(v.float() for v in iaf_ref(z, c)),
    ),
    Right(
        check_iaf_sample_and_log_prob,
        "torch-distribution",
        iaf(lambda z, x, s: torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1) - s.sum(1)),
    ),
    Right(check_inverse_reverse_kl, "solution", duality_ref),
    Right(check_inverse_reverse_kl, "float32", lambda n, p, x: duality_ref(n, p, x).float()),
    Right(
        check_inverse_reverse_kl,
        "float32-inputs",
        duality(lambda lp, ld, u, x: (lp.float() - ld.float() - log_normal(u.float())).mean()),
    ),
    Right(
        check_inverse_reverse_kl,
        "torch-distribution",
        duality(
            lambda lp, ld, u, x: (
                lp - ld - torch.distributions.Normal(0.0, 1.0).log_prob(u).sum(1)
            ).mean()
        ),
    ),
    Right(
        check_inverse_reverse_kl,
        "minus-nll-plus-log-pi",
        duality(lambda lp, ld, u, x: lp.mean() - (ld + log_normal(u)).mean()),
    ),
    Right(check_ordering, "solution", order_ref),
    Right(check_ordering, "tensor", lambda: torch.tensor(ORDERING_REFERENCE)),
    Right(check_ordering, "tuple", lambda: ORDERING_REFERENCE),
]


def _one_at_a_time(z, c):
    """Sampling written coordinate by coordinate, the way the algorithm is usually stated."""
    columns = []
    for i in range(z.shape[1]):
        x_so_far = torch.cat(columns + [torch.zeros_like(z[:, i:])], dim=1)
        s, t = c(x_so_far)
        columns.append(torch.exp(s[:, i : i + 1]) * z[:, i : i + 1] + t[:, i : i + 1])
    x = torch.cat(columns, dim=1)
    return x, c(x)[0].sum(1)


def test_make_conditioner_is_autoregressive():
    c = make_conditioner(4)
    u = torch.randn(4, dtype=torch.float64)
    for k in range(2):
        jac = torch.autograd.functional.jacobian(lambda v, k=k: c(v.unsqueeze(0))[k][0], u)
        assert torch.equal(jac.triu(), torch.zeros_like(jac))
        assert jac.tril(-1).abs().sum() > 0
    with pytest.raises(ValueError, match="at least 2"):
        make_conditioner(1)


@pytest.mark.parametrize("row", [w.param() for w in WRONG])
def test_check_rejects_and_names_the_mistake(row):
    assert_wrong(row)


@pytest.mark.parametrize("row", [r.param() for r in RIGHT])
def test_check_accepts_right_answers_written_differently(row):
    assert_right(row)


# --- the build-and-train exercise ---------------------------------------------------------


def _ring(order="reverse", sign=1.0, steps=400):
    def fit_ring(data, generator):
        flow = nf.maf_flow(
            2, n_layers=4, hidden=(32, 32), order=order if order == "reverse" else [[0, 1]] * 4
        )
        optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

        def loss_fn(step):
            index = torch.randint(len(data), (128,), generator=generator)
            return sign * flow.forward_kl(data[index])

        return flow, nf.train(
            loss_fn, flow, steps, optimizer=optimizer, scheduler=schedule, progress=False
        )

    return fit_ring


def test_fit_ring_reference_answer_reaches_the_goal_with_margin():
    fit = solution(CH, "fit_ring")
    raised, message = outcome(Right(check_fit_ring, "solution", fit))
    assert not raised, message
    kl = float(re.search(r"KL\(p \|\| q\) = ([0-9.]+)", message).group(1))
    assert kl < 0.8 * 1.2


@pytest.mark.parametrize(
    "wrong, match",
    [
        (_ring(order="same"), "same ordering"),
        (_ring(sign=-1.0), "not its negative|below|went up"),
    ],
)
def test_fit_ring_check_names_the_cause_of_a_miss(wrong, match):
    assert_wrong(Wrong(check_fit_ring, "miss", wrong, match))


def test_ordering_target_samples_follow_its_density():
    """The samples come from the density the exercise prints: a one-dimensional check of
    each conditional, and the log-density integrates the known normaliser."""
    x = ordering_target_sample(50_000, seed=3)
    x0, x1, x2 = x.unbind(1)
    assert abs(float(x1.mean())) < 0.02 and abs(float(x1.std()) - 1) < 0.02
    assert abs(float((x2 - 1.5 * torch.sin(2 * x1)).std()) - 0.3) < 0.005
    assert abs(float((x0 - 0.5 * x2**2 + 1).std()) - 0.3) < 0.005
    # E[-log p] is the entropy: 0.5 log(2 pi e) + 2 (0.5 log(2 pi e) + log 0.3)
    entropy = 1.5 * math.log(2 * math.pi * math.e) + 2 * math.log(0.3)
    assert abs(float(-ordering_target_log_prob(x).mean()) - entropy) < 0.02
