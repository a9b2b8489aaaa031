"""The interactive figure of chapter 7: the degrees and masks of a small MADE.

``made_widget()`` draws a MADE with ``D = 4`` inputs and two hidden layers. Each unit is
labelled with its degree; a line joins two units where the mask lets the weight through.
Beside it is the pattern of the Jacobian ``d out_i / d x_j`` that the masks allow, rows and
columns in the coordinates' own order: strictly lower triangular once rows and columns are
sorted by the ordering. One slider picks the ordering, another the hidden width.
"""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib
import torch

from ..flows.made import made_degrees, made_masks
from . import grid_slider, slider_figure

__all__ = ["made_widget", "ORDERS"]

DIM = 4
#: The orderings the slider steps through: ``order[j]`` is the position of ``x_j``.
ORDERS = ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2])


def made_connectivity(
    order, width: int
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Degrees, masks and the allowed-dependence pattern ``(D, D)`` (output i on input j,
    from the product of the masks) of a MADE with two hidden layers of ``width`` units."""
    degrees = made_degrees(torch.as_tensor(order), (width, width))
    masks = made_masks(degrees[0], degrees[1:])
    path = masks[0]
    for mask in masks[1:]:
        path = mask @ path
    return degrees, masks, (path > 0)


def _draw_made(fig, ordering: float, width: float) -> None:
    order = ORDERS[int(ordering)]
    degrees, masks, pattern = made_connectivity(order, int(width))
    layers = degrees + [degrees[0]]  # the outputs carry the degrees of the inputs
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.7, 1]})
    cmap = matplotlib.colormaps["viridis"]

    def xy(layer: int, k: int) -> tuple[float, float]:
        n = len(layers[layer])
        return (k - (n - 1) / 2, -layer)

    for layer, mask in enumerate(masks):
        for i, j in mask.nonzero().tolist():
            (x0, y0), (x1, y1) = xy(layer, j), xy(layer + 1, i)
            ax1.plot([x0, x1], [y0, y1], color="0.75", lw=0.6, zorder=1)
    names = ["inputs x", "hidden 1", "hidden 2", "outputs"]
    for layer, deg in enumerate(layers):
        for k, d in enumerate(deg.tolist()):
            x, y = xy(layer, k)
            ax1.scatter([x], [y], s=170, color=cmap(d / DIM), zorder=2, edgecolor="k", lw=0.5)
            ax1.text(
                x,
                y,
                str(d),
                ha="center",
                va="center",
                fontsize=7,
                zorder=3,
                color="w" if d < DIM / 2 else "k",
            )
        ax1.text(-4.3, -layer, names[layer], ha="left", va="center", fontsize=8)
    ax1.set(xlim=(-4.4, 3.6), ylim=(-3.5, 0.5), title=f"degrees and masks, order {order}")
    ax1.axis("off")
    image = ax2.imshow(pattern.int(), cmap="Greys", vmin=0, vmax=1)
    ax2.set(
        title="output i may depend on x_j",
        xlabel="input j",
        ylabel="output i",
        xticks=range(DIM),
        yticks=range(DIM),
    )
    del image
    for ax in (ax1, ax2):
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=8)
    fig.tight_layout()


def made_widget() -> widgets.VBox:
    """Chapter 7: pick an ordering of four inputs and the width of the two hidden layers;
    see the degrees, the masked connections and the dependence pattern they allow."""
    return slider_figure(
        _draw_made,
        figsize=(7.2, 3.0),
        ordering=grid_slider("ordering", [0.0, 1.0, 2.0, 3.0], 2.0, fmt=".0f"),
        width=grid_slider("hidden width", [3.0, 5.0, 8.0], 5.0, fmt=".0f"),
    )
