"""Planar flows (chapter 3), after Rezende and Mohamed (2015).

``PlanarFlow``: ``x = f(z) = z + u_hat h(w^T z + b)`` with ``h = tanh``. Its Jacobian is
``J = I + u_hat psi(z)^T`` with ``psi(z) = h'(w^T z + b) w``, and the matrix determinant
lemma ``det(I + u v^T) = 1 + v^T u`` gives

    log |det J| = log |1 + u_hat^T psi(z)| = log |1 + h'(w^T z + b) w^T u_hat|.

The map is invertible when ``w^T u_hat >= -1``: the raw parameter ``u`` is mapped into
that set by ``u_hat = u + (m(w^T u) - w^T u) w / ||w||^2`` with ``m(a) = -1 + softplus(a)``,
so that ``w^T u_hat = m(w^T u) > -1`` for every ``u`` (and every ``w != 0``).

The inverse has no closed form, but it reduces to one scalar equation per point: with
``alpha = w^T z`` and ``y = w^T x``, ``y = alpha + m h(alpha + b)`` where ``m = w^T u_hat``.
The right side increases with ``alpha``, its root lies in ``[y - |m|, y + |m|]``, and
safeguarded Newton (falling back to bisection) finds it; then ``z = x - u_hat h(alpha + b)``.
Gradients pass through the root by the implicit function theorem (one Newton step whose
slope is held constant), so ``log_prob`` of a planar flow can be trained by maximum
likelihood.

``planar_forward`` and ``planar_inverse`` take one parameter set shared by the batch
(``u_hat, w`` of shape ``(D,)``, ``b`` a scalar), as ``PlanarFlow`` does, or one per
example (``u_hat, w`` of shape ``(*, D)`` and ``b`` of shape ``(*,)``, broadcast against the
points), as the amortised posterior of the VAE in chapter 6 does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Transform
from ..validation import check_positive_int

__all__ = [
    "PlanarFlow",
    "planar_forward",
    "planar_inverse",
    "constrained_u",
    "solve_planar_projection",
    "default_tolerance",
    "SOFTPLUS_ONE",
]

# softplus(a) = 1 at a = log(e - 1): there m(a) = 0, so u_hat is u minus its part along w.
SOFTPLUS_ONE = math.log(math.e - 1.0)


def default_tolerance(dtype: torch.dtype) -> float:
    """The root-finding tolerance of the planar inverse: ``1e-12`` in float64, ``1e-6``
    in float32 (and in lower precisions), relative to ``1 + |w^T x| + |w^T u_hat|``."""
    return 1e-12 if dtype == torch.float64 else 1e-6


def constrained_u(u: Tensor, w: Tensor) -> Tensor:
    """``u_hat = u + (m(w^T u) - w^T u) w / ||w||^2``, ``m(a) = -1 + softplus(a)``.

    Then ``w^T u_hat = m(w^T u) > -1``, which makes the planar map with ``h = tanh``
    invertible. Works on the last axis: ``u`` and ``w`` of shape ``(..., D)``, ``w != 0``.
    """
    wu = (w * u).sum(dim=-1, keepdim=True)
    m = -1.0 + F.softplus(wu)
    return u + (m - wu) * w / (w * w).sum(dim=-1, keepdim=True)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """``a^T b`` over the last axis, broadcast over the leading ones."""
    return a @ b if b.dim() == 1 else (a * b).sum(dim=-1)


def planar_forward(z: Tensor, u_hat: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """The forward map and its log-determinant.

    Args:
        z: points of shape ``(*, D)``, for example ``(B, D)``.
        u_hat, w: vectors of shape ``(D,)`` shared by all points, or one per point, of a
            shape ``(*, D)`` that broadcasts against ``z``.
        b: a scalar tensor, or one bias per point of shape ``(*,)``.

    Returns:
        ``x = z + u_hat tanh(w^T z + b)`` of shape ``(*, D)`` and
        ``log |1 + h'(w^T z + b) w^T u_hat|`` of shape ``(*,)``.
    """
    h = torch.tanh(_dot(z, w) + b)
    x = z + h.unsqueeze(-1) * u_hat
    u_dot_psi = (1.0 - h**2) * _dot(w, u_hat)
    return x, torch.log(torch.abs(1.0 + u_dot_psi))


@torch.no_grad()
def solve_planar_projection(
    y: Tensor, m: Tensor, b: Tensor, tol: float | None = None, max_iter: int = 100
) -> Tensor:
    """Solve ``alpha + m tanh(alpha + b) = y`` for ``alpha``, elementwise, when ``m >= -1``.

    ``g(alpha) = alpha + m tanh(alpha + b) - y`` never decreases (``g' = 1 + m h' >= 0``)
    and changes sign on ``[y - |m|, y + |m|]``. Each iteration shrinks that bracket around
    the root and takes a Newton step; it bisects instead when the Newton step would not land
    strictly inside the bracket, or would not be half as long as the step before last (the
    safeguard of Numerical Recipes' ``rtsafe``, which stops Newton from cycling). It stops
    when ``|g(alpha)| <= tol (1 + |y| + |m|)`` at every point, or when the bracket has
    shrunk to the rounding error of the numbers involved.

    Points where ``y``, ``m`` or ``b`` is not finite (parameters that training has sent
    to NaN) are not iterated: their root is NaN, and the NaN travels on into the loss.

    Args:
        y: the targets ``w^T x``, any shape.
        m: ``w^T u_hat``, at least ``-1``: a scalar tensor, or one per point (broadcast
            against ``y``).
        b: the bias: a scalar tensor, or one per point.
        tol: the relative tolerance; ``default_tolerance(y.dtype)`` when ``None``.
        max_iter: the largest number of iterations.

    Raises:
        RuntimeError: when some point has not converged after ``max_iter`` iterations,
            naming the largest residual.
    """
    tol = default_tolerance(y.dtype) if tol is None else float(tol)
    m, b = m.detach(), b.detach()
    lo, hi = y - m.abs(), y + m.abs()
    alpha = y - m * torch.tanh(y + b)  # inside the bracket: |m tanh| <= |m|
    step_before_last = step_last = hi - lo
    threshold = tol * (1.0 + y.abs() + m.abs())
    # NaN parameters (a diverged training run) give NaN roots, not a convergence error
    hopeless = ~torch.isfinite(threshold + b)
    resolution = 4 * torch.finfo(y.dtype).eps
    for iteration in range(max_iter + 1):
        t = torch.tanh(alpha + b)
        g = alpha + m * t - y
        # converged, or the bracket is as narrow as the floating-point numbers allow (the
        # residual of huge parameters cannot go below their rounding error)
        done = (
            (g.abs() <= threshold)
            | hopeless
            | ((hi - lo) <= resolution * (alpha.abs() + m.abs() + 1.0))
        )
        if bool(done.all()):
            return alpha
        if iteration == max_iter:
            break
        hi = torch.where(g > 0, alpha, hi)
        lo = torch.where(g < 0, alpha, lo)
        newton_step = g / (1.0 + m * (1.0 - t**2))
        newton = alpha - newton_step
        use_newton = (
            (newton > lo)
            & (newton < hi)  # False for inf and NaN as well
            & (2.0 * newton_step.abs() <= step_before_last.abs())
        )
        step_before_last = step_last
        step_last = torch.where(use_newton, newton_step, 0.5 * (hi - lo))
        alpha = torch.where(done, alpha, torch.where(use_newton, newton, 0.5 * (lo + hi)))
    ratio = g.abs() / threshold
    worst = int(ratio.flatten().argmax())
    raise RuntimeError(
        f"the planar inverse did not converge in {max_iter} iterations: the largest residual "
        f"|alpha + m tanh(alpha + b) - w^T x| is {float(g.abs().flatten()[worst]):.3g} at "
        f"point {worst}, above the tolerance {float(threshold.flatten()[worst]):.3g} "
        f"({int((~done).sum())} of {done.numel()} points unconverged); "
        "raise max_iter or loosen tol"
    )


def planar_inverse(
    x: Tensor,
    u_hat: Tensor,
    w: Tensor,
    b: Tensor,
    tol: float | None = None,
    max_iter: int = 100,
) -> tuple[Tensor, Tensor]:
    """The inverse map ``z = f^{-1}(x)`` and ``log |det J_{f^{-1}}(x)| = -log |det J_f(z)|``,
    for shared or per-point parameters (shapes as in ``planar_forward``).

    Solves ``w^T x = alpha + m tanh(alpha + b)`` for ``alpha = w^T z`` (``m = w^T u_hat``)
    without gradients, then takes one Newton step from the root with the slope held fixed:
    the value does not change, and the gradient with respect to ``x``, ``u_hat``, ``w`` and
    ``b`` is the one of the implicit function theorem,
    ``d alpha = -(dg) / (1 + m h'(alpha + b))``.

    Raises:
        ValueError: when ``w^T u_hat < -1`` (the map folds the plane and has no inverse).
        RuntimeError: when the root finding does not converge (see
            ``solve_planar_projection``).
    """
    m = _dot(w, u_hat)
    # allow the rounding error of constrained_u, whose w^T u_hat can land a hair below -1
    slack = torch.finfo(m.dtype).eps ** 0.5 if m.is_floating_point() else 0.0
    if bool((m.detach() < -1.0 - slack).any()):
        raise ValueError(
            f"w^T u = {float(m.detach().min()):.4g} < -1: this planar map is not invertible "
            "(it folds space along w); use the constrained u_hat = constrained_u(u, w)"
        )
    return _planar_inverse(x, u_hat, w, b, m, tol, max_iter)


def _planar_inverse(
    x: Tensor, u_hat: Tensor, w: Tensor, b: Tensor, m: Tensor, tol: float | None, max_iter: int
) -> tuple[Tensor, Tensor]:
    y = _dot(x, w)
    alpha0 = solve_planar_projection(y, m, b, tol=tol, max_iter=max_iter)
    t0 = torch.tanh(alpha0 + b)
    slope = (1.0 + m * (1.0 - t0**2)).detach()
    alpha = alpha0 - (alpha0 + m * t0 - y) / slope
    h = torch.tanh(alpha + b)
    z = x - h.unsqueeze(-1) * u_hat
    return z, -torch.log(torch.abs(1.0 + (1.0 - h**2) * m))


class PlanarFlow(Transform):
    """Creates the planar map ``x = z + u_hat tanh(w^T z + b)`` of ``R^D``.

    ``log |det J| = log |1 + u_hat^T psi(z)|`` with ``psi(z) = tanh'(w^T z + b) w``;
    ``u_hat = constrained_u(u, w)`` keeps ``w^T u_hat > -1`` so the map is invertible.
    The inverse solves a scalar monotone equation along ``w`` (``planar_inverse``).

    Args:
        dim: the dimension ``D``.
        init_scale: the scale of the random initial ``u``; ``w`` starts as a standard
            normal vector, ``b`` at zero. ``u`` starts with ``w^T u = log(e - 1)``, where
            ``m(w^T u) = 0``, so that ``u_hat`` is small and the layer starts near the
            identity (a small shear along the hyperplane).
        constrained: use ``u_hat`` (default). ``False`` uses the raw ``u``, which can make
            a non-invertible map; it is there to show what the constraint prevents.
        tol, max_iter: the root-finding tolerance (``default_tolerance`` when ``None``) and
            iteration limit of the inverse.
        generator: the random generator of the initial ``u`` and ``w`` (default: torch's
            global one).

    Attributes:
        u, w, b: the parameters, shapes ``(D,)``, ``(D,)`` and ``()``.

    Reference: Rezende and Mohamed, "Variational inference with normalizing flows", 2015.
    """

    def __init__(
        self,
        dim: int,
        init_scale: float = 0.01,
        constrained: bool = True,
        tol: float | None = None,
        max_iter: int = 100,
        generator: torch.Generator | None = None,
    ):
        super().__init__(dim)
        max_iter = check_positive_int(max_iter, "max_iter")
        w = torch.randn(dim, generator=generator)
        u = init_scale * torch.randn(dim, generator=generator)
        u = u + (SOFTPLUS_ONE - w @ u) * w / (w @ w)
        self.u = nn.Parameter(u)
        self.w = nn.Parameter(w)
        self.b = nn.Parameter(torch.zeros(()))
        self.constrained = constrained
        self.tol = tol
        self.max_iter = max_iter

    @property
    def u_hat(self) -> Tensor:
        """The vector the map uses: ``constrained_u(u, w)``, or ``u`` when unconstrained."""
        return constrained_u(self.u, self.w) if self.constrained else self.u

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return planar_forward(z, self.u_hat, self.w, self.b)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.constrained:  # the constrained u_hat is invertible by construction
            return planar_inverse(
                x, self.u_hat, self.w, self.b, tol=self.tol, max_iter=self.max_iter
            )
        u_hat = self.u_hat
        return _planar_inverse(x, u_hat, self.w, self.b, self.w @ u_hat, self.tol, self.max_iter)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, constrained={self.constrained}"
