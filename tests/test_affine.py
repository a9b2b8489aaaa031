"""Affine flows (chapter 2): elementwise, triangular and LU-parameterised full affine maps."""

import math

import pytest
import torch

import nfcourse as nf
from nfcourse.flows.affine import (
    elementwise_affine,
    lu_affine,
    triangular_affine,
    triangular_from_entries,
)
from nfcourse.testing import (
    check_batch_shapes,
    check_gradients_reach,
    check_log_det,
    check_round_trip,
)

DIM = 4


def _perturbed(transform, seed=0, size=0.5):
    """The transform in float64 with every parameter moved away from its initial value."""
    transform = transform.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in transform.parameters():
            p.add_(size * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return transform


TRANSFORMS = {
    "elementwise": lambda: nf.ElementwiseAffine(DIM, scale=1.7, shift=-0.4),
    "triangular_lower": lambda: nf.TriangularAffine(DIM),
    "triangular_upper": lambda: nf.TriangularAffine(DIM, upper=True),
    "lu": lambda: nf.LUAffine(DIM),
    "lu_permuted": lambda: nf.LUAffine(DIM, permutation=[2, 0, 3, 1]),
}


@pytest.fixture(params=sorted(TRANSFORMS))
def transform(request):
    return _perturbed(TRANSFORMS[request.param]())


@pytest.fixture
def z():
    return torch.randn(12, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def test_affine_log_det_matches_autograd_jacobian_both_directions(transform, z):
    _, log_det = transform(z)
    assert log_det.abs().min() > 1e-2  # not the identity: the check below is not vacuous
    assert check_log_det(transform, z, atol=1e-8) <= 1e-8
    x, _ = transform(z)
    assert check_log_det(transform, x, atol=1e-8, direction="inverse") <= 1e-8


def test_affine_round_trip(transform, z):
    x, _ = transform(z)
    assert (x - z).abs().max() > 1e-2
    assert check_round_trip(transform, z, atol=1e-8) <= 1e-8


def test_affine_batch_shapes(transform):
    check_batch_shapes(transform, DIM, batch_sizes=(1, 5, 33))


def test_affine_gradients_reach_every_parameter(transform, z):
    x, log_det = transform(z)
    check_gradients_reach(transform, (x**2).sum() + log_det.sum())
    z_back, log_det_back = transform.inverse(x.detach())
    check_gradients_reach(transform, (z_back**2).sum() + log_det_back.sum())


def test_affine_layers_start_at_the_identity():
    z = torch.randn(5, DIM)
    for make in TRANSFORMS.values():
        layer = make()
        if isinstance(layer, nf.ElementwiseAffine):
            continue
        x, log_det = layer(z)
        if getattr(layer, "permutation", None) is not None:
            z_expected = z[:, layer.permutation]  # L = U = I, b = 0: only P acts
        else:
            z_expected = z
        torch.testing.assert_close(x, z_expected)
        torch.testing.assert_close(log_det, torch.zeros(5))


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (torch.randn(5, DIM + 1, dtype=torch.float64), ValueError, "features"),
        (torch.randn(DIM, dtype=torch.float64), ValueError, "shape"),
        (torch.full((3, DIM), math.nan, dtype=torch.float64), ValueError, "non-finite"),
        (torch.ones(3, DIM, dtype=torch.int64), TypeError, "float32 or float64"),
    ],
)
def test_affine_rejects_bad_input_with_a_clear_error(transform, bad, error, match):
    for fn in (transform.forward, transform.inverse):
        with pytest.raises(error, match=match):
            fn(bad)


def test_lu_log_det_equals_slogdet_of_the_assembled_matrix(z):
    for permutation in (None, [3, 1, 0, 2]):
        layer = _perturbed(nf.LUAffine(DIM, permutation=permutation), seed=3)
        w = layer.weight()
        sign, logabsdet = torch.linalg.slogdet(w)
        _, log_det = layer(z)
        torch.testing.assert_close(log_det, logabsdet.expand(len(z)), atol=1e-10, rtol=0)
        assert logabsdet.abs() > 1e-2
        # the map is x = W z + b with this very matrix
        torch.testing.assert_close(layer(z)[0], z @ w.T + layer.shift, atol=1e-12, rtol=0)


