"""Interactive figures (ipywidgets) that move without a Python kernel behind them.

A figure with sliders is drawn once for every combination of slider positions on a small
grid, when the cell runs. The sliders then only choose which drawing is shown, and that
choice happens in the browser: each slider's position is linked (``ipywidgets.jslink``) to
the ``selected_index`` of a ``Stack`` of pictures. The same widget therefore moves in
JupyterLab and on the static website, where the saved widget state holds every picture and
the embedded widget manager runs the links. The price is a grid of positions instead of a
continuum, so each chapter picks a few telling values per slider.

``slider_figure`` is the one building block; ``grid_slider`` makes its sliders. Each
chapter's widget lives in a module named like the chapter's flow module
(``nfcourse.widgets.affine``, ``nfcourse.widgets.planar``, ...).
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["slider_figure", "grid_slider", "change_of_variables_widget"]

#: Pixel width of a drawing: the width of the website's text column, so that the picture
#: is shown at its own size there (and in JupyterLab).
FIGURE_WIDTH_PX = 720
_DPI = 100
#: Most drawings one widget may precompute: the product of its sliders' grid sizes.
MAX_PICTURES = 100


def grid_slider(
    description: str, values: Sequence[float], value: float, fmt: str = ".2f"
) -> widgets.SelectionSlider:
    """A slider that stops at ``values`` (sorted), starting at ``value`` (one of them).

    ``slider_figure`` draws its figure at every stop, so keep ``values`` short."""
    values = [float(v) for v in values]
    if len(values) < 2 or sorted(values) != values or len(set(values)) != len(values):
        raise ValueError(
            f"grid_slider({description!r}): values must be at least two "
            f"distinct numbers in increasing order, got {values}"
        )
    if float(value) not in values:
        raise ValueError(
            f"grid_slider({description!r}): the start value must be one of the "
            f"stops {values}, got {value}; add it to values"
        )
    options = [(format(v, fmt), v) for v in values]
    return widgets.SelectionSlider(
        options=options,
        value=float(value),
        description=description,
        continuous_update=True,
        style={"description_width": "4.5em"},
        layout=widgets.Layout(width="auto", min_width="230px"),
    )


def _as_grid_slider(name: str, slider: widgets.Widget) -> widgets.SelectionSlider:
    """Accept any numeric ipywidgets slider: a ``SelectionSlider`` as it is; a float or int
    slider becomes five evenly spaced stops between its ends, plus its start value."""
    if isinstance(slider, widgets.SelectionSlider):
        return slider
    if isinstance(slider, (widgets.FloatSlider, widgets.IntSlider, widgets.FloatLogSlider)):
        if isinstance(slider, widgets.FloatLogSlider):
            stops = slider.base ** np.linspace(slider.min, slider.max, 5)
        else:
            stops = np.linspace(slider.min, slider.max, 5)
        values = sorted({round(float(v), 6) for v in (*stops, slider.value)})
        return grid_slider(slider.description or name, values, round(float(slider.value), 6))
    raise TypeError(
        f"slider_figure: slider {name!r} must be an ipywidgets SelectionSlider "
        f"(see grid_slider) or FloatSlider/IntSlider/FloatLogSlider, "
        f"got {type(slider).__name__}"
    )


def _margins(draw: Callable[..., None], figsize, samples: list[dict]) -> dict:
    """Subplot margins that fit every sample drawing: ``tight_layout`` is the slow half of a
    drawing, so it runs on a few slider positions and the widest margins serve them all."""
    found = []
    for values in samples:
        fig = plt.figure(figsize=figsize, dpi=_DPI)
        try:
            with torch.no_grad():
                draw(fig, **values)
            p = fig.subplotpars
            found.append((p.left, p.bottom, p.right, p.top, p.wspace, p.hspace))
        finally:
            plt.close(fig)
    left, bottom, right, top, wspace, hspace = zip(*found, strict=False)
    return dict(
        left=max(left),
        bottom=max(bottom),
        right=min(right),
        top=min(top),
        wspace=max(wspace),
        hspace=max(hspace),
    )


def _png(draw: Callable[..., None], figsize, values: dict, margins: dict | None = None) -> bytes:
    from PIL import Image

    fig = plt.figure(figsize=figsize, dpi=_DPI)
    if margins is not None:
        fig.tight_layout = lambda *args, **kwargs: fig.subplots_adjust(**margins)
    try:
        with torch.no_grad():
            draw(fig, **values)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=_DPI)
    finally:
        plt.close(fig)
    # A palette of 128 colours keeps lines and colour maps intact at a third of the size.
    picture = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    picture = picture.quantize(colors=128, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    picture.save(out, format="png")
    return out.getvalue()


def _stack(
    pictures: list[widgets.Image],
    sliders: list[widgets.SelectionSlider],
    level: int = 0,
    first: int = 0,
) -> widgets.Widget:
    """Nested stacks: the stack at ``level`` shows the child picked by ``sliders[level]``."""
    if level == len(sliders):
        return pictures[first]
    stride = math.prod(len(s.options) for s in sliders[level + 1 :])
    children = [
        _stack(pictures, sliders, level + 1, first + i * stride)
        for i in range(len(sliders[level].options))
    ]
    stack = widgets.Stack(children, selected_index=sliders[level].index)
    widgets.jslink((sliders[level], "index"), (stack, "selected_index"))
    return stack


def slider_figure(draw: Callable[..., None], figsize=(7.2, 2.8), **sliders) -> widgets.VBox:
    """A figure ``draw(fig, **values)`` with one slider per keyword, drawn in advance.

    Args:
        draw: draws into the empty figure ``fig`` given one value per slider name.
        figsize: size in inches; drawn at 100 dpi, so 7.2 inches fill the website's column.
        sliders: name -> slider, best made with ``grid_slider``; other numeric ipywidgets
            sliders are turned into five stops.

    The figure is drawn for every combination of slider stops (at most ``MAX_PICTURES``);
    an error in ``draw`` is raised here, so a broken figure fails its notebook.
    """
    if not sliders:
        raise ValueError(
            "slider_figure: give at least one slider, e.g. "
            "a=grid_slider('a', [0.5, 1.0, 2.0], 1.0)"
        )
    names = list(sliders)
    controls = [_as_grid_slider(name, sliders[name]) for name in names]
    count = math.prod(len(s.options) for s in controls)
    if count > MAX_PICTURES:
        sizes = " x ".join(str(len(s.options)) for s in controls)
        raise ValueError(
            f"slider_figure: the sliders' stops make {sizes} = {count} drawings, "
            f"more than {MAX_PICTURES}; use fewer stops per slider"
        )
    width_px = round(figsize[0] * _DPI)
    grid = [
        {name: value for name, (_, value) in zip(names, combination, strict=False)}
        for combination in itertools.product(*(s.options for s in controls))
    ]
    start = {name: s.value for name, s in zip(names, controls, strict=False)}
    margins = _margins(draw, figsize, [start, grid[0], grid[-1]])
    seen: dict[bytes, widgets.Image] = {}
    pictures = []
    for values in grid:
        png = _png(draw, figsize, values, margins)
        if png not in seen:  # equal drawings share one picture in the saved page
            seen[png] = widgets.Image(
                value=png,
                format="png",
                layout=widgets.Layout(width=f"{width_px}px", max_width="100%", height="auto"),
            )
        pictures.append(seen[png])
    panel = widgets.GridBox(
        controls,
        layout=widgets.Layout(
            grid_template_columns="repeat(auto-fill, minmax(230px, 1fr))",
            grid_gap="2px 16px",
            width="100%",
            max_width=f"{width_px}px",
        ),
    )
    return widgets.VBox([panel, _stack(pictures, controls)], layout=widgets.Layout(width="100%"))


def _draw_change_of_variables(
    fig, skew: float, tail: float, start: float, scale: float = 1.0, width: float = 0.4
):
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
    ax1.text(
        0.03,
        0.95,
        f"dz = {width:.2f}\nmass {mass_z:.3f}",
        transform=ax1.transAxes,
        va="top",
        fontsize=8,
    )
    ax1.set(title="base density $p_Z(z)$", xlabel="$z$", ylabel="density", xlim=(-4, 4))
    ax2.plot(z, x, color="C2")
    ax2.axvspan(start, start + width, color="C0", alpha=0.25, lw=0)
    ax2.axhspan(x0, x1, color="C1", alpha=0.25, lw=0)
    ax2.plot(z_in, x_in, color="k", lw=2)
    ax2.set(title="the map $x = f(z)$", xlabel="$z$", ylabel="$x$", xlim=(-4, 4), ylim=x_lim)
    ax3.plot(x, p_x, color="C1")
    ax3.fill_between(x_in.squeeze(1), p_x_in, color="C1", alpha=0.35)
    ax3.text(
        0.03,
        0.95,
        f"dx = {x1 - x0:.2f}\nmass {mass_x:.3f}",
        transform=ax3.transAxes,
        va="top",
        fontsize=8,
    )
    ax3.set(title=r"$p_X(x) = p_Z(z)\,/\,|f\,'(z)|$", xlabel="$x$", ylabel="density", xlim=x_lim)
    for ax in (ax1, ax2, ax3):
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=8)
        ax.xaxis.label.set_fontsize(9)
        ax.yaxis.label.set_fontsize(9)
    fig.tight_layout()


def change_of_variables_widget() -> widgets.VBox:
    """Chapter 1: move the skew ``eps`` and the tail weight ``tau`` of
    ``x = sinh(tau (asinh(z) + eps))`` and watch the density of ``x`` thin out where the map
    is steep and pile up where it is flat.

    The shaded interval ``[z0, z0 + 0.4]`` (third slider) and its image under the map hold
    the same probability mass; both masses are printed on the figure (the one on the right
    is the integral of the change-of-variables density over the image interval). The figure
    is drawn in advance at every combination of the sliders' stops (5 x 3 x 5)."""
    return slider_figure(
        _draw_change_of_variables,
        skew=grid_slider("skew \u03b5", [-1.0, -0.5, 0.0, 0.5, 1.0], 0.5),
        tail=grid_slider("tail \u03c4", [0.6, 1.0, 1.5], 1.0),
        start=grid_slider("start z\u2080", [-2.0, -1.0, 0.0, 0.5, 1.5], 0.5),
        figsize=(7.2, 2.6),
    )
