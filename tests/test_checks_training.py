"""The build-and-train exercise checks: the reference answer of solutions/*.md reaches each
goal with a margin, and realistic wrong answers are rejected with a message naming the
cause."""

import math
from pathlib import Path

import jupytext
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nfcourse
import nfcourse as nf
from nfcourse import vae
from nfcourse.checks import ExerciseError
from nfcourse.checks.affine import check_fit_lu
from nfcourse.checks.change_of_variables import check_fit_skewed
from nfcourse.checks.coupling import check_fit_sine
from nfcourse.checks.piecewise import check_fit_square
from nfcourse.checks.planar import check_fit_banana
from nfcourse.checks.vae import check_fit_digits

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"


def _solution(notebook: str, *names: str) -> dict:
    """Execute the code cells of ``solutions/<notebook>`` that define ``names`` (the
    reference answers, with their markers) in a namespace with the notebooks' imports;
    the setup cell is left out so that the global dtype and random state stay as they are."""
    namespace = {
        "math": math,
        "torch": torch,
        "nn": nn,
        "F": F,
        "nf": nf,
        "nfcourse": nfcourse,
        "vae": vae,
    }
    cells = [c.source for c in jupytext.read(SOLUTIONS / notebook).cells if c.cell_type == "code"]
    for name in names:
        source = next(s for s in cells if f"def {name}(" in s or f"class {name}(" in s)
        exec(source, namespace)  # noqa: S102 - the course's own reference answer
    return namespace


def _accepts(check, *answers, seed=0, capsys=None) -> str:
    check(*answers, seed=seed)
    out = capsys.readouterr().out
    assert out.startswith("Correct"), out
    return out


def _number(text: str, after: str) -> float:
    tail = text.split(after, 1)[1].strip()
    return float(tail.split()[0].rstrip(","))


def _rejects(check, answers, match):
    with pytest.raises(ExerciseError, match=match):
        check(*answers)


# --- chapter 1: a skewed density by maximum likelihood --------------------------------------


def _skewed(loss="right", layers="skewed", steps=300, lr=0.05, grad=True):
    def fit_skewed(data):
        parts = (
            [nf.ElementwiseAffine(1)]
            if layers == "gaussian"
            else [nf.SinhArcsinh(1), nf.ElementwiseAffine(1)]
        )
        flow = nf.Flow(nf.Compose(parts))

        def loss_fn(step):
            with torch.set_grad_enabled(grad):
                if loss == "forward":
                    z, log_det = flow.transform(data)
                else:
                    z, log_det = flow.transform.inverse(data)
            log_p = flow.base.log_prob(z)
            return {
                "right": -(log_p + log_det),
                "forward": -(log_p + log_det),
                "det_sign": -(log_p - log_det),
                "no_det": -log_p,
                "maximise": log_p + log_det,
            }[loss].mean()

        return flow, nf.train(loss_fn, flow, steps=steps, lr=lr, progress=False)

    return fit_skewed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_skewed_reference_answer_reaches_the_goal_with_margin(seed, capsys):
    fit = _solution("01_change_of_variables.md", "fit_skewed")["fit_skewed"]
    out = _accepts(check_fit_skewed, fit, seed=seed, capsys=capsys)
    assert _number(out, "KL(p || q) =") < 0.5 * 0.03


@pytest.mark.parametrize(
    "wrong, match",
    [
        (_skewed(loss="det_sign"), "sign of the log-det"),
        (_skewed(loss="no_det"), "leaves out the log-det"),
        (_skewed(loss="forward"), "wrong direction.*inverse"),
        (_skewed(loss="maximise"), "not its negative"),
        (_skewed(layers="gaussian"), "no SinhArcsinh"),
        (_skewed(steps=25), "still falling|steps allowed"),
        (_skewed(steps=1000), "budget is 400"),
        (_skewed(lr=200.0), "NaN|learning rate"),
        (_skewed(grad=False), "no_grad"),
    ],
)
def test_fit_skewed_check_names_the_cause_of_a_miss(wrong, match):
    _rejects(check_fit_skewed, (wrong,), match)


# --- chapter 2: an LU flow with a hand-written loop -----------------------------------------


