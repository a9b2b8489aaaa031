"""Chapter 3's interactive figure: one planar layer of the plane, moved by sliders.

``planar_widget()`` shows, for ``x = z + u h(w^T z + b)``:

1. the square grid deformed with the raw ``u`` (it folds over itself when ``w^T u < -1``);
2. the grid deformed with the constrained ``u_hat`` the layer actually uses;
3. the density of ``x`` when ``z`` is standard normal, ``p_X(x) = p_Z(z) / |1 + u_hat^T psi(z)|``
   with ``z = f^{-1}(x)`` found by the planar inverse.

The titles state live whether ``w^T u >= -1`` holds and which ``u_hat`` replaces ``u``.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import torch

from ..core import Flow
from ..flows.planar import PlanarFlow
from ..plot import plot_deformed_grid
from . import grid_slider, slider_figure

__all__ = ["planar_widget", "draw_planar"]

_BOUNDS = ((-3.0, 3.0), (-3.0, 3.0))


def _layer(u1: float, u2: float, w1: float, w2: float, b: float, constrained: bool) -> PlanarFlow:
    layer = PlanarFlow(2, constrained=constrained).double()
    with torch.no_grad():
        layer.u.copy_(torch.tensor([u1, u2]))
        layer.w.copy_(torch.tensor([w1, w2]))
        layer.b.fill_(b)
    return layer


def draw_planar(
    fig, u1: float, u2: float, w1: float, w2: float, b: float, resolution: int = 120
) -> None:
    """Draw the three panels of ``planar_widget`` into ``fig`` for the given parameters."""
    ax_raw, ax_hat, ax_density = fig.subplots(1, 3)
    if w1 == 0 and w2 == 0:
        for ax in (ax_raw, ax_hat, ax_density):
            ax.set_axis_off()
        ax_hat.set_title("w = 0: the layer is a shift; move w away from zero")
        return
    raw = _layer(u1, u2, w1, w2, b, constrained=False)
    layer = _layer(u1, u2, w1, w2, b, constrained=True)
    wu = w1 * u1 + w2 * u2
    with torch.no_grad():
        u_hat = layer.u_hat.tolist()
        m = float(layer.w @ layer.u_hat)
    holds = wu >= -1
    # Plain-text titles (no mathtext): the widget draws this figure dozens of times.
    plot_deformed_grid(
        raw,
        _BOUNDS,
        ax=ax_raw,
        n_lines=15,
        color="C3" if not holds else "C0",
        title=(
            f"raw u: w\u1d40u = {wu:.2f}\n"
            + ("\u2265 \u22121: invertible" if holds else "< \u22121: folds")
        ),
    )
    plot_deformed_grid(
        layer,
        _BOUNDS,
        ax=ax_hat,
        n_lines=15,
        color="C2",
        title=f"\u00fb = ({u_hat[0]:.2f}, {u_hat[1]:.2f})\nw\u1d40\u00fb = {m:.2f}",
    )
    model = Flow(layer).double()
    (lo1, hi1), (lo2, hi2) = _BOUNDS
    g1 = torch.linspace(lo1, hi1, resolution, dtype=torch.float64)
    g2 = torch.linspace(lo2, hi2, resolution, dtype=torch.float64)
    x1, x2 = torch.meshgrid(g1, g2, indexing="xy")
    with torch.no_grad():
        logp = model.log_prob(torch.stack([x1.flatten(), x2.flatten()], dim=1))
    image = ax_density.imshow(
        np.exp(logp.reshape(resolution, resolution).numpy()),
        origin="lower",
        extent=(lo1, hi1, lo2, hi2),
        cmap="viridis",
    )
    colorbar = fig.colorbar(image, ax=ax_density, fraction=0.046, pad=0.04)
    colorbar.ax.tick_params(labelsize=7)
    ax_density.set(title="density of $x = f(z)$\n(with $\\hat u$)", xlabel="$x_1$", ylabel="$x_2$")
    for ax in (ax_raw, ax_hat):
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlim(-4.5, 4.5)
        ax.set_ylim(-4.5, 4.5)
    for ax in (ax_raw, ax_hat, ax_density):
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=8)
        ax.xaxis.label.set_fontsize(9)
        ax.yaxis.label.set_fontsize(9)
    fig.tight_layout()


def planar_widget() -> widgets.VBox:
    """Chapter 3: sliders for ``u`` of one planar layer of the plane, with ``w = (1.5, 0.5)``
    and ``b = 0``.

    Push ``w^T u`` below -1 (for example ``u = (-2, 0)``) and the raw map folds the grid
    over itself, while ``u_hat`` keeps the layer invertible. The figure is drawn in advance
    at every combination of the sliders' stops (6 x 3).
    """
    return slider_figure(
        lambda fig, u1, u2: draw_planar(fig, u1, u2, w1=1.5, w2=0.5, b=0.0, resolution=80),
        u1=grid_slider("u\u2081", [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0], -2.0, fmt=".1f"),
        u2=grid_slider("u\u2082", [-1.0, 0.0, 1.0], 1.0, fmt=".1f"),
        figsize=(7.2, 2.9),
    )
