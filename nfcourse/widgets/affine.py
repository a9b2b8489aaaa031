"""The interactive figure of chapter 2: one elementwise affine layer ``x = a z + b``."""

from __future__ import annotations

import math

import ipywidgets as widgets
import torch

from ..flows.affine import ElementwiseAffine
from . import grid_slider, slider_figure

__all__ = ["affine_widget"]


def _draw_affine(fig, a: float, b: float):
    layer = ElementwiseAffine(1, scale=a, shift=b).double()
    grid = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    with torch.no_grad():
        z_of_x, log_det_inverse = layer.inverse(grid.unsqueeze(1))
    z_of_x = z_of_x.squeeze(1)

    def base(z):
        return torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)

    p_x = base(z_of_x) * torch.exp(log_det_inverse)
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    ax1.plot(grid, base(grid), color="C0")
    ax1.fill_between(
        grid, base(grid), where=grid.abs() <= 1, color="C0", alpha=0.3, label="mass on $[-1, 1]$"
    )
    ax1.set(title="base $p_Z(z) = N(z; 0, 1)$", xlabel="$z$", ylabel="density", xlim=(-6, 6))
    ax1.legend(loc="upper left", fontsize=8)
    ax2.plot(grid, base(grid), color="C0", ls=":", lw=1, label="base, for comparison")
    # Plain-text labels that change with the sliders (no mathtext): the widget draws this
    # figure for every combination of its sliders' stops.
    sign = "+" if b >= 0 else "\u2212"
    ax2.plot(grid, p_x, color="C1", label=f"p\u2093 = N({b:.1f}, {a:.2f}\u00b2)")
    ax2.fill_between(
        grid,
        p_x,
        where=z_of_x.abs() <= 1,
        color="C1",
        alpha=0.3,
        label=f"the same mass, on [{b - a:.2f}, {b + a:.2f}]",
    )
    ax2.set(
        title=f"x = {a:.2f} z {sign} {abs(b):.1f}: the density's height \u00f7 {a:.2f}",
        xlabel="$x$",
        xlim=(-6, 6),
        ylim=(0, 1.45),
    )
    ax2.legend(loc="upper left", fontsize=8)
    for ax in (ax1, ax2):
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=8)
    fig.tight_layout()


def affine_widget() -> widgets.VBox:
    """Chapter 2: move the scale ``a`` and the shift ``b`` of ``x = a z + b`` and watch the
    base density slide and stretch; the shaded mass stays the same while the height of the
    density is divided by ``a``. The figure is drawn in advance at 7 x 5 slider stops."""
    return slider_figure(
        _draw_affine,
        a=grid_slider("scale a", [0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0], 1.5),
        b=grid_slider("shift b", [-2.0, -1.0, 0.0, 1.0, 2.0], 1.0, fmt=".1f"),
        figsize=(7.2, 2.8),
    )
