"""Benchmark of the autoregressive flows of chapter 7: beside zuko's MAF, and cost against D.

* ``train_and_score``: the course's MAF and IAF and zuko's ``MAF`` (four transforms, MADEs
  with two hidden layers of 64 units, the ordering reversed at every other transform; the
  same parameter count) trained by maximum likelihood on the checkerboard and the ring, on
  one CPU thread, from several seeds (initialisation and mini-batches); for each, the test
  ``KL(p || q)`` (its mean and range over the seeds), the seconds per 100 training steps,
  and the ratio of the course's step time to zuko's. One seed is not enough to rank two
  flows whose KLs differ by a few hundredths: the spread over seeds is as large.
* ``cost_against_dim``: milliseconds of ``log_prob`` and of sampling for a batch of 256
  points, for MAF, IAF and chapter 5's affine coupling flow (two layers, hidden (64,)), at
  D = 2 ... 256: the table of chapter 7 at full size.

Run it with ``python -m bench.autoregressive`` (``--quick`` for a short smoke run), or
through ``bench/run.py --sections autoregressive``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from bench import coupling
from nfcourse.flows.autoregressive import iaf_flow, maf_flow
from nfcourse.flows.coupling import coupling_flow

__all__ = ["make_flow", "train_and_score", "run", "format_table", "spread_summary",
           "cost_against_dim", "format_cost", "FLOWS"]

HIDDEN = (64, 64)
FLOWS = ("course MAF", "course IAF", "zuko MAF")


def make_flow(name: str, dim: int = 2, seed: int = 0
              ) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    """A fresh flow by name, with its ``log_prob``."""
    if name == "course MAF":
        flow = maf_flow(dim, 4, hidden=HIDDEN, seed=seed)
        return flow, flow.log_prob
    if name == "course IAF":
        flow = iaf_flow(dim, 4, hidden=HIDDEN, seed=seed)
        return flow, flow.log_prob
    if name == "zuko MAF":
        import zuko

        torch.manual_seed(seed)
        flow = zuko.flows.MAF(dim, transforms=4, hidden_features=HIDDEN)
        return flow, lambda x: flow().log_prob(x)
    raise ValueError(f"unknown flow {name!r}; choose from {FLOWS}")


def train_and_score(name: str, density_name: str, steps: int, n_test: int,
                    batch_size: int = 512, n_train: int = 100_000, lr: float = 1e-3,
                    seed: int = 0) -> dict:
    """Train one flow on one density and score it."""
    density = coupling.DENSITIES[density_name]()
    data = density.sample(n_train, seed=0)
    module, log_prob = make_flow(name, density.dim, seed)
    result = coupling.time_training(module, data, steps, batch_size, lr=lr,
                                    log_prob=log_prob, seed=seed)
    kl, se = coupling.evaluate_kl(log_prob, density, n_test)
    return {"flow": name, "density": density_name, "kl": kl, "se": se,
            "per_100": result.seconds_per_100_steps,
            "cpu_per_100": result.cpu_seconds_per_100_steps,
            "params": coupling.parameter_count(module)}


def run(steps: int = 3000, n_test: int = 20_000, seeds: Sequence[int] = (0, 1, 2),
        verbose: bool = True) -> list[dict]:
    """One row per density, flow and seed (``train_and_score``), with the seed added."""
    rows = []
    for density_name in ("checkerboard", "ring"):
        for name in FLOWS:
            for seed in seeds:
                row = train_and_score(name, density_name, steps, n_test, seed=seed)
                row["seed"] = seed
                if verbose:
                    print(f"  {density_name} {name} seed {seed}: KL {row['kl']:.3f} ± "
                          f"{row['se']:.3f}, {row['per_100']:.2f} s / 100 steps "
                          f"({row['cpu_per_100']:.2f} s CPU)", flush=True)
                rows.append(row)
    return rows


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The rows by (density, flow), in the order they first appear."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["density"], r["flow"]), []).append(r)
    return groups


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def format_table(rows: list[dict]) -> str:
    """One row per flow and density. KL: with one seed, the estimate ± its standard error;
    with several, the mean over the seeds and their range. Times are means over the seeds;
    the ratio is the CPU time per step over zuko's (CPU time is steadier than wall-clock
    time on a shared machine)."""
    groups = _groups(rows)
    zuko_time = {d: _mean([r["cpu_per_100"] for r in g])
                 for (d, f), g in groups.items() if f == "zuko MAF"}
    lines = ["| density | flow | parameters | seeds | KL(p‖q), nats | s / 100 steps | "
             "CPU s / 100 steps | CPU time / zuko's |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (density, flow), group in groups.items():
        kls = [r["kl"] for r in group]
        kl = (f"{kls[0]:.3f} ± {group[0]['se']:.3f}" if len(group) == 1 else
              f"{_mean(kls):.3f} ({min(kls):.3f} to {max(kls):.3f})")
        cpu = _mean([r["cpu_per_100"] for r in group])
        ratio = cpu / zuko_time[density] if density in zuko_time else math.nan
        lines.append(f"| {density} | {flow} | {group[0]['params']:,} | {len(group)} | {kl} | "
                     f"{_mean([r['per_100'] for r in group]):.2f} | {cpu:.2f} | {ratio:.2f} |")
    return "\n".join(lines)


def spread_summary(rows: list[dict]) -> list[str]:
    """Per density and course flow: worse or better than zuko's MAF only when its whole
    range of KL over the seeds lies above or below zuko's, else no clear difference."""
    groups = _groups(rows)
    lines = []
    for (density, flow), group in groups.items():
        theirs = groups.get((density, "zuko MAF"))
        if flow == "zuko MAF" or theirs is None:
            continue
        ours, ref = [r["kl"] for r in group], [r["kl"] for r in theirs]
        verdict = ("worse than" if min(ours) > max(ref) else "better than"
                   if max(ours) < min(ref) else "not clearly different from")
        lines.append(f"- {density}, over {len(ours)} seeds: {flow} (mean KL "
                     f"{_mean(ours):.3f}) is {verdict} zuko MAF (mean KL {_mean(ref):.3f}).")
    return lines


