"""The public entry points of ``nfcourse.flows.continuous`` refuse what they cannot use:
times outside [0, 1], NaN or of the wrong shape; solver names, tolerances and step sizes
that are not finite positive numbers. Each message names the argument and the fix."""

from __future__ import annotations

import math

import pytest
import torch

from nfcourse.flows.continuous import (
    ContinuousFlow,
    GaussianPathField,
    LinearField,
    VelocityField,
    continuous_flow,
    flow_matching_loss,
    straight_path,
)


def field():
    return VelocityField(2, hidden=(8,))


@pytest.mark.parametrize(
    "t, message",
    [
        (torch.full((4,), float("nan")), "t contains non-finite values"),
        (torch.full((4,), float("inf")), "t contains non-finite values"),
        (torch.full((4,), 5.0), r"t must hold times in \[0, 1\].*\[5, 5\]"),
        (torch.full((4,), -0.1), r"t must hold times in \[0, 1\]"),
        (torch.zeros(3), r"t must have shape \(4,\) or \(4, 1\).*\(3,\)"),
        (torch.zeros(4, 2), r"t must have shape \(4,\) or \(4, 1\).*\(4, 2\)"),
        (torch.zeros(2, 2), r"t must have shape"),
    ],
)
def test_flow_matching_loss_validates_t(t, message):
    with pytest.raises(ValueError, match=message):
        flow_matching_loss(field(), torch.randn(4, 2), t=t)


@pytest.mark.parametrize(
    "t", [torch.rand(4), torch.rand(4, 1), torch.tensor([0.0, 1.0, 0.5, 1.0])]
)
def test_flow_matching_loss_takes_times_in_the_closed_interval(t):
    loss = flow_matching_loss(field(), torch.randn(4, 2), x0=torch.randn(4, 2), t=t)
    assert loss.shape == () and bool(torch.isfinite(loss))


def test_flow_matching_loss_gives_the_shared_dtype_error():
    with pytest.raises(TypeError, match=r"x1 is torch.float64 but the field has torch.float32"):
        flow_matching_loss(field(), torch.randn(4, 2, dtype=torch.float64))


def test_straight_path_validates_its_times_and_points():
    x0, x1 = torch.zeros(3, 2), torch.ones(3, 2)
    xt, velocity = straight_path(x0, x1, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(xt[:, 0], torch.tensor([0.0, 0.5, 1.0])) and bool((velocity == 1).all())
    with pytest.raises(ValueError, match=r"t must hold times in \[0, 1\]"):
        straight_path(x0, x1, torch.tensor([0.0, 0.5, 2.0]))
    with pytest.raises(ValueError, match="x1 has 3 features"):
        straight_path(x0, torch.ones(3, 3), torch.zeros(3))


@pytest.mark.parametrize("name", ["rtol", "atol"])
@pytest.mark.parametrize("value", [0.0, -1e-5, float("nan"), float("inf")])
def test_tolerances_must_be_finite_positive_numbers(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be a finite positive number"):
        ContinuousFlow(field(), **{name: value})
    with pytest.raises(ValueError, match=rf"{name} must be a finite positive number"):
        continuous_flow(2, hidden=(8,), **{name: value})


@pytest.mark.parametrize("value", ["1e-5", None, True])
def test_tolerances_must_be_numbers(value):
    with pytest.raises(TypeError, match="rtol must be a finite positive number"):
        ContinuousFlow(field(), rtol=value)


@pytest.mark.parametrize("step_size", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_step_size_must_be_a_finite_number_in_zero_one(step_size):
    with pytest.raises(ValueError, match=r"step_size must be a finite positive number.*at most 1"):
        ContinuousFlow(field(), method="rk4", step_size=step_size)


def test_fixed_step_methods_need_a_step_size():
    with pytest.raises(ValueError, match="needs step_size"):
        ContinuousFlow(field(), method="euler")
    flow = ContinuousFlow(field(), method="euler", step_size=0.5)
    assert flow.step_size == 0.5


@pytest.mark.parametrize("method", ["rk45", "", None, 3])
def test_solver_names_are_checked(method):
    with pytest.raises(ValueError, match="method must be one of"):
        ContinuousFlow(field(), method=method)


def test_trajectory_times_must_be_finite():
    flow = ContinuousFlow(LinearField(torch.eye(2)), method="rk4", step_size=0.25)
    with pytest.raises(ValueError, match="times must be finite"):
        flow.trajectory(torch.zeros(1, 2), [0.0, float("nan")])


def test_gaussian_marginal_log_prob_checks_its_time_and_points():
    path = GaussianPathField(torch.zeros(2), torch.ones(2))
    x = torch.zeros(3, 2)
    expected = -2 * 0.5 * math.log(2 * math.pi) * torch.ones(3)
    assert torch.allclose(path.marginal_log_prob(x, 1.0), expected)
    for t in (float("nan"), 2.0, -1.0):
        with pytest.raises(ValueError, match="t "):
            path.marginal_log_prob(x, t)
    with pytest.raises(ValueError, match="x has 3 features"):
        path.marginal_log_prob(torch.zeros(3, 3), 0.5)


def test_linear_closed_form_checks_its_time():
    linear = LinearField(torch.eye(2, dtype=torch.float64))
    for t in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="t must be a finite number"):
            linear.closed_form(torch.zeros(1, 2, dtype=torch.float64), t)
