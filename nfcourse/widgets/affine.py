"""The interactive figure of chapter 2: one elementwise affine layer ``x = a z + b``."""

from __future__ import annotations

import math

import ipywidgets as widgets
import torch

from ..flows.affine import ElementwiseAffine
from . import slider_figure

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
    ax1.fill_between(grid, base(grid), where=grid.abs() <= 1, color="C0", alpha=0.3,
                     label="mass on $[-1, 1]$")
    ax1.set(title="base $p_Z(z) = N(z; 0, 1)$", xlabel="$z$", ylabel="density", xlim=(-6, 6))
    ax1.legend(loc="upper left", fontsize=8)
    ax2.plot(grid, base(grid), color="C0", ls=":", lw=1, label="base, for comparison")
    ax2.plot(grid, p_x, color="C1", label=f"$p_X$ = N({b:.1f}, {a:.2f}$^2$)")
    ax2.fill_between(grid, p_x, where=z_of_x.abs() <= 1, color="C1", alpha=0.3,
                     label=f"the same mass, on $[{b - a:.2f}, {b + a:.2f}]$")
    ax2.set(title=f"$x = {a:.2f}\\,z {'+' if b >= 0 else '-'} {abs(b):.1f}$: "
            f"$p_X(x) = p_Z(z) / {a:.2f}$", xlabel="$x$", xlim=(-6, 6), ylim=(0, 1.45))
    ax2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()


def affine_widget() -> widgets.VBox:
    """Chapter 2: move the scale ``a`` and the shift ``b`` of ``x = a z + b`` and watch the
    base density slide and stretch; the shaded mass stays the same while the height of the
    density is divided by ``a``."""
    slider = dict(continuous_update=False, readout_format=".2f")
    return slider_figure(
        _draw_affine,
        a=widgets.FloatSlider(value=1.5, min=0.3, max=3.0, step=0.05, description="scale a",
                              **slider),
        b=widgets.FloatSlider(value=1.0, min=-3.0, max=3.0, step=0.1, description="shift b",
                              **slider),
        figsize=(9, 3.2),
    )
