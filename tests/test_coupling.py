"""Tests of the coupling flows of chapter 5 (``nfcourse.flows.coupling``) and of the image
helpers (``nfcourse.images``), in float64 with non-trivial random parameters."""

from __future__ import annotations

import math
import re

import pytest
import torch

import nfcourse as nf
from nfcourse import Compose, Flow, testing
from nfcourse.flows.actnorm import ActNorm
from nfcourse.flows.coupling import (
    AdditiveCoupling,
    AffineCoupling,
    PiecewiseLinearCoupling,
    additive_coupling,
    affine_coupling,
    coupling_flow,
    piecewise_linear_coupling,
    soft_clamp,
)
from nfcourse.flows.masks import alternating_mask, checkerboard_mask, half_mask
from nfcourse.flows.permutation import Permutation, ReversePermutation
from nfcourse.flows.piecewise import piecewise_linear
from nfcourse.images import bits_per_dim, dequantize
from nfcourse.testing import perturb

KINDS = {
    "additive": lambda mask: AdditiveCoupling(mask, hidden=(8, 8)),
    "affine": lambda mask: AffineCoupling(mask, hidden=(8, 8)),
    "piecewise": lambda mask: PiecewiseLinearCoupling(mask, hidden=(8, 8), bins=5, bound=3.0),
}


def make_layer(kind, dim=5, mask=None):
    mask = half_mask(dim) if mask is None else mask
    torch.manual_seed(0)  # the conditioner's initial weights: the same in every test order
    return perturb(KINDS[kind](mask).double())


