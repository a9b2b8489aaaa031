"""Benchmark of the continuous-time flows of chapter 10 on the 2D densities of chapter 5.

For each density (checkerboard, ring of Gaussians, sine wave) it trains, on one CPU
thread:

* a continuous normalizing flow by maximum likelihood through a fixed-step RK4 solver
  (``nfcourse.flows.continuous.continuous_flow``);
* the same field by flow matching with the course's loss
  (``nfcourse.flows.continuous.flow_matching_loss``), with independent pairs of base and
  data points and with the minibatch optimal-transport coupling (``coupling="ot"``: an
  exact assignment within each batch, ``ot_pairing``);
* the same field, with the same budgets, by the conditional flow matching of the
  ``torchcfm`` library (``ConditionalFlowMatcher(sigma=0)``: straight paths between
  independent base and data points, the loss the mean squared error over the
  coordinates; ``ExactOptimalTransportConditionalFlowMatcher(sigma=0)``: the same after
  an exact OT assignment within the batch), when it is installed;
* chapter 5's piecewise-linear coupling flow with about as many parameters;

and scores each by the test ``KL(p || q)`` in nats on fresh points (continuous models:
the exact log-likelihood by integrating the divergence with dopri5 at tolerance 1e-5),
the wall-clock training time, and the number of evaluations of the field (NFE) that
dopri5 needs to sample the test points. The three-seed comparison at converged budgets,
with the straightness of the paths, is ``tools/train_continuous_fields.py``.

Run it with ``python bench/continuous.py`` (``--quick`` for a short smoke run), or as the
``continuous`` section of ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import nfcourse  # noqa: E402
from nfcourse.densities import Checkerboard, GaussianRing, SineWave  # noqa: E402
from nfcourse.flows.continuous import (  # noqa: E402
    ContinuousFlow,
    VelocityField,
    continuous_flow,
    flow_matching_loss,
)
from nfcourse.flows.coupling import coupling_flow  # noqa: E402
from nfcourse.seeding import seeded  # noqa: E402

__all__ = ["BUDGETS", "DENSITIES", "HIDDEN", "run", "format_table", "torchcfm_version"]

DENSITIES = {"checkerboard": Checkerboard, "ring": GaussianRing, "sine": SineWave}
HIDDEN = (48, 48, 48)
TOL = 1e-5
# (full, quick)
BUDGETS = {
    "ml_steps": (1000, 20),
    "fm_steps": (10_000, 200),
    "coupling_steps": (3000, 100),
    "batch": (512, 256),
    "n_test": (20_000, 2000),
}
MODELS = (
    "CNF, max. likelihood",
    "flow matching (course)",
    "flow matching (torchcfm)",
    "flow matching, OT (course)",
    "flow matching, OT (torchcfm)",
    "coupling (ch. 5)",
)


def torchcfm_version() -> str | None:
    """The installed torchcfm's version, or ``None``."""
    try:
        import torchcfm
    except ImportError:
        return None
    return getattr(torchcfm, "__version__", "installed")


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _score(density, model, field, n_test: int) -> tuple[float, float, int | None]:
    kl, se = density.kl_divergence(model, n=n_test)
    if field is None:
        return kl, se, None
    z = torch.randn(n_test, 2, generator=torch.Generator().manual_seed(5))
    field.nfe = 0
    with torch.no_grad():
        ContinuousFlow(field, rtol=TOL, atol=TOL).trajectory(z, [0.0, 1.0])
    return kl, se, field.nfe


def _adam(module, steps, lr):
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)


def _train_ml(data, steps, batch):
    flow = continuous_flow(2, hidden=HIDDEN, method="rk4", step_size=0.125, seed=0)
    gen = torch.Generator().manual_seed(0)
    optimizer, schedule = _adam(flow, steps, 1e-2)

    def loss_fn(step):
        return flow.forward_kl(data[torch.randint(len(data), (batch,), generator=gen)])

    nfcourse.train(loss_fn, flow, steps, optimizer=optimizer, scheduler=schedule, progress=False)
    return flow.transform.field


