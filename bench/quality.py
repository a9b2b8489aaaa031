"""Density quality beside zuko: chapter 5's benchmark with zuko's flows in the same run.

The course's coupling flows (``bench/coupling.py``'s ``CONFIGS``) and zuko's ``NSF`` and
``RealNVP`` (four transforms, hidden widths (64, 64)) are trained by maximum likelihood with
the same budget (Adam, learning rate 1e-3 with cosine decay, batch 512, one CPU thread) on
the checkerboard and the ring of Gaussians, and scored by the test ``KL(p || q)``, which
the exact density of ``nfcourse.densities`` makes computable: the mean of
``log p(x) - log q(x)`` over fresh samples of ``p``, with its standard error.
"""

from __future__ import annotations

import math

from bench import coupling, libraries
from nfcourse.flows.coupling import coupling_flow

__all__ = [
    "PAIRS",
    "train_and_score",
    "run",
    "seed_spread",
    "format_table",
    "format_spread",
    "summary",
    "spread_summary",
]

# Like-for-like pairs: the same architecture and parameter count in the course and in zuko.
PAIRS = [("course: affine (RealNVP)", "zuko RealNVP (affine)")]


def _make_flow(name: str, dim: int, seed: int):
    """A fresh flow by its row name: ``"course: <CONFIGS key>"`` or a zuko flow of
    ``libraries.quality_flows``; returns ``(module, log_prob)``."""
    if name.startswith("course: "):
        flow = coupling_flow(dim=dim, seed=seed, **coupling.CONFIGS[name.removeprefix("course: ")])
        return flow, flow.log_prob
    return libraries.quality_flows(seed=seed)[name]


def train_and_score(
    name: str,
    density_name: str,
    seed: int = 0,
    steps: int = 3000,
    batch_size: int = 512,
    n_train: int = 100_000,
    n_test: int = 20_000,
    lr: float = 1e-3,
) -> dict:
    """Train the flow ``name`` from initialisation ``seed`` (mini-batches drawn with the
    same seed) on ``n_train`` samples of the density, and score it: KL, its standard error,
    wall-clock seconds and parameter count."""
    density = coupling.DENSITIES[density_name]()
    data = density.sample(n_train, seed=0)
    module, log_prob = _make_flow(name, density.dim, seed)
    result = coupling.time_training(
        module, data, steps, batch_size, lr=lr, log_prob=log_prob, seed=seed
    )
    kl, se = coupling.evaluate_kl(log_prob, density, n_test)
    return {
        "kl": kl,
        "se": se,
        "seconds": result.seconds,
        "params": libraries.parameter_count(module),
    }


def run(
    steps: int = 3000,
    batch_size: int = 512,
    n_train: int = 100_000,
    n_test: int = 20_000,
    lr: float = 1e-3,
    configs: dict | None = None,
    verbose: bool = True,
) -> list[dict]:
    """Train and score the course's flows (``configs``, default ``coupling.CONFIGS``, with
    ``coupling.benchmark``) and zuko's, from seed 0; one row per flow with ``params``,
    ``kl_*``, ``se_*`` and ``seconds_*`` for each density of ``coupling.DENSITIES``."""
    rows = coupling.benchmark(
        steps=steps,
        batch_size=batch_size,
        n_train=n_train,
        n_test=n_test,
        lr=lr,
        configs=configs,
        verbose=verbose,
    )
    for row in rows:
        row["flow"] = f"course: {row['flow']}"
    for name in libraries.quality_flows():
        row = {"flow": name}
        for d in coupling.DENSITIES:
            score = train_and_score(name, d, 0, steps, batch_size, n_train, n_test, lr)
            row["params"] = score["params"]
            row[f"kl_{d}"], row[f"se_{d}"] = score["kl"], score["se"]
            row[f"seconds_{d}"] = score["seconds"]
            if verbose:
                print(
                    f"  {name} on the {d}: KL = {score['kl']:.4f} +- {score['se']:.4f} "
                    f"nats, {score['seconds']:.1f} s",
                    flush=True,
                )
        rows.append(row)
    return rows


