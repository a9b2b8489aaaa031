"""The exercise checks of chapter 10 accept right answers and name wrong ones."""

import pytest
import torch
from check_tables import Right, Wrong, assert_right, assert_wrong, stub
from solution_code import solution

import nfcourse as nf
from nfcourse.checks import ExerciseError
from nfcourse.checks.continuous import (
    check_divergence,
    check_fit_ring,
    check_gaussian_target,
    check_hutchinson,
    check_marginal_field,
    check_probe_variance,
    check_straight_path,
    make_field,
)
from nfcourse.flows.continuous import VelocityField

CH = "10_continuous_flows"
divergence_ref = solution(CH, "divergence")
hutchinson_ref = solution(CH, "hutchinson")
path_ref = solution(CH, "straight_path")
target_ref = solution(CH, "gaussian_target")
variance_ref = solution(CH, "probe_variance")
marginal_ref = solution(CH, "marginal_field")


# --- probe variance and the marginal field of points ------------------------------------------


def sym(j):
    return (j + j.T) / 2


def fro2(m):
    return (m**2).sum()


def diag2(m):
    return (torch.diagonal(m) ** 2).sum()


def marginal(log_weight, velocity):
    """An answer that averages ``velocity(x, t, y)`` ``(B, K, D)`` with the softmax of
    ``log_weight(x, t, y, w)`` ``(B, K)``."""

    def answer(x, t, y, w):
        post = torch.softmax(log_weight(x, t, y, w), dim=1)
        return (post[:, :, None] * velocity(x, t, y)).sum(1)

    return answer


def sq(x, t, y):
    return ((x[:, None, :] - t[:, :, None] * y) ** 2).sum(2)


def right_log_weight(x, t, y, w):
    return torch.log(w) - sq(x, t, y) / (2 * (1 - t) ** 2)


def right_velocity(x, t, y):
    return (y[None] - x[:, None, :]) / (1 - t)[:, :, None]


def marginal_naive_exp(x, t, y, w):
    weight = w * torch.exp(-sq(x, t, y) / (2 * (1 - t) ** 2))
    post = weight / weight.sum(1, keepdim=True)
    return (post[:, :, None] * right_velocity(x, t, y)).sum(1)


def marginal_loop(x, t, y, w):
    """A right answer written point by point, with logsumexp."""
    rows = []
    for b in range(x.shape[0]):
        tb = t[b, 0]
        log_w = torch.log(w) - ((x[b] - tb * y) ** 2).sum(1) / (2 * (1 - tb) ** 2)
        post = torch.exp(log_w - torch.logsumexp(log_w, 0))
        rows.append((post[:, None] * (y - x[b])).sum(0) / (1 - tb))
    return torch.stack(rows)


# --- divergence ----------------------------------------------------------------------------


def jacobian_answer(reduce):
    """An answer built from the rows dv_i/dz of the Jacobian, reduced by ``reduce``."""

    def answer(field, t, z):
        z = z.detach().requires_grad_(True)
        v = field(t, z)
        rows = torch.stack(
            [
                torch.autograd.grad(v[:, i].sum(), z, create_graph=True)[0]
                for i in range(z.shape[1])
            ],
            dim=1,
        )
        return reduce(rows)

    return answer


def divergence_of_sum(field, t, z):
    z = z.detach().requires_grad_(True)
    return torch.autograd.grad(field(t, z).sum(), z, create_graph=True)[0].sum(1)


def divergence_no_graph(field, t, z):
    z = z.detach().requires_grad_(True)
    v = field(t, z)
    return sum(
        torch.autograd.grad(v[:, i].sum(), z, retain_graph=True)[0][:, i]
        for i in range(z.shape[1])
    )


def divergence_no_requires_grad(field, t, z):
    v = field(t, z)
    return torch.autograd.grad(v[:, 0].sum(), z)[0][:, 0]


def divergence_float32(field, t, z):
    return divergence_ref(field, t, z).float()


def divergence_jacobian(field, t, z):
    jac = torch.func.vmap(torch.func.jacrev(lambda p: field(t, p.unsqueeze(0))[0]))(z)
    return torch.diagonal(jac, dim1=1, dim2=2).sum(1)


# --- Hutchinson ----------------------------------------------------------------------------


def hutch(probe):
    def answer(field, t, z, generator):
        z = z.detach().requires_grad_(True)
        v = field(t, z)
        eps = probe(z, generator)
        vjp = torch.autograd.grad(v, z, eps, create_graph=True)[0]
        return (vjp * eps).sum(1)

    return answer


def signs(z, g):
    return (2 * torch.randint(0, 2, z.shape, generator=g) - 1).to(z.dtype)


