"""Continuous-time flows (chapter 10): neural ODEs, their log-likelihood, flow matching.

A velocity field ``v(z, t)`` defines a map of ``R^D`` by the ordinary differential equation

    dz/dt = v(z, t),    z(0) = z,    x = f(z) = z(1).

The map is invertible whenever the ODE has unique solutions (integrate from ``t = 1`` back
to ``t = 0``), whatever the field. Along a path the log-density changes by the
instantaneous change of variables (Chen et al. 2018),

    d log p(z(t)) / dt = -tr(dv/dz),    so    log |det df/dz| = int_0^1 tr(dv/dz) dt.

``ContinuousFlow`` integrates the augmented state ``(z, a)``, ``da/dt = tr(dv/dz)``, with
``torchdiffeq`` (adaptive ``dopri5`` by default, or a fixed-step method), forward from 0
to 1 for ``forward`` (base to data) and backward for ``inverse``. The trace is exact
(``D`` vector-Jacobian products) or Hutchinson's estimate ``eps^T (dv/dz) eps`` with one
probe ``eps`` per point and solve (Grathwohl et al. 2019, FFJORD).

Flow matching (Lipman et al. 2023; Liu et al. 2023) trains the field without solving any
ODE: ``flow_matching_loss`` regresses ``v(x_t, t)`` on the velocity ``x_1 - x_0`` of the
straight path ``x_t = (1 - t) x_0 + t x_1`` between a base point ``x_0`` and a data point
``x_1``. With ``coupling="ot"`` the base and data points of a batch are paired by an exact
optimal-transport assignment (``ot_pairing``) instead of independently, so that fewer
paths cross (Tong et al. 2024). ``GaussianPathField`` is the exact minimiser of that loss
when the data are Gaussian; ``LinearField`` is a field whose flow is an affine map. Both
have closed forms against which the solver is tested.

Time runs from ``t = 0`` (the base) to ``t = 1`` (the data) throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..core import Flow, Transform
from ..distributions import BaseDistribution, StandardNormal
from ..seeding import generator as make_generator
from ..seeding import seeded
from ..validation import (
    check_batch,
    check_positive_float,
    check_positive_int,
    check_times,
    module_dtype,
)
from .coupling import conditioner_mlp

__all__ = [
    "VelocityField",
    "LinearField",
    "GaussianPathField",
    "exact_divergence",
    "hutchinson_divergence",
    "ContinuousFlow",
    "continuous_flow",
    "flow_matching_loss",
    "COUPLINGS",
    "ot_pairing",
    "straight_path",
    "path_straightness",
    "METHODS",
    "FIXED_STEP_METHODS",
]

#: The ODE solvers of torchdiffeq that the course uses: adaptive and fixed-step.
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun")
FIXED_STEP_METHODS = ("euler", "midpoint", "rk4", "heun3")
METHODS = ADAPTIVE_METHODS + FIXED_STEP_METHODS
TRACES = ("exact", "hutchinson")
#: ``trace="auto"`` computes the exact trace up to this dimension, Hutchinson's above.
EXACT_TRACE_MAX_DIM = 8


# --------------------------------------------------------------------------------------
# Velocity fields
# --------------------------------------------------------------------------------------


def _time_column(t: Tensor | float, z: Tensor) -> Tensor:
    """``t`` as a column ``(B, 1)`` of ``z``'s dtype: a number, a 0-d tensor, ``(B,)`` or
    ``(B, 1)``."""
    t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
    if t.dim() == 0:
        return t.expand(z.shape[0], 1)
    return t.reshape(-1, 1).expand(z.shape[0], 1)


class VelocityField(nn.Module):
    """A time-dependent velocity field ``v(z, t)``: an MLP of ``(z, t)`` to ``R^D``.

    Called as ``field(t, z)`` (torchdiffeq's order) with ``z`` of shape ``(B, D)`` and ``t``
    a number, a 0-d tensor or one time per point (``(B,)`` or ``(B, 1)``). The attribute
    ``nfe`` counts the calls (the number of function evaluations of a solver); set it to
    zero before a solve to count that solve's.

    The activation must be smooth (the default is ``nn.Tanh``; ``nn.Softplus`` and ``nn.SiLU``
    work too): the divergence differentiates the field, and a ReLU network's divergence is
    piecewise constant.

    Args:
        dim: the dimension ``D``.
        hidden: widths of the hidden layers.
        activation: a smooth activation (a module class).
        zero_init: start the last layer at zero, so that the flow starts as the identity.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.Tanh,
        zero_init: bool = False,
    ):
        super().__init__()
        dim = check_positive_int(dim, "dim")
        hidden = tuple(hidden)
        if not hidden:
            raise ValueError(
                "hidden must be a non-empty sequence of positive integers, the "
                "widths of the hidden layers, got ()"
            )
        hidden = tuple(
            check_positive_int(h, f"hidden[{k}]", f"the width of hidden layer {k}")
            for k, h in enumerate(hidden)
        )
        if activation is nn.ReLU:
            raise ValueError(
                "activation nn.ReLU has a piecewise-constant derivative, so "
                "the divergence of the field would be piecewise constant; use "
                "a smooth activation such as nn.Softplus, nn.Tanh or nn.SiLU"
            )
        self.dim = dim
        # the input is (z, t): D + 1 numbers in, D velocities out
        self.net = conditioner_mlp(dim + 1, dim, hidden, activation, zero_last=zero_init)
        self.nfe = 0

    def forward(self, t: Tensor | float, z: Tensor) -> Tensor:
        self.nfe += 1
        return self.net(torch.cat([z, _time_column(t, z)], dim=1))


