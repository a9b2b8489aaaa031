"""Energy functions U1-U4, their normalisers by quadrature, and the exact reverse KL."""

from __future__ import annotations

import math

import pytest
import torch

import nfcourse
from nfcourse import targets
from nfcourse.targets import (
    ENERGIES,
    ENVELOPE_SCALE,
    energy_u1,
    energy_u2,
    energy_u3,
    energy_u4,
    exact_reverse_kl,
    log_partition,
    mass_outside_box,
    with_envelope,
)


def gaussian_energy(z):
    return 0.5 * (z**2).sum(dim=1)


def test_energies_match_the_formulas_at_hand_computed_points():
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    w1 = torch.sin(2 * math.pi * z[:, 0] / 4)
    # U1 at (2, 0): on the ring, at the centre of one bump
    assert float(energy_u1(z[:1])) == pytest.approx(
        -math.log(1 + math.exp(-0.5 * (4 / 0.6) ** 2)), abs=1e-12
    )
    torch.testing.assert_close(energy_u2(z), 0.5 * ((z[:, 1] - w1) / 0.4) ** 2)
    w2 = 3 * torch.exp(-0.5 * ((z[:, 0] - 1) / 0.6) ** 2)
    expected_u3 = -torch.log(
        torch.exp(-0.5 * ((z[:, 1] - w1) / 0.35) ** 2)
        + torch.exp(-0.5 * ((z[:, 1] - w1 + w2) / 0.35) ** 2)
    )
    torch.testing.assert_close(energy_u3(z), expected_u3)
    w3 = 3 * torch.sigmoid((z[:, 0] - 1) / 0.3)
    expected_u4 = -torch.log(
        torch.exp(-0.5 * ((z[:, 1] - w1) / 0.4) ** 2)
        + torch.exp(-0.5 * ((z[:, 1] - w1 + w3) / 0.35) ** 2)
    )
    torch.testing.assert_close(energy_u4(z), expected_u4)


def test_energies_stay_finite_far_from_the_mode():
    z = torch.tensor([[30.0, -30.0], [-50.0, 40.0]], dtype=torch.float64)
    for name, energy in ENERGIES.items():
        u = energy(z)
        assert u.shape == (2,) and torch.isfinite(u).all(), name


def test_envelope_adds_a_gaussian_factor_in_z1():
    z = torch.tensor([[3.0, 0.5]], dtype=torch.float64)
    expected = energy_u2(z) + 0.5 * (3.0 / ENVELOPE_SCALE) ** 2
    torch.testing.assert_close(ENERGIES["U2"](z), expected)
    with pytest.raises(ValueError, match="positive"):
        with_envelope(energy_u2, scale=0.0)


def test_energies_reject_points_that_are_not_two_dimensional():
    for energy in ENERGIES.values():
        with pytest.raises(ValueError, match=r"\(B, 2\)"):
            energy(torch.zeros(4, 3))


def test_log_partition_of_a_standard_gaussian_is_log_two_pi():
    assert log_partition(gaussian_energy, resolution=200) == pytest.approx(
        math.log(2 * math.pi), abs=1e-12
    )


@pytest.mark.parametrize("name, width", [("U2", 0.4), ("U3", 2 * 0.35), ("U4", 0.4 + 0.35)])
def test_log_partition_matches_the_closed_form_of_the_enveloped_ridges(name, width):
    # For fixed z1 each exp(-U) term is an unnormalised Gaussian in z2 of standard deviation
    # sigma (integral sigma sqrt(2 pi)); the envelope integrates to s sqrt(2 pi) in z1.
    exact = math.log(2 * math.pi * width * ENVELOPE_SCALE)
    energy = ENERGIES[name]
    outside = mass_outside_box(energy)
    assert outside < 1e-8
    # the quadrature misses only the mass outside the box
    assert log_partition(energy) == pytest.approx(exact, abs=2 * outside + 1e-10)


def test_log_partition_converges_as_the_grid_refines():
    errors = []
    reference = log_partition(energy_u1, resolution=800)
    for resolution in (30, 45, 60, 90):
        errors.append(abs(log_partition(energy_u1, resolution=resolution) - reference))
    assert errors[0] > 1e-4, "the coarsest grid should be visibly off"
    assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False))
    assert errors[-1] < 1e-7


def test_log_partition_of_u1_does_not_depend_on_the_box_once_it_is_large_enough():
    spacing = 0.04
    values = {
        half: log_partition(
            energy_u1, ((-half, half), (-half, half)), resolution=int(2 * half / spacing)
        )
        for half in (2.5, 6.0, 12.0)
    }
    assert abs(values[6.0] - values[12.0]) < 1e-10
    assert abs(values[2.5] - values[12.0]) > 1e-3, "a box of half-width 2.5 cuts the ring"


def test_mass_outside_box_sees_what_a_small_box_leaves_out():
    small = ((-1.0, 1.0), (-1.0, 1.0))
    # N(0, I): the mass outside [-1, 1]^2 is 1 - erf(1/sqrt 2)^2, up to the 2x larger box
    expected = 1 - math.erf(1 / math.sqrt(2)) ** 2
    inside_big = math.erf(2 / math.sqrt(2)) ** 2
    got = mass_outside_box(gaussian_energy, small, resolution=200)
    # the midpoint rule is second order here: exp(-U) does not vanish at the box edges
    assert got == pytest.approx((inside_big - (1 - expected)) / inside_big, rel=1e-4)


def test_u2_without_the_envelope_is_improper():
    # exp(-U2) does not decay along z1: doubling the box along z1 adds log 2 to "log Z"
    narrow = log_partition(energy_u2, ((-8.0, 8.0), (-6.0, 6.0)), resolution=400)
    wide = log_partition(energy_u2, ((-16.0, 16.0), (-6.0, 6.0)), resolution=800)
    assert wide - narrow == pytest.approx(math.log(2), abs=1e-6)


def test_log_partition_rejects_a_bad_box_or_grid():
    with pytest.raises(ValueError, match="box"):
        log_partition(gaussian_energy, ((1.0, -1.0), (-1.0, 1.0)))
    with pytest.raises(ValueError, match="resolution"):
        log_partition(gaussian_energy, resolution=1)
    with pytest.raises(ValueError, match="factor"):
        mass_outside_box(gaussian_energy, factor=1)


def test_exact_reverse_kl_is_zero_when_the_flow_is_the_target():
    flow = nfcourse.Flow([nfcourse.ElementwiseAffine(2)]).double()
    kl, se = exact_reverse_kl(flow, gaussian_energy, math.log(2 * math.pi), n=1000)
    assert abs(kl) < 1e-12 and se < 1e-12


def test_exact_reverse_kl_matches_the_gaussian_closed_form():
    # q = N(0, I), p = N(0, s^2 I): KL(q || p) = D/2 (1/s^2 - 1 + log s^2)
    s = 1.7
    flow = nfcourse.Flow([nfcourse.ElementwiseAffine(2)]).double()

    def energy(z):
        return 0.5 * (z**2).sum(dim=1) / s**2

    exact = 1 / s**2 - 1 + math.log(s**2)
    kl, se = exact_reverse_kl(flow, energy, math.log(2 * math.pi * s**2), n=20_000, seed=3)
    assert 0 < se < 0.01
    assert abs(kl - exact) < 4 * se


def test_targets_is_part_of_the_package():
    assert nfcourse.targets is targets
    assert set(ENERGIES) == {"U1", "U2", "U3", "U4"}