def points(n=6, dim=5, seed=1, scale=1.0):
    return scale * torch.randn(
        n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


# ------------------------------------------------------------------ coupling layers


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mask_name", ["half", "alternating"])
def test_coupling_log_det_matches_autograd_jacobian(kind, mask_name):
    mask = half_mask(5) if mask_name == "half" else alternating_mask(5, 0)
    layer = make_layer(kind, mask=mask)
    z = points()
    testing.check_log_det(layer, z, atol=1e-8)
    testing.check_log_det(layer, layer(z)[0].detach(), atol=1e-8, direction="inverse")


@pytest.mark.parametrize("kind", KINDS)
def test_coupling_round_trip(kind):
    layer = make_layer(kind)
    testing.check_round_trip(layer, points(n=20), atol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_coupling_batch_shapes(kind):
    testing.check_batch_shapes(make_layer(kind), 5, batch_sizes=(1, 7, 64))


@pytest.mark.parametrize("kind", KINDS)
def test_coupling_gradients_reach_every_parameter(kind):
    layer = make_layer(kind)
    x, log_det = layer(points())
    testing.check_gradients_reach(layer, (x**2).sum() + log_det.sum())
    z, log_det = layer.inverse(points(seed=2))
    testing.check_gradients_reach(layer, (z**2).sum() + log_det.sum())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_coupling_leaves_conditioning_coordinates_exactly_unchanged(kind, direction):
    mask = alternating_mask(6, 1)
    layer = make_layer(kind, dim=6, mask=mask)
    z = points(dim=6)
    x, _ = getattr(layer, direction)(z)
    assert torch.equal(x[:, ~mask], z[:, ~mask])
    assert not torch.allclose(x[:, mask], z[:, mask])


@pytest.mark.parametrize("kind", KINDS)
def test_coupling_jacobian_is_block_triangular(kind):
    mask = half_mask(6)
    layer = make_layer(kind, dim=6, mask=mask)
    z = points(n=1, dim=6)[0]
    jac = torch.autograd.functional.jacobian(lambda v: layer(v.unsqueeze(0))[0][0], z)
    a, b = ~mask, mask
    assert torch.equal(jac[a][:, a], torch.eye(int(a.sum()), dtype=jac.dtype))
    assert torch.equal(jac[a][:, b], torch.zeros(int(a.sum()), int(b.sum()), dtype=jac.dtype))
    block = jac[b][:, b]
    assert torch.equal(block, torch.diag(torch.diagonal(block)))
    assert jac[b][:, a].abs().max() > 0  # the conditioner does act
    torch.testing.assert_close(
        torch.diagonal(block).log().sum(), layer(z.unsqueeze(0))[1][0], atol=1e-10, rtol=0
    )


@pytest.mark.parametrize("kind", KINDS)
def test_coupling_with_zero_initialised_conditioner_is_the_identity(kind):
    layer = KINDS[kind](half_mask(4)).double()
    z = points(dim=4)
    x, log_det = layer(z)
    torch.testing.assert_close(x, z, atol=1e-12, rtol=0)
    torch.testing.assert_close(log_det, torch.zeros(len(z), dtype=z.dtype), atol=1e-12, rtol=0)


def test_additive_coupling_preserves_volume():
    layer = make_layer("additive")
    _, log_det = layer(points())
    assert torch.equal(log_det, torch.zeros_like(log_det))
    testing.check_log_det(layer, points(), atol=1e-8)


def test_affine_coupling_log_scale_stays_within_its_bound():
    layer = AffineCoupling(half_mask(4), hidden=(8,), scale_bound=2.0).double()
    with torch.no_grad():
        layer.conditioner[-1].bias.fill_(1e3)  # a huge raw scale
    _, log_det = layer(points(dim=4))
    per_coordinate = log_det / 2
    assert bool((per_coordinate <= 2.0).all()) and bool((per_coordinate > 1.99).all())


def test_soft_clamp_is_close_to_identity_near_zero_and_bounded():
    h = torch.tensor([-1e4, -0.01, 0.0, 0.01, 1e4], dtype=torch.float64)
    out = soft_clamp(h, 3.0)
    assert out.abs().max() <= 3.0
    torch.testing.assert_close(out[1:4], h[1:4], atol=1e-6, rtol=0)


def test_affine_coupling_function_matches_its_formula():
    z, s, t = points(n=4, dim=3), points(n=4, dim=3, seed=2), points(n=4, dim=3, seed=3)
    x, log_det = affine_coupling(z, s, t)
    torch.testing.assert_close(x, z * torch.exp(s) + t)
    torch.testing.assert_close(log_det, s.sum(dim=1))
    z_back, inverse_log_det = affine_coupling(x, s, t, inverse=True)
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(inverse_log_det, -log_det)
    x, log_det = additive_coupling(z, t)
    torch.testing.assert_close(x, z + t)
    assert torch.equal(log_det, torch.zeros(4, dtype=z.dtype))


def test_piecewise_linear_coupling_rescaling_keeps_the_log_det_of_chapter_4():
    bound = 2.5
    y = torch.rand(8, 3, dtype=torch.float64) * 2 * bound - bound
    logits = torch.randn(8, 3, 6, dtype=torch.float64)
    out, log_det = piecewise_linear_coupling(y, logits, bound, min_mass=1e-3)
    v, expected_log_det = piecewise_linear((y + bound) / (2 * bound), logits, min_mass=1e-3)
    torch.testing.assert_close(out, 2 * bound * v - bound)
    torch.testing.assert_close(log_det, expected_log_det)


def test_piecewise_linear_coupling_is_the_identity_outside_the_box():
    layer = make_layer("piecewise", dim=4, mask=half_mask(4))  # bound 3
    z = points(n=6, dim=4)
    z[:, 2:] = torch.tensor([[-7.0, 3.5], [9.0, -3.01]] * 3, dtype=torch.float64)
    for direction in ("forward", "inverse"):
        x, log_det = getattr(layer, direction)(z)
        assert torch.equal(x, z)
        assert torch.equal(log_det, torch.zeros_like(log_det))


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3, 1e6])
def test_piecewise_linear_coupling_round_trips_both_ways_at_extreme_logits(scale):
    # Large conditioner outputs give near-empty bins; the minimum mass keeps both round
    # trips exact to rounding (x -> z -> x divides by the bin masses).
    bound = 3.0
    g = torch.Generator().manual_seed(int(scale) % 1000)
    logits = scale * torch.randn(400, 2, 8, generator=g, dtype=torch.float64)
    y = (torch.rand(400, 2, generator=g, dtype=torch.float64) * 2 - 1) * bound * 1.1
    for first in (False, True):
        out, log_abs_det = piecewise_linear_coupling(y, logits, bound, inverse=first)
        back, log_abs_det_back = piecewise_linear_coupling(out, logits, bound, inverse=not first)
        assert torch.isfinite(out).all() and torch.isfinite(log_abs_det).all()
        assert (back - y).abs().max() < 1e-9, (scale, first)
        assert (log_abs_det + log_abs_det_back).abs().max() < 1e-9


