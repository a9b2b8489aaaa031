"""Figures: every plotting helper draws, titles and labels its axes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import nfcourse as nf  # noqa: E402
from nfcourse import plot  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _labelled(ax):
    return ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


def test_density_grid_evaluates_the_log_density_on_the_grid():
    ring = nf.densities.GaussianRing()
    x1, x2, logp = plot.density_grid(ring.log_prob, ((-3, 3), (-2, 2)), resolution=31)
    assert x1.shape == x2.shape == logp.shape == (31, 31)
    point = torch.tensor([[x1[5, 7], x2[5, 7]]], dtype=torch.float32)
    assert np.isclose(logp[5, 7], float(ring.log_prob(point)), atol=1e-5)


def test_plot_helpers_label_their_axes():
    ring = nf.densities.GaussianRing()
    flow = nf.Flow(nf.Compose(nf.SinhArcsinh(2, 0.3, 1.2), nf.ElementwiseAffine(2, 1.5)))
    assert _labelled(plot.plot_density(ring.log_prob, ring.bounds, resolution=40))
    assert _labelled(plot.plot_samples(ring.sample(100)))
    assert _labelled(plot.plot_deformed_grid(flow.transform, n_lines=5, resolution=20))
    assert _labelled(plot.plot_loss([3.0, 2.0, 1.5] * 10, reference=1.0))
    mix = nf.densities.GaussianMixture1D()
    assert _labelled(plot.plot_density_1d(mix.log_prob, (-4, 4), label="truth"))


def test_plot_layers_shows_base_and_every_layer_up_to_the_panel_limit():
    stack = nf.Compose(*[nf.ElementwiseAffine(2, 1.1, 0.1) for _ in range(9)])
    fig = plot.plot_layers(stack, torch.randn(50, 2), max_panels=4)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 4 and titles[0] == "base $z$" and titles[-1] == "after layer 9"


def test_image_grid_tiles_images():
    ax = plot.plot_image_grid(torch.rand(10, 64), (8, 8), nrow=5)
    assert ax.images[0].get_array().shape == (2 * 9 + 1, 5 * 9 + 1)


def test_slider_figure_raises_when_the_drawing_fails():
    import ipywidgets as widgets

    from nfcourse.widgets import slider_figure

    def broken(fig, a):
        raise RuntimeError("cannot draw")

    with pytest.raises(RuntimeError, match="cannot draw"):
        slider_figure(broken, a=widgets.FloatSlider(value=1.0))


def test_plot_density_adds_a_labelled_colour_bar_on_request():
    ring = nf.densities.GaussianRing()
    ax = plot.plot_density(ring.log_prob, ring.bounds, resolution=30)
    assert len(ax.figure.axes) == 1
    ax = plot.plot_density(
        ring.log_prob, ring.bounds, resolution=30, colorbar=True, colorbar_label="q(x)", vmax=0.5
    )
    bars = [other for other in ax.figure.axes if other is not ax]
    assert len(bars) == 1 and bars[0].get_ylabel() == "q(x)"
    assert ax.images[0].get_clim() == (0.0, 0.5)


def test_plot_layers_lays_panels_in_rows_and_draws_into_given_axes():
    stack = nf.Compose(*[nf.ElementwiseAffine(2, 1.1, 0.1) for _ in range(4)])
    fig = plot.plot_layers(stack, torch.randn(50, 2), ncols=3, size=2.0)
    assert len(fig.axes) == 6 and sum(ax.get_visible() for ax in fig.axes) == 5
    assert np.allclose(fig.get_size_inches(), (6.0, 4.6))
    fig, axes = plt.subplots(2, 5)
    assert plot.plot_layers(stack, torch.randn(50, 2), axes=axes[1]) is fig
    assert axes[1, 4].get_title() == "after layer 4" and axes[0, 0].get_title() == ""
    with pytest.raises(ValueError, match="needs 5 axes"):
        plot.plot_layers(stack, torch.randn(50, 2), axes=axes[0, :3])


def test_density_grid_evaluates_in_the_dtype_of_the_model():
    for dtype in (torch.float32, torch.float64):
        flow = nf.Flow(nf.flows.ElementwiseAffine(2)).to(dtype)
        _, _, logp = nf.plot.density_grid(flow.log_prob, resolution=5)
        expected = -np.log(2 * np.pi) - 0.5 * (
            np.linspace(-4, 4, 5)[:, None] ** 2 + np.linspace(-4, 4, 5)[None, :] ** 2
        )
        assert np.allclose(logp, expected, atol=1e-5)