def hutch_exact(field, t, z, generator):
    return divergence_ref(field, t, z)


def hutch_average_of_two(field, t, z, generator):
    return 0.5 * (hutch(signs)(field, t, z, generator) + hutch(signs)(field, t, z, generator))


def hutch_negative(field, t, z, generator):
    return -hutchinson_ref(field, t, z, generator)


def hutch_detached(field, t, z, generator):
    return hutchinson_ref(field, t, z, generator).detach()


# --- the straight path and the Gaussian target ---------------------------------------------


def path(fn):
    def answer(x0, x1, t):
        return fn(x0, x1, t[:, None])

    return answer


def target(rate):
    def answer(x, t, mean, std):
        return rate(x, t, mean, std)

    return answer


WRONG = [
    Wrong(check_divergence, "sum-of-all-entries", divergence_of_sum, "ALL entries"),
    Wrong(
        check_divergence,
        "minus",
        jacobian_answer(lambda r: -torch.diagonal(r, dim1=1, dim2=2).sum(1)),
        r"\+tr",
    ),
    Wrong(check_divergence, "first-only", jacobian_answer(lambda r: r[:, 0, 0]), "only dv_0/dz_0"),
    Wrong(
        check_divergence,
        "row-zero",
        jacobian_answer(lambda r: r[:, 0, :].sum(1)),
        "gradient of v\\[:, 0\\] alone",
    ),
    Wrong(check_divergence, "no-graph", divergence_no_graph, "create_graph=True"),
    Wrong(check_divergence, "z-not-leaf", divergence_no_requires_grad, "requires_grad|require"),
    Wrong(
        check_divergence,
        "over-batch",
        jacobian_answer(lambda r: torch.diagonal(r, dim1=1, dim2=2).sum()),
        "whole batch",
    ),
    Wrong(check_divergence, "stub", stub, "not written yet"),
    Wrong(check_hutchinson, "exact", hutch_exact, "exact divergence"),
    Wrong(
        check_hutchinson,
        "uniform01",
        hutch(lambda z, g: torch.rand(z.shape, generator=g, dtype=z.dtype)),
        "uniform on \\[0, 1\\)",
    ),
    Wrong(
        check_hutchinson,
        "uniform-pm1",
        hutch(lambda z, g: 2 * torch.rand(z.shape, generator=g, dtype=z.dtype) - 1),
        "variance 1/3",
    ),
    Wrong(
        check_hutchinson,
        "shared-probe",
        hutch(lambda z, g: signs(z[:1], g).expand(z.shape)),
        "same probe",
    ),
    Wrong(check_hutchinson, "global-rng", hutch(lambda z, g: signs(z, None)), "generator"),
    Wrong(check_hutchinson, "two-probes", hutch_average_of_two, "variance"),
    Wrong(check_hutchinson, "negative", hutch_negative, "minus"),
    Wrong(check_hutchinson, "detached", hutch_detached, "no gradient|carries no"),
    Wrong(check_hutchinson, "stub", stub, "not written yet"),
    Wrong(
        check_straight_path,
        "reversed-time",
        path(lambda x0, x1, t: (t * x0 + (1 - t) * x1, x1 - x0)),
        "other way",
    ),
    Wrong(
        check_straight_path,
        "no-weight",
        path(lambda x0, x1, t: (x0 + t * x1, x1 - x0)),
        "weight of x_0",
    ),
    Wrong(
        check_straight_path,
        "velocity-sign",
        path(lambda x0, x1, t: ((1 - t) * x0 + t * x1, x0 - x1)),
        "not x_0 - x_1",
    ),
    Wrong(
        check_straight_path,
        "velocity-x1",
        path(lambda x0, x1, t: ((1 - t) * x0 + t * x1, x1)),
        "returned x_1",
    ),
    Wrong(
        check_straight_path,
        "velocity-times-t",
        path(lambda x0, x1, t: ((1 - t) * x0 + t * x1, t * (x1 - x0))),
        "not t",
    ),
    Wrong(
        check_straight_path,
        "broadcast",
        lambda x0, x1, t: ((1 - t) * x0 + t * x1, x1 - x0),
        "t\\[:, None\\]|shape",
    ),
    Wrong(check_straight_path, "only-xt", path(lambda x0, x1, t: (1 - t) * x0 + t * x1), "pair"),
    Wrong(check_straight_path, "stub", stub, "not written yet"),
    Wrong(
        check_gaussian_target,
        "std-not-var",
        target(
            lambda x, t, m, s: (
                m + (t * s**2 - (1 - t)) / ((1 - t) ** 2 + t**2 * s**2).sqrt() * (x - t * m)
            )
        ),
        "not by its standard deviation",
    ),
    Wrong(
        check_gaussian_target,
        "centre-m",
        target(
            lambda x, t, m, s: m + (t * s**2 - (1 - t)) / ((1 - t) ** 2 + t**2 * s**2) * (x - m)
        ),
        "x - t m",
    ),
    Wrong(
        check_gaussian_target,
        "no-mean",
        target(
            lambda x, t, m, s: (t * s**2 - (1 - t)) / ((1 - t) ** 2 + t**2 * s**2) * (x - t * m)
        ),
        "must be added",
    ),
    Wrong(
        check_gaussian_target,
        "cov-sign",
        target(
            lambda x, t, m, s: (
                m + (t * s**2 + (1 - t)) / ((1 - t) ** 2 + t**2 * s**2) * (x - t * m)
            )
        ),
        "minus",
    ),
    Wrong(
        check_gaussian_target,
        "unsquared",
        target(lambda x, t, m, s: m + (t * s**2 - (1 - t)) / ((1 - t) + t * s**2) * (x - t * m)),
        "both terms are squared",
    ),
    Wrong(
        check_gaussian_target,
        "x1-only",
        target(lambda x, t, m, s: m + t * s**2 / ((1 - t) ** 2 + t**2 * s**2) * (x - t * m)),
        "E\\[x_1 \\| x_t\\]",
    ),
    Wrong(check_gaussian_target, "stub", stub, "not written yet"),
    Wrong(
        check_probe_variance,
        "gaussian-always",
        lambda j, k: fro2(j) + torch.trace(j @ j),
        "standard normal probes",
    ),
    Wrong(
        check_probe_variance,
        "signs-always",
        lambda j, k: fro2(j) + torch.trace(j @ j) - 2 * diag2(j),
        "random signs",
    ),
    Wrong(
        check_probe_variance,
        "not-symmetrised",
        lambda j, k: 2 * fro2(j) + (k - 3) * diag2(j),
        "symmetric part",
    ),
    Wrong(
        check_probe_variance,
        "one-pairing",
        lambda j, k: fro2(j) + (k - 2) * diag2(j),
        "one pairing",
    ),
    Wrong(
        check_probe_variance,
        "second-moment",
        lambda j, k: variance_ref(j, k) + torch.trace(j) ** 2,
        "second moment",
    ),
    Wrong(
        check_probe_variance,
        "kappa-not-minus-one",
        lambda j, k: 2 * (fro2(sym(j)) - diag2(sym(j))) + k * diag2(sym(j)),
        "kappa - 1, not kappa",
    ),
    Wrong(
        check_probe_variance,
        "diagonal-twice",
        lambda j, k: 2 * fro2(sym(j)) + (k - 1) * diag2(sym(j)),
        "counted twice",
    ),
    Wrong(
        check_probe_variance, "std", lambda j, k: variance_ref(j, k).sqrt(), "standard deviation"
    ),
    Wrong(check_probe_variance, "stub", stub, "not written yet"),
    Wrong(
        check_marginal_field,
        "no-prior",
        marginal(lambda x, t, y, w: -sq(x, t, y) / (2 * (1 - t) ** 2), right_velocity),
        "left out the weights",
    ),
    Wrong(
        check_marginal_field,
        "prior-only",
        marginal(lambda x, t, y, w: torch.log(w).expand(x.shape[0], -1), right_velocity),
        "must depend on x",
    ),
    Wrong(
        check_marginal_field,
        "mean-y",
        marginal(
            lambda x, t, y, w: (
                torch.log(w) - ((x[:, None, :] - y) ** 2).sum(2) / (2 * (1 - t) ** 2)
            ),
            right_velocity,
        ),
        "mean t y_k",
    ),
    Wrong(
        check_marginal_field,
        "std-not-var",
        marginal(lambda x, t, y, w: torch.log(w) - sq(x, t, y) / (2 * (1 - t)), right_velocity),
        "not 1 - t",
    ),
    Wrong(
        check_marginal_field,
        "no-division",
        marginal(right_log_weight, lambda x, t, y: y[None] - x[:, None, :]),
        "division by 1 - t",
    ),
    Wrong(
        check_marginal_field,
        "brackets",
        marginal(right_log_weight, lambda x, t, y: y[None] - x[:, None, :] / (1 - t)[:, :, None]),
        "brackets",
    ),
    Wrong(
        check_marginal_field,
        "posterior-mean",
        marginal(right_log_weight, lambda x, t, y: y[None].expand(x.shape[0], -1, -1)),
        "posterior mean",
    ),
    Wrong(check_marginal_field, "naive-exp", marginal_naive_exp, "softmax"),
    Wrong(check_marginal_field, "stub", stub, "not written yet"),
]

