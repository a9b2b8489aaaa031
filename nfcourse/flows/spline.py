"""Neural spline flows (chapter 8): monotone rational-quadratic splines.

The spline (Gregory and Delbourgo 1982; Durkan et al. 2019) maps the box ``[-B, B]`` onto
itself through ``K + 1`` knots ``(x_k, y_k)``, ``x_0 = y_0 = -B``, ``x_K = y_K = B``, with a
positive derivative ``d_k`` at each knot. In bin ``k`` (``x_k <= x < x_{k+1}``), with the
width ``w_k = x_{k+1} - x_k``, the height ``h_k = y_{k+1} - y_k``, the slope
``s_k = h_k / w_k`` and the position ``xi = (x - x_k) / w_k`` in ``[0, 1)``,

    y = y_k + h_k (s_k xi^2 + d_k xi (1 - xi)) / (s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)),

    dy/dx = s_k^2 (d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2)
            / (s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi))^2.

Every term of the numerator of ``dy/dx`` is positive and so the map is increasing; at the
knots it takes the values ``y_k`` and the slopes ``d_k``. The inverse solves a quadratic
``a xi^2 + b xi + c = 0`` for ``xi`` in ``[0, 1]`` and takes the root in the form
``xi = 2c / (-b - sqrt(b^2 - 4ac))``, which never subtracts two nearly equal numbers.

Outside the box the map is the identity (linear tails). The derivatives at ``+-B`` are fixed
to 1 so that the spline joins the tails with a continuous slope.

The widths, heights and interior derivatives come from unconstrained numbers (a network's
outputs): ``w = 2B (m_w + (1 - K m_w) softmax(u_w))``, the same for heights, and
``d = m_d + softplus(u_d + c)`` with ``c = log(exp(1 - m_d) - 1)``, so that zero outputs
give equal bins and unit derivatives: the identity map. The minimums ``m_w, m_h, m_d`` keep
every bin and every slope away from zero, however large the outputs grow. The derivatives
have no maximum: outputs of size ``u`` give slopes near ``u``, and once the slope ratio
within a bin passes about ``1e8`` the spline is a step function to float64 and its
inverse loses digits (outputs of a few hundred: a conditioner whose weights were all
multiplied by 100, say). The log-determinants stay exact.

The layers: ``RationalQuadraticSpline`` (an elementwise spline with free parameters),
``RationalQuadraticCoupling`` (a coupling layer, chapter 5),
``RationalQuadraticAutoregressive`` (chapter 7's autoregressive layer with the spline as its
elementwise map, on a MADE), and the builder ``spline_flow``. The couplings apply the
spline in the normalizing direction (data to base), like chapter 5's piecewise-linear
coupling.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Flow, Transform
from ..distributions import BaseDistribution
from ..seeding import seeded
from ..validation import check_dtype, check_positive_float, check_positive_int
from .actnorm import ActNorm
from .autoregressive import Autoregressive
from .coupling import Coupling
from .elementwise import SinhArcsinh
from .made import MADE
from .masks import half_mask
from .permutation import Permutation, ReversePermutation

__all__ = [
    "spline_parameters",
    "rational_quadratic_spline",
    "RationalQuadraticSpline",
    "RationalQuadraticCoupling",
    "RationalQuadraticAutoregressive",
    "spline_flow",
    "SPLINE_DEFAULTS",
]


def _check_spline_options(
    bins: object,
    bound: object,
    min_bin_width: object,
    min_bin_height: object,
    min_derivative: object,
) -> tuple[int, float, float, float, float]:
    """The spline's options as ``(bins, bound, min_bin_width, min_bin_height,
    min_derivative)``, checked: ``K >= 2`` bins (one bin with both end derivatives fixed
    to 1 is the identity, whatever its parameters), ``B`` finite positive, each minimum
    width and height in ``(0, 1/K)`` and the minimum derivative in ``(0, 1)``: a zero
    minimum lets a bin or a slope underflow to zero, and then the log-det is ``-inf`` and
    the inverse NaN."""
    bins = check_positive_int(bins, "bins", "the number K of spline bins, for example 8")
    if bins < 2:
        raise ValueError(
            f"bins must be at least 2, got {bins}: a spline with one bin and unit "
            "derivatives at both ends is the identity map whatever its parameters (a "
            "layer that never learns); pass for example bins=8"
        )
    bound = check_positive_float(
        bound, "bound", "the half-width B of the box [-B, B], for example 5.0"
    )
    minimums = []
    for name, value in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not (0 < float(value) < 1 / bins)
        ):
            raise ValueError(
                f"{name} must be a number in (0, 1/bins) = (0, {1 / bins:.4g}) "
                f"(a fraction of the box; zero lets a bin collapse), got {value!r}; "
                f"pass for example {name}=1e-3"
            )
        minimums.append(float(value))
    if (
        isinstance(min_derivative, bool)
        or not isinstance(min_derivative, numbers.Real)
        or not 0 < float(min_derivative) < 1
    ):
        raise ValueError(
            f"min_derivative must be a number in (0, 1) (zero lets a slope underflow to "
            f"zero: a log-det of -inf and NaN inverses), got {min_derivative!r}; "
            "pass for example min_derivative=1e-3"
        )
    return bins, bound, minimums[0], minimums[1], float(min_derivative)


def _check_spline_tensors(
    inputs: Tensor | None, widths: Tensor, heights: Tensor, derivatives: Tensor
) -> None:
    named = (
        ("unnormalized_widths", widths),
        ("unnormalized_heights", heights),
        ("unnormalized_derivatives", derivatives),
    )
    if inputs is not None:
        named = (("inputs", inputs),) + named
    for name, t in named:
        if not isinstance(t, Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor, got {type(t).__name__}; "
                f"convert it with torch.as_tensor({name}, dtype=torch.float64)"
            )
        check_dtype(t, named[0][1].dtype, name, owner=named[0][0])
        if not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"{name} contains non-finite values (NaN or inf); splines need "
                "finite inputs and parameters"
            )
    if widths.dim() == 0 or widths.shape[-1] < 1:
        raise ValueError(
            f"unnormalized_widths must have shape (..., K) with K >= 1 bins, "
            f"got {tuple(widths.shape)}"
        )
    bins = widths.shape[-1]
    batch = widths.shape[:-1]
    for name, t, last in (
        ("unnormalized_heights", heights, bins),
        ("unnormalized_derivatives", derivatives, bins - 1),
    ):
        if tuple(t.shape) != tuple(batch) + (last,):
            raise ValueError(
                f"{name} must have shape {tuple(batch) + (last,)} (the widths have shape "
                f"{tuple(widths.shape)}: K = {bins} bins, so K heights and K - 1 interior "
                f"derivatives), got {tuple(t.shape)}"
            )
    if inputs is not None and tuple(inputs.shape) != tuple(batch):
        raise ValueError(
            f"inputs must have shape {tuple(batch)}, the shape of the parameters "
            f"without their last axis, got {tuple(inputs.shape)}; one spline "
            "per input, so expand the parameters to the inputs' shape"
        )


def spline_parameters(
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    bound: float = 5.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[Tensor, Tensor, Tensor]:
    """Knots and derivatives from unconstrained numbers.

    Args:
        unnormalized_widths, unnormalized_heights: ``(..., K)``.
        unnormalized_derivatives: ``(..., K - 1)``, one per interior knot.

    Returns:
        ``(knot_x, knot_y, derivatives)``, each ``(..., K + 1)``: the knot positions from
        ``-B`` to ``B`` and the derivative at every knot (1 at the two ends).
    """
    _check_spline_tensors(
        None, unnormalized_widths, unnormalized_heights, unnormalized_derivatives
    )
    _, bound, min_bin_width, min_bin_height, min_derivative = _check_spline_options(
        unnormalized_widths.shape[-1], bound, min_bin_width, min_bin_height, min_derivative
    )
    return _spline_parameters(
        unnormalized_widths,
        unnormalized_heights,
        unnormalized_derivatives,
        bound,
        min_bin_width,
        min_bin_height,
        min_derivative,
    )


def _spline_parameters(
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    bound: float,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
) -> tuple[Tensor, Tensor, Tensor]:
    bins = unnormalized_widths.shape[-1]

    def knots(raw: Tensor, minimum: float) -> Tensor:
        fractions = minimum + (1 - minimum * bins) * torch.softmax(raw, dim=-1)
        cum = torch.cumsum(fractions, dim=-1)
        cum = F.pad(cum, (1, 0), value=0.0)
        cum = 2 * bound * cum - bound
        # the ends are exact, whatever the rounding of the cumulative sum
        ends = torch.zeros_like(cum)
        ends[..., 0] = -bound
        ends[..., -1] = bound
        is_end = torch.zeros(bins + 1, dtype=torch.bool, device=cum.device)
        is_end[0] = is_end[-1] = True
        return torch.where(is_end, ends, cum)

    offset = math.log(math.expm1(1 - min_derivative))
    interior = min_derivative + F.softplus(unnormalized_derivatives + offset)
    derivatives = F.pad(interior, (1, 1), value=1.0)
    return (
        knots(unnormalized_widths, min_bin_width),
        knots(unnormalized_heights, min_bin_height),
        derivatives,
    )


def _gather(t: Tensor, idx: Tensor) -> Tensor:
    return t.gather(-1, idx.unsqueeze(-1)).squeeze(-1)


def rational_quadratic_spline(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    inverse: bool = False,
    bound: float = 5.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """The monotone rational-quadratic spline on ``[-B, B]``, the identity outside.

    Args:
        inputs: any shape ``S``.
        unnormalized_widths, unnormalized_heights: ``S + (K,)``.
        unnormalized_derivatives: ``S + (K - 1,)``.
        inverse: apply the inverse spline instead.
        bound: ``B``. min_bin_width, min_bin_height, min_derivative: the minimums.

    Returns:
        The outputs and the elementwise ``log |dy/dx|`` (or ``log |dx/dy|`` for the
        inverse), both of shape ``S``; zero log-det outside the box. A knot belongs to the
        bin on its right (``B`` itself to the last bin).
    """
    _check_spline_tensors(
        inputs, unnormalized_widths, unnormalized_heights, unnormalized_derivatives
    )
    _, bound, min_bin_width, min_bin_height, min_derivative = _check_spline_options(
        unnormalized_widths.shape[-1], bound, min_bin_width, min_bin_height, min_derivative
    )
    return _rational_quadratic_spline(
        inputs,
        unnormalized_widths,
        unnormalized_heights,
        unnormalized_derivatives,
        inverse,
        bound,
        min_bin_width,
        min_bin_height,
        min_derivative,
    )


def _rational_quadratic_spline(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    inverse: bool,
    bound: float,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
) -> tuple[Tensor, Tensor]:
    knot_x, knot_y, deriv = _spline_parameters(
        unnormalized_widths,
        unnormalized_heights,
        unnormalized_derivatives,
        bound,
        min_bin_width,
        min_bin_height,
        min_derivative,
    )
    inside = (inputs >= -bound) & (inputs <= bound)
    # computed on clamped inputs so that the tails give no NaN, not even in gradients
    y_in = inputs.clamp(-bound, bound)
    edges = knot_y if inverse else knot_x
    idx = (y_in.unsqueeze(-1) >= edges[..., 1:-1]).sum(dim=-1)
    x_k, x_k1 = _gather(knot_x, idx), _gather(knot_x, idx + 1)
    y_k, y_k1 = _gather(knot_y, idx), _gather(knot_y, idx + 1)
    d_k, d_k1 = _gather(deriv, idx), _gather(deriv, idx + 1)
    w, h = x_k1 - x_k, y_k1 - y_k
    s = h / w
    if not inverse:
        xi = (y_in - x_k) / w
        t = xi * (1 - xi)
        denom = s + (d_k1 + d_k - 2 * s) * t
        out = y_k + h * (s * xi * xi + d_k * t) / denom
    else:
        dy = y_in - y_k
        a = h * (s - d_k) + dy * (d_k1 + d_k - 2 * s)
        b = h * d_k - dy * (d_k1 + d_k - 2 * s)
        c = -s * dy
        with torch.no_grad():
            disc = (b * b - 4 * a * c).clamp_min(0)
            root = ((2 * c) / (-b - torch.sqrt(disc))).clamp(0, 1)
            # for extreme knot derivatives the root loses digits: Newton steps on the
            # forward formula, each kept only where it lowers the residual
            for _ in range(NEWTON_STEPS):
                root = root + _newton_correction(root, dy, h, s, d_k, d_k1)
        # One Newton step with gradients, from the root: its value moves by a rounding
        # error at most, and its gradient is the implicit-function one,
        # d xi = -(dF) / F'(xi), exact however many digits the quadratic formula lost.
        t = root * (1 - root)
        denom = s + (d_k1 + d_k - 2 * s) * t
        residual = h * (s * root * root + d_k * t) / denom - dy
        slope = h * s * (d_k1 * root * root + 2 * s * t + d_k * (1 - root) ** 2) / denom**2
        xi = root - residual / slope
        xi = xi + (xi.clamp(0, 1) - xi).detach()
        t = xi * (1 - xi)
        denom = s + (d_k1 + d_k - 2 * s) * t
        out = x_k + xi * w
    log_deriv = (
        2 * torch.log(s)
        + torch.log(d_k1 * xi * xi + 2 * s * t + d_k * (1 - xi) ** 2)
        - 2 * torch.log(denom)
    )
    if inverse:
        log_deriv = -log_deriv
    out = torch.where(inside, out, inputs)
    return out, torch.where(inside, log_deriv, torch.zeros_like(log_deriv))


#: Newton steps that polish the inverse's root (they matter only for extreme derivatives).
NEWTON_STEPS = 4


@torch.no_grad()
def _newton_correction(
    xi: Tensor, dy: Tensor, h: Tensor, s: Tensor, d_k: Tensor, d_k1: Tensor
) -> Tensor:
    def residual(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t = v * (1 - v)
        denom = s + (d_k1 + d_k - 2 * s) * t
        return h * (s * v * v + d_k * t) / denom - dy, t, denom

    r, t, denom = residual(xi)
    slope = h * s * (d_k1 * xi * xi + 2 * s * t + d_k * (1 - xi) ** 2) / denom**2
    candidate = (xi - r / slope).clamp(0, 1)
    better = residual(candidate)[0].abs() < r.abs()
    return torch.where(better, candidate - xi, torch.zeros_like(xi))


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------


class _SplineOptions:
    bins: int
    bound: float
    min_bin_width: float
    min_bin_height: float
    min_derivative: float

    def _set_options(
        self,
        bins: int,
        bound: float,
        min_bin_width: float,
        min_bin_height: float,
        min_derivative: float,
    ) -> None:
        (
            self.bins,
            self.bound,
            self.min_bin_width,
            self.min_bin_height,
            self.min_derivative,
        ) = _check_spline_options(bins, bound, min_bin_width, min_bin_height, min_derivative)

    def _spline(self, inputs: Tensor, h: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """``h`` of shape ``inputs.shape + (3K - 1,)``: widths, heights, derivatives."""
        k = self.bins
        return _rational_quadratic_spline(
            inputs,
            h[..., :k],
            h[..., k : 2 * k],
            h[..., 2 * k :],
            inverse,
            self.bound,
            self.min_bin_width,
            self.min_bin_height,
            self.min_derivative,
        )

    def _options_repr(self) -> str:
        return (
            f"bins={self.bins}, bound={self.bound}, min_bin_width={self.min_bin_width}, "
            f"min_bin_height={self.min_bin_height}, min_derivative={self.min_derivative}"
        )


class RationalQuadraticSpline(_SplineOptions, Transform):
    """An elementwise rational-quadratic spline with its own parameters, one spline per
    coordinate: ``x_i = g_i(z_i)``, ``log |det J| = sum_i log g_i'(z_i)``.

    Args:
        dim: the dimension ``D``.
        bins: the number of bins ``K``.
        bound: the half-width ``B`` of the box; the identity outside it.
        min_bin_width, min_bin_height, min_derivative: the minimums (see the module).

    The parameters ``unnormalized_widths``, ``unnormalized_heights`` (``(D, K)``) and
    ``unnormalized_derivatives`` (``(D, K - 1)``) start at zero: the identity.
    """

    def __init__(
        self,
        dim: int,
        bins: int = 8,
        bound: float = 5.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ):
        Transform.__init__(self, dim)
        self._set_options(bins, bound, min_bin_width, min_bin_height, min_derivative)
        self.unnormalized_widths = nn.Parameter(torch.zeros(dim, self.bins))
        self.unnormalized_heights = nn.Parameter(torch.zeros(dim, self.bins))
        self.unnormalized_derivatives = nn.Parameter(torch.zeros(dim, self.bins - 1))

    def _run(self, inputs: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        shape = inputs.shape + (-1,)
        out, log_deriv = _rational_quadratic_spline(
            inputs,
            self.unnormalized_widths.expand(shape[:-1] + (self.bins,)),
            self.unnormalized_heights.expand(shape[:-1] + (self.bins,)),
            self.unnormalized_derivatives.expand(shape[:-1] + (self.bins - 1,)),
            inverse,
            self.bound,
            self.min_bin_width,
            self.min_bin_height,
            self.min_derivative,
        )
        return out, log_deriv.sum(dim=1)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._run(z, inverse=False)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._run(x, inverse=True)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, " + self._options_repr()


class RationalQuadraticCoupling(_SplineOptions, Coupling):
    """Rational-quadratic spline coupling (Durkan et al. 2019), written in the normalizing
    direction like chapter 5's piecewise-linear coupling: ``z_A = x_A``,
    ``z_B = g(x_B; theta(x_A))`` with one spline per transformed coordinate and
    ``3K - 1`` conditioner outputs per spline; the identity outside ``[-B, B]``. The
    forward map (base to data) is ``x_B = g^{-1}(z_B)``.

    Args:
        mask, hidden, activation, zero_init: as ``Coupling``; with ``zero_init`` the layer
            starts as the identity.
        bins, bound, min_bin_width, min_bin_height, min_derivative: the spline's options.

    References: Durkan, Bekasov, Murray and Papamakarios, "Neural Spline Flows",
    NeurIPS 2019.
    """

    def __init__(
        self,
        mask: Tensor | Sequence[bool],
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.ReLU,
        zero_init: bool = True,
        bins: int = 8,
        bound: float = 5.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ):
        self._set_options(bins, bound, min_bin_width, min_bin_height, min_derivative)
        self.params_per_coordinate = 3 * self.bins - 1
        Coupling.__init__(self, mask, hidden, activation, zero_init)

    def _transform(self, inputs: Tensor, h: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        h = h.view(h.shape[0], self.n_transformed, self.params_per_coordinate)
        out, log_deriv = self._spline(inputs, h, inverse=not inverse)
        return out, log_deriv.sum(dim=1)

    def extra_repr(self) -> str:
        return Coupling.extra_repr(self) + ", " + self._options_repr()


class RationalQuadraticAutoregressive(_SplineOptions, Autoregressive):
    """Rational-quadratic spline autoregressive layer (Durkan et al. 2019): chapter 7's
    ``Autoregressive`` layer with the spline as its elementwise map, in the
    masked-autoregressive direction. In the normalizing direction (data to base)
    ``z_i = g(x_i; theta_i(x_<i, c))`` for every coordinate in one MADE pass; the forward
    map (base to data, sampling) takes ``D`` passes, each of which fixes one more
    coordinate in the ordering. The identity outside ``[-B, B]``.

    Args:
        dim: the dimension ``D``.
        hidden: the MADE's hidden widths.
        order: the autoregressive ordering (``None``: ``x_1`` first), as in ``MADE``.
        bins, bound, min_bin_width, min_bin_height, min_derivative: the spline's options.
        seed: the MADE's initial weights (see ``nfcourse.seeding``); its output layer
            starts at zero, so the layer starts as the identity.
        context_dim: the size ``C`` of a context that the MADE sees, 0 for none.

    References: Durkan, Bekasov, Murray and Papamakarios, "Neural Spline Flows",
    NeurIPS 2019; Papamakarios, Pavlakou and Murray, "Masked Autoregressive Flow for
    Density Estimation", NeurIPS 2017.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        order: Tensor | Sequence[int] | None = None,
        bins: int = 8,
        bound: float = 5.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
        seed: int | None = None,
        context_dim: int = 0,
    ):
        dim = check_positive_int(dim, "dim")
        self._set_options(bins, bound, min_bin_width, min_bin_height, min_derivative)
        made = MADE(
            dim, hidden, 3 * self.bins - 1, order=order, context_dim=context_dim, seed=seed
        )
        Autoregressive.__init__(self, made, 3 * self.bins - 1, direction="maf")

    def _params_meaning(self) -> str:
        return " (K widths, K heights and K - 1 derivatives)"

    def _elementwise(self, y: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        # the spline is written in the normalizing direction: data to base is g itself
        out, log_deriv = self._spline(y, params, inverse=not inverse)
        return out, log_deriv.sum(dim=1)

    def extra_repr(self) -> str:
        return Autoregressive.extra_repr(self) + ", " + self._options_repr()


# --------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------

#: The defaults of ``spline_flow``, the course's recommended density estimator for
#: low-dimensional data (chapter 8 shows the measurements they come from).
SPLINE_DEFAULTS = {
    "n_layers": 4,
    "hidden": (64, 64),
    "bins": 8,
    "bound": 4.0,
    "standardize": True,
    "tails": True,
    "layer": "coupling",
    "min_bin_width": 1e-3,
    "min_bin_height": 1e-3,
    "min_derivative": 1e-3,
}


def spline_flow(
    dim: int,
    n_layers: int = SPLINE_DEFAULTS["n_layers"],
    hidden: Sequence[int] = SPLINE_DEFAULTS["hidden"],
    bins: int = SPLINE_DEFAULTS["bins"],
    bound: float = SPLINE_DEFAULTS["bound"],
    standardize: bool = SPLINE_DEFAULTS["standardize"],
    tails: bool = SPLINE_DEFAULTS["tails"],
    layer: str = SPLINE_DEFAULTS["layer"],
    permutation: str = "reverse",
    activation: type[nn.Module] = nn.ReLU,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
    seed: int | None = 0,
    base: BaseDistribution | None = None,
    context_dim: int = 0,
) -> Flow:
    """A neural spline flow with a standard normal base, the course's recommended density
    estimator for low-dimensional data.

    In the normalizing direction (data to base) the flow first standardises the data with
    an ``ActNorm`` initialised from the first data batch (so data at any location and scale
    lands in the box ``[-B, B]``), then applies a learnable sinh-arcsinh map per coordinate
    (which can pull heavy tails into the box), then ``n_layers`` spline layers with
    permutations between them. In the forward map (base to data) the order is reversed.

    Range: the splines are bounded maps (inside ``[-B, B]``, the identity outside) and stay
    finite for any finite parameters; the scale of the flow comes from the ``ActNorm``,
    whose forward map multiplies by ``exp(log_scale)``. A log-scale above about 88 (709
    in float64) overflows, and then samples are ``inf``: scaling a trained flow's
    parameters by 100 does exactly that. Train in float64 or keep the data's scale
    moderate; the splines themselves are exact at any parameter scale.

    Args:
        dim: the dimension ``D >= 1``; in one dimension the layers are elementwise splines
            with free parameters.
        n_layers: the number of spline layers.
        hidden: the widths of each conditioner's hidden layers.
        bins: the number of bins ``K`` of every spline.
        bound: the half-width ``B`` of the box, in standardised units; linear (identity)
            tails outside it.
        standardize: start the normalizing direction with a data-initialised ``ActNorm``.
        tails: follow it (in the normalizing direction) with a learnable sinh-arcsinh map
            per coordinate (chapter 1's ``SinhArcsinh``, starting as the identity), whose
            tail weight can pull heavy tails in towards the box, where the splines act.
        layer: ``"coupling"`` (spline couplings, alternating halves) or
            ``"autoregressive"`` (spline autoregressive layers on chapter 7's MADE: the
            density in one pass per layer, sampling in ``D`` passes).
        permutation: ``"reverse"`` or ``"random"``, between the layers.
        activation: the conditioners' activation.
        min_bin_width, min_bin_height, min_derivative: the splines' minimums.
        seed: as everywhere in the package (``nfcourse.seeding``).
        base: the base distribution (default ``StandardNormal(dim)``).
        context_dim: with ``C > 0`` and ``layer="autoregressive"``, a conditional flow
            ``q(x | c)`` whose MADEs see a context of size ``C`` (chapter 12); the
            standardisation and the tails do not depend on it.
    """
    dim = check_positive_int(dim, "dim", "the data dimension")
    n_layers = check_positive_int(n_layers, "n_layers", "a number of layers, for example 4")
    if layer not in ("coupling", "autoregressive"):
        raise ValueError(f"layer must be 'coupling' or 'autoregressive', got {layer!r}")
    if context_dim and layer != "autoregressive":
        raise ValueError(
            f"context_dim={context_dim} needs layer='autoregressive': the "
            "spline couplings take no context"
        )
    if permutation not in ("reverse", "random"):
        raise ValueError(f"permutation must be 'reverse' or 'random', got {permutation!r}")
    bins, bound, min_bin_width, min_bin_height, min_derivative = _check_spline_options(
        bins, bound, min_bin_width, min_bin_height, min_derivative
    )
    options = {
        "bins": bins,
        "bound": bound,
        "min_bin_width": min_bin_width,
        "min_bin_height": min_bin_height,
        "min_derivative": min_derivative,
    }
    layers: list[Transform] = []
    with seeded(seed):
        for k in range(n_layers):
            if dim == 1 and not context_dim:
                layers.append(RationalQuadraticSpline(1, **options))
                continue
            if k > 0 and dim > 1:
                layers.append(
                    ReversePermutation(dim)
                    if permutation == "reverse"
                    else Permutation.random(dim, seed=None if seed is None else seed + k)
                )
            if layer == "coupling":
                layers.append(
                    RationalQuadraticCoupling(
                        half_mask(dim), hidden=hidden, activation=activation, **options
                    )
                )
            else:
                layers.append(_autoregressive_layer(dim, hidden, activation, options, context_dim))
        if tails:
            layers.append(SinhArcsinh(dim))
        if standardize:
            # last in the forward map: first in the normalizing direction
            layers.append(ActNorm(dim))
    return Flow(layers, base=base)


def _autoregressive_layer(
    dim: int,
    hidden: Sequence[int],
    activation: type[nn.Module],
    options: dict,
    context_dim: int = 0,
) -> Transform:
    if activation is not nn.ReLU:
        raise ValueError(
            f"layer='autoregressive' uses chapter 7's MADE, whose activation is "
            f"ReLU; got activation={activation.__name__}. Leave activation at "
            "its default or use layer='coupling'"
        )
    return RationalQuadraticAutoregressive(dim, hidden=hidden, context_dim=context_dim, **options)
