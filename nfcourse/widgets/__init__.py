"""Interactive figures (ipywidgets): sliders that redraw a matplotlib figure.

In JupyterLab the sliders re-run the drawing function; in the website the widget state
saved at build time shows the sliders and the first figure (there is no kernel to redraw).

``slider_figure`` is the one building block; each chapter's widget lives in a module named
like the chapter's flow module (``nfcourse.widgets.affine``, ``nfcourse.widgets.planar``, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

__all__ = ["slider_figure", "change_of_variables_widget"]


def slider_figure(draw: Callable[..., None], figsize=(8, 3.2), **sliders) -> widgets.VBox:
    """A figure redrawn by ``draw(fig, **values)`` whenever a slider moves.

    Args:
        draw: draws into the (cleared) figure ``fig`` given the slider values.
        sliders: name -> ``ipywidgets`` slider (e.g. ``FloatSlider``).
    """
    out = widgets.Output()
    errors: list[BaseException] = []

    def redraw(**values):
        with out:
            out.clear_output(wait=True)
            try:
                fig = plt.figure(figsize=figsize)
                with torch.no_grad():
                    draw(fig, **values)
                plt.show()
            except Exception as error:
                # The Output widget would swallow the error and only print it; keep it so
                # a broken figure fails loudly (and fails the notebook tests).
                errors.append(error)
                raise

    controls = widgets.interactive(redraw, **sliders)
    box = widgets.VBox([widgets.HBox(controls.children[:-1]), out])
    controls.update()
    if errors:
        raise errors[0]
    return box


def _draw_change_of_variables(fig, skew: float, tail: float, scale: float, start: float,
                              width: float = 0.4):
    from ..core import Compose
    from ..flows.affine import ElementwiseAffine
    from ..flows.elementwise import SinhArcsinh

    f = Compose(SinhArcsinh(1, skew=skew, tail=tail), ElementwiseAffine(1, scale=scale))
    f = f.double()
    z = torch.linspace(-4, 4, 801, dtype=torch.float64).unsqueeze(1)
    x, log_det = f(z)
    p_z = torch.exp(-0.5 * z.squeeze(1) ** 2) / (2 * torch.pi) ** 0.5
    p_x = p_z * torch.exp(-log_det)
    # The interval [z0, z0 + dz] and its image [x0, x0 + dx] under f.
    z_in = torch.linspace(start, start + width, 201, dtype=torch.float64).unsqueeze(1)
    x_in, log_det_in = f(z_in)
    p_z_in = torch.exp(-0.5 * z_in.squeeze(1) ** 2) / (2 * torch.pi) ** 0.5
    p_x_in = p_z_in * torch.exp(-log_det_in)
    mass_z = float(torch.special.ndtr(z_in[-1, 0]) - torch.special.ndtr(z_in[0, 0]))
    mass_x = float(torch.trapezoid(p_x_in, x_in.squeeze(1)))
    x0, x1 = float(x_in[0, 0]), float(x_in[-1, 0])
    # Show x over the image of [-3.5, 3.5], which holds all but 0.05% of the mass.
    inner = (z.abs() <= 3.5).squeeze(1)
    x_lim = (float(x[inner].min()), float(x[inner].max()))

    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.plot(z, p_z, color="C0")
    ax1.fill_between(z_in.squeeze(1), p_z_in, color="C0", alpha=0.35)
    ax1.text(0.03, 0.95, f"dz = {width:.2f}\nmass {mass_z:.3f}", transform=ax1.transAxes,
             va="top", fontsize=9)
    ax1.set(title="base density $p_Z(z)$", xlabel="$z$", ylabel="density", xlim=(-4, 4))
    ax2.plot(z, x, color="C2")
    ax2.axvspan(start, start + width, color="C0", alpha=0.25, lw=0)
    ax2.axhspan(x0, x1, color="C1", alpha=0.25, lw=0)
    ax2.plot(z_in, x_in, color="k", lw=2)
    ax2.set(title="the map $x = f(z)$", xlabel="$z$", ylabel="$x$", xlim=(-4, 4),
            ylim=x_lim)
    ax3.plot(x, p_x, color="C1")
    ax3.fill_between(x_in.squeeze(1), p_x_in, color="C1", alpha=0.35)
    ax3.text(0.03, 0.95, f"dx = {x1 - x0:.2f}\nmass {mass_x:.3f}", transform=ax3.transAxes,
             va="top", fontsize=9)
    ax3.set(title=r"$p_X(x) = p_Z(z)\,/\,|f\,'(z)|$", xlabel="$x$", ylabel="density",
            xlim=x_lim)
    fig.tight_layout()


def change_of_variables_widget() -> widgets.VBox:
    """Chapter 1: move the sliders of ``x = a * sinh(tau (asinh(z) + eps))`` and watch the
    density of ``x`` thin out where the map is steep and pile up where it is flat.

    The shaded interval ``[z0, z0 + 0.4]`` and its image under the map hold the same
    probability mass; both masses are printed on the figure (the one on the right is the
    integral of the change-of-variables density over the image interval)."""
    def slider(description: str, value: float, low: float, high: float, step: float):
        return widgets.FloatSlider(
            value=value, min=low, max=high, step=step, description=description,
            continuous_update=False, readout_format=".2f",
            style={"description_width": "initial"}, layout=widgets.Layout(width="235px"),
        )

    return slider_figure(
        _draw_change_of_variables,
        skew=slider("skew \u03b5", 0.5, -1.5, 1.5, 0.1),
        tail=slider("tail \u03c4", 1.0, 0.5, 1.6, 0.05),
        scale=slider("scale a", 1.0, 0.3, 2.0, 0.05),
        start=slider("interval z\u2080", 0.5, -3.0, 2.5, 0.1),
        figsize=(10, 3.2),
    )
