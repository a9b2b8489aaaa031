"""Benchmark of the autoregressive flows of chapter 7: beside zuko's MAF, and cost against D.

* ``train_and_score``: the course's MAF and IAF, the course's MAF with the shift placed as
  zuko places it (``ShiftAfterScaleMAF``), and zuko's ``MAF`` (four transforms, MADEs
  with two hidden layers of 64 units, the ordering reversed at every other transform; the
  same parameter count) trained by maximum likelihood on the checkerboard and the ring, on
  one CPU thread, from several seeds (initialisation and mini-batches); for each, the test
  ``KL(p || q)`` (its mean and range over the seeds) and the seconds per 100 training
  steps. One seed is not enough to rank two flows whose KLs differ by a few hundredths:
  the spread over seeds is as large.
* ``step_times``: the training step time of the three flows side by side: rounds of 200
  steps, the flows taking turns within each round, so that a change in the machine's load
  falls on all three alike; the median CPU time of the rounds, and its ratio to zuko's.
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
from nfcourse.flows.autoregressive import MAF, _stack, iaf_flow, maf_flow
from nfcourse.flows.coupling import coupling_flow
from nfcourse.flows.made import MADE

__all__ = [
    "ShiftAfterScaleMAF",
    "make_flow",
    "train_and_score",
    "run",
    "format_table",
    "spread_summary",
    "step_times",
    "format_step_times",
    "cost_against_dim",
    "format_cost",
    "FLOWS",
]

HIDDEN = (64, 64)
FLOWS = ("course MAF", "course IAF", "course MAF, shift after scale", "zuko MAF")


class ShiftAfterScaleMAF(MAF):
    """The course's MAF layer with the shift where zuko puts it: ``z = x exp(-s) - t`` from
    data to base, ``x = (z + t) exp(s)`` from base to data, instead of the chapter's
    ``z = (x - t) exp(-s)`` and ``x = exp(s) z + t``.

    The two layers have the same function class (``t`` here is the chapter's shift divided
    by ``exp(s)``) and the same log-det ``-sum s``; only the units of the network's shift
    output differ (base units here, data units in the chapter), and with them the path that
    gradient descent takes. The benchmark trains both to measure what that costs."""

    def _elementwise(self, y: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        s, t = self._scale_and_shift(params)
        if inverse:
            return y * torch.exp(-s) - t, -s.sum(dim=1)
        return (y + t) * torch.exp(s), s.sum(dim=1)


def make_flow(
    name: str, dim: int = 2, seed: int = 0
) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    """A fresh flow by name, with its ``log_prob``."""
    if name == "course MAF":
        flow = maf_flow(dim, 4, hidden=HIDDEN, seed=seed)
        return flow, flow.log_prob
    if name == "course IAF":
        flow = iaf_flow(dim, 4, hidden=HIDDEN, seed=seed)
        return flow, flow.log_prob
    if name == "course MAF, shift after scale":
        flow = _stack(
            ShiftAfterScaleMAF,
            dim,
            4,
            lambda o: MADE(dim, HIDDEN, 2, order=o),
            "reverse",
            3.0,
            False,
            seed,
            None,
        )
        return flow, flow.log_prob
    if name == "zuko MAF":
        import zuko

        torch.manual_seed(seed)
        flow = zuko.flows.MAF(dim, transforms=4, hidden_features=HIDDEN)
        return flow, lambda x: flow().log_prob(x)
    raise ValueError(f"unknown flow {name!r}; choose from {FLOWS}")


def train_and_score(
    name: str,
    density_name: str,
    steps: int,
    n_test: int,
    batch_size: int = 512,
    n_train: int = 100_000,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict:
    """Train one flow on one density and score it."""
    density = coupling.DENSITIES[density_name]()
    data = density.sample(n_train, seed=0)
    module, log_prob = make_flow(name, density.dim, seed)
    result = coupling.time_training(
        module, data, steps, batch_size, lr=lr, log_prob=log_prob, seed=seed
    )
    kl, se = coupling.evaluate_kl(log_prob, density, n_test)
    return {
        "flow": name,
        "density": density_name,
        "kl": kl,
        "se": se,
        "per_100": result.seconds_per_100_steps,
        "cpu_per_100": result.cpu_seconds_per_100_steps,
        "params": coupling.parameter_count(module),
    }


def run(
    steps: int = 3000, n_test: int = 20_000, seeds: Sequence[int] = (0, 1, 2), verbose: bool = True
) -> list[dict]:
    """One row per density, flow and seed (``train_and_score``), with the seed added."""
    rows = []
    for density_name in ("checkerboard", "ring"):
        for name in FLOWS:
            for seed in seeds:
                row = train_and_score(name, density_name, steps, n_test, seed=seed)
                row["seed"] = seed
                if verbose:
                    print(
                        f"  {density_name} {name} seed {seed}: KL {row['kl']:.3f} ± "
                        f"{row['se']:.3f}, {row['per_100']:.2f} s / 100 steps "
                        f"({row['cpu_per_100']:.2f} s CPU)",
                        flush=True,
                    )
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
    with several, the mean over the seeds and their range. Times are means over the seeds
    (the training runs follow one another, so they also measure how busy the machine was:
    compare step times with ``step_times``)."""
    lines = [
        "| density | flow | parameters | seeds | KL(p‖q), nats | s / 100 steps | "
        "CPU s / 100 steps |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (density, flow), group in _groups(rows).items():
        kls = [r["kl"] for r in group]
        kl = (
            f"{kls[0]:.3f} ± {group[0]['se']:.3f}"
            if len(group) == 1
            else f"{_mean(kls):.3f} ({min(kls):.3f} to {max(kls):.3f})"
        )
        lines.append(
            f"| {density} | {flow} | {group[0]['params']:,} | {len(group)} | {kl} | "
            f"{_mean([r['per_100'] for r in group]):.2f} | "
            f"{_mean([r['cpu_per_100'] for r in group]):.2f} |"
        )
    return "\n".join(lines)


def step_times(
    steps: int = 200, rounds: int = 5, batch_size: int = 512, density_name: str = "checkerboard"
) -> dict[str, list[float]]:
    """CPU seconds per 100 training steps of each flow in each round, one thread. In every
    round each flow trains ``steps`` more steps (Adam, learning rate 1e-3) in turn."""
    data = coupling.DENSITIES[density_name]().sample(100_000, seed=0)
    flows = {name: make_flow(name) for name in FLOWS}
    optimizers = {name: torch.optim.Adam(flows[name][0].parameters(), lr=1e-3) for name in FLOWS}
    g = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {name: [] for name in FLOWS}
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(rounds):
            for name in FLOWS:
                log_prob, optimizer = flows[name][1], optimizers[name]
                index = torch.randint(len(data), (steps, batch_size), generator=g)
                start = time.process_time()
                for step in range(steps):
                    optimizer.zero_grad(set_to_none=True)
                    loss = -log_prob(data[index[step]]).mean()
                    loss.backward()
                    optimizer.step()
                times[name].append(100 * (time.process_time() - start) / steps)
    finally:
        torch.set_num_threads(previous)
    return times


def format_step_times(times: dict[str, list[float]]) -> str:
    """The median over the rounds of each flow's CPU time per 100 steps, its ratio to
    zuko's median, and the ratio's range over the rounds (each round's time over zuko's in
    the same round)."""

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    zuko = times["zuko MAF"]
    lines = [
        f"| flow | CPU s / 100 steps, median of {len(zuko)} rounds | "
        "CPU time / zuko's | range over the rounds |",
        "|---|---:|---:|---:|",
    ]
    for name, values in times.items():
        per_round = [v / z for v, z in zip(values, zuko, strict=True)]
        lines.append(
            f"| {name} | {median(values):.3f} | {median(values) / median(zuko):.2f} |"
            f" {min(per_round):.2f} to {max(per_round):.2f} |"
        )
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
        verdict = (
            "worse than"
            if min(ours) > max(ref)
            else "better than"
            if max(ours) < min(ref)
            else "not clearly different from"
        )
        lines.append(
            f"- {density}, over {len(ours)} seeds: {flow} (mean KL "
            f"{_mean(ours):.3f}) is {verdict} zuko MAF (mean KL {_mean(ref):.3f})."
        )
    return lines


def _seconds(fn: Callable[[], object], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            fn()
        best = min(best, time.perf_counter() - start)
    return best


def cost_against_dim(
    dims: Sequence[int] = (2, 8, 32, 128, 256), batch: int = 256, repeats: int = 3
) -> dict:
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
                    lambda flow=flow, x=x: flow.log_prob(x), repeats
                )
                cost[name, "sample", d] = 1e3 * _seconds(
                    lambda flow=flow: flow.sample(batch), repeats
                )
    finally:
        torch.set_num_threads(previous)
    return cost


def format_cost(cost: dict) -> str:
    names = sorted({k[0] for k in cost}, key=["MAF", "IAF", "coupling"].index)
    dims = sorted({k[2] for k in cost})
    lines = [
        "| D | " + " | ".join(f"{n} log_prob | {n} sample" for n in names) + " |",
        "|---:|" + "---:|" * (2 * len(names)),
    ]
    for d in dims:
        lines.append(
            f"| {d} | "
            + " | ".join(
                f"{cost[n, 'log_prob', d]:.2f} | {cost[n, 'sample', d]:.2f}" for n in names
            )
            + " |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rows = run(
        steps=100 if args.quick else 3000,
        n_test=2000 if args.quick else 20_000,
        seeds=(0,) if args.quick else (0, 1, 2),
    )
    print(format_table(rows))
    print("\n".join(spread_summary(rows)))
    print(
        format_step_times(
            step_times(steps=20 if args.quick else 200, rounds=2 if args.quick else 5)
        )
    )
    print(format_cost(cost_against_dim(repeats=1 if args.quick else 3)))


if __name__ == "__main__":
    main()
