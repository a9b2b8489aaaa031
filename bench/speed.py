"""Speed of the course's layers and flows beside zuko, nflows and normflows.

Two measurements, on one device (the CPU with one thread, or a CUDA device):

* layers: forward and inverse with the log-det, without gradients, at two batch sizes, for
  the affine coupling, the piecewise-linear coupling and the planar layer (see
  ``libraries.py`` for what each library's layer is and which direction is which);
* training: Adam steps per second of a RealNVP flow in two dimensions (batch 512), the
  chapter 5 flow beside the libraries' flows with the same parameter count, timed by
  ``bench/coupling.py``'s ``time_training``.

Every time is the median over ``repeats`` repeats; the implementations take turns within
each repeat (round robin), so a burst of load on a shared machine hits them alike. The
ratio is the course's time over the fastest library's, measured in the same run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from bench import coupling, libraries
from nfcourse.densities import Checkerboard

__all__ = [
    "LIBRARIES",
    "LAYER_CASES",
    "median_seconds",
    "LayerRow",
    "TrainingRow",
    "layer_speed",
    "training_speed",
    "format_parameters",
    "format_layers",
    "format_training",
    "single_thread",
]

LIBRARIES = ("zuko", "nflows", "normflows")

# name, builder, its arguments
LAYER_CASES: list[tuple[str, Callable, dict]] = [
    ("affine coupling", libraries.affine_coupling_layers, dict(dim=8, hidden=(64, 64))),
    (
        "piecewise-linear coupling",
        libraries.piecewise_coupling_layers,
        dict(dim=2, hidden=(64, 64), bins=128, bound=4.0),
    ),
    ("planar", libraries.planar_layers, dict(dim=8)),
]


class single_thread:
    """Context manager: ``torch.set_num_threads(1)`` inside, the previous count after."""

    def __enter__(self):
        self.previous = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.previous)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    functions: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int = 7,
    min_time: float = 0.05,
) -> dict[str, float]:
    """Median wall-clock seconds per call of each function.

    Each function is called once to warm up, then the number of calls per repeat is
    doubled until a repeat lasts ``min_time``; the functions then take turns for
    ``repeats`` repeats. CUDA work is synchronised before the clock stops."""

    def clock(fn, calls):
        _sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        return time.perf_counter() - start

    calls = {}
    for name, fn in functions.items():
        clock(fn, 1)
        n = 1
        while clock(fn, n) < min_time and n < 2**16:
            n *= 2
        calls[name] = n
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            samples[name].append(clock(fn, calls[name]) / calls[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def _ratio(seconds: dict[str, float]) -> float | None:
    others = [s for name, s in seconds.items() if name != "course"]
    if "course" not in seconds or not others:
        return None
    return seconds["course"] / min(others)


@dataclass
class LayerRow:
    layer: str
    direction: str
    batch: int
    seconds: dict[str, float]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return _ratio(self.seconds)


def layer_speed(
    device: str | torch.device = "cpu",
    batches=(1024, 65536),
    repeats: int = 7,
    min_time: float = 0.05,
    verbose: bool = True,
) -> tuple[list[LayerRow], dict[str, dict[str, int]]]:
    """Time every layer of ``LAYER_CASES`` in both directions at each batch size.

    Returns the rows and the parameter counts ``{layer: {library: count}}``. A library
    whose call raises is left out of its row and its error recorded."""
    device = torch.device(device)
    rows, params = [], {}
    for name, build, kwargs in LAYER_CASES:
        layers = build(device=device, **kwargs)
        params[f"{name}, D = {kwargs['dim']}"] = {
            layer.library: libraries.parameter_count(layer.module) for layer in layers
        }
        dim = kwargs["dim"]
        for batch in batches:
            torch.manual_seed(batch)
            x = torch.randn(batch, dim, device=device)
            for direction in ("normalize", "generate"):
                functions, errors = {}, {}
                for layer in layers:
                    call = getattr(layer, direction)
                    if call is None:
                        continue
                    try:
                        with torch.no_grad():
                            call(x)
                    except Exception as exc:  # a library that fails here is reported
                        errors[layer.library] = f"{type(exc).__name__}: {exc}"[:100]
                        continue
                    functions[layer.library] = _no_grad(call, x)
                seconds = median_seconds(functions, device, repeats, min_time)
                row = LayerRow(f"{name}, D = {dim}", direction, batch, seconds, errors)
                if verbose:
                    times = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in seconds.items())
                    print(f"  {row.layer}, {direction}, batch {batch:,}: {times}", flush=True)
                rows.append(row)
    return rows, params


def _no_grad(call, x):
    def run():
        with torch.no_grad():
            return call(x)

    return run


@dataclass
class TrainingRow:
    library: str
    params: int
    seconds_per_100: float

    @property
    def steps_per_second(self) -> float:
        return 100.0 / self.seconds_per_100


def training_speed(
    device: str | torch.device = "cpu",
    steps: int = 500,
    repeats: int = 3,
    batch_size: int = 512,
    verbose: bool = True,
) -> list[TrainingRow]:
    """Adam steps per second of the RealNVP flows of ``libraries.training_flows`` on the
    checkerboard: ``repeats`` runs of ``steps`` steps each, the flows taking turns, the
    median time per 100 steps. On CUDA the clock of ``time_training`` stops without a final
    synchronisation, so use enough steps that the few queued kernels do not matter."""
    device = torch.device(device)
    data = Checkerboard().sample(100_000, seed=0).to(device)
    flows = libraries.training_flows(device=device)
    samples: dict[str, list[float]] = {name: [] for name in flows}
    for r in range(repeats):
        for name, (module, log_prob) in flows.items():
            result = coupling.time_training(
                module, data, steps, batch_size, log_prob=log_prob, seed=r
            )
            samples[name].append(result.seconds_per_100_steps)
    rows = [
        TrainingRow(name, libraries.parameter_count(module), statistics.median(samples[name]))
        for name, (module, _) in flows.items()
    ]
    if verbose:
        for row in rows:
            print(f"  training {row.library}: {row.steps_per_second:.0f} steps/s", flush=True)
    return rows


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.2f} ms"


def _ratio_cell(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"**{ratio:.2f}** (slower)" if ratio > 1.0 else f"{ratio:.2f}"


def format_parameters(params: dict[str, dict[str, int]]) -> str:
    """Parameter counts of each layer, one column per library."""
    lines = [
        "| layer | course | " + " | ".join(LIBRARIES) + " |",
        "| --- | ---: |" + " ---: |" * len(LIBRARIES),
    ]
    for layer, counts in params.items():
        cells = [f"{counts[k]:,}" if k in counts else "-" for k in ("course", *LIBRARIES)]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_layers(rows: list[LayerRow]) -> str:
    """Median time per call, one column per library, and the course's ratio."""
    lines = [
        "| layer | direction | batch | course | " + " | ".join(LIBRARIES) + " | ratio |",
        "| --- | --- | ---: | ---: |" + " ---: |" * len(LIBRARIES) + " ---: |",
    ]
    notes = []
    for r in rows:
        cells = []
        for k in ("course", *LIBRARIES):
            if k in r.errors:
                cells.append("error")
                notes.append(f"{k}, {r.layer}, {r.direction}, batch {r.batch:,}: {r.errors[k]}")
            else:
                cells.append(_time(r.seconds.get(k)))
        lines.append(
            f"| {r.layer} | {r.direction} | {r.batch:,} | "
            + " | ".join(cells)
            + f" | {_ratio_cell(r.ratio)} |"
        )
    if notes:
        lines.append("")
        lines.extend(f"- error: {n}" for n in notes)
    return "\n".join(lines)


def format_training(rows: list[TrainingRow], steps: int, repeats: int) -> str:
    """Training steps per second, and the course's ratio to the fastest library."""
    course = next((r for r in rows if r.library == "course"), None)
    others = [r for r in rows if r.library != "course"]
    fastest = min(others, key=lambda r: r.seconds_per_100) if others else None
    lines = [
        "| flow | parameters | steps per second | ms per step | time / course's |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        relative = f"{r.seconds_per_100 / course.seconds_per_100:.2f}" if course else "-"
        lines.append(
            f"| {r.library} | {r.params:,} | {r.steps_per_second:.0f} | "
            f"{r.seconds_per_100 * 10:.2f} | {relative} |"
        )
    if course and fastest:
        ratio = course.seconds_per_100 / fastest.seconds_per_100
        lines.append("")
        runs = f"{repeats} run{'s' * (repeats != 1)}"
        lines.append(
            f"Ratio (course time per step / fastest library's, {fastest.library}): "
            f"{_ratio_cell(ratio)}; median of {runs} of {steps} steps each."
        )
    return "\n".join(lines)