def test_piecewise_linear_coupling_layer_round_trips_both_ways_at_extreme_parameters():
    layer = make_layer("piecewise", dim=4, mask=half_mask(4))
    with torch.no_grad():
        for p in layer.conditioner.parameters():
            p.mul_(1e3)
    x = points(n=300, dim=4, scale=2.0)
    testing.check_round_trip(layer, x, atol=1e-8)  # z -> x -> z
    testing.check_round_trip(layer.inv(), x, atol=1e-8)  # x -> z -> x


def test_piecewise_linear_coupling_layer_normalizes_with_the_cdf():
    # The layer is written in the normalizing direction: inverse (data to base) applies
    # psi = 2B phi(u) - B, the histogram's CDF; forward applies psi^{-1}. Swapping them
    # changes the values.
    layer = make_layer("piecewise", dim=4, mask=half_mask(4))
    x = points(n=7, dim=4)
    h = layer.conditioner(x[:, :2])
    logits = h.view(7, 2, layer.bins)
    u = (x[:, 2:] + layer.bound) / (2 * layer.bound)
    phi, log_phi_prime = piecewise_linear(u, logits, min_mass=layer.min_mass)
    z, log_abs_det = layer.inverse(x)
    torch.testing.assert_close(z[:, 2:], 2 * layer.bound * phi - layer.bound)
    torch.testing.assert_close(log_abs_det, log_phi_prime)
    x_back, _ = layer.forward(z)
    torch.testing.assert_close(x_back, x)


def test_piecewise_linear_coupling_round_trip_across_the_box_edge():
    layer = make_layer("piecewise", dim=4, mask=half_mask(4))
    testing.check_round_trip(layer, points(n=200, dim=4, scale=2.5), atol=1e-8)


# ------------------------------------------------------------------ masks and permutations


def test_masks_refuse_what_they_cannot_split():
    for dim in (1, 0, 2.0):
        with pytest.raises(ValueError, match="dim >= 2"):
            alternating_mask(dim)
        with pytest.raises(ValueError, match="dim >= 2"):
            half_mask(dim)
    assert alternating_mask(2, 0).tolist() == [True, False]
    with pytest.raises(ValueError, match="parity must be 0 or 1"):
        alternating_mask(4, 2)
    for height, width in ((0, 5), (5, 0), (1, 1)):
        with pytest.raises(ValueError, match="at least two pixels"):
            checkerboard_mask(height, width)
    assert checkerboard_mask(1, 2).tolist() == [False, True]
    assert checkerboard_mask(2, 1).tolist() == [False, True]
    with pytest.raises(ValueError, match="parity must be 0 or 1"):
        checkerboard_mask(2, 2, parity=-1)


def test_layers_describe_themselves():
    layer = make_layer("piecewise", dim=4, mask=half_mask(4))
    assert re.search(r"bins=\d+, bound=3.0, min_mass=0.001", repr(layer))
    assert "transformed=[2, 3], conditioning=[0, 1]" in repr(layer)


def test_masks_split_as_documented():
    assert half_mask(5).tolist() == [False, False, True, True, True]
    assert half_mask(4, flip=True).tolist() == [True, True, False, False]
    assert alternating_mask(4, 1).tolist() == [False, True, False, True]
    board = checkerboard_mask(3, 3, parity=0).reshape(3, 3).int().tolist()
    assert board == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    assert torch.equal(checkerboard_mask(8, 8, 0), ~checkerboard_mask(8, 8, 1))