RIGHT = [
    Right(check_divergence, "solution", divergence_ref),
    Right(check_divergence, "float32", divergence_float32),
    Right(check_divergence, "vmap-jacrev", divergence_jacobian),
    Right(
        check_divergence,
        "diagonal-of-rows",
        jacobian_answer(lambda r: torch.diagonal(r, dim1=1, dim2=2).sum(1)),
    ),
    Right(check_hutchinson, "solution", hutchinson_ref),
    Right(
        check_hutchinson,
        "gaussian",
        hutch(lambda z, g: torch.randn(z.shape, generator=g, dtype=z.dtype)),
    ),
    Right(check_hutchinson, "float32", lambda f, t, z, g: hutchinson_ref(f, t, z, g).float()),
    Right(check_straight_path, "solution", path_ref),
    Right(
        check_straight_path,
        "unsqueeze",
        lambda x0, x1, t: (x0 + t.unsqueeze(1) * (x1 - x0), x1 - x0),
    ),
    Right(
        check_straight_path,
        "float32",
        lambda x0, x1, t: tuple(v.float() for v in path_ref(x0, x1, t)),
    ),
    Right(check_gaussian_target, "solution", target_ref),
    Right(
        check_gaussian_target,
        "float32",
        lambda x, t, m, s: target_ref(x.float(), t.float(), m.float(), s.float()),
    ),
    Right(
        check_gaussian_target,
        "as-rate",
        lambda x, t, m, s: m + (t * s**2 - 1 + t) * (x - t * m) / (1 - 2 * t + t**2 * (1 + s**2)),
    ),
    Right(check_probe_variance, "solution", variance_ref),
    Right(
        check_probe_variance,
        "from-j",
        lambda j, k: float(fro2(j) + torch.trace(j @ j) + (k - 3) * diag2(j)),
    ),
    Right(
        check_probe_variance,
        "off-diagonal",
        lambda j, k: 2 * (fro2(sym(j)) - diag2(sym(j))) + (k - 1) * diag2(sym(j)),
    ),
    Right(check_marginal_field, "solution", marginal_ref),
    Right(check_marginal_field, "loop-logsumexp", marginal_loop),
    Right(
        check_marginal_field,
        "float32",
        lambda x, t, y, w: marginal_ref(x.float(), t.float(), y.float(), w.float()),
    ),
]