def _train_fm(data, steps, batch, library: bool, coupling: str = "independent"):
    with seeded(0):
        field = VelocityField(2, HIDDEN)
    gen = torch.Generator().manual_seed(0)
    optimizer, schedule = _adam(field, steps, 1e-2)
    if library:
        from torchcfm.conditional_flow_matching import (
            ConditionalFlowMatcher,
            ExactOptimalTransportConditionalFlowMatcher,
        )

        matcher = (
            ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
            if coupling == "ot"
            else ConditionalFlowMatcher(sigma=0.0)
        )

        def loss_fn(step):
            x1 = data[torch.randint(len(data), (batch,), generator=gen)]
            x0 = torch.randn(x1.shape, generator=gen)
            t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
            return torch.mean((field(t, xt) - ut) ** 2)
    else:

        def loss_fn(step):
            x1 = data[torch.randint(len(data), (batch,), generator=gen)]
            return flow_matching_loss(field, x1, generator=gen, coupling=coupling)

    nfcourse.train(loss_fn, field, steps, optimizer=optimizer, scheduler=schedule, progress=False)
    return field


def _train_coupling(data, steps, batch):
    flow = coupling_flow(
        "piecewise", 2, n_layers=4, hidden=(24, 24), permutation=None, bins=32, bound=4.0
    )
    optimizer, schedule = _adam(flow, steps, 1e-2)
    nfcourse.fit_maximum_likelihood(
        flow,
        data,
        steps,
        batch_size=batch,
        optimizer=optimizer,
        scheduler=schedule,
        progress=False,
    )
    return flow


def run(
    quick: bool = False, densities: tuple[str, ...] = tuple(DENSITIES), verbose: bool = True
) -> list[dict]:
    """Train and score every model on every density; one dict per (density, model)."""
    budget = {k: v[quick] for k, v in BUDGETS.items()}
    has_cfm = torchcfm_version() is not None
    rows = []
    for name in densities:
        density = DENSITIES[name]()
        data = density.sample(100_000, seed=0)
        for model_name in MODELS:
            if "torchcfm" in model_name and not has_cfm:
                continue
            start = time.perf_counter()
            if model_name == "CNF, max. likelihood":
                field = _train_ml(data, budget["ml_steps"], budget["batch"])
                steps = budget["ml_steps"]
            elif model_name.startswith("flow matching"):
                field = _train_fm(
                    data,
                    budget["fm_steps"],
                    budget["batch"],
                    library="torchcfm" in model_name,
                    coupling="ot" if "OT" in model_name else "independent",
                )
                steps = budget["fm_steps"]
            else:
                flow = _train_coupling(data, budget["coupling_steps"], budget["batch"])
                field, steps = None, budget["coupling_steps"]
            seconds = time.perf_counter() - start
            model = (
                flow if field is None else nfcourse.Flow(ContinuousFlow(field, rtol=TOL, atol=TOL))
            )
            kl, se, nfe = _score(density, model, field, budget["n_test"])
            row = {
                "density": name,
                "model": model_name,
                "params": _params(model),
                "steps": steps,
                "kl": kl,
                "se": se,
                "seconds": seconds,
                "nfe": nfe,
            }
            if verbose:
                print(
                    f"  {name}, {model_name}: KL {kl:.3f} ± {se:.3f}, {seconds:.1f} s, NFE {nfe}",
                    flush=True,
                )
            rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| density | model | parameters | steps | KL(p‖q) (nats) | training (s) | NFE to sample |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        nfe = "-" if r["nfe"] is None else f"{r['nfe']}"
        lines.append(
            f"| {r['density']} | {r['model']} | {r['params']:,} | {r['steps']:,} | "
            f"{r['kl']:.3f} ± {r['se']:.3f} | {r['seconds']:.1f} | {nfe} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets, a smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(format_table(run(quick=args.quick)))


if __name__ == "__main__":
    main()