@pytest.mark.parametrize(
    "perm", [ReversePermutation(5), Permutation([2, 0, 4, 1, 3]), Permutation.random(5, seed=3)]
)
def test_permutation_inverse_and_zero_log_det(perm):
    z = points()
    x, log_det = perm(z)
    assert torch.equal(x, z[:, perm.permutation])
    z_back, inverse_log_det = perm.inverse(x)
    assert torch.equal(z_back, z)
    assert torch.equal(log_det, torch.zeros(len(z), dtype=z.dtype))
    assert torch.equal(inverse_log_det, torch.zeros(len(z), dtype=z.dtype))
    testing.check_log_det(perm, z, atol=1e-12)


def test_reverse_permutation_swaps_two_coordinates():
    z = torch.tensor([[1.0, 2.0]])
    assert ReversePermutation(2)(z)[0].tolist() == [[2.0, 1.0]]


def test_random_permutation_is_reproducible():
    assert torch.equal(
        Permutation.random(9, seed=4).permutation, Permutation.random(9, seed=4).permutation
    )


# ------------------------------------------------------------------ ActNorm


def test_actnorm_initialises_from_the_first_data_batch():
    layer = ActNorm(3).double()
    x = 4.0 + 2.5 * points(n=500, dim=3)
    z, _ = layer.inverse(x)
    torch.testing.assert_close(z.mean(dim=0), torch.zeros(3, dtype=z.dtype), atol=1e-10, rtol=0)
    torch.testing.assert_close(z.std(dim=0), torch.ones(3, dtype=z.dtype), atol=1e-10, rtol=0)
    assert bool(layer.initialized)
    shift = layer.shift.detach().clone()
    layer.inverse(x + 10.0)  # a second batch does not re-initialise
    assert torch.equal(layer.shift.detach(), shift)


def test_actnorm_log_det_round_trip_and_gradients():
    layer = perturb(ActNorm(4).double())
    layer.initialized.fill_(True)
    z = points(dim=4)
    testing.check_log_det(layer, z, atol=1e-8)
    testing.check_round_trip(layer, z, atol=1e-8)
    x, log_det = layer(z)
    testing.check_gradients_reach(layer, (x**2).sum() + log_det.sum())


def test_actnorm_is_not_reinitialised_after_reverse_kl_training():
    # Reverse-KL training only runs forward; the first log_prob afterwards must not
    # overwrite the trained parameters with the statistics of that batch.
    torch.manual_seed(0)
    flow = Flow(ActNorm(2))
    target = lambda x: -0.5 * (((x - torch.tensor([0.7, 0.7])) / 0.5) ** 2).sum(1)  # noqa: E731
    nf.fit_reverse_kl(flow, target, steps=200, lr=0.05, progress=False)
    trained = flow.transform.shift.detach().clone()
    assert (trained - 0.7).abs().max() < 0.1
    flow.log_prob(torch.randn(64, 2) * 5 - 14)
    assert torch.equal(flow.transform.shift.detach(), trained)
    assert bool(flow.transform.initialized)


def test_actnorm_is_not_initialised_after_an_optimiser_step():
    layer = ActNorm(2).double()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = points(n=16, dim=2) * 3 + 2
    layer.eval()
    (layer.inverse(x)[0] ** 2).sum().backward()
    optimizer.step()
    stepped = layer.shift.detach().clone()
    layer.train()
    layer.inverse(x)
    assert torch.equal(layer.shift.detach(), stepped)


def test_actnorm_initialises_after_a_dtype_change_and_refuses_a_single_point():
    layer = ActNorm(2).double()  # .double() is not a training step
    x = points(n=16, dim=2) * 3 + 2
    layer.inverse(x)
    torch.testing.assert_close(layer.shift.detach(), x.mean(0))
    with pytest.raises(ValueError, match="at least 2 points, got a batch of 1"):
        ActNorm(2).double().inverse(x[:1])


