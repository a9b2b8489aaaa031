"""The course's layers and flows beside their counterparts in zuko, nflows and normflows.

Every layer is wrapped in a ``Layer`` with two calls that return ``(output, log_abs_det)``:

* ``normalize(x)``: data to base, the direction of a density evaluation (``log_prob``);
* ``generate(z)``: base to data, the direction of sampling (``None`` where the library has
  no inverse).

The libraries name their directions differently: the course's ``forward`` generates
(``x = f(z)``), while zuko's transforms and nflows' ``forward`` normalize, and normflows'
``forward`` generates. The wrappers put them all on the same two calls, so a row of the speed
table compares the same operation. Conditioners are the same multilayer perceptron
(Linear-ReLU-Linear-ReLU-Linear) everywhere, so the parameter counts match.

The reference libraries are installed only for the benchmark (``bench/requirements.txt``);
the course never imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import nfcourse
from nfcourse.flows.coupling import conditioner_mlp, coupling_flow
from nfcourse.flows.masks import half_mask

__all__ = [
    "Layer",
    "parameter_count",
    "library_versions",
    "affine_coupling_layers",
    "piecewise_coupling_layers",
    "planar_layers",
    "training_flows",
    "quality_flows",
]

Pair = tuple[Tensor, Tensor]


@dataclass
class Layer:
    """One implementation of a layer: its library, the module holding its parameters, and
    the two directions as functions returning ``(points, log_abs_det)``."""

    library: str
    module: nn.Module
    normalize: Callable[[Tensor], Pair]
    generate: Callable[[Tensor], Pair] | None


def parameter_count(module: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def library_versions() -> dict[str, str]:
    """The installed version of each reference library (``"missing"`` if not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("zuko", "nflows", "normflows"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "missing"
    return versions


class ContextMLP(nn.Module):
    """The course's conditioner MLP behind nflows' calling convention ``net(x, context)``."""

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int]):
        super().__init__()
        self.net = conditioner_mlp(in_features, out_features, hidden, zero_last=False)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def _nflows_net(hidden: Sequence[int]):
    return lambda in_features, out_features: ContextMLP(in_features, out_features, hidden)


def _course_layer(transform: nfcourse.Transform) -> Layer:
    return Layer("course", transform, transform.inverse, transform.forward)


def _zuko_layer(lazy: nn.Module) -> Layer:
    # A zuko flow rebuilds its transform from the lazy module at every call (flow()), so
    # the timed call does too.
    return Layer(
        "zuko", lazy, lambda x: lazy().call_and_ladj(x), lambda z: lazy().inv.call_and_ladj(z)
    )


def _nflows_layer(transform: nn.Module) -> Layer:
    return Layer("nflows", transform, transform.forward, transform.inverse)


