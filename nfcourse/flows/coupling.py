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

Between couplings a ``Permutation`` changes which coordinates condition and which are
transformed; ``ActNorm`` (Kingma and Dhariwal 2018) standardises with a data-dependent
initialisation. ``coupling_flow`` assembles them into an ``nfcourse.Flow``.

The layers select coordinates with index tensors built once (``index_select``,
``index_copy``) and call the conditioner once per layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..core import Flow, Transform
from .affine import ElementwiseAffine
from .piecewise import piecewise_linear

__all__ = [
    "half_mask",
    "alternating_mask",
    "checkerboard_mask",
    "conditioner_mlp",
    "soft_clamp",
    "additive_coupling",
    "affine_coupling",
    "piecewise_linear_coupling",
    "Coupling",
    "AdditiveCoupling",
    "AffineCoupling",
    "PiecewiseLinearCoupling",
    "Permutation",
    "ReversePermutation",
    "ActNorm",
    "coupling_flow",
    "COUPLING_KINDS",
]


# --------------------------------------------------------------------------------------
# Masks: True marks a coordinate the layer transforms, False one it conditions on.
# --------------------------------------------------------------------------------------

def half_mask(dim: int, flip: bool = False) -> Tensor:
    """``(D,)`` boolean mask that transforms the second half ``[D//2, D)`` (the first half
    when ``flip``) and conditions on the rest."""
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"a coupling needs dim >= 2 to split, got {dim!r}")
    mask = torch.arange(dim) >= dim // 2
    return ~mask if flip else mask


def alternating_mask(dim: int, parity: int = 1) -> Tensor:
    """``(D,)`` boolean mask that transforms the coordinates with index ``i % 2 == parity``."""
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"a coupling needs dim >= 2 to split, got {dim!r}")
    if parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    return torch.arange(dim) % 2 == parity


def checkerboard_mask(height: int, width: int, parity: int = 1) -> Tensor:
    """``(H * W,)`` boolean mask of an image flattened row by row: transforms the pixels
    ``(r, c)`` with ``(r + c) % 2 == parity``, the spatial checkerboard of RealNVP."""
    if height < 1 or width < 1 or height * width < 2:
        raise ValueError(f"an image mask needs at least two pixels, got {height} x {width}")
    if parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    r = torch.arange(height).unsqueeze(1)
    c = torch.arange(width).unsqueeze(0)
    return ((r + c) % 2 == parity).flatten()


def _check_mask(mask) -> Tensor:
    mask = torch.as_tensor(mask)
    if mask.dim() != 1:
        raise ValueError(f"mask must be a 1D tensor of shape (D,), got shape {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must hold booleans or 0/1 values (1 = transformed)")
        mask = mask.to(torch.bool)
    n_transformed = int(mask.sum())
    if n_transformed == 0 or n_transformed == len(mask):
        raise ValueError(
            f"mask must transform some coordinates and condition on the others; it marks "
            f"{n_transformed} of {len(mask)} as transformed"
        )
    return mask


# --------------------------------------------------------------------------------------
# The conditioner
# --------------------------------------------------------------------------------------

def conditioner_mlp(
    in_features: int, out_features: int, hidden: Sequence[int] = (64, 64),
    activation: type[nn.Module] = nn.ReLU, zero_last: bool = True,
) -> nn.Sequential:
    """A multilayer perceptron ``R^in -> R^out``. With ``zero_last`` its last layer starts at
    zero, so every coupling starts as the identity map."""
    hidden = tuple(int(h) for h in hidden)
    if any(h < 1 for h in hidden):
        raise ValueError(f"hidden sizes must be positive integers, got {hidden}")
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


def additive_coupling(inputs: Tensor, shift: Tensor, inverse: bool = False
                      ) -> tuple[Tensor, Tensor]:
    """``x_B = z_B + t`` (or ``z_B = x_B - t``); the log-det is zero, shape ``(B,)``."""
    log_det = inputs.new_zeros(inputs.shape[0])
    return (inputs - shift if inverse else inputs + shift), log_det


def affine_coupling(inputs: Tensor, log_scale: Tensor, shift: Tensor, inverse: bool = False
                    ) -> tuple[Tensor, Tensor]:
    """``x_B = exp(s) z_B + t`` and ``sum_i s_i``; or ``z_B = (x_B - t) exp(-s)`` and
    ``-sum_i s_i``. All tensors ``(B, D_B)``; the log-det is ``(B,)``."""
    if not inverse:
        return inputs * torch.exp(log_scale) + shift, log_scale.sum(dim=1)
    return (inputs - shift) * torch.exp(-log_scale), -log_scale.sum(dim=1)