def seed_spread(
    rows: list[dict],
    seeds=(0, 1, 2),
    steps: int = 3000,
    batch_size: int = 512,
    n_train: int = 100_000,
    n_test: int = 20_000,
    lr: float = 1e-3,
    verbose: bool = True,
) -> dict[str, dict[str, list[float]]]:
    """The KL of each flow of ``PAIRS`` for every seed of ``seeds`` (seed 0 taken from
    ``rows``, the others trained here): ``{flow: {density: [KL per seed]}}``. The standard
    error of the main table covers the test sample only; this shows how much the training
    seed (initialisation and mini-batches) moves the result."""
    by_name = {r["flow"]: r for r in rows}
    spread: dict[str, dict[str, list[float]]] = {}
    for name in sorted({n for pair in PAIRS for n in pair if n in by_name}):
        spread[name] = {}
        for d in coupling.DENSITIES:
            kls = []
            for seed in seeds:
                if seed == 0:
                    kls.append(by_name[name][f"kl_{d}"])
                    continue
                kls.append(
                    train_and_score(name, d, seed, steps, batch_size, n_train, n_test, lr)["kl"]
                )
                if verbose:
                    print(f"  {name} on the {d}, seed {seed}: KL = {kls[-1]:.4f}", flush=True)
            spread[name][d] = kls
    return spread


def format_spread(spread: dict[str, dict[str, list[float]]]) -> str:
    """Mean and range of the KL over training seeds, per flow and density."""
    densities = list(coupling.DENSITIES)
    lines = [
        "| flow | seeds | " + " | ".join(f"KL {d}: mean (range)" for d in densities) + " |",
        "| --- | ---: |" + " ---: |" * len(densities),
    ]
    for name, per_density in spread.items():
        cells = [
            f"{sum(k) / len(k):.4f} ({min(k):.4f} to {max(k):.4f})"
            for k in (per_density[d] for d in densities)
        ]
        n = len(per_density[densities[0]])
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread_summary(spread: dict[str, dict[str, list[float]]]) -> list[str]:
    """Per pair and density: the course worse or better when its whole range of KL over
    the seeds lies above or below the library's, else no clear difference."""
    lines = []
    for a, b in PAIRS:
        if a not in spread or b not in spread:
            continue
        for d in coupling.DENSITIES:
            ka, kb = spread[a][d], spread[b][d]
            verdict = (
                "worse than"
                if min(ka) > max(kb)
                else "better than"
                if max(ka) < min(kb)
                else "not clearly different from"
            )
            lines.append(
                f"- {d}, over {len(ka)} seeds: {a} (mean KL {sum(ka) / len(ka):.4f})"
                f" is {verdict} {b} (mean KL {sum(kb) / len(kb):.4f})."
            )
    return lines


def format_table(rows: list[dict]) -> str:
    """KL per density with its standard error, seconds per training run, parameters."""
    densities = list(coupling.DENSITIES)
    head = (
        "| flow | parameters | "
        + " | ".join(f"KL {d} (nats)" for d in densities)
        + " | "
        + " | ".join(f"seconds, {d}" for d in densities)
        + " |"
    )
    lines = [head, "| --- | ---: |" + " ---: |" * (2 * len(densities))]
    for r in rows:
        kls = " | ".join(f"{r[f'kl_{d}']:.4f} ± {r[f'se_{d}']:.4f}" for d in densities)
        secs = " | ".join(f"{r[f'seconds_{d}']:.1f}" for d in densities)
        lines.append(f"| {r['flow']} | {r['params']:,} | {kls} | {secs} |")
    return "\n".join(lines)


def _compare(a: dict, b: dict, density: str) -> str:
    gap = a[f"kl_{density}"] - b[f"kl_{density}"]
    noise = 2 * math.hypot(a[f"se_{density}"], b[f"se_{density}"])
    verdict = (
        "worse than"
        if gap > noise
        else "better than"
        if gap < -noise
        else "within two standard errors of"
    )
    return (
        f"{a['flow']} (KL {a[f'kl_{density}']:.4f}, {a['params']:,} parameters) is "
        f"{verdict} {b['flow']} (KL {b[f'kl_{density}']:.4f}, {b['params']:,} parameters)"
    )


def summary(rows: list[dict]) -> list[str]:
    """Sentences comparing, per density, the best course flow with the best library flow,
    and each like-for-like pair of ``PAIRS``; a gap counts when it exceeds two combined
    standard errors."""
    by_name = {r["flow"]: r for r in rows}
    course = [r for r in rows if r["flow"].startswith("course")]
    others = [r for r in rows if not r["flow"].startswith("course")]
    lines = []
    for d in coupling.DENSITIES:
        if course and others:
            best_c = min(course, key=lambda r: r[f"kl_{d}"])
            best_o = min(others, key=lambda r: r[f"kl_{d}"])
            lines.append(f"- {d}, best against best: {_compare(best_c, best_o, d)}.")
        for a, b in PAIRS:
            if a in by_name and b in by_name:
                lines.append(f"- {d}, like for like: {_compare(by_name[a], by_name[b], d)}.")
    return lines
