"""Coupling flows (chapter 5).

A coupling layer splits its input ``z`` into a conditioning part ``z_A`` and a transformed
part ``z_B``, keeps ``z_A`` and maps ``z_B`` elementwise with parameters computed from
``z_A`` by a neural network, the *conditioner*:

    x_A = z_A,    x_B = g(z_B; theta(z_A)).

Its Jacobian is block triangular, so ``log |det J| = sum_i log g'(z_{B,i})``, and its
inverse needs only ``g^{-1}``: the conditioner is never inverted. Three choices of ``g``:

* ``AdditiveCoupling`` (NICE, Dinh et al. 2015): ``x_B = z_B + t``, ``log |det J| = 0``;
* ``AffineCoupling`` (RealNVP, Dinh et al. 2017): ``x_B = exp(s) z_B + t`` with a bounded
  log-scale ``s = c tanh(h / c)``, ``log |det J| = sum s``;
* ``PiecewiseLinearCoupling`` (Muller et al. 2019): chapter 4's piecewise-linear map of
  ``[0, 1]``, a histogram's cumulative distribution function, applied in the normalizing
  direction to ``u = (x_B + B) / (2B)`` and mapped back to ``[-B, B]``; the identity
  outside the box ``[-B, B]``.

Between couplings a ``Permutation`` (``nfcourse.flows.permutation``) changes which
coordinates condition and which are transformed; ``ActNorm`` (``nfcourse.flows.actnorm``,
Kingma and Dhariwal 2018) standardises with a data-dependent initialisation; the masks live
in ``nfcourse.flows.masks``. ``coupling_flow`` assembles them into an ``nfcourse.Flow``.

The layers select coordinates with index tensors built once (``index_select``,
``index_copy``) and call the conditioner once per layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..core import Flow, Transform
from ..distributions import BaseDistribution
from ..seeding import seeded
from ..validation import check_positive_int
from .actnorm import ActNorm
from .affine import ElementwiseAffine
from .masks import alternating_mask, check_mask, half_mask
from .permutation import Permutation, ReversePermutation
from .piecewise import _check_min_mass, _piecewise_linear

__all__ = [
    "conditioner_mlp",
    "soft_clamp",
    "additive_coupling",
    "affine_coupling",
    "piecewise_linear_coupling",
    "Coupling",
    "AdditiveCoupling",
    "AffineCoupling",
    "PiecewiseLinearCoupling",
    "coupling_flow",
    "COUPLING_KINDS",
]


# --------------------------------------------------------------------------------------
# The conditioner
# --------------------------------------------------------------------------------------


def conditioner_mlp(
    in_features: int,
    out_features: int,
    hidden: Sequence[int] = (64, 64),
    activation: type[nn.Module] = nn.ReLU,
    zero_last: bool = True,
) -> nn.Sequential:
    """A multilayer perceptron ``R^in -> R^out``. With ``zero_last`` its last layer starts at
    zero, so every coupling starts as the identity map."""
    hidden = tuple(
        check_positive_int(h, f"hidden[{k}]", f"the width of hidden layer {k}")
        for k, h in enumerate(hidden)
    )
    sizes = (in_features, *hidden, out_features)
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers.append(activation())
    if zero_last:
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------
# The elementwise maps g(z_B; theta), as pure functions
# --------------------------------------------------------------------------------------


def soft_clamp(h: Tensor, bound: float) -> Tensor:
    """``c tanh(h / c)``: close to ``h`` for ``|h| << c`` and never beyond ``(-c, c)``."""
    return bound * torch.tanh(h / bound)


def additive_coupling(
    inputs: Tensor, shift: Tensor, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """``x_B = z_B + t`` (or ``z_B = x_B - t``); the log-det is zero, shape ``(B,)``."""
    log_abs_det = inputs.new_zeros(inputs.shape[0])
    return (inputs - shift if inverse else inputs + shift), log_abs_det


def affine_coupling(
    inputs: Tensor, log_scale: Tensor, shift: Tensor, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """``x_B = exp(s) z_B + t`` and ``sum_i s_i``; or ``z_B = (x_B - t) exp(-s)`` and
    ``-sum_i s_i``. All tensors ``(B, D_B)``; the log-det is ``(B,)``."""
    if not inverse:
        return inputs * torch.exp(log_scale) + shift, log_scale.sum(dim=1)
    return (inputs - shift) * torch.exp(-log_scale), -log_scale.sum(dim=1)


def piecewise_linear_coupling(
    inputs: Tensor, logits: Tensor, bound: float, inverse: bool = False, min_mass: float = 1e-3
) -> tuple[Tensor, Tensor]:
    """The map ``psi(y) = 2B phi((y + B) / (2B)) - B`` on the box ``[-B, B]``, the identity
    outside, where ``phi`` is chapter 4's piecewise-linear map with bin masses
    ``softmax(logits)``; ``inverse`` applies ``psi^{-1}``.

    ``u = (y + B) / (2B)`` maps the box onto ``[0, 1]`` and ``2B v - B`` maps it back; the
    two rescalings cancel in the derivative, ``psi'(y) = phi'(u) = K q_k``, so the log-det is
    the one of ``phi``. ``inputs`` ``(B, D_B)``, ``logits`` ``(B, D_B, K)``; log-det ``(B,)``.

    The bin masses are ``q = m + (1 - K m) softmax(logits)`` with the minimum mass
    ``m = min_mass``, so that conditioner outputs of any size leave every slope at least
    ``K m`` and both round trips exact to rounding.
    """
    width = 2.0 * bound
    u = (inputs + bound) / width
    v, log_abs_det = _piecewise_linear(u, logits, inverse, min_mass)
    inside = (u >= 0) & (u <= 1)
    # outside the box the map is the identity; keep those inputs bit for bit
    return torch.where(inside, v * width - bound, inputs), log_abs_det


# --------------------------------------------------------------------------------------
# Coupling layers
# --------------------------------------------------------------------------------------


class Coupling(Transform):
    """``x_A = z_A``, ``x_B = g(z_B; theta(z_A))``: the shared machinery of coupling layers.

    A subclass sets ``params_per_coordinate`` (how many numbers the conditioner outputs for
    each transformed coordinate) and implements ``_transform(z_B, h, inverse)``, where ``h``
    is the conditioner output of shape ``(B, D_B * params_per_coordinate)``.

    Args:
        mask: ``(D,)`` booleans, ``True`` where the layer transforms the coordinate
            (the part B) and ``False`` where it conditions on it (the part A).
        hidden: widths of the conditioner's hidden layers.
        activation: the conditioner's activation (a module class).
        zero_init: start the conditioner's last layer at zero (identity coupling).
    """

    params_per_coordinate: int = 1

    def __init__(
        self,
        mask: Tensor | Sequence[bool],
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.ReLU,
        zero_init: bool = True,
    ):
        mask = check_mask(mask)
        super().__init__(len(mask))
        self.register_buffer("mask", mask)
        self.register_buffer("cond_index", (~mask).nonzero().flatten())
        self.register_buffer("trans_index", mask.nonzero().flatten())
        self.n_transformed = len(self.trans_index)
        self.conditioner = conditioner_mlp(
            len(self.cond_index),
            self.n_transformed * self.params_per_coordinate,
            hidden,
            activation,
            zero_init,
        )

    def _transform(self, inputs: Tensor, h: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _couple(self, z: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        z_cond = z.index_select(1, self.cond_index)
        z_trans = z.index_select(1, self.trans_index)
        x_trans, log_abs_det = self._transform(z_trans, self.conditioner(z_cond), inverse)
        return z.index_copy(1, self.trans_index, x_trans), log_abs_det

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._couple(z, inverse=False)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._couple(x, inverse=True)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, transformed={self.trans_index.tolist()}, "
            f"conditioning={self.cond_index.tolist()}"
        )


class AdditiveCoupling(Coupling):
    """NICE's additive coupling: ``x_A = z_A``, ``x_B = z_B + t(z_A)``, ``log |det J| = 0``.

    Volume preserving: a flow of additive couplings needs another layer (for example
    ``ActNorm`` or ``ElementwiseAffine``) to change volume.

    Args: as ``Coupling``.

    References: Dinh, Krueger and Bengio, "NICE: Non-linear Independent Components
    Estimation", ICLR workshop 2015.
    """

    params_per_coordinate = 1

    def _transform(self, inputs: Tensor, h: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        return additive_coupling(inputs, h, inverse)


class AffineCoupling(Coupling):
    """RealNVP's affine coupling: ``x_A = z_A``, ``x_B = exp(s) * z_B + t`` with
    ``(h, t) = NN(z_A)`` and the bounded log-scale ``s = c tanh(h / c)``;
    ``log |det J| = sum_i s_i``.

    Args:
        mask, hidden, activation, zero_init: as ``Coupling``.
        scale_bound: ``c``, the largest log-scale; each coordinate is stretched or shrunk
            by at most ``exp(c)`` per layer, which keeps early training stable.

    References: Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP",
    ICLR 2017.
    """

    params_per_coordinate = 2

    def __init__(
        self,
        mask: Tensor | Sequence[bool],
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.ReLU,
        zero_init: bool = True,
        scale_bound: float = 3.0,
    ):
        if not scale_bound > 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound}")
        super().__init__(mask, hidden, activation, zero_init)
        self.scale_bound = float(scale_bound)

    def _transform(self, inputs: Tensor, h: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raw_scale, shift = h.chunk(2, dim=1)
        return affine_coupling(inputs, soft_clamp(raw_scale, self.scale_bound), shift, inverse)


class PiecewiseLinearCoupling(Coupling):
    """Piecewise-linear coupling, written in the normalizing direction:
    ``z_A = x_A``, ``z_B = psi(x_B) = 2B phi((x_B + B) / (2B)) - B`` on the box
    ``|x_B| <= B`` and ``z_B = x_B`` outside it, where ``phi`` is chapter 4's monotone
    piecewise-linear map of ``[0, 1]`` with ``K`` equal bins and bin masses
    ``q = softmax(NN(x_A))``: the cumulative distribution function of a histogram. So
    ``log |det dz/dx| = sum_i log(K q_{i, k(i)})`` for the bin ``k(i)`` of each coordinate
    (zero outside the box), and the forward map (base to data) is ``x_B = psi^{-1}(z_B)``.

    Evaluating a density takes the cheap direction (a bin lookup by ``floor``); sampling
    takes the inverse (a search among the cumulative masses).

    Args:
        mask, hidden, activation, zero_init: as ``Coupling``; with ``zero_init`` the bin
            masses start equal and the layer is the identity.
        bins: the number of bins ``K``.
        bound: the half-width ``B`` of the box that is rescaled onto ``[0, 1]``.
        min_mass: the smallest bin mass ``m``, ``0 <= m < 1/K``: the masses are
            ``q = m + (1 - K m) softmax(NN(x_A))``.

    References: Muller, McWilliams, Rousselle, Gross and Novak, "Neural Importance
    Sampling", ACM Transactions on Graphics 2019.
    """

    def __init__(
        self,
        mask: Tensor | Sequence[bool],
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.ReLU,
        zero_init: bool = True,
        bins: int = 16,
        bound: float = 4.0,
        min_mass: float = 1e-3,
    ):
        bins = check_positive_int(bins, "bins")
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound}")
        self.params_per_coordinate = bins
        super().__init__(mask, hidden, activation, zero_init)
        self.bins = bins
        self.bound = float(bound)
        self.min_mass = _check_min_mass(min_mass, bins)

    def _transform(self, inputs: Tensor, h: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        logits = h.view(h.shape[0], self.n_transformed, self.bins)
        # written in the normalizing direction: the forward map (base to data) is psi^{-1}
        return piecewise_linear_coupling(
            inputs, logits, self.bound, inverse=not inverse, min_mass=self.min_mass
        )

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", bins={self.bins}, bound={self.bound}, min_mass={self.min_mass}"
        )


# --------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------

COUPLING_KINDS = {
    "additive": AdditiveCoupling,
    "affine": AffineCoupling,
    "piecewise": PiecewiseLinearCoupling,
}


def coupling_flow(
    kind: str,
    dim: int,
    n_layers: int,
    hidden: Sequence[int] = (64, 64),
    mask: str | Sequence[Tensor] = "half",
    permutation: str | None = "reverse",
    actnorm: bool = False,
    activation: type[nn.Module] = nn.ReLU,
    zero_init: bool = True,
    scale_bound: float = 3.0,
    bins: int = 16,
    bound: float = 4.0,
    seed: int | None = 0,
    base: BaseDistribution | None = None,
    min_mass: float = 1e-3,
) -> Flow:
    """A flow of ``n_layers`` coupling layers with a standard normal base.

    The forward map (base to data) is ``f = c_K o P o ... o P o c_1``: coupling layers
    ``c_k`` with permutations ``P`` between them. With ``actnorm``, an ``ActNorm`` comes
    after each coupling in the forward map (base to data), ``f = a_K o c_K o P o ... o
    a_1 o c_1``; in the normalizing direction (data to base) each block therefore starts
    by standardising its input with ``ActNorm`` before the coupling (Glow's order). An
    additive flow ends with an ``ElementwiseAffine`` so that it can change volume.

    Args:
        kind: ``"additive"``, ``"affine"`` or ``"piecewise"``.
        dim: the dimension ``D >= 2``.
        n_layers: the number of coupling layers.
        hidden: widths of each conditioner's hidden layers.
        mask: ``"half"`` (transform the second half), ``"alternate"`` (odd coordinates), or
            a list of ``n_layers`` boolean masks of shape ``(D,)``, used as given.
        permutation: ``"reverse"`` or ``"random"`` puts a permutation between couplings;
            ``None`` puts none and, for a named ``mask``, complements the mask at every
            other layer instead (in two dimensions the two give the same family of flows,
            up to the order of the output coordinates).
        actnorm: put an ``ActNorm`` after every coupling, in the forward map (base to
            data); that is before every coupling in the normalizing direction.
        activation: the conditioners' activation.
        zero_init: start every coupling as the identity (zero last conditioner layer).
        scale_bound: the affine couplings' largest log-scale ``c``.
        bins: the piecewise-linear couplings' number of bins ``K``.
        bound: the piecewise-linear couplings' box half-width ``B``.
        seed: an integer makes the parameter initialisation and the random permutations
            repeat, drawn from a random state of their own (the global one is left as it
            was); ``None`` draws them from torch's global random state. This is what
            ``seed`` means throughout the package.
        base: the base distribution (default ``StandardNormal(dim)``).
        min_mass: the piecewise-linear couplings' smallest bin mass ``m``.
    """
    if kind not in COUPLING_KINDS:
        raise ValueError(f"kind must be one of {sorted(COUPLING_KINDS)}, got {kind!r}")
    n_layers = check_positive_int(n_layers, "n_layers")
    if check_positive_int(dim, "dim") < 2:
        raise ValueError(
            f"a coupling flow needs dim >= 2 (one part to condition on, one to "
            f"transform), got dim={dim}"
        )
    if permutation not in ("reverse", "random", None):
        raise ValueError(f"permutation must be 'reverse', 'random' or None, got {permutation!r}")
    if isinstance(mask, str):
        if mask == "half":
            first = half_mask(dim)
        elif mask == "alternate":
            first = alternating_mask(dim, 1)
        else:
            raise ValueError(f"mask must be 'half', 'alternate' or a list of masks, got {mask!r}")
        flip = permutation is None
        masks = [~first if flip and k % 2 else first for k in range(n_layers)]
    else:
        masks = list(mask)
        if len(masks) != n_layers:
            raise ValueError(f"got {len(masks)} masks for {n_layers} layers")
    layer_class = COUPLING_KINDS[kind]
    layer_kwargs = {
        "affine": {"scale_bound": scale_bound},
        "piecewise": {"bins": bins, "bound": bound, "min_mass": min_mass},
    }.get(kind, {})
    layers: list[Transform] = []
    with seeded(seed):  # nn.Linear initialises from the global state: fork it
        for k in range(n_layers):
            if k > 0 and permutation == "reverse":
                layers.append(ReversePermutation(dim))
            elif k > 0 and permutation == "random":
                layers.append(Permutation.random(dim, seed=None if seed is None else seed + k))
            layers.append(
                layer_class(
                    masks[k],
                    hidden=hidden,
                    activation=activation,
                    zero_init=zero_init,
                    **layer_kwargs,
                )
            )
            if actnorm:
                layers.append(ActNorm(dim))
    if kind == "additive":
        layers.append(ElementwiseAffine(dim))
    return Flow(layers, base=base)