def test_actnorm_does_not_initialise_in_eval_mode():
    layer = ActNorm(2).double().eval()
    layer.inverse(points(dim=2) * 5)
    assert not bool(layer.initialized)


# ------------------------------------------------------------------ flows


@pytest.mark.parametrize("kind", ["additive", "affine", "piecewise"])
@pytest.mark.parametrize("permutation", ["reverse", "random"])
def test_coupling_flow_log_det_round_trip_and_gradients(kind, permutation):
    flow = coupling_flow(
        kind, 4, 3, hidden=(8,), permutation=permutation, actnorm=True, bins=4, bound=3.0
    ).double()
    perturb(flow, scale=0.3)
    for module in flow.modules():
        if isinstance(module, ActNorm):
            module.initialized.fill_(True)
    z = points(n=5, dim=4)
    testing.check_log_det(flow.transform, z, atol=1e-8)
    testing.check_log_det(flow.transform, z, atol=1e-8, direction="inverse")
    testing.check_round_trip(flow.transform, z, atol=1e-8)
    testing.check_gradients_reach(flow, -flow.log_prob(points(n=16, dim=4, seed=5)).mean())


def test_coupling_flow_layers_alternate_the_transformed_coordinates():
    flow = coupling_flow("affine", 2, 3)
    kinds = [type(t).__name__ for t in flow.transform]
    assert kinds == [
        "AffineCoupling",
        "ReversePermutation",
        "AffineCoupling",
        "ReversePermutation",
        "AffineCoupling",
    ]
    flow = coupling_flow("additive", 2, 3, permutation=None)
    assert [type(t).__name__ for t in flow.transform] == [
        "AdditiveCoupling",
        "AdditiveCoupling",
        "AdditiveCoupling",
        "ElementwiseAffine",
    ]
    assert [t.trans_index.tolist() for t in flow.transform[:3]] == [[1], [0], [1]]
    masks = [checkerboard_mask(2, 2, 0), checkerboard_mask(2, 2, 1)]
    flow = coupling_flow("affine", 4, 2, permutation=None, mask=masks)
    assert [t.trans_index.tolist() for t in flow.transform] == [[0, 3], [1, 2]]


def test_coupling_flow_parameter_count_matches_the_architecture():
    flow = coupling_flow("affine", 2, 4, hidden=(64, 64))
    per_layer = (1 * 64 + 64) + (64 * 64 + 64) + (64 * 2 + 2)
    assert sum(p.numel() for p in flow.parameters()) == 4 * per_layer
    flow = coupling_flow("piecewise", 6, 2, hidden=(16,), bins=10)
    per_layer = (3 * 16 + 16) + (16 * 3 * 10 + 3 * 10)
    assert sum(p.numel() for p in flow.parameters()) == 2 * per_layer


@pytest.mark.parametrize("kind", ["additive", "affine", "piecewise"])
def test_coupling_flow_density_integrates_to_one(kind):
    flow = perturb(coupling_flow(kind, 2, 3, hidden=(16,), bins=8, bound=3.0).double(), 0.3)
    n = 801
    grid = torch.linspace(-9, 9, n, dtype=torch.float64)
    x1, x2 = torch.meshgrid(grid, grid, indexing="xy")
    with torch.no_grad():
        density = flow.log_prob(torch.stack([x1.flatten(), x2.flatten()], 1)).exp()
    mass = float(density.sum()) * float(grid[1] - grid[0]) ** 2
    assert abs(mass - 1.0) < 5e-3, mass


def test_coupling_flow_sample_and_log_prob_agree():
    flow = perturb(coupling_flow("piecewise", 3, 3, hidden=(8,), bins=6).double(), 0.3)
    x, log_q = flow.sample_and_log_prob(50)
    torch.testing.assert_close(flow.log_prob(x), log_q, atol=1e-8, rtol=0)