class LinearField(nn.Module):
    """The time-independent linear field ``v(z) = A z + b``.

    Its flow over time ``t`` is the affine map ``z(t) = e^{tA} z + (int_0^t e^{sA} ds) b``,
    with ``log |det| = t tr A``: a closed form to test the solver and the divergence
    against (``closed_form``). ``nfe`` counts the calls.

    Args:
        matrix: ``A``, shape ``(D, D)``.
        shift: ``b``, shape ``(D,)`` (default zero).
    """

    def __init__(self, matrix: Tensor, shift: Tensor | None = None):
        super().__init__()
        matrix = torch.as_tensor(matrix)
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square, shape (D, D), got {tuple(matrix.shape)}")
        if not matrix.is_floating_point():
            matrix = matrix.to(torch.get_default_dtype())
        shift = (
            torch.zeros(matrix.shape[0], dtype=matrix.dtype)
            if shift is None
            else torch.as_tensor(shift, dtype=matrix.dtype)
        )
        if shift.shape != (matrix.shape[0],):
            raise ValueError(
                f"shift must have shape ({matrix.shape[0]},), got {tuple(shift.shape)}"
            )
        self.matrix = nn.Parameter(matrix.clone())
        self.shift = nn.Parameter(shift.clone())
        self.dim = matrix.shape[0]
        self.nfe = 0

    def forward(self, t: Tensor | float, z: Tensor) -> Tensor:
        self.nfe += 1
        return z @ self.matrix.T + self.shift

    @torch.no_grad()
    def closed_form(self, z: Tensor, t: float = 1.0) -> tuple[Tensor, Tensor]:
        """The exact flow ``z(t)`` of ``z`` ``(B, D)`` and ``log |det dz(t)/dz| = t tr A``.

        ``int_0^t e^{sA} ds`` is the top-right block of the exponential of the
        ``2D x 2D`` matrix ``[[tA, tI], [0, 0]]``."""
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise ValueError(f"t must be a finite number (a time), got {t!r}")
        z = check_batch(z, self.dim, "z", dtype=self.matrix.dtype, owner="the field")
        d = self.dim
        a = self.matrix
        block = torch.zeros(2 * d, 2 * d, dtype=a.dtype)
        block[:d, :d] = t * a
        block[:d, d:] = t * torch.eye(d, dtype=a.dtype)
        expo = torch.linalg.matrix_exp(block)
        x = z @ expo[:d, :d].T + expo[:d, d:] @ self.shift
        return x, torch.full((z.shape[0],), t * float(torch.trace(a)), dtype=z.dtype)


