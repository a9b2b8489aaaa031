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
from . import slider_figure

__all__ = ["planar_widget", "draw_planar"]

_BOUNDS = ((-3.0, 3.0), (-3.0, 3.0))


def _layer(u1: float, u2: float, w1: float, w2: float, b: float,
           constrained: bool) -> PlanarFlow:
    layer = PlanarFlow(2, constrained=constrained).double()
    with torch.no_grad():
        layer.u.copy_(torch.tensor([u1, u2]))
        layer.w.copy_(torch.tensor([w1, w2]))
        layer.b.fill_(b)
    return layer


def draw_planar(fig, u1: float, u2: float, w1: float, w2: float, b: float,
                resolution: int = 120) -> None:
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
    plot_deformed_grid(raw, _BOUNDS, ax=ax_raw, n_lines=15, color="C3" if not holds else "C0",
                       title=(f"raw u: $w^Tu$ = {wu:.2f} " + ("$\\geq -1$, invertible" if holds
                                                             else "$< -1$: folds")))
    plot_deformed_grid(layer, _BOUNDS, ax=ax_hat, n_lines=15, color="C2",
                       title=f"$\\hat u$ = ({u_hat[0]:.2f}, {u_hat[1]:.2f}), "
                             f"$w^T\\hat u$ = {m:.2f}")
    model = Flow(layer).double()
    (lo1, hi1), (lo2, hi2) = _BOUNDS
    g1 = torch.linspace(lo1, hi1, resolution, dtype=torch.float64)
    g2 = torch.linspace(lo2, hi2, resolution, dtype=torch.float64)
    x1, x2 = torch.meshgrid(g1, g2, indexing="xy")
    with torch.no_grad():
        logp = model.log_prob(torch.stack([x1.flatten(), x2.flatten()], dim=1))
    ax_density.imshow(np.exp(logp.reshape(resolution, resolution).numpy()), origin="lower",
                      extent=(lo1, hi1, lo2, hi2), cmap="viridis")
    ax_density.set(title="density of $x = f(z)$ (with $\\hat u$)", xlabel="$x_1$",
                   ylabel="$x_2$")
    for ax in (ax_raw, ax_hat):
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlim(-4.5, 4.5)
        ax.set_ylim(-4.5, 4.5)
    fig.tight_layout()


def planar_widget() -> widgets.VBox:
    """Chapter 3: sliders for ``u``, ``w`` and ``b`` of one planar layer of the plane.

    Push ``w^T u`` below -1 (for example ``u = (-2, 0)``, ``w = (1.5, 0)``) and the raw map
    folds the grid over itself, while ``u_hat`` keeps the layer invertible.
    """
    slider = dict(continuous_update=False, readout_format=".1f", step=0.1,
                  style={"description_width": "initial"},
                  layout=widgets.Layout(width="190px"))
    return slider_figure(
        draw_planar,
        u1=widgets.FloatSlider(value=-2.0, min=-4.0, max=4.0, description="u1", **slider),
        u2=widgets.FloatSlider(value=1.0, min=-4.0, max=4.0, description="u2", **slider),
        w1=widgets.FloatSlider(value=1.5, min=-3.0, max=3.0, description="w1", **slider),
        w2=widgets.FloatSlider(value=0.5, min=-3.0, max=3.0, description="w2", **slider),
        b=widgets.FloatSlider(value=0.0, min=-3.0, max=3.0, description="b", **slider),
        figsize=(12, 4.0),
    )