def _seconds(fn: Callable[[], object], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            fn()
        best = min(best, time.perf_counter() - start)
    return best


def cost_against_dim(dims: Sequence[int] = (2, 8, 32, 128, 256), batch: int = 256,
                     repeats: int = 3) -> dict:
    """Milliseconds per batch of ``log_prob`` and ``sample`` for MAF, IAF and the affine
    coupling flow (two layers, hidden (64,)), on one thread."""
    builders = {
        "MAF": lambda d: maf_flow(d, 2, hidden=(64,)),
        "IAF": lambda d: iaf_flow(d, 2, hidden=(64,)),
        "coupling": lambda d: coupling_flow("affine", d, 2, hidden=(64,)),
    }
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    cost = {}
    try:
        for d in dims:
            x = torch.randn(batch, d)
            for name, build in builders.items():
                flow = build(d)
                cost[name, "log_prob", d] = 1e3 * _seconds(
                    lambda flow=flow, x=x: flow.log_prob(x), repeats)
                cost[name, "sample", d] = 1e3 * _seconds(
                    lambda flow=flow: flow.sample(batch), repeats)
    finally:
        torch.set_num_threads(previous)
    return cost


def format_cost(cost: dict) -> str:
    names = sorted({k[0] for k in cost}, key=["MAF", "IAF", "coupling"].index)
    dims = sorted({k[2] for k in cost})
    lines = ["| D | " + " | ".join(f"{n} log_prob | {n} sample" for n in names) + " |",
             "|---:|" + "---:|" * (2 * len(names))]
    for d in dims:
        lines.append(f"| {d} | " + " | ".join(
            f"{cost[n, 'log_prob', d]:.2f} | {cost[n, 'sample', d]:.2f}" for n in names)
            + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rows = run(steps=100 if args.quick else 3000, n_test=2000 if args.quick else 20_000,
               seeds=(0,) if args.quick else (0, 1, 2))
    print(format_table(rows))
    print("\n".join(spread_summary(rows)))
    print(format_cost(cost_against_dim(repeats=1 if args.quick else 3)))


if __name__ == "__main__":
    main()
