"""Tests of MADE (``nfcourse.flows.made``): the output for coordinate i depends on exactly
the coordinates before i in the ordering, for random dimensions, widths, orders and degrees."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nfcourse import testing
from nfcourse.flows.made import MADE, hidden_degrees, made_degrees, made_masks
from nfcourse.testing import perturb


def output_jacobian(made, x, context=None):
    """``(D, P, D)``: d out[0, i, p] / d x[0, j] at one point."""
    if context is None:
        return torch.autograd.functional.jacobian(lambda v: made(v.unsqueeze(0))[0], x)
    return torch.autograd.functional.jacobian(
        lambda v: made(v.unsqueeze(0), context.unsqueeze(0))[0], x
    )


def allowed(order):
    """``allowed[i, j]``: output i may depend on input j, ``order[j] < order[i]``."""
    return order.unsqueeze(0) < order.unsqueeze(1)


@settings(max_examples=25, deadline=None)
@given(
    dim=st.integers(1, 7),
    widths=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    params=st.integers(1, 3),
    seed=st.integers(0, 10_000),
    context_dim=st.integers(0, 2),
)
def test_made_output_jacobian_is_strictly_lower_triangular_in_the_ordering(
    dim, widths, params, seed, context_dim
):
    order = torch.randperm(dim, generator=torch.Generator().manual_seed(seed))
    made = perturb(
        MADE(dim, widths, params, order=order, context_dim=context_dim, seed=seed).double(),
        seed=seed,
    )
    x = torch.randn(dim, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    context = torch.randn(context_dim, dtype=torch.float64) if context_dim else None
    jac = output_jacobian(made, x, context)  # (D, P, D)
    seen = jac.abs().amax(dim=1) > 0  # (D, D)
    assert not (seen & ~allowed(order)).any(), (order.tolist(), seen.int().tolist())


@settings(max_examples=25, deadline=None)
@given(
    dim=st.integers(2, 6),
    widths=st.lists(st.integers(1, 10), min_size=1, max_size=3),
    seed=st.integers(0, 10_000),
)
def test_made_masks_respect_any_hidden_degrees(dim, widths, seed):
    # Random hidden degrees (not only the cycling default): the product of the masks is
    # the connectivity, and it never connects an output to an input of equal or higher
    # degree.
    g = torch.Generator().manual_seed(seed)
    in_deg = torch.randperm(dim, generator=g) + 1
    hid = [torch.randint(1, dim, (w,), generator=g) for w in widths]
    masks = made_masks(in_deg, hid)
    path = masks[0]
    for m in masks[1:]:
        path = m @ path
    assert path.shape == (dim, dim)
    assert not ((path > 0) & ~(in_deg.unsqueeze(1) > in_deg.unsqueeze(0))).any()


def test_made_with_wide_layers_connects_every_allowed_pair():
    # With every degree present in every hidden layer, each allowed dependence is realised.
    order = torch.tensor([2, 0, 3, 1])
    made = perturb(MADE(4, (16, 16), 2, order=order, seed=0).double())
    jac = output_jacobian(made, torch.randn(4, dtype=torch.float64))
    seen = jac.abs().amax(dim=1) > 0
    assert torch.equal(seen, allowed(order))


def test_made_degrees_and_masks_of_a_small_example():
    degrees = made_degrees(torch.tensor([0, 1, 2]), (4,))
    assert degrees[0].tolist() == [1, 2, 3]
    assert degrees[1].tolist() == [1, 2, 1, 2]
    hidden_mask, out_mask = made_masks(degrees[0], degrees[1:])
    assert hidden_mask.tolist() == [[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0]]
    assert out_mask.tolist() == [[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1]]
    assert hidden_degrees(5, 1).tolist() == [1] * 5


def test_fresh_made_outputs_zeros_and_is_seeded():
    made = MADE(3, (8,), 2, seed=3)
    out = made(torch.randn(5, 3))
    assert out.shape == (5, 3, 2)
    assert torch.equal(out, torch.zeros_like(out))
    state = torch.random.get_rng_state()
    again = MADE(3, (8,), 2, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for p, q in zip(made.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)


def test_made_gradients_reach_every_parameter():
    made = perturb(MADE(4, (8, 8), 2, context_dim=2, seed=0).double())
    out = made(torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64))
    testing.check_gradients_reach(made, (out**2).sum())


def test_made_context_reaches_every_output():
    # Through the masks: hidden units of degree 0 see the context alone and feed even the
    # first coordinate's outputs; and numerically, with wide layers.
    made = perturb(MADE(3, (32,), 1, order=[1, 0, 2], context_dim=2, seed=0).double())
    path = made.net[2].mask @ made.net[0].mask  # (outputs, inputs + context)
    assert (path[:, 3:] > 0).all()
    c = torch.randn(2, dtype=torch.float64)
    x = torch.randn(1, 3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: made(x, v.unsqueeze(0))[0, :, 0], c)
    assert (jac.abs().sum(dim=1) > 0).all()


def test_made_rejects_bad_arguments_with_clear_messages():
    with pytest.raises(ValueError, match="order must hold each of 0, ..., 2 exactly once"):
        MADE(3, (8,), 2, order=[0, 0, 1])
    with pytest.raises(ValueError, match="order must hold"):
        MADE(3, (8,), 2, order=[0, 1])
    with pytest.raises(ValueError, match="order must be a 1D sequence of integers"):
        MADE(3, (8,), 2, order=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="hidden must list at least one positive"):
        MADE(3, (), 2)
    with pytest.raises(ValueError, match=r"hidden\[1\] must be a positive integer"):
        MADE(3, (8, 0), 2)
    with pytest.raises(TypeError, match="hidden must be a sequence of layer widths"):
        MADE(3, 8, 2)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        MADE(0, (8,), 2)
    with pytest.raises(ValueError, match="params_per_dim must be a positive integer"):
        MADE(3, (8,), 0)
    with pytest.raises(ValueError, match="context_dim must be a non-negative integer"):
        MADE(3, (8,), 2, context_dim=-1)
    made = MADE(3, (8,), 2)
    with pytest.raises(ValueError, match=r"expected shape \(B, 3\)"):
        made(torch.randn(4, 2))
    with pytest.raises(TypeError, match="float64 but MADE has torch.float32"):
        made(torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="takes no context"):
        made(torch.randn(4, 3), torch.randn(4, 1))
    conditional = MADE(3, (8,), 2, context_dim=2)
    with pytest.raises(ValueError, match="pass context of shape"):
        conditional(torch.randn(4, 3))
    with pytest.raises(ValueError, match="context has 2 rows but x has 4"):
        conditional(torch.randn(4, 3), torch.randn(2, 2))


def test_made_widget_draws_every_ordering_with_a_strictly_triangular_pattern():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nfcourse.widgets.made import ORDERS, _draw_made, made_connectivity, made_widget

    for order in ORDERS:
        _, masks, pattern = made_connectivity(order, 5)
        o = torch.tensor(order)
        assert torch.equal(pattern, o.unsqueeze(0) < o.unsqueeze(1))
    fig = plt.figure()
    _draw_made(fig, 2.0, 3.0)
    plt.close(fig)
    box = made_widget()
    assert len(box.children) >= 2
