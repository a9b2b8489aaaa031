"""Benchmark of chapter 12 at longer budgets: importance sampling and posterior estimation.

* ``importance_sampling``: an IAF trained by reverse KL on each energy of chapter 3; the
  ESS fraction, ``log Z_hat`` with its standard error and its error against quadrature.
* ``posterior_estimation``: a conditional MAF trained on the chapter's linear-Gaussian
  simulator; ``KL(p(theta | x) || q(theta | x))`` for ten observations (mean and largest)
  and the KL of the prior beside it.

Run it through ``bench/run.py --sections inference`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import torch

from nfcourse.applications import inference as inf
from nfcourse.flows.autoregressive import iaf_flow, maf_flow
from nfcourse.targets import ENERGIES, log_partition
from nfcourse.training import fit_maximum_likelihood, fit_reverse_kl

__all__ = ["importance_sampling", "format_importance", "posterior_estimation", "format_posterior"]


def importance_sampling(steps: int, n: int = 20_000) -> list[dict]:
    rows = []
    for name, energy in ENERGIES.items():
        flow = iaf_flow(2, n_layers=4, hidden=(64, 64), seed=0)
        fit_reverse_kl(flow, lambda x, u=energy: -u(x), steps=steps, lr=1e-3, progress=False)
        _, log_w = inf.importance_log_weights(
            flow, lambda x, u=energy: -u(x), n, generator=torch.Generator().manual_seed(1)
        )
        log_z, se = inf.log_z_estimate(log_w)
        exact = log_partition(energy)
        rows.append(
            {
                "target": name,
                "ess": inf.effective_sample_size(log_w) / n,
                "elbo": float(log_w.mean()),
                "log_z": log_z,
                "se": se,
                "exact": exact,
            }
        )
    return rows


def format_importance(rows: list[dict]) -> str:
    lines = [
        "| target | ESS/n | ELBO | log Z_hat ± s.e. | quadrature | error |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['ess']:.3f} | {r['elbo']:.3f} | "
            f"{r['log_z']:.3f} ± {r['se']:.3f} | {r['exact']:.3f} | "
            f"{r['log_z'] - r['exact']:+.3f} |"
        )
    return "\n".join(lines)


def posterior_estimation(steps: int, n_sims: int = 50_000, n_obs: int = 10) -> dict:
    simulator = inf.LinearGaussianSimulator(
        torch.tensor([[1.0, 0.5], [0.0, 1.0], [1.0, -1.0]]), noise=0.5
    )
    g = torch.Generator().manual_seed(0)
    theta = simulator.sample_prior(n_sims, generator=g)
    x = simulator.simulate(theta, generator=g)
    flow = maf_flow(2, n_layers=4, hidden=(64, 64), seed=0, context_dim=3)
    fit_maximum_likelihood(
        flow, theta.float(), steps, batch_size=512, lr=1e-3, context=x.float(), progress=False
    )
    x_obs = simulator.simulate(simulator.sample_prior(n_obs, generator=g), generator=g)
    kls = [
        inf.posterior_kl(flow, simulator, x_obs[k], generator=torch.Generator().manual_seed(k))[0]
        for k in range(n_obs)
    ]
    cov = simulator.posterior_cov
    prior = []
    for k in range(n_obs):
        mu = simulator.posterior_mean(x_obs[k][None])[0]
        prior.append(0.5 * float(cov.trace() + mu @ mu - 2 - torch.logdet(cov)))
    return {"steps": steps, "n_sims": n_sims, "kls": kls, "prior": prior}


def format_posterior(result: dict) -> str:
    kls, prior = result["kls"], result["prior"]
    return "\n".join(
        [
            "| observations | mean KL(p‖flow) | largest | mean KL(p‖prior) |",
            "|---:|---:|---:|---:|",
            f"| {len(kls)} | {sum(kls) / len(kls):.4f} | {max(kls):.4f} | "
            f"{sum(prior) / len(prior):.3f} |",
        ]
    )