class GaussianPathField(nn.Module):
    """The flow-matching field of straight paths from ``N(0, I)`` to ``N(m, diag(s^2))``.

    With ``x_t = (1 - t) x_0 + t x_1``, ``x_0 ~ N(0, I)`` and ``x_1 ~ N(m, diag(s^2))``
    independent, ``x_t ~ N(t m, diag(sigma_t^2))`` with ``sigma_t^2 = (1 - t)^2 + t^2 s^2``,
    and the field that minimises the flow-matching loss is the conditional mean of the
    path velocity:

        v(x, t) = E[x_1 - x_0 | x_t = x] = m + (t s^2 - (1 - t)) / sigma_t^2 (x - t m).

    Its flow carries ``N(0, I)`` onto ``N(t m, diag(sigma_t^2))`` at every time ``t``
    (``marginal_log_prob``). ``nfe`` counts the calls.
    """

    def __init__(self, mean: Tensor, std: Tensor):
        super().__init__()
        mean = torch.as_tensor(mean)
        if not mean.is_floating_point():
            mean = mean.to(torch.get_default_dtype())
        std = torch.as_tensor(std, dtype=mean.dtype)
        if mean.dim() != 1 or std.shape != mean.shape:
            raise ValueError(
                f"mean and std must be vectors of one shape (D,), got "
                f"{tuple(mean.shape)} and {tuple(std.shape)}"
            )
        if not bool((std > 0).all()):
            raise ValueError(f"std must be positive, got {std.tolist()}")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.dim = mean.shape[0]
        self.nfe = 0

    def sigma(self, t: Tensor) -> Tensor:
        """``sigma_t = sqrt((1 - t)^2 + t^2 s^2)``, one row per time."""
        return torch.sqrt((1 - t) ** 2 + t**2 * self.std**2)

    def forward(self, t: Tensor | float, z: Tensor) -> Tensor:
        self.nfe += 1
        t = _time_column(t, z)
        rate = (t * self.std**2 - (1 - t)) / self.sigma(t) ** 2
        return self.mean + rate * (z - t * self.mean)

    def marginal_log_prob(self, x: Tensor, t: float = 1.0) -> Tensor:
        """``log N(x; t m, diag(sigma_t^2))``, the exact log-density at time ``t``."""
        x = check_batch(x, self.dim, "x", dtype=self.mean.dtype, owner="the field")
        tt = check_times(torch.full((x.shape[0],), float(t)), x.shape[0], "t", x.dtype)
        tt = tt.to(x.device)
        sigma = self.sigma(tt)
        u = (x - tt * self.mean) / sigma
        return (-0.5 * u**2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(1)


# --------------------------------------------------------------------------------------
# The divergence tr(dv/dz)
# --------------------------------------------------------------------------------------


def exact_divergence(v: Tensor, z: Tensor, create_graph: bool = False) -> Tensor:
    """``tr(dv/dz)`` for each row, exactly: ``D`` vector-Jacobian products, one per
    coordinate, keeping the diagonal ``dv_i/dz_i``. ``v`` ``(B, D)`` must be computed from
    ``z`` ``(B, D)`` row by row (row ``b`` of ``v`` depends on row ``b`` of ``z`` only);
    returns ``(B,)``."""
    total = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
    for i in range(z.shape[1]):
        grad = torch.autograd.grad(v[:, i].sum(), z, create_graph=create_graph, retain_graph=True)[
            0
        ]
        total = total + grad[:, i]
    return total


def hutchinson_divergence(
    v: Tensor, z: Tensor, noise: Tensor, create_graph: bool = False
) -> Tensor:
    """Hutchinson's estimate ``eps^T (dv/dz) eps`` of ``tr(dv/dz)``, one probe ``eps``
    (a row of ``noise``, ``(B, D)``) per point, with one vector-Jacobian product. Unbiased
    when ``E[eps eps^T] = I`` (Rademacher or standard normal probes); returns ``(B,)``."""
    grad = torch.autograd.grad(v, z, noise, create_graph=create_graph, retain_graph=True)[0]
    return (grad * noise).sum(1)


def _probe(
    shape: torch.Size,
    kind: str,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    signs = torch.randint(0, 2, shape, generator=generator, device=device)
    return (2 * signs - 1).to(dtype)


class _Augmented(nn.Module):
    """The augmented dynamics ``d(z, a)/dt = (v(z, t), tr(dv/dz))`` of a solve."""

    def __init__(self, field: nn.Module, noise: Tensor | None, create_graph: bool):
        super().__init__()
        self.field = field
        self.noise = noise
        self.create_graph = create_graph

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        z = state[0]
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            v = self.field(t, z)
            if self.noise is None:
                div = exact_divergence(v, z, self.create_graph)
            else:
                div = hutchinson_divergence(v, z, self.noise, self.create_graph)
        if not self.create_graph:
            v, div = v.detach(), div.detach()
        return v, div


# --------------------------------------------------------------------------------------
# The flow
# --------------------------------------------------------------------------------------


def _check_solver(method: str, rtol: float, atol: float, step_size: float | None) -> None:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(
            f"method must be one of {', '.join(METHODS)} (torchdiffeq's solvers), got {method!r}"
        )
    for name, value in (("rtol", rtol), ("atol", atol)):
        check_positive_float(value, name, "the adaptive solver's tolerance, such as 1e-5")
    if method in FIXED_STEP_METHODS:
        if step_size is None:
            raise ValueError(
                f"the fixed-step method {method!r} needs step_size, a number in (0, 1] "
                "(for example step_size=0.1 for ten steps), got None"
            )
        check_positive_float(
            step_size,
            "step_size",
            f"the step of the fixed-step method {method!r}; step_size=0.1 takes ten steps",
            high=1.0,
        )


class ContinuousFlow(Transform):
    """The flow of an ODE ``dz/dt = v(z, t)`` from ``t = 0`` (base) to ``t = 1`` (data).

    ``forward(z)`` integrates from 0 to 1 and returns ``x = z(1)`` with
    ``log |det df/dz| = int_0^1 tr(dv/dz) dt``; ``inverse(x)`` integrates from 1 back to 0
    and returns ``z(0)`` with ``-int_0^1 tr(dv/dz) dt``. Both solve the augmented ODE of
    ``(z, a)``, ``da/dt = tr(dv/dz)``, with torchdiffeq.

    Args:
        field: the velocity field, an ``nn.Module`` called as ``field(t, z)`` with
            ``z`` ``(B, D)``, returning ``(B, D)`` (``VelocityField``, ``LinearField``, ...).
        dim: the dimension ``D`` (default ``field.dim``).
        method: a torchdiffeq solver: adaptive (``"dopri5"``, ...) or fixed-step
            (``"euler"``, ``"midpoint"``, ``"rk4"``, ...).
        rtol, atol: the adaptive solver's tolerances.
        step_size: the fixed-step methods' step, in ``(0, 1]``.
        trace: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact up to
            ``EXACT_TRACE_MAX_DIM`` dimensions).
        noise: Hutchinson's probes, ``"rademacher"`` (random signs) or ``"gaussian"``.
        adjoint: differentiate with the adjoint method (``odeint_adjoint``: memory
            constant in the number of steps, a second solve backwards) instead of through
            the solver's operations.
        seed: the probes' random state: an integer gives them a generator of their own,
            drawn from afresh at every solve; ``None`` uses torch's global random state.
    """

    def __init__(
        self,
        field: nn.Module,
        dim: int | None = None,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        step_size: float | None = None,
        trace: str = "auto",
        noise: str = "rademacher",
        adjoint: bool = False,
        seed: int | None = 0,
    ):
        if not isinstance(field, nn.Module):
            raise TypeError(
                f"field must be an nn.Module called as field(t, z) (for example "
                f"nfcourse.flows.continuous.VelocityField(dim)), got "
                f"{type(field).__name__}"
            )
        dim = getattr(field, "dim", None) if dim is None else dim
        if dim is None:
            raise ValueError(
                "pass dim, the dimension of the field (the field has no attribute dim)"
            )
        super().__init__(dim)
        _check_solver(method, rtol, atol, step_size)
        if trace == "auto":
            trace = "exact" if dim <= EXACT_TRACE_MAX_DIM else "hutchinson"
        if trace not in TRACES:
            raise ValueError(f"trace must be 'exact', 'hutchinson' or 'auto', got {trace!r}")
        if noise not in ("rademacher", "gaussian"):
            raise ValueError(f"noise must be 'rademacher' or 'gaussian', got {noise!r}")
        self.field = field
        self.method, self.rtol, self.atol = method, float(rtol), float(atol)
        self.step_size = None if step_size is None else float(step_size)
        self.trace, self.noise, self.adjoint = trace, noise, bool(adjoint)
        self._generator = make_generator(seed)

    def extra_repr(self) -> str:
        solver = (
            f"step_size={self.step_size}"
            if self.method in FIXED_STEP_METHODS
            else f"rtol={self.rtol:g}, atol={self.atol:g}"
        )
        return f"dim={self.dim}, method={self.method!r}, {solver}, trace={self.trace!r}" + (
            ", adjoint=True" if self.adjoint else ""
        )

    def _options(self) -> dict:
        if self.method in FIXED_STEP_METHODS:
            return {"method": self.method, "options": {"step_size": self.step_size}}
        return {"method": self.method, "rtol": self.rtol, "atol": self.atol}

    def _solve(self, z: Tensor, t0: float, t1: float) -> tuple[Tensor, Tensor]:
        from torchdiffeq import odeint, odeint_adjoint  # imported on first use: it loads scipy

        noise = None
        if self.trace == "hutchinson":
            noise = _probe(z.shape, self.noise, z.dtype, z.device, self._generator)
        dynamics = _Augmented(self.field, noise, create_graph=torch.is_grad_enabled())
        times = torch.tensor([t0, t1], dtype=z.dtype, device=z.device)
        state = (z, z.new_zeros(z.shape[0]))
        if self.adjoint:
            out = odeint_adjoint(
                dynamics,
                state,
                times,
                adjoint_params=tuple(self.field.parameters()),
                **self._options(),
            )
        else:
            out = odeint(dynamics, state, times, **self._options())
        return out[0][-1], out[1][-1]

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._solve(z, 0.0, 1.0)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._solve(x, 1.0, 0.0)

    def trajectory(self, z: Tensor, times: Tensor | Sequence[float]) -> Tensor:
        """The positions of the particles ``z`` ``(B, D)`` at ``times`` (increasing or
        decreasing, starting where ``z`` is), shape ``(T, B, D)``, without the
        log-determinant."""
        z = self._check_latent(z, "z")
        times = torch.as_tensor(times, dtype=z.dtype, device=z.device)
        if times.dim() != 1 or len(times) < 2:
            raise ValueError(
                f"times must be a sequence of at least two times, got shape {tuple(times.shape)}"
            )
        if not bool(torch.isfinite(times).all()):
            raise ValueError(f"times must be finite, got {times.tolist()}")
        diffs = times[1:] - times[:-1]
        if not (bool((diffs > 0).all()) or bool((diffs < 0).all())):
            raise ValueError("times must be strictly increasing or strictly decreasing")
        from torchdiffeq import odeint

        return odeint(self.field, z, times, **self._options())


def continuous_flow(
    dim: int,
    hidden: Sequence[int] = (64, 64),
    activation: type[nn.Module] = nn.Tanh,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    step_size: float | None = None,
    trace: str = "auto",
    adjoint: bool = False,
    seed: int | None = 0,
    base: BaseDistribution | None = None,
) -> Flow:
    """A continuous normalizing flow: a ``VelocityField`` MLP integrated by a
    ``ContinuousFlow``, with a standard normal base. ``seed`` (as everywhere in the package)
    seeds the initial weights and Hutchinson's probes; the other arguments are those of
    ``VelocityField`` and ``ContinuousFlow``."""
    dim = check_positive_int(dim, "dim")
    with seeded(seed):
        field = VelocityField(dim, hidden, activation)
    transform = ContinuousFlow(
        field,
        dim,
        method=method,
        rtol=rtol,
        atol=atol,
        step_size=step_size,
        trace=trace,
        adjoint=adjoint,
        seed=seed,
    )
    return Flow(transform, base=base if base is not None else StandardNormal(dim))


# --------------------------------------------------------------------------------------
# Flow matching
# --------------------------------------------------------------------------------------


def straight_path(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """The point ``x_t = (1 - t) x_0 + t x_1`` of the straight path from ``x_0`` to ``x_1``
    and its velocity ``x_1 - x_0``; ``t`` is ``(B,)`` or ``(B, 1)``."""
    x0 = check_batch(x0, None, "x0")
    x1 = check_batch(x1, x0.shape[1], "x1", dtype=x0.dtype)
    if x0.shape != x1.shape:
        raise ValueError(
            f"x0 and x1 must have one shape (B, D), got {tuple(x0.shape)} and {tuple(x1.shape)}"
        )
    t = check_times(t, x0.shape[0], "t", x0.dtype).to(x0.device)
    return (1 - t) * x0 + t * x1, x1 - x0


#: How ``flow_matching_loss`` pairs the base points with the data points of a batch.
COUPLINGS = ("independent", "ot")


def ot_pairing(x0: Tensor, x1: Tensor) -> Tensor:
    """The minibatch optimal-transport coupling: the permutation ``perm`` of the batch
    that pairs each base point ``x0[i]`` with the data point ``x1[perm[i]]`` at the least
    total squared distance ``sum_i |x0[i] - x1[perm[i]]|^2``.

    It is an exact assignment (the Hungarian problem, ``O(B^3)``), solved by
    ``scipy.optimize.linear_sum_assignment`` on the ``(B, B)`` matrix of squared
    distances. Paired this way, the straight paths of a batch cross less than between
    independent pairs (two crossing segments can be swapped for a cheaper pair). No
    gradient flows through the pairing.

    Args:
        x0, x1: batches of one shape ``(B, D)``.

    Returns:
        a permutation of ``0, ..., B - 1``, a long tensor of shape ``(B,)``.
    """
    x0 = check_batch(x0, None, "x0")
    x1 = check_batch(x1, x0.shape[1], "x1", dtype=x0.dtype)
    if x0.shape != x1.shape:
        raise ValueError(
            f"x0 and x1 must have one shape (B, D), got {tuple(x0.shape)} and {tuple(x1.shape)}"
        )
    from scipy.optimize import linear_sum_assignment

    a, b = x0.detach().double().cpu(), x1.detach().double().cpu()
    cost = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    rows, cols = linear_sum_assignment(cost.numpy())
    perm = torch.empty(len(rows), dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.long)
    return perm.to(x1.device)


def flow_matching_loss(
    field: nn.Module,
    x1: Tensor,
    generator: torch.Generator | None = None,
    x0: Tensor | None = None,
    t: Tensor | None = None,
    coupling: str = "independent",
) -> Tensor:
    """The conditional flow-matching loss with straight paths:

        E_{t ~ U[0,1], x_0 ~ N(0, I), x_1 ~ data} || v(x_t, t) - (x_1 - x_0) ||^2,
        x_t = (1 - t) x_0 + t x_1,

    averaged over the batch (summed over coordinates). Its gradient is that of
    ``E || v(x_t, t) - u(x_t, t) ||^2`` with the marginal field ``u(x, t) =
    E[x_1 - x_0 | x_t = x]``, whose flow carries the base onto the data (Lipman et al.
    2023). No ODE is solved.

    Args:
        field: the velocity field, called as ``field(t, x)`` with ``t`` of shape ``(B, 1)``.
        x1: a batch of data ``(B, D)``.
        generator: the random state of ``x_0`` and ``t`` (``None``: the global one).
        x0, t: pass them to fix the base points ``(B, D)`` and times ``(B,)`` instead.
        coupling: ``"independent"`` pairs ``x0[i]`` with ``x1[i]``; ``"ot"`` pairs them
            by the minibatch optimal-transport assignment ``ot_pairing(x0, x1)`` first.
            Both couplings have the base and the data as marginals, so both fields carry
            the base onto the data; the OT field's paths cross less.
    """
    if coupling not in COUPLINGS:
        raise ValueError(f"coupling must be 'independent' or 'ot', got {coupling!r}")
    if not isinstance(field, nn.Module):
        raise TypeError(
            f"field must be an nn.Module called as field(t, x), got {type(field).__name__}"
        )
    dim = getattr(field, "dim", None)
    x1 = check_batch(x1, dim, "x1", dtype=module_dtype(field), owner="the field")
    if x0 is None:
        x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
    else:
        x0 = check_batch(x0, x1.shape[1], "x0", dtype=x1.dtype)
        if x0.shape != x1.shape:
            raise ValueError(
                f"x0 must have the shape of x1, {tuple(x1.shape)}, got {tuple(x0.shape)}"
            )
    if t is None:
        t = torch.rand(x1.shape[0], 1, generator=generator, dtype=x1.dtype, device=x1.device)
    else:
        t = check_times(t, x1.shape[0], "t", x1.dtype).to(x1.device)
    if coupling == "ot":
        x1 = x1[ot_pairing(x0, x1)]
    xt, target = straight_path(x0, x1, t)
    return ((field(t, xt) - target) ** 2).sum(1).mean()


@torch.no_grad()
def path_straightness(transform: ContinuousFlow, z: Tensor, steps: int = 50) -> Tensor:
    """How far each particle's path bends: the path length ``int_0^1 |v| dt`` divided by
    the distance ``|x - z|`` between its ends, minus one (zero for a straight path, at
    constant or varying speed), from a trajectory of ``steps`` intervals; shape ``(B,)``."""
    if not isinstance(transform, ContinuousFlow):
        raise TypeError(f"transform must be a ContinuousFlow, got {type(transform).__name__}")
    steps = check_positive_int(steps, "steps")
    path = transform.trajectory(z, torch.linspace(0, 1, steps + 1))
    length = (path[1:] - path[:-1]).norm(dim=2).sum(0)
    chord = (path[-1] - path[0]).norm(dim=1)
    return length / chord.clamp_min(1e-12) - 1
