"""Benchmark of chapter 8's recommended density estimator, ``spline_flow(2)`` with its
defaults, on every 2D density of the course with an exact log-density and on 2D densities
that the course never shows (heavier tails, another location and scale), beside zuko's
neural spline flow (NSF) at about the same parameter count, behind the same standardising
layer as ``spline_flow``: the course's ``ActNorm``, initialised from the first training
batch and trained with the rest. Without it zuko's splines, whose box is [-5, 5], would see
the moved densities (centred at (200, -40) and (-100, 7)) outside their box, and the table
would measure the missing standardisation, not the flow.

Each flow is trained by maximum likelihood for ``steps`` steps (Adam, learning rate 1e-3
with cosine decay, batch 512, one CPU thread) on 100,000 samples, then scored by the test
``KL(p || q) = E_p[log p - log q]`` in nats on fresh samples; the training step time of the
two flows is compared as a ratio measured in the same run.

Run it with ``python bench/spline.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.coupling import evaluate_kl, parameter_count, time_training  # noqa: E402
from nfcourse.densities import (  # noqa: E402
    Checkerboard,
    GaussianRing,
    SineWave,
    StudentT2D,
    ToyDensity,
)
from nfcourse.flows.actnorm import ActNorm  # noqa: E402
from nfcourse.flows.spline import spline_flow  # noqa: E402

__all__ = [
    "StudentTMixture",
    "Transformed",
    "DENSITIES",
    "Standardized",
    "zuko_nsf",
    "run",
    "format_table",
]

#: The target of ``spline_flow(2)`` with its defaults on every density, in nats.
KL_TARGET = 0.1

#: The line of the table that says both flows see the data through the same standardising
#: layer (chapter 8 prints zuko's columns only from a table that has it).
STANDARDIZED_LINE = "zuko's NSF behind the same data-initialised ActNorm as spline_flow;"


class StudentTMixture(ToyDensity):
    """Two Student-t blobs with 2.5 degrees of freedom (heavier tails than the course's
    ``StudentT2D``), of different scales and places: ``sum_k w_k t(x; m_k, diag(s_k))``."""

    name = "Student-t mixture"

    def __init__(self, df: float = 2.5):
        self.df = df
        self.weights = torch.tensor([0.6, 0.4], dtype=torch.float64)
        self.means = torch.tensor([[-3.0, 1.0], [2.0, -2.0]], dtype=torch.float64)
        self.scales = torch.tensor([[0.5, 0.5], [1.5, 0.3]], dtype=torch.float64)

    def _sample(self, n, g):
        k = torch.multinomial(self.weights, n, replacement=True, generator=g)
        z = torch.randn(n, 2, generator=g, dtype=torch.float64)
        shape = torch.full((n, 1), self.df / 2, dtype=torch.float64)
        chi2 = 2 * torch._standard_gamma(shape, generator=g)
        return self.means[k] + self.scales[k] * z / torch.sqrt(chi2 / self.df)

    def _log_prob(self, x):
        nu = self.df
        u = (x.unsqueeze(1) - self.means.to(x)) / self.scales.to(x)  # (n, 2, 2)
        # the bivariate t with identity scale, then the change of scale
        log_t = (
            math.lgamma((nu + 2) / 2)
            - math.lgamma(nu / 2)
            - math.log(nu * math.pi)
            - (nu + 2) / 2 * torch.log1p((u**2).sum(-1) / nu)
        )
        log_t = log_t - torch.log(self.scales.to(x)).sum(-1)
        return torch.logsumexp(log_t + torch.log(self.weights.to(x)), dim=1)


class Transformed(ToyDensity):
    """A course density moved to another location and scale, ``x = scale * y + shift``."""

    def __init__(
        self, density: ToyDensity, scale: tuple[float, float], shift: tuple[float, float]
    ):
        self.density = density
        self.scale = torch.tensor(scale, dtype=torch.float64)
        self.shift = torch.tensor(shift, dtype=torch.float64)
        self.name = f"{density.name}, moved"

    def _sample(self, n, g):
        return self.density._sample(n, g) * self.scale + self.shift

    def _log_prob(self, x):
        y = (x - self.shift.to(x)) / self.scale.to(x)
        return self.density._log_prob(y) - torch.log(self.scale).sum().to(x)


#: The densities: the course's four with exact log-densities, then three it never shows.
DENSITIES = {
    "checkerboard": Checkerboard,
    "ring": GaussianRing,
    "sine": SineWave,
    "Student-t": StudentT2D,
    "t mixture (unseen)": StudentTMixture,
    "moved ring (unseen)": lambda: Transformed(GaussianRing(), (30.0, 0.5), (200.0, -40.0)),
    "moved sine (unseen)": lambda: Transformed(SineWave(), (20.0, 0.2), (-100.0, 7.0)),
}


class Standardized(nn.Module):
    """A zuko flow behind the standardising layer of ``spline_flow``: in the normalizing
    direction, the course's ``ActNorm`` (mean and standard deviation of the first batch it
    sees in training mode, trained afterwards), then the zuko flow,

        log q(x) = log q_zuko((x - b) exp(-s)) - sum_i s_i.

    ``flow`` is a zuko lazy distribution (``flow()`` returns the distribution)."""

    def __init__(self, flow: nn.Module, dim: int = 2):
        super().__init__()
        self.standardize = ActNorm(dim)
        self.flow = flow

    def log_prob(self, x: Tensor) -> Tensor:
        z, log_det = self.standardize.inverse(x)
        return self.flow().log_prob(z) + log_det


def zuko_nsf(target_params: int, seed: int = 0) -> tuple[Standardized, int]:
    """zuko's NSF in two dimensions (8 bins, 4 transforms, two hidden layers) behind the
    standardising ``ActNorm`` of ``spline_flow`` (``Standardized``), with the hidden width
    chosen so that its parameter count (the ``ActNorm``'s four included) is closest to
    ``target_params``, its weights drawn after ``torch.manual_seed(seed)``."""
    import zuko

    def make(width: int) -> Standardized:
        nsf = zuko.flows.NSF(features=2, transforms=4, bins=8, hidden_features=(width, width))
        return Standardized(nsf, dim=2)

    best = None
    for width in range(16, 257, 4):
        gap = abs(parameter_count(make(width)) - target_params)
        if best is None or gap < best[0]:
            best = (gap, width)
    torch.manual_seed(seed)
    return make(best[1]), best[1]


def run(
    steps: int = 3000,
    n_train: int = 100_000,
    n_test: int = 20_000,
    with_zuko: bool = True,
    densities: dict | None = None,
    seeds: tuple[int, ...] = (0,),
    verbose: bool = True,
) -> list[dict]:
    """One row per density and seed: KL of ``spline_flow(2)`` (and of zuko's NSF), the
    seconds of the training run and the ratio of the step times. The seed sets both flows'
    initial weights and the mini-batches; the data are the same for every seed."""
    rows = []
    for name, make in (DENSITIES if densities is None else densities).items():
        density = make()
        data = density.sample(n_train, seed=0)
        for seed in seeds:
            flow = spline_flow(2, seed=seed)
            ours = time_training(flow, data, steps, 512, lr=1e-3, seed=seed)
            kl, se = evaluate_kl(flow, density, n_test)
            row = {
                "density": name,
                "seed": seed,
                "params": parameter_count(flow),
                "kl": kl,
                "se": se,
                "seconds": ours.seconds,
                "cpu_s_per_100": ours.cpu_seconds_per_100_steps,
            }
            if with_zuko:
                nsf, width = zuko_nsf(row["params"], seed=seed)

                theirs = time_training(
                    nsf, data, steps, 512, lr=1e-3, log_prob=nsf.log_prob, seed=seed
                )
                kl_z, se_z = evaluate_kl(nsf.log_prob, density, n_test)
                row.update(
                    zuko_params=parameter_count(nsf),
                    zuko_width=width,
                    zuko_kl=kl_z,
                    zuko_se=se_z,
                    zuko_seconds=theirs.seconds,
                    ratio=(ours.cpu_seconds_per_100_steps / theirs.cpu_seconds_per_100_steps),
                )
            rows.append(row)
            if verbose:
                print("  " + _line(row, len(seeds) > 1), flush=True)
    return rows


def _kl(kl: float, se: float) -> str:
    if not math.isfinite(kl) or abs(kl) >= 1000:
        return f"{kl:>15.3g}"
    return f"{kl:>8.3f} +-{se:.3f}"


def _line(r: dict, with_seed: bool = False) -> str:
    label = f"{r['density']} s{r.get('seed', 0)}" if with_seed else r["density"]
    line = f"{label:<21}{_kl(r['kl'], r['se'])}{r['seconds']:>7.1f}"
    if "zuko_kl" in r:
        line += f"{_kl(r['zuko_kl'], r['zuko_se'])}{r['zuko_seconds']:>7.1f}{r['ratio']:>7.2f}"
    return line


def format_table(rows: list[dict], steps: int) -> str:
    """The rows as a plain-text table (80 columns). With several seeds, one line per
    density and seed (the seed after the name), and KL is compared with zuko's over the
    seeds: worse only where the whole range of the course's KL lies above zuko's."""
    head = f"{'density':<21}{'KL spline_flow':>15}{'s':>7}{'KL zuko NSF':>15}{'s':>7}{'ratio':>7}"
    r0 = rows[0]
    lines = [
        f"spline_flow(2) defaults ({r0['params']:,} parameters)"
        + (
            f" beside zuko NSF ({r0['zuko_params']:,}, hidden {r0['zuko_width']});"
            if "zuko_kl" in r0
            else ";"
        ),
        *([STANDARDIZED_LINE] if "zuko_kl" in r0 else []),
        f"{steps:,} steps, batch 512, Adam 1e-3 (cosine decay), one thread;",
        "KL(p || q) in nats +- one standard error; s: seconds of training;",
        "ratio: CPU time per step, spline_flow over zuko, in the same run",
        head,
        "-" * len(head),
    ]
    densities = list(dict.fromkeys(r["density"] for r in rows))
    several = len(rows) > len(densities)
    lines += [_line(r, several) for r in rows]
    missed = list(dict.fromkeys(r["density"] for r in rows if not r["kl"] <= KL_TARGET))
    lines.append(
        f"KL target {KL_TARGET}: "
        + ("met on every density" if not missed else "missed on " + ", ".join(missed))
    )
    if "zuko_kl" in r0:
        if several:
            for d in densities:
                ours = [r["kl"] for r in rows if r["density"] == d]
                theirs = [r["zuko_kl"] for r in rows if r["density"] == d]
                lines.append(
                    f"{d}: mean KL over {len(ours)} seeds {sum(ours) / len(ours):.4f},"
                    f" zuko {sum(theirs) / len(theirs):.4f}"
                )
            worse = [
                d
                for d in densities
                if min(r["kl"] for r in rows if r["density"] == d)
                > max(r["zuko_kl"] for r in rows if r["density"] == d)
            ]
        else:
            worse = [r["density"] for r in rows if not r["kl"] <= r["zuko_kl"]]
        slower = list(dict.fromkeys(r["density"] for r in rows if not r["ratio"] <= 1.0))
        lines.append(
            "KL no worse than zuko"
            + (" (ranges over the seeds)" if several else "")
            + ": "
            + ("on every density" if not worse else "not on " + ", ".join(worse))
        )
        lines.append(
            "step time ratio <= 1: "
            + ("on every density" if not slower else "not on " + ", ".join(slower))
        )
    return "\n".join(lines)


#: Where ``--write`` puts the table that chapter 8 prints.
RESULTS = ROOT / "bench" / "results" / "spline_flow.txt"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 steps: a smoke run")
    parser.add_argument("--no-zuko", action="store_true", help="leave zuko's NSF out")
    parser.add_argument(
        "--densities",
        nargs="+",
        choices=list(DENSITIES),
        metavar="NAME",
        help="only these densities (quote names with spaces)",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0],
        help="train each flow from each of these seeds (default: 0)",
    )
    parser.add_argument(
        "--write", action="store_true", help=f"write the table to {RESULTS.relative_to(ROOT)}"
    )
    args = parser.parse_args(argv)
    if args.write and (args.quick or args.densities or args.seeds != [0] or args.no_zuko):
        parser.error(
            "--write keeps the full table that chapter 8 prints: every density, "
            "seed 0, with zuko, full budget; drop --quick, --densities, --seeds "
            "and --no-zuko, or drop --write"
        )
    torch.set_num_threads(1)
    steps = 100 if args.quick else 3000
    densities = None if args.densities is None else {d: DENSITIES[d] for d in args.densities}
    rows = run(
        steps=steps,
        n_test=2000 if args.quick else 20_000,
        with_zuko=not args.no_zuko,
        densities=densities,
        seeds=tuple(args.seeds),
    )
    table = format_table(rows, steps)
    print(table)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(table + "\n", encoding="utf-8")
    return table


if __name__ == "__main__":
    main()
