"""Figures of the course: densities, samples, deformed grids and layer-by-layer transport.

Every function draws into a given matplotlib ``Axes`` (or a new one), sets a title and
axis labels, and returns the ``Axes`` so a chapter can add to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

__all__ = [
    "density_grid",
    "plot_density",
    "add_colorbar",
    "plot_density_1d",
    "plot_samples",
    "plot_deformed_grid",
    "plot_layers",
    "plot_loss",
    "plot_image_grid",
]

Bounds = Sequence[Sequence[float]]


def _dtype_of(log_prob: Callable) -> torch.dtype:
    """The dtype to evaluate ``log_prob`` in: that of the model it is a method of (one dtype
    per model is the package's policy), else torch's default dtype."""
    owner = getattr(log_prob, "__self__", log_prob)
    if isinstance(owner, torch.nn.Module):
        for tensor in (*owner.parameters(), *owner.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.get_default_dtype()


@torch.no_grad()
def density_grid(
    log_prob: Callable[[Tensor], Tensor],
    bounds: Bounds = ((-4, 4), (-4, 4)),
    resolution: int = 200,
    dtype: torch.dtype | None = None,
    device=None,
    batch_size: int = 65_536,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate ``log_prob`` on a ``resolution x resolution`` grid over ``bounds``, in
    ``dtype`` (by default the dtype of the model whose method ``log_prob`` is).

    Returns ``(x1, x2, logp)``, each an array of shape ``(resolution, resolution)``."""
    (a, b), (c, d) = bounds
    dtype = dtype or _dtype_of(log_prob)
    g1 = torch.linspace(a, b, resolution, dtype=dtype)
    g2 = torch.linspace(c, d, resolution, dtype=dtype)
    x1, x2 = torch.meshgrid(g1, g2, indexing="xy")
    pts = torch.stack([x1.flatten(), x2.flatten()], dim=1)
    if device is not None:
        pts = pts.to(device)
    logp = torch.cat([log_prob(chunk) for chunk in pts.split(batch_size)])
    return x1.numpy(), x2.numpy(), logp.reshape(resolution, resolution).cpu().double().numpy()


def _axes(ax):
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    return ax


def add_colorbar(image, ax, label: str = "density"):
    """A colour bar for ``image`` (what ``imshow`` or ``contourf`` returned) beside ``ax``,
    as tall as the axes and labelled, so that a colour can be read as a number."""
    bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(label)
    return bar


def plot_density(
    log_prob: Callable[[Tensor], Tensor],
    bounds: Bounds = ((-4, 4), (-4, 4)),
    ax=None,
    title: str = "density",
    resolution: int = 200,
    cmap: str = "viridis",
    device=None,
    colorbar: bool = False,
    colorbar_label: str = "density",
    vmax: float | None = None,
):
    """Heat map of ``exp(log_prob)`` on ``bounds``.

    ``colorbar=True`` adds a colour bar labelled ``colorbar_label``; ``vmax`` fixes the top
    of the colour scale (for example to share one scale across panels)."""
    ax = _axes(ax)
    x1, x2, logp = density_grid(log_prob, bounds, resolution, device=device)
    (a, b), (c, d) = bounds
    image = ax.imshow(
        np.exp(logp),
        origin="lower",
        extent=(a, b, c, d),
        cmap=cmap,
        aspect="auto",
        vmin=0.0,
        vmax=vmax,
    )
    ax.set(title=title, xlabel="$x_1$", ylabel="$x_2$")
    if colorbar:
        add_colorbar(image, ax, colorbar_label)
    return ax


def plot_density_1d(
    log_prob: Callable[[Tensor], Tensor],
    bounds: Sequence[float] = (-4, 4),
    ax=None,
    label: str | None = None,
    title: str = "density",
    resolution: int = 1000,
    **style,
):
    """Line plot of ``exp(log_prob)`` for a 1D density (``log_prob`` takes ``(B, 1)``)."""
    ax = _axes(ax)
    x = torch.linspace(bounds[0], bounds[1], resolution, dtype=_dtype_of(log_prob)).unsqueeze(1)
    with torch.no_grad():
        p = log_prob(x).exp()
    ax.plot(x.squeeze(1).numpy(), p.cpu().numpy(), label=label, **style)
    ax.set(title=title, xlabel="$x$", ylabel="density")
    if label is not None:
        ax.legend()
    return ax


def plot_samples(
    x: Tensor,
    ax=None,
    title: str = "samples",
    bounds: Bounds | None = None,
    s: float = 2.0,
    alpha: float = 0.4,
    color=None,
    **style,
):
    """Scatter plot of 2D samples ``x`` of shape ``(N, 2)``."""
    ax = _axes(ax)
    x = x.detach().cpu().numpy()
    ax.scatter(x[:, 0], x[:, 1], s=s, alpha=alpha, c=color, linewidths=0, **style)
    if bounds is not None:
        ax.set_xlim(*bounds[0])
        ax.set_ylim(*bounds[1])
    ax.set(title=title, xlabel="$x_1$", ylabel="$x_2$")
    ax.set_aspect("equal", adjustable="box")
    return ax


@torch.no_grad()
def plot_deformed_grid(
    transform,
    bounds: Bounds = ((-3, 3), (-3, 3)),
    ax=None,
    n_lines: int = 17,
    resolution: int = 200,
    title: str = "the grid, deformed by f",
    color="C0",
):
    """Draw the image under ``transform.forward`` of a square grid of lines on ``bounds``:
    where lines crowd, the map squeezes space and the density rises."""
    ax = _axes(ax)
    (a, b), (c, d) = bounds
    dtype = next((p.dtype for p in transform.parameters()), torch.float32)
    t = torch.linspace(0, 1, resolution, dtype=dtype)
    for v in np.linspace(0, 1, n_lines):
        for pts in (
            torch.stack([a + (b - a) * t, torch.full_like(t, c + (d - c) * v)], dim=1),
            torch.stack([torch.full_like(t, a + (b - a) * v), c + (d - c) * t], dim=1),
        ):
            y = transform(pts)[0].cpu().numpy()
            ax.plot(y[:, 0], y[:, 1], color=color, lw=0.7)
    ax.set(title=title, xlabel="$x_1$", ylabel="$x_2$")
    ax.set_aspect("equal", adjustable="datalim")
    return ax


@torch.no_grad()
def plot_layers(
    transform,
    z: Tensor,
    bounds: Bounds | None = None,
    titles: Sequence[str] | None = None,
    max_panels: int = 6,
    size: float = 2.6,
    ncols: int | None = None,
    axes=None,
):
    """Layer-by-layer transport: base samples ``z`` and their images after each layer of a
    ``Compose``. Points are coloured by their angle in the base, so each panel shows where
    the mass of each region went. Returns the figure.

    The panels go in rows of ``ncols`` (all in one row by default), each ``size`` inches
    wide; or pass ``axes``, a sequence of at least as many axes as panels, to draw into an
    existing figure (unused axes are hidden)."""
    points = transform.trajectory(z)
    idx = np.unique(
        np.linspace(0, len(points) - 1, min(max_panels, len(points))).round().astype(int)
    )
    if axes is None:
        ncols = len(idx) if ncols is None else max(1, min(ncols, len(idx)))
        nrows = int(np.ceil(len(idx) / ncols))
        fig, axes = plt.subplots(
            nrows, ncols, figsize=(size * ncols, (size + 0.3) * nrows), squeeze=False
        )
        created = True
    else:
        fig, created = np.ravel(axes)[0].figure, False
    axes = np.ravel(axes)
    if len(axes) < len(idx):
        raise ValueError(
            f"plot_layers needs {len(idx)} axes for its panels, got "
            f"{len(axes)}; pass more axes or a smaller max_panels"
        )
    for ax in axes[len(idx) :]:
        ax.set_visible(False)
    z0 = z.detach().cpu().numpy()
    colour = np.arctan2(z0[:, 1], z0[:, 0])
    for ax, k in zip(axes, idx, strict=False):
        x = points[k].cpu().numpy()
        ax.scatter(x[:, 0], x[:, 1], c=colour, cmap="hsv", s=1.5, alpha=0.6, linewidths=0)
        if bounds is not None:
            ax.set_xlim(*bounds[0])
            ax.set_ylim(*bounds[1])
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(titles[k] if titles else ("base $z$" if k == 0 else f"after layer {k}"))
        ax.set_xticks([])
        ax.set_yticks([])
    if created:
        fig.tight_layout()
    return fig


def plot_loss(
    history: Sequence[float],
    ax=None,
    title: str = "training loss",
    ylabel: str = "loss",
    smooth: int = 20,
    reference: float | None = None,
    reference_label: str = "optimum",
):
    """Loss curve with a moving average; ``reference`` draws the best achievable value."""
    ax = _axes(ax)
    h = np.asarray(history, dtype=float)
    ax.plot(h, color="C0", alpha=0.3, lw=0.8, label="per step")
    if smooth > 1 and len(h) >= smooth:
        ax.plot(
            np.arange(smooth - 1, len(h)),
            np.convolve(h, np.ones(smooth) / smooth, "valid"),
            color="C0",
            label=f"mean of {smooth} steps",
        )
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=reference_label)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.legend()
    return ax


def plot_image_grid(
    images: Tensor,
    shape: tuple[int, int],
    nrow: int = 8,
    ax=None,
    title: str = "images",
    vmin: float = 0.0,
    vmax: float = 1.0,
):
    """Tile images (``(N, H*W)`` or ``(N, H, W)``) into one grayscale picture."""
    images = images.detach().cpu().reshape(-1, *shape).numpy()
    n = len(images)
    ncol = min(nrow, n)
    nrows = int(np.ceil(n / ncol))
    h, w = shape
    canvas = np.full((nrows * (h + 1) + 1, ncol * (w + 1) + 1), vmax, dtype=float)
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = img
    ax = _axes(ax)
    ax.imshow(canvas, cmap="gray_r", vmin=vmin, vmax=vmax)
    ax.set_title(title)
    ax.axis("off")
    return ax