def test_lu_factors_are_unit_lower_and_upper_with_positive_diagonal():
    layer = _perturbed(nf.LUAffine(DIM), seed=4)
    lower, upper = layer.factors()
    torch.testing.assert_close(lower, torch.tril(lower))
    torch.testing.assert_close(torch.diagonal(lower), torch.ones(DIM, dtype=torch.float64))
    torch.testing.assert_close(upper, torch.triu(upper))
    torch.testing.assert_close(torch.diagonal(upper), torch.exp(layer.log_diag))


def test_lu_permutation_is_applied_to_the_output():
    z = torch.randn(6, 3, dtype=torch.float64)
    plain = _perturbed(nf.LUAffine(3), seed=5)
    permuted = nf.LUAffine(3, permutation=[2, 0, 1]).double()
    permuted.load_state_dict({**plain.state_dict(), "permutation": torch.tensor([2, 0, 1])})
    x_plain = plain(z)[0] - plain.shift
    x_perm = permuted(z)[0] - permuted.shift
    torch.testing.assert_close(x_perm, x_plain[:, [2, 0, 1]])


@pytest.mark.parametrize("permutation", [[0, 0, 1], [0, 1], [0, 1, 3], [0.0, 1.0, 2.0]])
def test_lu_rejects_an_invalid_permutation(permutation):
    with pytest.raises(ValueError, match="permutation"):
        nf.LUAffine(3, permutation=permutation)


def test_elementwise_affine_rejects_a_non_positive_scale():
    with pytest.raises(ValueError, match="positive"):
        nf.ElementwiseAffine(2, scale=-1.0)


def test_triangular_from_entries_fills_below_or_above_the_diagonal():
    entries = torch.tensor([1.0, 2.0, 3.0])
    diag = torch.tensor([4.0, 5.0, 6.0])
    lower = triangular_from_entries(entries, diag)
    upper = triangular_from_entries(entries, diag, upper=True)
    torch.testing.assert_close(lower, torch.tensor([[4.0, 0, 0], [1, 5, 0], [2, 3, 6]]))
    torch.testing.assert_close(upper, torch.tensor([[4.0, 1, 2], [0, 5, 3], [0, 0, 6]]))
    with pytest.raises(ValueError, match="off-diagonal"):
        triangular_from_entries(torch.zeros(2), diag)


def test_triangular_affine_function_handles_negative_diagonal_entries(z):
    # the pure function takes any triangular matrix; log|det| uses |T_ii|
    g = torch.Generator().manual_seed(6)
    t = torch.tril(torch.randn(DIM, DIM, generator=g, dtype=torch.float64))
    t.diagonal().copy_(torch.tensor([1.5, -0.7, 2.0, -1.1]))
    shift = torch.randn(DIM, generator=g, dtype=torch.float64)
    x, log_det = triangular_affine(z, t, shift)
    torch.testing.assert_close(x, z @ t.T + shift)
    torch.testing.assert_close(log_det, torch.linalg.slogdet(t)[1].expand(len(z)))
    z_back, log_det_back = triangular_affine(x, t, shift, inverse=True)
    torch.testing.assert_close(z_back, z, atol=1e-10, rtol=0)
    torch.testing.assert_close(log_det_back, -log_det)


def test_lu_affine_function_inverse_undoes_forward(z):
    g = torch.Generator().manual_seed(7)
    lower = torch.tril(torch.randn(DIM, DIM, generator=g, dtype=torch.float64), -1) + torch.eye(
        DIM, dtype=torch.float64
    )
    upper = torch.triu(torch.randn(DIM, DIM, generator=g, dtype=torch.float64), 1) + torch.diag(
        torch.tensor([0.5, -2.0, 1.3, 0.9], dtype=torch.float64)
    )
    shift = torch.randn(DIM, generator=g, dtype=torch.float64)
    perm = torch.tensor([1, 3, 0, 2])
    x, log_det = lu_affine(z, lower, upper, shift, perm)
    w = (lower @ upper)[perm]
    torch.testing.assert_close(x, z @ w.T + shift)
    torch.testing.assert_close(log_det, torch.linalg.slogdet(w)[1].expand(len(z)))
    z_back, _ = lu_affine(x, lower, upper, shift, perm, inverse=True)
    torch.testing.assert_close(z_back, z, atol=1e-10, rtol=0)


