"""The interactive figure of chapter 4: bin masses of a piecewise-linear map.

``piecewise_widget()`` has five bins. Bin 0 holds the unit of mass, 1; four sliders set the
masses of bins 1 to 4 relative to it (multiplying every mass by the same number changes
nothing, so one of them may as well be fixed). The masses are divided by their sum (the
softmax of their logarithms) to give ``q_k``; the figure draws the map ``g`` of ``[0, 1]``
with its bins, and the histogram density ``K q_k`` that ``g`` turns into the uniform
distribution.
"""

from __future__ import annotations

import ipywidgets as widgets
import torch

from ..flows.piecewise import piecewise_linear
from . import grid_slider, slider_figure

__all__ = ["piecewise_widget"]

NUM_BINS = 5


def _draw_piecewise(fig, **masses: float) -> None:
    m = torch.tensor([masses.get(f"m{k}", 1.0) for k in range(NUM_BINS)], dtype=torch.float64)
    logits = torch.log(m).unsqueeze(0)
    q = m / m.sum()
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), q.cumsum(0)])
    edges = torch.linspace(0, 1, NUM_BINS + 1, dtype=torch.float64)
    x = torch.linspace(0, 1, 501, dtype=torch.float64).unsqueeze(1)
    y, _ = piecewise_linear(x, logits)

    ax1, ax2 = fig.subplots(1, 2)
    for k in range(NUM_BINS):
        ax1.axvline(float(edges[k + 1]), color="0.85", lw=0.8)
        ax1.axhline(float(cumulative[k + 1]), color="0.85", lw=0.8)
    ax1.plot(x[:, 0], y[:, 0], color="C2")
    ax1.plot(edges, cumulative, "o", color="C2", ms=4)
    ax1.set(
        title=r"the map $g$: rise $q_k$ over bin $k$",
        xlabel="$x$",
        ylabel="$u = g(x)$",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax2.stairs(NUM_BINS * q, edges, fill=True, color="C1", alpha=0.6)
    ax2.axhline(1.0, color="0.5", ls="--", lw=0.8)
    ax2.set(
        title=r"the density $K q_k$ on bin $k$ (dashed: uniform)",
        xlabel="$x$",
        ylabel="density",
        xlim=(0, 1),
        ylim=(0, max(2.2, 1.15 * NUM_BINS * float(q.max()))),
    )
    for ax in (ax1, ax2):
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=8)
    fig.tight_layout()


def piecewise_widget() -> widgets.VBox:
    """Chapter 4: move the masses of bins 1 to 4 (bin 0 holds mass 1) and watch the map
    ``g`` bend and the density ``K q_k`` it models rise and fall; the masses are normalised
    to sum to one. The figure is drawn in advance at 3 stops per slider (81 drawings)."""
    start = {"m1": 4.0, "m2": 0.25, "m3": 4.0, "m4": 1.0}
    sliders = {
        name: grid_slider(f"bin {name[1]}", [0.25, 1.0, 4.0], value)
        for name, value in start.items()
    }
    return slider_figure(_draw_piecewise, figsize=(7.2, 2.8), **sliders)