def _lu(layer="lu", params="all", zero_grad=True, sign=1.0, lr=0.05):
    def fit_lu(data):
        flow = nf.Flow(nf.LUAffine(3) if layer == "lu" else nf.ElementwiseAffine(3))
        chosen = {
            "all": flow.parameters(),
            "shift": [flow.transform.shift],
            "fresh_layer": nf.LUAffine(3).parameters(),
        }[params]
        optimizer = torch.optim.Adam(chosen, lr=lr)
        history = []
        for _step in range(300):
            if zero_grad:
                optimizer.zero_grad()
            loss = -sign * flow.log_prob(data).mean()
            loss.backward()
            optimizer.step()
            history.append(loss.item())
        return flow, history

    return fit_lu


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_lu_reference_answer_reaches_the_goal_with_margin(seed, capsys):
    fit = _solution("02_affine_flows.md", "fit_lu")["fit_lu"]
    out = _accepts(check_fit_lu, fit, seed=seed, capsys=capsys)
    assert _number(out, "KL(p || q) =") < 0.25 * 0.02


@pytest.mark.parametrize(
    "wrong, match",
    [
        (_lu(layer="diagonal"), "mixes the coordinates"),
        (_lu(params="shift"), "not in the optimiser"),
        (_lu(params="fresh_layer"), "did not move.*registered with the optimiser"),
        (_lu(zero_grad=False), "went up.*zero_grad"),
        (_lu(sign=-1.0), "not its negative"),
        (_lu(lr=10.0), "went up"),
    ],
)
def test_fit_lu_check_names_the_cause_of_a_miss(wrong, match):
    _rejects(check_fit_lu, (wrong,), match)


# --- chapter 3: a banana by reverse KL --------------------------------------------------------


def _banana(loss="right", layers=8, lr=0.02):
    def fit_banana(log_target, generator):
        flow = nf.Flow(
            nf.Compose([nf.PlanarFlow(2) for _ in range(layers)]), base=nf.DiagonalNormal(2)
        )

        def loss_fn(step):
            z = flow.base.sample(256, generator=generator)
            x, log_det = flow.transform(z)
            if loss == "detach":
                x = x.detach()
            sign = 1.0 if loss == "det_sign" else -1.0
            log_q = flow.base.log_prob(z) + sign * log_det
            gap = (log_q - log_target(x)).mean()
            return -gap if loss == "flipped" else gap

        return flow, nf.train(loss_fn, flow, steps=300, lr=lr, progress=False)

    return fit_banana


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_banana_reference_answer_reaches_the_goal_with_margin(seed, capsys):
    fit = _solution("03_planar_flows.md", "fit_banana")["fit_banana"]
    out = _accepts(check_fit_banana, fit, seed=seed, capsys=capsys)
    assert _number(out, "KL(q || p) =") < 0.6 * 0.15


@pytest.mark.parametrize(
    "wrong, match",
    [
        (_banana(loss="det_sign"), "adds the log-det|sign of the log-det"),
        (_banana(loss="flipped"), "sign flipped|went up"),
        (_banana(loss="detach"), "detach"),
        (_banana(layers=0), "no planar layers"),
    ],
)
def test_fit_banana_check_names_the_cause_of_a_miss(wrong, match):
    _rejects(check_fit_banana, (wrong,), match)


# --- chapter 4: a piecewise-linear coupling on the unit square --------------------------------


def _square(slip=None, bins=16):
    class Coupling(nf.Transform):
        def __init__(self):
            super().__init__(dim=2)
            if slip == "plain":
                self.logits_1 = torch.zeros(1, bins, requires_grad=True)
            else:
                self.logits_1 = nn.Parameter(torch.zeros(1, bins))
            self.conditioner = nn.Sequential(nn.Linear(1, 32), nn.ReLU(), nn.Linear(32, bins))

        def _inverse(self, x):
            u1, ld1 = nf.piecewise_linear(x[:, :1], self.logits_1)
            reads = x[:, 1:] if slip == "reads_x2" else x[:, :1]
            u2, ld2 = nf.piecewise_linear(x[:, 1:], self.conditioner(reads).unsqueeze(1))
            return torch.cat([u1, u2], 1), (ld2 if slip == "one_log_det" else ld1 + ld2)

        def _forward(self, u):
            x1, ld1 = nf.piecewise_linear(u[:, :1], self.logits_1, inverse=True)
            reads = u[:, :1] if slip == "forward_reads_u1" else x1
            logits = self.conditioner(reads).unsqueeze(1)
            x2, ld2 = nf.piecewise_linear(u[:, 1:], logits, inverse=True)
            return torch.cat([x1, x2], 1), ld1 + ld2

    def fit_square(data):
        flow = nf.Flow(Coupling(), base=nf.Uniform01(2))
        return flow, nf.train(
            lambda s: flow.forward_kl(data), flow, steps=300, lr=0.05, progress=False
        )

    return fit_square


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_square_reference_answer_reaches_the_goal_with_margin(seed, capsys):
    fit = _solution("04_piecewise_linear.md", "SquareCoupling")["fit_square"]
    out = _accepts(check_fit_square, fit, seed=seed, capsys=capsys)
    assert _number(out, "KL(p || q) =") < 0.6 * 0.08