def test_elementwise_affine_function_is_unchanged():
    z = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    s = torch.tensor([math.log(2.0), math.log(0.5)], dtype=torch.float64)
    b = torch.tensor([0.1, 0.2], dtype=torch.float64)
    x, log_det = elementwise_affine(z, s, b)
    torch.testing.assert_close(x, torch.tensor([[2.1, -0.8]], dtype=torch.float64))
    torch.testing.assert_close(log_det, torch.zeros(1, dtype=torch.float64), atol=1e-15, rtol=0)


def test_composed_affine_flow_is_gaussian_with_the_composed_moments():
    """Five affine layers push N(0, I) to N(b, W W^T), with W and b composed by hand."""
    torch.manual_seed(0)
    stack = _perturbed(
        nf.Compose([nf.LUAffine(3, permutation=torch.randperm(3)) for _ in range(5)]),
        seed=8,
        size=0.3,
    )
    w = torch.eye(3, dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    for layer in stack:
        w, b = layer.weight() @ w, layer.weight() @ b + layer.shift
    flow = nf.Flow(stack).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    gaussian = torch.distributions.MultivariateNormal(b.detach(), w.detach() @ w.detach().T)
    torch.testing.assert_close(flow.log_prob(x).detach(), gaussian.log_prob(x))


def test_lu_affine_trains_to_the_maximum_likelihood_gaussian():
    torch.manual_seed(0)
    cov = torch.tensor([[2.0, 1.2], [1.2, 1.0]])
    data = torch.distributions.MultivariateNormal(torch.tensor([1.0, -1.0]), cov).sample((500,))
    flow = nf.Flow(nf.LUAffine(2))
    nf.fit_maximum_likelihood(flow, data, steps=500, lr=3e-2, batch_size=500, progress=False)
    mean = data.mean(0)
    sample_cov = torch.cov(data.T, correction=0)
    best = torch.distributions.MultivariateNormal(mean, sample_cov).log_prob(data).mean()
    with torch.no_grad():
        gap = float(best - flow.log_prob(data).mean())
    # the closed-form Gaussian is the maximum-likelihood optimum of any affine flow
    assert -1e-4 < gap < 5e-3


def test_affine_widget_has_scale_and_shift_sliders_and_draws_the_pushed_density():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from nfcourse.widgets.affine import _draw_affine, affine_widget

    box = affine_widget()
    descriptions = [w.description for w in box.children[0].children]
    assert descriptions == ["scale a", "shift b"]
    fig = plt.figure()
    _draw_affine(fig, a=0.8, b=-1.5)
    _, ax_data = fig.axes
    pushed = ax_data.lines[1]  # the density of x = a z + b
    x, p = np.asarray(pushed.get_xdata()), np.asarray(pushed.get_ydata())
    expected = np.exp(-0.5 * ((x + 1.5) / 0.8) ** 2) / (0.8 * np.sqrt(2 * np.pi))
    # ElementwiseAffine stores log(scale) computed in float32, hence rtol 1e-6
    np.testing.assert_allclose(p, expected, rtol=1e-6, atol=1e-12)
    assert abs(np.trapezoid(p, x) - 1) < 1e-6
    plt.close("all")


def test_upper_triangular_affine_is_upper_triangular():
    from nfcourse.flows.affine import TriangularAffine

    layer = TriangularAffine(3, upper=True).double()
    with torch.no_grad():
        layer.off_diagonal.copy_(torch.tensor([1.0, 2.0, 3.0]))
    m = layer.matrix()
    assert torch.equal(m, torch.triu(m)) and not torch.equal(m, torch.tril(m))