def piecewise_linear_coupling(inputs: Tensor, logits: Tensor, bound: float,
                              inverse: bool = False) -> tuple[Tensor, Tensor]:
    """The map ``psi(y) = 2B phi((y + B) / (2B)) - B`` on the box ``[-B, B]``, the identity
    outside, where ``phi`` is chapter 4's piecewise-linear map with bin masses
    ``softmax(logits)``; ``inverse`` applies ``psi^{-1}``.

    ``u = (y + B) / (2B)`` maps the box onto ``[0, 1]`` and ``2B v - B`` maps it back; the
    two rescalings cancel in the derivative, ``psi'(y) = phi'(u) = K q_k``, so the log-det is
    the one of ``phi``. ``inputs`` ``(B, D_B)``, ``logits`` ``(B, D_B, K)``; log-det ``(B,)``.
    """
    width = 2.0 * bound
    u = (inputs + bound) / width
    v, log_det = piecewise_linear(u, logits, inverse=inverse)
    inside = (u >= 0) & (u <= 1)
    # outside the box the map is the identity; keep those inputs bit for bit
    return torch.where(inside, v * width - bound, inputs), log_det


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

    def __init__(self, mask, hidden: Sequence[int] = (64, 64),
                 activation: type[nn.Module] = nn.ReLU, zero_init: bool = True):
        mask = _check_mask(mask)
        super().__init__(len(mask))
        self.register_buffer("mask", mask)
        self.register_buffer("cond_index", (~mask).nonzero().flatten())
        self.register_buffer("trans_index", mask.nonzero().flatten())
        self.n_transformed = len(self.trans_index)
        self.conditioner = conditioner_mlp(
            len(self.cond_index), self.n_transformed * self.params_per_coordinate,
            hidden, activation, zero_init)

    def _transform(self, inputs: Tensor, h: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _couple(self, z: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        z_cond = z.index_select(1, self.cond_index)
        z_trans = z.index_select(1, self.trans_index)
        x_trans, log_det = self._transform(z_trans, self.conditioner(z_cond), inverse)
        return z.index_copy(1, self.trans_index, x_trans), log_det

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._couple(z, inverse=False)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._couple(x, inverse=True)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, transformed={self.trans_index.tolist()}, "
                f"conditioning={self.cond_index.tolist()}")


class AdditiveCoupling(Coupling):
    """NICE's additive coupling: ``x_A = z_A``, ``x_B = z_B + t(z_A)``, ``log |det J| = 0``.

    Volume preserving: a flow of additive couplings needs another layer (for example
    ``ActNorm`` or ``ElementwiseAffine``) to change volume.

    Args: as ``Coupling``.

    References: Dinh, Krueger and Bengio, "NICE: Non-linear Independent Components
    Estimation", ICLR workshop 2015.
    """

    params_per_coordinate = 1

    def _transform(self, inputs, h, inverse):
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

    def __init__(self, mask, hidden: Sequence[int] = (64, 64),
                 activation: type[nn.Module] = nn.ReLU, zero_init: bool = True,
                 scale_bound: float = 3.0):
        if not scale_bound > 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound}")
        super().__init__(mask, hidden, activation, zero_init)
        self.scale_bound = float(scale_bound)

    def _transform(self, inputs, h, inverse):
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

    References: Muller, McWilliams, Rousselle, Gross and Novak, "Neural Importance
    Sampling", ACM Transactions on Graphics 2019.
    """

    def __init__(self, mask, hidden: Sequence[int] = (64, 64),
                 activation: type[nn.Module] = nn.ReLU, zero_init: bool = True,
                 bins: int = 16, bound: float = 4.0):
        if not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound}")
        self.params_per_coordinate = bins
        super().__init__(mask, hidden, activation, zero_init)
        self.bins = bins
        self.bound = float(bound)

    def _transform(self, inputs, h, inverse):
        logits = h.view(h.shape[0], self.n_transformed, self.bins)
        return piecewise_linear_coupling(inputs, logits, self.bound, inverse=not inverse)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bins={self.bins}, bound={self.bound}"


# --------------------------------------------------------------------------------------
# Permutations and ActNorm
# --------------------------------------------------------------------------------------

class Permutation(Transform):
    """Reorders the coordinates: ``x_i = z_{pi(i)}``. A permutation matrix has
    ``|det P| = 1``, so ``log |det J| = 0``; the inverse applies ``pi^{-1}``.

    Args:
        permutation: ``(D,)`` integers, a rearrangement of ``0, ..., D - 1``.
    """

    def __init__(self, permutation):
        perm = torch.as_tensor(permutation)
        if perm.dim() != 1 or perm.dtype in (torch.bool,) or perm.is_floating_point():
            raise ValueError(f"permutation must be a 1D integer tensor, got {perm!r}")
        perm = perm.to(torch.long)
        if not torch.equal(perm.sort().values, torch.arange(len(perm))):
            raise ValueError(
                f"permutation must contain each of 0, ..., {len(perm) - 1} exactly once, "
                f"got {perm.tolist()}"
            )
        super().__init__(len(perm))
        self.register_buffer("permutation", perm)
        self.register_buffer("inverse_permutation", torch.argsort(perm))

    @classmethod
    def random(cls, dim: int, seed: int = 0) -> Permutation:
        """A uniformly random permutation, reproducible through ``seed``."""
        return cls(torch.randperm(dim, generator=torch.Generator().manual_seed(seed)))

    def _forward(self, z):
        return z.index_select(1, self.permutation), z.new_zeros(z.shape[0])

    def _inverse(self, x):
        return x.index_select(1, self.inverse_permutation), x.new_zeros(x.shape[0])


class ReversePermutation(Permutation):
    """Reverses the order of the coordinates, ``x_i = z_{D-1-i}``; ``log |det J| = 0``.
    In two dimensions it swaps ``z_1`` and ``z_2``."""

    def __init__(self, dim: int):
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        super().__init__(torch.arange(dim - 1, -1, -1))


class ActNorm(ElementwiseAffine):
    """Activation normalisation: ``x = exp(s) * z + b`` with ``s, b`` of shape ``(D,)`` and
    ``log |det J| = sum_i s_i``, initialised from the first data batch it normalises so that
    its output ``z = (x - b) exp(-s)`` has zero mean and unit variance per coordinate.

    The initialisation runs on the first call of ``inverse`` in training mode (the data
    direction); after it the parameters are trained like any others.

    Args:
        dim: the dimension ``D``.

    References: Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1
    Convolutions", NeurIPS 2018.
    """

    def __init__(self, dim: int):
        super().__init__(dim)
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set ``b`` to the mean and ``exp(s)`` to the standard deviation of ``x``."""
        if x.shape[0] < 2:
            raise ValueError("ActNorm needs a batch of at least 2 points to initialise")
        self.shift.copy_(x.mean(dim=0))
        self.log_scale.copy_(torch.log(x.std(dim=0).clamp_min(1e-6)))
        self.initialized.fill_(True)

    def _inverse(self, x):
        if self.training and not bool(self.initialized):
            self.initialize(x)
        return super()._inverse(x)