@pytest.mark.parametrize(
    "wrong, match",
    [
        (_square("reads_x2"), "from x1 alone"),
        (_square("one_log_det"), "both\\s+terms"),
        (_square("forward_reads_u1"), "not from u1"),
        (_square("plain"), "not nn.Parameter"),
        (_square(bins=3), "more bins"),
    ],
)
def test_fit_square_check_names_the_cause_of_a_miss(wrong, match):
    _rejects(check_fit_square, (wrong,), match)


# --- chapter 5: a coupling flow trained to a KL goal -----------------------------------------


def _sine(kind="affine", batch="random", steps=400, lr=1e-2, sign=1.0):
    def fit_sine(data, generator):
        flow = nf.coupling_flow(kind, 2, n_layers=4, hidden=(32, 32), permutation=None)
        optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

        def loss_fn(step):
            index = (
                torch.randint(len(data), (128,), generator=generator)
                if batch == "random"
                else torch.arange(128)
            )
            return sign * flow.forward_kl(data[index])

        return flow, nf.train(
            loss_fn, flow, steps, optimizer=optimizer, scheduler=schedule, progress=False
        )

    return fit_sine


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_sine_reference_answer_reaches_the_goal_with_margin(seed, capsys):
    fit = _solution("05_coupling_flows.md", "fit_sine")["fit_sine"]
    out = _accepts(check_fit_sine, fit, seed=seed, capsys=capsys)
    assert _number(out, "KL(p || q) =") < 0.5 * 0.1


@pytest.mark.parametrize(
    "wrong, match",
    [
        (_sine(batch="fixed"), "new random batch"),
        (_sine(kind="additive"), "additive couplings keep volume"),
        (_sine(sign=-1.0), "not its negative|below"),
        (_sine(steps=60), "still falling|steps allowed"),
        (_sine(lr=3.0), "NaN|learning rate"),
    ],
)
def test_fit_sine_check_names_the_cause_of_a_miss(wrong, match):
    _rejects(check_fit_sine, (wrong,), match)


# --- chapter 6: the flow ELBO from the model's parts, trained on digits -----------------------


def _elbo(slip=None):
    def flow_elbo(model, x, eps):
        mu, log_sigma, (u_hat, w, b) = model.encoder(x)
        z0 = mu + torch.exp(log_sigma) * eps
        if slip == "detach":
            z0 = z0.detach()
        log_q0 = vae.diagonal_normal_log_prob(z0, mu, log_sigma)
        zK, sum_log_det = model.flow(z0, u_hat, w, b)
        decoded = z0 if slip == "decode_z0" else zK
        log_lik = vae.bernoulli_log_likelihood(x, model.decoder(decoded))
        log_prior = vae.standard_normal_log_prob(zK)
        if slip == "det_sign":
            return log_lik + log_prior - log_q0 - sum_log_det
        if slip == "no_q0":
            return log_lik + log_prior + sum_log_det
        return log_lik + log_prior - log_q0 + sum_log_det

    return flow_elbo


def _digits(steps=300, lr=3e-3, sign=-1.0):
    elbo = _elbo()

    def fit_digits(images, generator):
        model = vae.FlowPosteriorVAE(2, n_flows=2, hidden=64, data_dim=64)
        model.decoder.set_output_bias(images.mean(dim=0))

        def loss_fn(step):
            index = torch.randint(len(images), (64,), generator=generator)
            x = torch.bernoulli(images[index], generator=generator)
            eps = torch.randn(64, 2, generator=generator)
            return sign * elbo(model, x, eps).mean()

        return model, nfcourse.train(loss_fn, model, steps=steps, lr=lr, progress=False)

    return fit_digits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_digits_reference_answer_reaches_the_goal_with_margin(seed, capsys):
    ns = _solution("06_vae_flow_posterior.md", "model_elbo")
    out = _accepts(check_fit_digits, ns["model_elbo"], ns["fit_digits"], seed=seed, capsys=capsys)
    assert _number(out, "ELBO of") > -26.5 + 0.5


