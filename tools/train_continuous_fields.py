"""Train the continuous flows of chapter 10 to convergence and write
``bench/results/continuous_fields.json``, the results the chapter draws its lessons from.

For each density of the chapter (checkerboard, ring of Gaussians, sine wave) and each of
three seeds, it trains the chapter's velocity field (three hidden layers of 48 tanh
units) in three ways:

* ``ml``: maximum likelihood through a fixed-step solver, four RK4 steps (the chapter's
  four midpoint steps are too coarse for a long run, which learns to exploit the
  solver's error);
* ``fm``: flow matching with independent pairs of base and data points;
* ``fm_ot``: flow matching with the minibatch optimal-transport coupling (the exact
  assignment of ``nfcourse.flows.continuous.ot_pairing`` within each batch).

Every model is scored as an ODE, with dopri5 at tolerance 1e-5: the test ``KL(p || q)``
in nats on 5,000 fresh points, and its learning curve (the KL on 1,000 other fresh points
at each quarter of the budget, to see it level off). Every field is then integrated from the
same 1,000 base points by the same solvers, which gives

* ``deviation``: the mean distance of a path from the straight segment between its ends,
  ``|x(t) - ((1 - t) x(0) + t x(1))|``, averaged over 41 times and the points;
* ``bend``: the median of path length / distance between the ends, minus one;
* ``nfe``: the evaluations dopri5 needs to carry the points at tolerances 1e-2 and 1e-4;
* ``euler_error``: the mean distance between the end point of ``k`` Euler steps and the
  ODE's (``k`` = 1, 4): a straight path at constant speed needs a single step.

Run it with ``OMP_NUM_THREADS=1 nice -n 15 python tools/train_continuous_fields.py``
(about 8 CPU-minutes on one free thread); ``--quick`` is a smoke run that writes nothing unless
``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
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
    path_straightness,
)
from nfcourse.seeding import seeded  # noqa: E402

DENSITIES = {"checkerboard": Checkerboard, "ring": GaussianRing, "sine": SineWave}
METHODS = ("ml", "fm", "fm_ot")
OUT = ROOT / "bench" / "results" / "continuous_fields.json"

BUDGET = {
    "hidden": [48, 48, 48],
    "seeds": [0, 1, 2],
    "n_data": 100_000,
    "lr": 1e-2,
    "schedule": "cosine",
    "ml_steps": 600,
    "ml_batch": 256,
    "ml_solver": "rk4, 4 steps (step 0.25)",
    "fm_steps": 10_000,
    "fm_batch": 64,
    "n_test": 5000,
    "n_curve": 1000,
    "checkpoints": 4,
    "tol": 1e-5,
    "n_paths": 1000,
    "path_times": 41,
    "nfe_tols": [1e-2, 1e-4],
    "euler_steps": [1, 4],
}
QUICK = {
    "ml_steps": 20,
    "fm_steps": 100,
    "n_data": 5000,
    "n_test": 2000,
    "n_curve": 500,
    "n_paths": 200,
    "seeds": [0],
}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "nice": os.nice(0),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def adaptive(field, tol):
    return ContinuousFlow(field, rtol=tol, atol=tol)


def train_ml(data, density, steps, batch, seed, budget):
    flow = continuous_flow(2, hidden=budget["hidden"], method="rk4", step_size=0.25, seed=seed)
    gen = torch.Generator().manual_seed(seed)

    def loss_fn(step):
        return flow.forward_kl(data[torch.randint(len(data), (batch,), generator=gen)])

    return flow.transform.field, _loop(loss_fn, flow.transform.field, steps, density, budget)


def train_fm(data, density, steps, batch, seed, budget, coupling):
    with seeded(seed):
        field = VelocityField(2, budget["hidden"])
    gen = torch.Generator().manual_seed(seed)

    def loss_fn(step):
        x1 = data[torch.randint(len(data), (batch,), generator=gen)]
        return flow_matching_loss(field, x1, generator=gen, coupling=coupling)

    return field, _loop(loss_fn, field, steps, density, budget)


def _loop(loss_fn, field, steps, density, budget):
    """Adam with a cosine schedule; the KL on ``n_curve`` points at each checkpoint.
    Training time is measured as wall-clock seconds and as the CPU seconds of this process
    (``time.process_time``), which a machine shared with other jobs does not inflate."""
    optimizer = torch.optim.Adam(field.parameters(), lr=budget["lr"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    marks = {round(steps * k / budget["checkpoints"]) for k in range(1, budget["checkpoints"] + 1)}
    curve, seconds, cpu = [], 0.0, 0.0
    start, start_cpu = time.perf_counter(), time.process_time()
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = loss_fn(step)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step in marks:
            seconds += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
            model = nfcourse.Flow(adaptive(field, budget["tol"]))
            kl, _ = density.kl_divergence(model, n=budget["n_curve"], seed=20_001)
            curve.append([step, round(cpu, 2), kl])
            start, start_cpu = time.perf_counter(), time.process_time()
    return {"seconds": seconds, "cpu_seconds": cpu, "curve": curve}


@torch.no_grad()
def paths(field, budget) -> dict:
    """Deviation from straight lines, bend, NFE and Euler error of the field's paths."""
    z = torch.randn(budget["n_paths"], 2, generator=torch.Generator().manual_seed(8))
    times = torch.linspace(0, 1, budget["path_times"])
    transform = adaptive(field, budget["tol"])
    path = transform.trajectory(z, times)
    chord = (1 - times)[:, None, None] * path[0] + times[:, None, None] * path[-1]
    deviation = (path - chord).norm(dim=2).mean(0)
    bend = path_straightness(transform, z)
    nfe = {}
    for tol in budget["nfe_tols"]:
        field.nfe = 0
        adaptive(field, tol).trajectory(z, [0.0, 1.0])
        nfe[f"{tol:g}"] = field.nfe
    euler = {}
    for k in budget["euler_steps"]:
        end = ContinuousFlow(field, method="euler", step_size=1 / k).trajectory(z, [0.0, 1.0])
        euler[str(k)] = float((end[-1] - path[-1]).norm(dim=1).mean())
    return {
        "deviation": float(deviation.mean()),
        "bend_median": float(bend.median()),
        "bend_p90": float(bend.quantile(0.9)),
        "nfe": nfe,
        "euler_error": euler,
    }