def test_make_field_is_repeatable_and_leaves_the_global_state():
    state = torch.random.get_rng_state()
    a, b = make_field(3, seed=4), make_field(3, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    z = torch.randn(2, 3, dtype=torch.float64)
    assert torch.equal(a(0.1, z), b(0.1, z))


@pytest.mark.parametrize("row", [w.param() for w in WRONG])
def test_check_rejects_and_names_the_mistake(row):
    assert_wrong(row)


@pytest.mark.parametrize("row", [r.param() for r in RIGHT])
def test_check_accepts_right_answers_written_differently(row):
    assert_right(row)


# --- the build-and-train exercise ----------------------------------------------------------


def _fit(steps=1500, lr=1e-2, direction=1.0):
    def fit_ring(data, generator):
        field = VelocityField(2, hidden=(48, 48, 48))
        optimizer = torch.optim.Adam(field.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

        def loss_fn(step):
            x1 = data[torch.randint(len(data), (256,), generator=generator)]
            x0 = torch.randn(x1.shape, generator=generator)
            t = torch.rand(256, 1, generator=generator)
            xt = (1 - t) * x0 + t * x1
            return ((field(t, xt) - direction * (x1 - x0)) ** 2).sum(1).mean()

        return field, nf.train(
            loss_fn, field, steps, optimizer=optimizer, scheduler=schedule, progress=False
        )

    return fit_ring


def test_fit_ring_reference_answer_reaches_the_goal_with_margin(capsys):
    check_fit_ring(solution(CH, "fit_ring"))
    out = capsys.readouterr().out
    assert out.startswith("Correct"), out
    kl = float(out.split("KL(p || q) =", 1)[1].split()[0])
    assert kl < 0.5 * 0.3


@pytest.mark.parametrize(
    "wrong, match",
    [
        (_fit(direction=-1.0), "from the data to the base"),
        (_fit(steps=40), "still falling|steps allowed|settled"),
        (_fit(steps=2500), "budget is 2000"),
    ],
)
def test_fit_ring_check_names_the_cause_of_a_miss(wrong, match):
    with pytest.raises(ExerciseError, match=match):
        check_fit_ring(wrong)
