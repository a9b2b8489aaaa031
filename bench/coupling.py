"""Benchmark of the coupling flows of chapter 5: accuracy against the true density, speed.

For each coupling flow this measures, on one CPU thread,

* the test ``KL(p || q) = E_p[log p(x) - log q(x)]`` (nats) on the checkerboard and the ring
  of Gaussians of ``nfcourse.densities``, after a fixed budget of training steps, with its
  standard error over the test points;
* the seconds per 100 training steps (Adam, batch 512, wall clock of the whole loop:
  sampling a batch, the loss, the backward pass and the update);
* the number of trainable parameters.

The two functions the measurements rest on take any model, so another library's flow can
be timed and scored the same way:

* ``time_training(model, data, steps, batch_size, log_prob=...)`` trains by maximum
  likelihood and returns the seconds per 100 steps;
* ``evaluate_kl(log_prob, density, n_test)`` returns ``(KL, standard error)``.

For example, for a zuko flow ``flow``: ``time_training(flow, data, 3000,
log_prob=lambda x: flow().log_prob(x))`` and ``evaluate_kl(lambda x: flow().log_prob(x),
density)``.

Run it with ``python bench/coupling.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import nfcourse
from nfcourse.densities import Checkerboard, GaussianRing, ToyDensity
from nfcourse.flows.coupling import coupling_flow

__all__ = [
    "TrainingResult",
    "time_training",
    "evaluate_kl",
    "parameter_count",
    "CONFIGS",
    "benchmark",
    "format_table",
    "main",
]


@dataclass
class TrainingResult:
    """What ``time_training`` measured: wall-clock seconds, seconds per 100 steps (wall
    clock), the same in CPU time of the process, and the mean loss over the last 100 steps.

    On a machine shared with other jobs the CPU time is the steadier of the two."""

    seconds: float
    seconds_per_100_steps: float
    cpu_seconds_per_100_steps: float
    final_loss: float


def parameter_count(model: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _log_prob_fn(model) -> Callable[[Tensor], Tensor]:
    if callable(getattr(model, "log_prob", None)):
        return model.log_prob
    if callable(model):
        return model
    raise TypeError("pass a model with a log_prob method, or a log_prob function")


def time_training(
    model: nn.Module,
    data: Tensor,
    steps: int,
    batch_size: int = 512,
    lr: float = 1e-3,
    log_prob: Callable[[Tensor], Tensor] | None = None,
    cosine: bool = True,
    seed: int = 0,
    threads: int | None = 1,
) -> TrainingResult:
    """Train ``model`` in place by maximum likelihood on ``data`` ``(N, D)`` and time it.

    Adam with learning rate ``lr`` (cosine decay to zero over ``steps`` when ``cosine``),
    mini-batches of ``batch_size`` drawn with replacement. The clock runs over the whole
    loop. ``log_prob`` defaults to ``model.log_prob``. ``threads`` sets
    ``torch.set_num_threads`` for the run (``None`` leaves it) and is restored after.
    """
    log_prob = _log_prob_fn(model) if log_prob is None else log_prob
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=lr)
        scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if cosine else None
        )
        g = torch.Generator().manual_seed(seed)
        index = torch.randint(len(data), (steps, batch_size), generator=g)
        recent: list[Tensor] = []
        start, cpu_start = time.perf_counter(), time.process_time()
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = -log_prob(data[index[step]]).mean()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if step >= steps - 100:
                recent.append(loss.detach())
        if data.is_cuda:  # the clock must wait for the kernels still queued on the GPU
            torch.cuda.synchronize(data.device)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
    finally:
        torch.set_num_threads(previous_threads)
    final = float(torch.stack(recent).mean())
    if not math.isfinite(final):
        raise nfcourse.TrainingDiverged(f"the training loss ended at {final}")
    return TrainingResult(seconds, 100 * seconds / steps, 100 * cpu_seconds / steps, final)


@torch.no_grad()
def evaluate_kl(
    model, density: ToyDensity, n_test: int = 20_000, seed: int = 10_001, batch_size: int = 10_000
) -> tuple[float, float]:
    """``KL(p || q)`` in nats and its standard error (``ToyDensity.kl_divergence``);
    ``model`` is a flow or a ``log_prob`` function."""
    return density.kl_divergence(model, n=n_test, seed=seed, batch_size=batch_size)


# The flows compared: four coupling layers with conditioners of two hidden layers of 64
# units (the affine flow then has exactly the 17,672 parameters of zuko's RealNVP with four
# transforms and hidden (64, 64) in two dimensions).
CONFIGS: dict[str, dict] = {
    "additive (NICE)": dict(kind="additive", n_layers=4, hidden=(64, 64), permutation=None),
    "affine (RealNVP)": dict(kind="affine", n_layers=4, hidden=(64, 64), permutation=None),
    # K = 128 bins on the box [-4, 4]: bins 1/16 wide, whose edges include the integers
    # where the checkerboard's squares meet.
    "piecewise-linear, K=128": dict(
        kind="piecewise", n_layers=4, hidden=(64, 64), bins=128, bound=4.0, permutation=None
    ),
}

DENSITIES: dict[str, Callable[[], ToyDensity]] = {
    "checkerboard": Checkerboard,
    "ring": GaussianRing,
}


def benchmark(
    steps: int = 3000,
    batch_size: int = 512,
    n_train: int = 100_000,
    n_test: int = 20_000,
    lr: float = 1e-3,
    configs: dict | None = None,
    verbose: bool = True,
) -> list[dict]:
    """Train every flow of ``configs`` on every density of ``DENSITIES`` for ``steps``
    steps on one thread, and return one row per flow: parameter count, seconds per 100
    steps (wall clock and CPU time, mean over the densities), total wall-clock seconds per
    density, and the test ``KL(p || q)`` with its standard error per density."""
    configs = CONFIGS if configs is None else configs
    rows = []
    for name, config in configs.items():
        row: dict = {"flow": name}
        walls, cpus = [], []
        for density_name, make_density in DENSITIES.items():
            density = make_density()
            data = density.sample(n_train, seed=0)
            flow = coupling_flow(dim=density.dim, seed=0, **config)
            result = time_training(flow, data, steps, batch_size, lr=lr)
            kl, se = evaluate_kl(flow, density, n_test)
            row["params"] = parameter_count(flow)
            row[f"kl_{density_name}"] = kl
            row[f"se_{density_name}"] = se
            row[f"seconds_{density_name}"] = result.seconds
            row[f"cpu_seconds_{density_name}"] = result.cpu_seconds_per_100_steps * steps / 100
            walls.append(result.seconds_per_100_steps)
            cpus.append(result.cpu_seconds_per_100_steps)
            if verbose:
                print(
                    f"  {name} on the {density.name}: KL = {kl:.4f} +- {se:.4f} nats, "
                    f"{result.seconds:.1f} s wall clock, "
                    f"{result.cpu_seconds_per_100_steps * steps / 100:.1f} s CPU",
                    flush=True,
                )
        row["s_per_100"] = sum(walls) / len(walls)
        row["cpu_s_per_100"] = sum(cpus) / len(cpus)
        rows.append(row)
    return rows


def format_table(rows: list[dict], steps: int, batch_size: int) -> str:
    """The benchmark rows as a plain-text table."""
    head = (
        f"{'flow':<24}{'params':>8}{'s/100 steps':>13}{'CPU s/100':>11}"
        f"{'KL checkerboard':>19}{'KL ring':>18}{'s per run':>11}{'CPU s':>7}"
    )
    lines = [
        f"Coupling flows, {steps} steps of Adam (lr 1e-3, cosine decay), batch "
        f"{batch_size}, one CPU thread; KL(p || q) in nats on 20,000 test points "
        "(+- one standard error)",
        head,
        "-" * len(head),
    ]
    for r in rows:
        wall = sum(r[f"seconds_{d}"] for d in DENSITIES) / len(DENSITIES)
        cpu = sum(r[f"cpu_seconds_{d}"] for d in DENSITIES) / len(DENSITIES)
        lines.append(
            f"{r['flow']:<24}{r['params']:>8,}{r['s_per_100']:>13.3f}{r['cpu_s_per_100']:>11.3f}"
            f"{r['kl_checkerboard']:>11.4f} +- {r['se_checkerboard']:.4f}"
            f"{r['kl_ring']:>10.4f} +- {r['se_ring']:.4f}{wall:>11.1f}{cpu:>7.1f}"
        )
    best = min(rows, key=lambda r: max(r["kl_checkerboard"], r["kl_ring"]))
    worst_kl = max(best["kl_checkerboard"], best["kl_ring"])
    longest_cpu = max(best[f"cpu_seconds_{d}"] for d in DENSITIES)
    longest_wall = max(best[f"seconds_{d}"] for d in DENSITIES)
    met = worst_kl <= 0.1 and longest_cpu <= 60
    lines.append(
        f"Target (best flow: KL <= 0.1 nats on both densities within 60 s of one thread): "
        f"{'met' if met else 'not met'} by '{best['flow']}' (largest KL {worst_kl:.4f}; "
        f"longest run {longest_cpu:.1f} s of CPU time, {longest_wall:.1f} s wall clock)"
    )
    lines.append(
        "Times are per run of the given steps; 's/100 steps' is wall clock, 'CPU' the "
        "CPU time of the process, steadier on a shared machine."
    )
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="200 steps, a smoke test")
    args = parser.parse_args(argv)
    steps = 200 if args.quick else args.steps
    rows = benchmark(steps=steps, batch_size=args.batch_size)
    table = format_table(rows, steps, args.batch_size)
    print(table)
    return table


if __name__ == "__main__":
    main()