def test_coupling_flow_learns_a_shifted_gaussian():
    torch.manual_seed(0)
    data = torch.randn(1000, 2) * torch.tensor([0.5, 2.0]) + torch.tensor([3.0, -1.0])
    flow = coupling_flow("affine", 2, 2, hidden=(16,))
    with torch.no_grad():
        before = float(flow.forward_kl(data))
    optimizer = torch.optim.Adam(flow.parameters(), lr=2e-2)
    for _ in range(150):
        optimizer.zero_grad()
        loss = flow.forward_kl(data)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float(flow.forward_kl(data))
    # the exact entropy of the data's Gaussian is 2.2470 nats; the fit gets close to it
    entropy = 0.5 * 2 * math.log(2 * math.pi * math.e) + math.log(0.5 * 2.0)
    assert after < before - 3.0
    assert after < entropy + 0.05, (after, entropy)


def test_flow_is_a_flow_and_runs_in_float32():
    flow = coupling_flow("piecewise", 2, 2, hidden=(8,))
    assert isinstance(flow, Flow) and isinstance(flow.transform, Compose)
    assert flow.sample(10).dtype == torch.float32
    assert flow.log_prob(torch.randn(10, 2)).shape == (10,)


# ------------------------------------------------------------------ bad input


def test_coupling_rejects_bad_masks_and_arguments():
    with pytest.raises(ValueError, match="transform some coordinates"):
        AffineCoupling(torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="transform some coordinates"):
        AdditiveCoupling([0, 0, 0])
    with pytest.raises(ValueError, match="1D"):
        AffineCoupling(torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="0/1"):
        AffineCoupling(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="dim >= 2"):
        half_mask(1)
    with pytest.raises(ValueError, match="scale_bound"):
        AffineCoupling(half_mask(2), scale_bound=0.0)
    with pytest.raises(ValueError, match="bins"):
        PiecewiseLinearCoupling(half_mask(2), bins=0)
    with pytest.raises(ValueError, match="bound"):
        PiecewiseLinearCoupling(half_mask(2), bound=-1.0)


def test_coupling_rejects_bad_input_tensors():
    layer = make_layer("affine", dim=4, mask=half_mask(4))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        layer(torch.randn(3, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        layer(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="non-finite"):
        layer.inverse(torch.full((2, 4), float("nan"), dtype=torch.float64))


def test_permutation_and_builder_reject_bad_arguments():
    with pytest.raises(ValueError, match="exactly once"):
        Permutation([0, 0, 2])
    with pytest.raises(ValueError, match="integer"):
        Permutation(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="kind"):
        coupling_flow("spline", 2, 2)
    with pytest.raises(ValueError, match="dim >= 2"):
        coupling_flow("affine", 1, 2)
    with pytest.raises(ValueError, match="n_layers"):
        coupling_flow("affine", 2, 0)
    with pytest.raises(ValueError, match="masks for"):
        coupling_flow("affine", 2, 3, mask=[half_mask(2)])
    with pytest.raises(ValueError, match="permutation"):
        coupling_flow("affine", 2, 2, permutation="shuffle")


# ------------------------------------------------------------------ images


def test_dequantize_stays_in_the_cell_of_each_pixel():
    x = torch.randint(0, 17, (200, 64)).double()
    y = dequantize(x, 17, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.floor(17 * y), x)
    assert 0.45 < float((17 * y - x).mean()) < 0.55


def test_dequantize_rejects_non_integer_pixels():
    with pytest.raises(ValueError, match="integers"):
        dequantize(torch.tensor([[0.5, 3.0]]), 17)
    with pytest.raises(ValueError, match="integers"):
        dequantize(torch.tensor([[17.0]]), 17)
    with pytest.raises(TypeError):
        dequantize(torch.tensor([[1, 2]]), 17)


def test_bits_per_dim_of_the_uniform_model_is_log2_levels():
    assert bits_per_dim(0.0, 64, 17) == pytest.approx(math.log2(17))
    assert bits_per_dim(-64 * math.log(2), 64, 17) == pytest.approx(math.log2(17) - 1)
    with pytest.raises(ValueError):
        bits_per_dim(1.0, 0, 17)
