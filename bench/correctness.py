"""Correctness at scale: every transform of the package, in float64, on thousands of points.

For each exported transform (discovered from ``nfcourse`` and ``nfcourse.flows``, so that a
new transform cannot be skipped silently) a factory builds an instance with random,
non-trivial parameters and a cloud of test points: standard normal points, points scaled
by 5, points with coordinates at +-20, and for the piecewise-linear maps points at, just
beside and outside the bin edges. Then

* the log-det error is ``|reported - log |det J||`` with the Jacobian from autograd
  (``torch.func.vmap(jacrev)``, or a loop of ``jacrev`` over the points where the
  transform does not vectorise), in both directions, and ``|log-det f + log-det f^{-1}|``;
* the round-trip error is ``|f^{-1}(f(z)) - z|``, the largest over coordinates.

The table reports the worst value over all points.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

import nfcourse
import nfcourse.flows as flows

__all__ = [
    "LOG_DET_TOLERANCE",
    "ROUND_TRIP_TOLERANCE",
    "ABSTRACT",
    "FACTORIES",
    "exported_transforms",
    "check_coverage",
    "sample_points",
    "autograd_log_abs_det",
    "CorrectnessRow",
    "measure",
    "run",
    "format_table",
]

LOG_DET_TOLERANCE = 1e-8
# relative to the size of the point: |f^{-1}(f(z)) - z| <= tol (1 + |z|)
ROUND_TRIP_TOLERANCE = 1e-8

# Exported Transform classes that are not layers of their own, and why.
ABSTRACT = {
    "Transform": "the base class",
    "Coupling": "the base class of the three coupling layers, each measured",
}


def exported_transforms() -> dict[str, type]:
    """Every ``nfcourse.Transform`` subclass that ``nfcourse`` or ``nfcourse.flows``
    exports, by name."""
    found = {}
    for module in (nfcourse, flows):
        for name in dir(module):
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, nfcourse.Transform):
                found[name] = obj
    return found


def check_coverage(factories: dict | None = None) -> None:
    """Raise ``RuntimeError`` when an exported transform has no factory here (or a factory
    names a transform that is no longer exported)."""
    factories = FACTORIES if factories is None else factories
    exported = set(exported_transforms())
    missing = sorted(exported - set(factories) - set(ABSTRACT))
    stale = sorted(set(factories) - exported)
    if missing or stale:
        raise RuntimeError(
            "bench/correctness.py does not cover the package's transforms: "
            + (f"no factory for {', '.join(missing)} (add one to FACTORIES)" if missing else "")
            + ("; " if missing and stale else "")
            + (
                f"factories for names nfcourse no longer exports: {', '.join(stale)}"
                if stale
                else ""
            )
        )


# --------------------------------------------------------------------------------------
# Test points
# --------------------------------------------------------------------------------------


def sample_points(dim: int, n: int, generator: torch.Generator, scale: float = 1.0) -> Tensor:
    """``n`` points in float64: 60% standard normal, 20% normal times 5, and 20% with one
    or all coordinates at +-20 (the rest standard normal). All multiplied by ``scale``."""

    def normal(m):
        return torch.randn(m, dim, generator=generator, dtype=torch.float64)

    n_wide, n_far = n // 5, n // 5
    n_core = n - n_wide - n_far
    far = normal(n_far)
    sign = torch.where(torch.rand(n_far, dim, generator=generator) < 0.5, -20.0, 20.0)
    one = torch.randint(dim, (n_far,), generator=generator)
    all_coords = torch.arange(n_far) % 4 == 0  # every fourth: every coordinate far out
    pick = (torch.arange(dim) == one.unsqueeze(1)) | all_coords.unsqueeze(1)
    far = torch.where(pick, sign.double(), far)
    return scale * torch.cat([normal(n_core), 5.0 * normal(n_wide), far])


def _edge_values(edges: Tensor) -> Tensor:
    """The edges themselves and points 1e-12 and 1e-7 beside each of them."""
    offsets = torch.tensor([0.0, -1e-12, 1e-12, -1e-7, 1e-7], dtype=torch.float64)
    return (edges.unsqueeze(1) + offsets).flatten()


def _fill_with(values: Tensor, n: int, dim: int, generator: torch.Generator) -> Tensor:
    index = torch.randint(len(values), (n, dim), generator=generator)
    return values[index]


def unit_interval_points(dim: int, n: int, bins: int, generator: torch.Generator) -> Tensor:
    """Points for a map of ``[0, 1]`` with ``bins`` equal bins and identity tails: 40%
    uniform on ``[0, 1]``, 40% whose coordinates sit at, or 1e-12 / 1e-7 beside, a bin edge
    (``0`` and ``1`` included), and 20% outside (``[-2, 0) U (1, 3]`` and +-20)."""
    n_edge, n_out = 2 * n // 5, n // 5
    n_in = n - n_edge - n_out
    uniform = torch.rand(n_in, dim, generator=generator, dtype=torch.float64)
    edges = _edge_values(torch.arange(bins + 1, dtype=torch.float64) / bins)
    at_edges = _fill_with(edges, n_edge, dim, generator)
    outside = torch.rand(n_out, dim, generator=generator, dtype=torch.float64) * 2
    outside = torch.where(torch.rand(n_out, dim, generator=generator) < 0.5, -outside, 1 + outside)
    outside[::4] = torch.where(outside[::4] < 0, -20.0, 20.0)
    # mix: in every outside point keep one coordinate inside, so rows mix both rules
    outside[1::2, 0] = torch.rand(len(outside[1::2]), generator=generator, dtype=torch.float64)
    return torch.cat([uniform, at_edges, outside])


def box_points(dim: int, n: int, bins: int, bound: float, generator: torch.Generator) -> Tensor:
    """Points for a coupling on the box ``[-bound, bound]`` with ``bins`` bins: half from
    ``sample_points``, half with coordinates at or beside the bin edges ``-bound + 2 bound k /
    bins`` (both ends of the box included)."""
    edges = _edge_values(-bound + 2 * bound * torch.arange(bins + 1, dtype=torch.float64) / bins)
    return torch.cat(
        [sample_points(dim, n - n // 2, generator), _fill_with(edges, n // 2, dim, generator)]
    )


# --------------------------------------------------------------------------------------
# Factories: a transform with random non-trivial parameters, and its test points
# --------------------------------------------------------------------------------------


def _randomize(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.5):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


Factory = Callable[[int, torch.Generator], tuple[nfcourse.Transform, Tensor]]


def _simple(build: Callable[[], nfcourse.Transform], scale: float = 0.5) -> Factory:
    def factory(n, g):
        t = _randomize(build().double(), g, scale)
        return t, sample_points(t.dim, n, g)

    return factory


def _coupling(cls_name: str, dim: int = 4, **kwargs) -> Factory:
    def factory(n, g):
        cls = getattr(flows, cls_name)
        mask = flows.coupling.alternating_mask(dim, 1)
        t = cls(mask, hidden=(16, 16), zero_init=False, **kwargs).double()
        _randomize(t, g, 0.5)
        if cls_name in ("PiecewiseLinearCoupling", "RationalQuadraticCoupling"):
            return t, box_points(dim, n, t.bins, t.bound, g)
        return t, sample_points(dim, n, g)

    return factory


def _piecewise(n, g):
    t = flows.PiecewiseLinear(3, num_bins=8).double()
    _randomize(t, g, 1.0)
    return t, unit_interval_points(3, n, 8, g)


def _actnorm(n, g):
    t = _randomize(flows.ActNorm(3).double(), g)
    t.initialized.fill_(True)  # the data-dependent initialisation ran earlier
    return t, sample_points(3, n, g)


def _permutation(n, g):
    return flows.Permutation.random(5, seed=3).double(), sample_points(5, n, g)


def _reverse_permutation(n, g):
    return flows.ReversePermutation(5).double(), sample_points(5, n, g)


def _compose(n, g):
    dim = 4
    mask = flows.coupling.half_mask(dim)
    layers = [
        flows.ActNorm(dim),
        flows.AffineCoupling(mask, hidden=(16,), zero_init=False),
        flows.Permutation.random(dim, seed=1),
        flows.PiecewiseLinearCoupling(mask, hidden=(16,), zero_init=False, bins=8, bound=3.0),
        flows.ReversePermutation(dim),
        flows.AdditiveCoupling(~mask, hidden=(16,), zero_init=False),
        flows.LUAffine(dim, permutation=[2, 0, 3, 1]),
        flows.SinhArcsinh(dim),
        flows.PlanarFlow(dim),
        flows.RadialFlow(dim),
    ]
    t = _randomize(nfcourse.Compose(layers).double(), g, 0.3)
    t[0].initialized.fill_(True)
    return t, sample_points(dim, n, g)


def _continuous(n, g):
    # an ODE flow with a tight adaptive solver: its errors are the solver's
    field = flows.VelocityField(3, hidden=(16, 16), activation=torch.nn.Tanh)
    t = flows.ContinuousFlow(_randomize(field.double(), g, 0.3), rtol=1e-12, atol=1e-12)
    return t, sample_points(3, n, g)


def _inverse_planar(n, g):
    # the inverse of a planar map as a transform: its forward runs the root finding
    t = _randomize(flows.PlanarFlow(3).double(), g, 1.0)
    return nfcourse.InverseTransform(t), sample_points(3, n, g)


class _Flattened(nfcourse.Transform):
    """An image transform of ``nfcourse.flows.image`` seen as a map of flat vectors
    ``(B, D)``: the points are reshaped to its base-side and data-side shapes."""

    def __init__(self, transform):
        super().__init__(transform.dim)
        self.transform = transform

    def _forward(self, z):
        x, log_det = self.transform._forward(z.reshape(len(z), *self.transform.latent_shape))
        return x.reshape(len(z), -1), log_det

    def _inverse(self, x):
        z, log_det = self.transform._inverse(x.reshape(len(x), *self.transform.event_shape))
        return z.reshape(len(x), -1), log_det


def _image(build: Callable[[], torch.nn.Module], clamp: float | None = None) -> Factory:
    def factory(n, g):
        t = _randomize(build().double(), g, 0.3)
        z = sample_points(t.dim, n, g)
        if clamp is not None:  # the logit's sigmoid saturates in float64 beyond this
            z = z.clamp(-clamp, clamp)
        return _Flattened(t), z

    return factory


def _multiscale():
    image = flows.image
    blocks = [
        nfcourse.Compose(flows.ActNorm2d((4, 2, 2)), image.Squeeze((1, 4, 4))),
        nfcourse.Compose(
            image.InvertibleConv1x1((2, 2, 2), seed=1),
            image.ConvAffineCoupling((2, 2, 2), hidden=4),
        ),
    ]
    return flows.MultiScale(blocks)


FACTORIES: dict[str, Factory] = {
    "Logit": _image(lambda: flows.Logit((1, 2, 2)), clamp=8.0),
    "Squeeze": _image(lambda: flows.Squeeze((1, 2, 4))),
    "ActNorm2d": _image(lambda: flows.ActNorm2d((2, 2, 2), data_init=False)),
    "InvertibleConv1x1": _image(lambda: flows.InvertibleConv1x1((3, 2, 2), seed=0)),
    "ConvAffineCoupling": _image(
        lambda: flows.ConvAffineCoupling((2, 2, 2), "checkerboard", hidden=4)
    ),
    "MultiScale": _image(_multiscale),
    "ElementwiseAffine": _simple(lambda: flows.ElementwiseAffine(3)),
    "SinhArcsinh": _simple(lambda: flows.SinhArcsinh(3)),
    "TriangularAffine": _simple(lambda: flows.TriangularAffine(4)),
    "LUAffine": _simple(lambda: flows.LUAffine(4, permutation=[1, 3, 0, 2])),
    "PlanarFlow": _simple(lambda: flows.PlanarFlow(3), scale=1.0),
    "RadialFlow": _simple(lambda: flows.RadialFlow(3), scale=1.0),
    "PiecewiseLinear": _piecewise,
    "AdditiveCoupling": _coupling("AdditiveCoupling"),
    "AffineCoupling": _coupling("AffineCoupling"),
    "PiecewiseLinearCoupling": _coupling("PiecewiseLinearCoupling", bins=16, bound=3.0),
    "RationalQuadraticCoupling": _coupling("RationalQuadraticCoupling", bins=8, bound=3.0),
    "RationalQuadraticAutoregressive": _simple(
        lambda: flows.RationalQuadraticAutoregressive(3, hidden=(16,), bins=6, bound=3.0)
    ),
    "RationalQuadraticSpline": _simple(
        lambda: flows.RationalQuadraticSpline(3, bins=6, bound=3.0), scale=1.0
    ),
    "ActNorm": _actnorm,
    "Permutation": _permutation,
    "ReversePermutation": _reverse_permutation,
    "Compose": _compose,
    "ContinuousFlow": _continuous,
    "InverseTransform": _inverse_planar,
    "MAF": _simple(lambda: flows.MAF(4, hidden=(16, 16), order=[2, 0, 3, 1])),
    "IAF": _simple(lambda: flows.IAF(4, hidden=(16, 16), order=[1, 3, 0, 2])),
}


# --------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------


def _rowwise_jacobian(fn: Callable[[Tensor], Tensor], points: Tensor) -> Tensor:
    """The Jacobian at every row of ``points`` for a map that treats rows independently:
    row ``i`` of ``dx/dz`` is the gradient of the sum over the batch of ``x_i``."""
    z = points.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        x = fn(z)
        rows = [
            torch.autograd.grad(x[:, i].sum(), z, retain_graph=True)[0] for i in range(x.shape[1])
        ]
    return torch.stack(rows, dim=1)


def autograd_log_abs_det(fn: Callable[[Tensor], Tensor], points: Tensor) -> tuple[Tensor, str]:
    """``log |det J_fn|`` at every row of ``points`` ``(B, D)`` from the full Jacobian that
    autograd builds for each point; ``fn`` maps a batch ``(B, D)`` to ``(B, D)``. Uses
    ``vmap(jacrev)`` and falls back to a loop over the points where the function does not
    vectorise (data-dependent control flow, such as a root finder's stopping test).
    Returns the log-dets and ``"vmap"`` or ``"loop"``."""

    def single(v):
        return fn(v.unsqueeze(0)).squeeze(0)

    try:
        jac = torch.func.vmap(torch.func.jacrev(single))(points)
        how = "vmap"
    except Exception:  # vmap refuses .item(), bool() of a tensor, and some operators
        try:
            jac = torch.stack([torch.func.jacrev(single)(v) for v in points])
            how = "loop"
        except Exception:  # torch.autograd.grad inside fn (an ODE flow's divergence)
            jac, how = _rowwise_jacobian(fn, points), "rows"
    return torch.linalg.slogdet(jac.detach())[1], how


@dataclass
class CorrectnessRow:
    transform: str
    dim: int
    points: int
    log_det_error: float  # worst over both directions and their sum
    round_trip_error: float  # worst |f^{-1}(f(z)) - z|
    round_trip_relative: float  # worst |f^{-1}(f(z)) - z| / (1 + |z|)
    jacobian: str  # "vmap" or "loop"
    seconds: float

    @property
    def ok(self) -> bool:
        return (
            self.log_det_error <= LOG_DET_TOLERANCE
            and self.round_trip_relative <= ROUND_TRIP_TOLERANCE
        )


def measure(name: str, transform: nfcourse.Transform, z: Tensor) -> CorrectnessRow:
    """The worst log-det and round-trip errors of ``transform`` at the points ``z``."""
    start = time.perf_counter()
    transform.eval()
    with torch.no_grad():
        x, log_det_forward = transform.forward(z)
        z_back, log_det_inverse = transform.inverse(x)
    auto_forward, how_f = autograd_log_abs_det(lambda v: transform._forward(v)[0], z)
    auto_inverse, how_i = autograd_log_abs_det(lambda v: transform._inverse(v)[0], x)
    log_det_error = float(
        torch.cat(
            [  # torch's max propagates NaN; Python's max does not
                (log_det_forward - auto_forward).abs(),
                (log_det_inverse - auto_inverse).abs(),
                (log_det_forward + log_det_inverse).abs(),
            ]
        ).max()
    )
    if not math.isfinite(log_det_error):  # NaN compares false with any tolerance
        log_det_error = math.inf
    error = (z_back - z).abs()
    return CorrectnessRow(
        transform=name,
        dim=z.shape[1],
        points=z.shape[0],
        log_det_error=log_det_error,
        round_trip_error=float(error.max()),
        round_trip_relative=float((error / (1 + z.abs())).max()),
        jacobian="vmap" if how_f == how_i == "vmap" else "loop",
        seconds=time.perf_counter() - start,
    )


def run(n_points: int = 2000, seed: int = 0, verbose: bool = True) -> list[CorrectnessRow]:
    """Measure every exported transform (after ``check_coverage``) at ``n_points`` points."""
    check_coverage()
    rows = []
    for name in sorted(FACTORIES):
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        transform, z = FACTORIES[name](n_points, g)
        row = measure(name, transform, z)
        if verbose:
            print(
                f"  {name}: log-det error {row.log_det_error:.2e}, round trip "
                f"{row.round_trip_error:.2e} ({row.seconds:.1f} s)",
                flush=True,
            )
        rows.append(row)
    return rows


def format_table(rows: list[CorrectnessRow]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| transform | dim | points | worst log-det error | worst round-trip error "
        "| relative | Jacobian | status |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        status = (
            "ok"
            if r.ok
            else (
                f"over {LOG_DET_TOLERANCE:g}"
                if r.log_det_error > LOG_DET_TOLERANCE
                else f"round trip over {ROUND_TRIP_TOLERANCE:g} (relative)"
            )
        )
        lines.append(
            f"| {r.transform} | {r.dim} | {r.points:,} | {r.log_det_error:.1e} | "
            f"{r.round_trip_error:.1e} | {r.round_trip_relative:.1e} | {r.jacobian} | {status} |"
        )
    return "\n".join(lines)