@pytest.mark.parametrize(
    "wrong, match",
    [
        ((_elbo("det_sign"), _digits()), "wrong sign"),
        ((_elbo("no_q0"), _digits()), "log q0.*missing"),
        ((_elbo("decode_z0"), _digits()), "decoder is fed z0"),
        ((_elbo("detach"), _digits()), "wrong gradient"),
        ((_elbo(), _digits(sign=1.0)), "maximise minus the ELBO"),
        ((_elbo(), _digits(steps=40)), "still falling|steps allowed|stopped short"),
    ],
)
def test_fit_digits_check_names_the_cause_of_a_miss(wrong, match):
    _rejects(check_fit_digits, wrong, match)


def test_training_checks_leave_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    fit = _solution("01_change_of_variables.md", "fit_skewed")["fit_skewed"]
    check_fit_skewed(fit)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_shared_helpers_score_report_and_blame_the_model():
    from nfcourse.checks._training import Goal, Measurement, fresh_kl, mean_nll, measure_fit
    from nfcourse.densities import GaussianRing

    target = GaussianRing()
    flow = nf.Flow([nf.flows.ElementwiseAffine(2)]).double()
    kl, error = fresh_kl(target, flow, seed=3, n=2000)
    assert (kl, error) == target.kl_divergence(flow, n=2000, seed=3)
    measured = measure_fit(flow, target, n=2000, seed=3)
    assert (measured.value, measured.error) == (kl, error)
    assert not Goal(kl / 2, steps=10).met_by(measured)
    assert Goal(kl + 1, steps=10, n=2000).met_by(measured)
    assert f"KL(p || q) = {kl:.4f} ± {error:.4f} nats on 2,000 fresh points" in Goal(
        kl + 1, steps=10, n=2000
    ).phrase(measured, "your flow reaches", reached=True)
    assert not Goal(1.0, steps=10).met_by(Measurement(math.nan))

    def broken(x):
        raise RuntimeError("shape mismatch")

    with pytest.raises(
        ExerciseError,
        match="evaluating your flow on fresh points failed: RuntimeError: shape mismatch",
    ):
        fresh_kl(target, broken, seed=0, n=10)
    data = target.sample(50, seed=1)  # float32 data, a float64 flow
    assert mean_nll(flow, data) == pytest.approx(float(-flow.log_prob(data.double()).mean()))


def test_check_fit_says_a_negative_kl_means_a_density_that_does_not_integrate_to_one():
    from nfcourse.checks._training import Goal, check_fit

    target = nf.densities.GaussianMixture1D(means=(0.0,), stds=(1.0,))

    class Inflated(nn.Module):
        def __init__(self):
            super().__init__()
            self.shift = nn.Parameter(torch.zeros(()))

        def log_prob(self, x):
            return target.log_prob(x.double()) + 1.0 + 0 * self.shift

    def fit(data):
        return Inflated(), [1.0, 0.5]

    with pytest.raises(ExerciseError, match="cannot be negative.*integrate to one"):
        check_fit(
            fit,
            torch.zeros(3, 1),
            name="fit",
            goal=Goal(0.1, steps=10),
            target=target,
            model_type=nn.Module,
        )


def test_measure_fit_takes_the_reverse_kl_of_an_unnormalised_log_density():
    from nfcourse.checks._training import measure_fit
    from nfcourse.densities import Banana, log_banana
    from nfcourse.targets import exact_reverse_kl

    flow = nf.Flow(nf.Compose([nf.PlanarFlow(2) for _ in range(2)])).double()
    measured = measure_fit(flow, log_banana, n=500, seed=4, log_z=Banana.log_z)
    assert (measured.value, measured.error) == exact_reverse_kl(
        flow, lambda x: -log_banana(x), Banana.log_z, n=500, seed=4
    )
    with pytest.raises(ValueError, match="log_z"):
        measure_fit(flow, log_banana)