def affine_coupling_layers(
    dim: int = 8,
    hidden: Sequence[int] = (64, 64),
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> list[Layer]:
    """One affine coupling layer (RealNVP) transforming half of ``dim`` coordinates: the
    course's ``AffineCoupling``, zuko's ``GeneralCouplingTransform`` (its default univariate
    map is the affine one) and nflows' ``AffineCouplingTransform``."""
    import zuko
    from nflows.transforms.coupling import AffineCouplingTransform

    torch.manual_seed(seed)
    mask = half_mask(dim)  # True: transformed
    layers = [
        _course_layer(nfcourse.flows.AffineCoupling(mask, hidden=hidden, zero_init=False)),
        _zuko_layer(
            zuko.flows.GeneralCouplingTransform(dim, mask=~mask, hidden_features=tuple(hidden))
        ),
        _nflows_layer(AffineCouplingTransform(mask.int(), _nflows_net(hidden))),
    ]
    for layer in layers:
        layer.module.to(device)
    return layers


def piecewise_coupling_layers(
    dim: int = 2,
    hidden: Sequence[int] = (64, 64),
    bins: int = 128,
    bound: float = 4.0,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> list[Layer]:
    """One piecewise-linear coupling layer with ``bins`` equal bins on the box
    ``[-bound, bound]`` and identity tails: the course's ``PiecewiseLinearCoupling`` and
    nflows' ``PiecewiseLinearCouplingTransform`` (``tails="linear"``). Both evaluate a
    density with a bin lookup and sample with a search among the cumulative masses."""
    from nflows.transforms.coupling import PiecewiseLinearCouplingTransform

    torch.manual_seed(seed)
    mask = half_mask(dim)
    course = nfcourse.flows.PiecewiseLinearCoupling(
        mask, hidden=hidden, zero_init=False, bins=bins, bound=bound
    )
    other = PiecewiseLinearCouplingTransform(
        mask.int(), _nflows_net(hidden), num_bins=bins, tails="linear", tail_bound=bound
    )
    layers = [_course_layer(course), _nflows_layer(other)]
    for layer in layers:
        layer.module.to(device)
    return layers


def planar_layers(dim: int = 8, device: str | torch.device = "cpu", seed: int = 0) -> list[Layer]:
    """One planar layer ``x = z + u_hat tanh(w^T z + b)``: the course's ``PlanarFlow`` and
    normflows' ``Planar``. normflows' planar layer with ``tanh`` has no inverse; the
    course's inverse solves a scalar equation per point (safeguarded Newton)."""
    import normflows

    torch.manual_seed(seed)
    course = nfcourse.flows.PlanarFlow(dim)
    with torch.no_grad():  # a layer well away from the identity, so the inverse must work
        course.u.normal_()
        course.w.normal_()
        course.b.fill_(0.3)
    other = normflows.flows.Planar((dim,))
    layers = [_course_layer(course), Layer("normflows", other, None, other.forward)]
    for layer in layers:
        layer.module.to(device)
    return layers


# --------------------------------------------------------------------------------------
# Whole flows for training: each is (module, log_prob function)
# --------------------------------------------------------------------------------------


def training_flows(
    hidden: Sequence[int] = (64, 64),
    n_layers: int = 4,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, tuple[nn.Module, Callable[[Tensor], Tensor]]]:
    """RealNVP flows in two dimensions with ``n_layers`` affine couplings and conditioners
    of hidden widths ``hidden`` (17,672 parameters each for the defaults), with a fixed
    standard normal base: the course's chapter 5 flow, zuko's ``RealNVP``, nflows' and
    normflows' equivalents."""
    import normflows
    import zuko
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow as NflowsFlow
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import AffineCouplingTransform
    from nflows.transforms.permutations import ReversePermutation

    course = coupling_flow(
        "affine", dim=2, n_layers=n_layers, hidden=hidden, permutation=None, seed=seed
    )
    torch.manual_seed(seed)
    zuko_flow = zuko.flows.RealNVP(2, transforms=n_layers, hidden_features=tuple(hidden))
    torch.manual_seed(seed)
    parts: list[nn.Module] = []
    for k in range(n_layers):
        if k > 0:
            parts.append(ReversePermutation(2))
        parts.append(AffineCouplingTransform(half_mask(2).int(), _nflows_net(hidden)))
    nflows_flow = NflowsFlow(CompositeTransform(parts), StandardNormal([2]))
    torch.manual_seed(seed)
    blocks: list[nn.Module] = []
    for k in range(n_layers):
        if k > 0:
            blocks.append(normflows.flows.Permute(2, mode="swap"))
        blocks.append(normflows.flows.AffineCouplingBlock(normflows.nets.MLP([1, *hidden, 2])))
    normflows_flow = normflows.NormalizingFlow(
        normflows.distributions.DiagGaussian(2, trainable=False), blocks
    )
    flows = {
        "course": (course, course.log_prob),
        "zuko": (zuko_flow, lambda x: zuko_flow().log_prob(x)),
        "nflows": (nflows_flow, nflows_flow.log_prob),
        "normflows": (normflows_flow, normflows_flow.log_prob),
    }
    for module, _ in flows.values():
        module.to(device)
    return flows


def quality_flows(seed: int = 0) -> dict[str, tuple[nn.Module, Callable[[Tensor], Tensor]]]:
    """zuko's neural spline flow (``NSF``) and ``RealNVP`` in two dimensions, four
    transforms with hidden widths (64, 64): the reference points of the density benchmark."""
    import zuko

    torch.manual_seed(seed)
    nsf = zuko.flows.NSF(2, transforms=4, hidden_features=(64, 64))
    torch.manual_seed(seed)
    realnvp = zuko.flows.RealNVP(2, transforms=4, hidden_features=(64, 64))
    return {
        "zuko NSF (spline, K=8)": (nsf, lambda x: nsf().log_prob(x)),
        "zuko RealNVP (affine)": (realnvp, lambda x: realnvp().log_prob(x)),
    }