# --------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------

COUPLING_KINDS = {
    "additive": AdditiveCoupling,
    "affine": AffineCoupling,
    "piecewise": PiecewiseLinearCoupling,
}


def coupling_flow(
    kind: str, dim: int, n_layers: int, hidden: Sequence[int] = (64, 64),
    mask: str | Sequence[Tensor] = "half", permutation: str | None = "reverse",
    actnorm: bool = False, activation: type[nn.Module] = nn.ReLU, zero_init: bool = True,
    scale_bound: float = 3.0, bins: int = 16, bound: float = 4.0, seed: int | None = 0,
    base: nn.Module | None = None,
) -> Flow:
    """A flow of ``n_layers`` coupling layers with a standard normal base.

    The forward map (base to data) is ``f = c_K o P o ... o P o c_1``: coupling layers
    ``c_k`` with permutations ``P`` between them. With ``actnorm``, an ``ActNorm`` follows
    each coupling, so that in the data direction every block starts by standardising its
    input (Glow's order). An additive flow ends with an ``ElementwiseAffine`` so that it
    can change volume.

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
        actnorm: put an ``ActNorm`` before every coupling.
        activation: the conditioners' activation.
        zero_init: start every coupling as the identity (zero last conditioner layer).
        scale_bound: the affine couplings' largest log-scale ``c``.
        bins: the piecewise-linear couplings' number of bins ``K``.
        bound: the piecewise-linear couplings' box half-width ``B``.
        seed: seeds the parameter initialisation and random permutations (``None``: keep
            the current random state).
        base: the base distribution (default ``StandardNormal(dim)``).
    """
    if kind not in COUPLING_KINDS:
        raise ValueError(f"kind must be one of {sorted(COUPLING_KINDS)}, got {kind!r}")
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"a coupling flow needs dim >= 2, got {dim!r}")
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
    if seed is not None:
        torch.manual_seed(seed)
    layer_class = COUPLING_KINDS[kind]
    layer_kwargs = {"affine": {"scale_bound": scale_bound},
                    "piecewise": {"bins": bins, "bound": bound}}.get(kind, {})
    layers: list[Transform] = []
    for k in range(n_layers):
        if k > 0 and permutation == "reverse":
            layers.append(ReversePermutation(dim))
        elif k > 0 and permutation == "random":
            layers.append(Permutation.random(dim, seed=(0 if seed is None else seed) + k))
        layers.append(layer_class(masks[k], hidden=hidden, activation=activation,
                                  zero_init=zero_init, **layer_kwargs))
        if actnorm:
            layers.append(ActNorm(dim))
    if kind == "additive":
        layers.append(ElementwiseAffine(dim))
    return Flow(layers, base=base)
