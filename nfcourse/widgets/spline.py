"""The interactive figure of chapter 8: knots and derivatives of a rational-quadratic spline.

``spline_widget()`` draws a spline on the box ``[-3, 3]`` with three bins of equal width.
The end knots are fixed at ``(-3, -3)`` and ``(3, 3)`` with slope 1, where the spline joins
its linear tails. Three sliders set the height of the second interior knot and the
derivatives at the two interior knots (the first interior knot stays at height -1). The
figure shows the spline with its knots and its inverse (its mirror image in the diagonal),
and the derivative ``dy/dx`` on a logarithmic axis.
"""

from __future__ import annotations

import ipywidgets as widgets
import torch

from ..flows.spline import _rational_quadratic_spline
from . import grid_slider, slider_figure

__all__ = ["spline_widget", "spline_from_knots"]

BOUND = 3.0
NUM_BINS = 3


def spline_from_knots(heights, derivatives, n: int = 601):
    """The spline with equal bins on ``[-3, 3]``, interior knot heights ``heights`` and
    interior derivatives ``derivatives``, evaluated on ``n`` points from -4 to 4; returns
    ``(x, y, dy/dx, knot_x, knot_y)`` as float64 tensors."""
    knot_x = torch.linspace(-BOUND, BOUND, NUM_BINS + 1, dtype=torch.float64)
    knot_y = torch.tensor([-BOUND, *heights, BOUND], dtype=torch.float64)
    # unnormalised outputs that reproduce these knots exactly (no minimums)
    widths = torch.zeros(n, NUM_BINS, dtype=torch.float64)
    raw_h = torch.log(knot_y.diff()).expand(n, NUM_BINS)
    d = torch.tensor(derivatives, dtype=torch.float64)
    raw_d = torch.log(torch.expm1(d)) - torch.log(torch.expm1(torch.tensor(1.0)))
    raw_d = raw_d.to(torch.float64).expand(n, NUM_BINS - 1)
    x = torch.linspace(-4, 4, n, dtype=torch.float64)
    y, log_d = _rational_quadratic_spline(x, widths, raw_h, raw_d, False, BOUND, 0.0, 0.0, 0.0)
    return x, y, log_d.exp(), knot_x, knot_y


def _draw_spline(fig, h2: float = 1.0, d1: float = 1.0, d2: float = 1.0) -> None:
    x, y, slope, knot_x, knot_y = spline_from_knots((-1.0, h2), (d1, d2))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.axvspan(-4, -BOUND, color="0.93")
    ax1.axvspan(BOUND, 4, color="0.93")
    ax1.plot([-4, 4], [-4, 4], color="0.7", lw=0.8, ls=":")
    ax1.plot(x, y, color="C0", label="spline $y = g(x)$")
    ax1.plot(y, x, color="C1", ls="--", label="inverse $x = g^{-1}(y)$")
    ax1.plot(knot_x, knot_y, "o", color="C0", ms=4)
    ax1.set(
        xlim=(-4, 4),
        ylim=(-4, 4),
        xlabel="input",
        ylabel="output",
        title="spline, knots and inverse (grey: linear tails)",
    )
    ax1.legend(fontsize=7, loc="upper left")
    ax2.axvspan(-4, -BOUND, color="0.93")
    ax2.axvspan(BOUND, 4, color="0.93")
    ax2.semilogy(x, slope, color="C0")
    ax2.plot(knot_x, [1.0, d1, d2, 1.0], "o", color="C0", ms=4)
    ax2.set(
        xlim=(-4, 4),
        ylim=(0.02, 50),
        xlabel="$x$",
        ylabel="$dy/dx$",
        title="derivative (dots: the knot derivatives)",
    )
    for ax in (ax1, ax2):
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=8)


def spline_widget() -> widgets.VBox:
    """Chapter 8: move the height of the second interior knot and the derivatives at the
    two interior knots, and watch the spline, its inverse and its derivative. Drawn in
    advance at 3, 3 and 2 stops (18 drawings)."""
    sliders = {
        "h2": grid_slider("height 2", [-0.5, 1.0, 2.5], 1.0),
        "d1": grid_slider("slope 1", [0.2, 1.0, 5.0], 1.0),
        "d2": grid_slider("slope 2", [1.0, 5.0], 5.0),
    }
    return slider_figure(_draw_spline, figsize=(7.2, 3.0), **sliders)