def run_one(name, method, seed, budget):
    density = DENSITIES[name]()
    data = density.sample(budget["n_data"], seed=seed)
    if method == "ml":
        steps = budget["ml_steps"]
        field, log = train_ml(data, density, steps, budget["ml_batch"], seed, budget)
    else:
        steps = budget["fm_steps"]
        coupling = "ot" if method == "fm_ot" else "independent"
        field, log = train_fm(data, density, steps, budget["fm_batch"], seed, budget, coupling)
    model = nfcourse.Flow(adaptive(field, budget["tol"]))
    kl, se = density.kl_divergence(model, n=budget["n_test"])
    row = {
        "density": name,
        "method": method,
        "seed": seed,
        "steps": steps,
        "kl": kl,
        "se": se,
        **log,
        **paths(field, budget),
    }
    print(
        f"{name:<13}{method:<7}seed {seed} steps {steps:>6}: KL {kl:.4f} ± {se:.4f}, "
        f"{log['cpu_seconds']:.0f} CPU s, curve {[round(c[2], 3) for c in log['curve']]}, "
        f"deviation {row['deviation']:.3f}, NFE {row['nfe']}, "
        f"Euler {row['euler_error']}",
        flush=True,
    )
    return row


def summary(rows) -> dict:
    """Mean and standard error over seeds of each metric, per density and method."""
    out = {}
    for name in DENSITIES:
        for method in METHODS:
            group = [r for r in rows if r["density"] == name and r["method"] == method]
            if not group:
                continue
            metrics = {
                "kl": [r["kl"] for r in group],
                "deviation": [r["deviation"] for r in group],
                "bend_median": [r["bend_median"] for r in group],
                **{f"nfe@{k}": [r["nfe"][k] for r in group] for k in group[0]["nfe"]},
                **{
                    f"euler{k}": [r["euler_error"][k] for r in group]
                    for k in group[0]["euler_error"]
                },
                "seconds": [r["seconds"] for r in group],
                "cpu_seconds": [r["cpu_seconds"] for r in group],
            }
            stats = {}
            for key, values in metrics.items():
                n = len(values)
                mean = sum(values) / n
                sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
                stats[key] = {
                    "mean": mean,
                    "se": sd / math.sqrt(n),
                    "min": min(values),
                    "max": max(values),
                }
            out[f"{name}/{method}"] = stats
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, a smoke run")
    parser.add_argument("--out", type=Path, default=None, help=f"results file (default {OUT})")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    budget = dict(BUDGET, **(QUICK if args.quick else {}))
    out = args.out or (None if args.quick else OUT)
    started = time.perf_counter()
    result = {
        "command": "OMP_NUM_THREADS=1 nice -n 15 python tools/train_continuous_fields.py",
        "budget": budget,
        "machine": machine(),
        "runs": [],
    }

    def save():
        result["summary"] = summary(result["runs"])
        result["wall_seconds"] = time.perf_counter() - started
        result["cpu_seconds"] = time.process_time()
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")

    for seed in budget["seeds"]:
        for name in DENSITIES:
            for method in METHODS:
                result["runs"].append(run_one(name, method, seed, budget))
                save()
    print(f"done in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
