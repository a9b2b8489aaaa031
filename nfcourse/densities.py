"""Toy densities with exact log-densities: the data of the chapters and the targets of their
training exercises (``nfcourse.checks``).

Every toy density draws samples reproducibly (``seed``, as everywhere in the package: an
integer repeats, ``None`` draws from torch's global random state) and, where it exists,
evaluates its exact log-density, so a chapter can measure a model against the truth: for
data from ``p``, the test negative log-likelihood minus the entropy ``H(p)`` is
``KL(p || q) >= 0``. The image data sets are in ``nfcourse.images``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .seeding import generator
from .validation import FLOAT_DTYPES, check_batch, check_positive_int

#: Euler's constant, the mean of a standard Gumbel variable.
EULER_GAMMA = 0.5772156649015329


class ToyDensity:
    """A density ``p`` on ``R^dim`` that can be sampled and, where known, evaluated.

    Attributes:
        dim: the dimension.
        bounds: a box ``((lo, hi), ...)`` that holds nearly all the mass, for plots.
    """

    dim: int = 2
    bounds: tuple[tuple[float, float], ...] = ((-4.0, 4.0), (-4.0, 4.0))
    name: str = "toy density"

    def sample(self, n: int, seed: int | None = 0, dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` samples of shape ``(n, dim)`` in ``dtype`` (float32 or float64); the same
        integer ``seed`` gives the same samples, ``None`` draws from torch's global random
        state."""
        n = check_positive_int(n, "n")
        if dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"dtype must be torch.float32 or torch.float64 (samples of a "
                f"continuous density), got {dtype}"
            )
        return self._sample(n, generator(seed)).to(dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)`` for ``x`` of shape ``(B, dim)``; ``-inf`` outside the support."""
        check_batch(x, self.dim, "x")
        return self._log_prob(x)

    def entropy(self) -> float:
        """The differential entropy ``H(p) = -E_p[log p]`` in nats."""
        raise NotImplementedError(f"{self.name} has no known entropy")

    @torch.no_grad()
    def kl_divergence(
        self, model: object, n: int = 20_000, seed: int = 10_001, batch_size: int = 10_000
    ) -> tuple[float, float]:
        """``KL(p || q)`` in nats and its standard error, from ``n`` fresh samples of ``p``.

        It is the mean of ``log p(x) - log q(x)``, that is the test negative log-likelihood
        of ``q`` minus the entropy ``H(p)``: zero only for a perfect model. ``model`` is
        anything with a ``log_prob`` method (a ``Flow``, a ``torch.distributions``
        distribution) or a ``log_prob`` function; it is fed points of its own dtype and
        device.
        """
        log_q = model.log_prob if callable(getattr(model, "log_prob", None)) else model
        if not callable(log_q):
            raise TypeError("pass a model with a log_prob method, or a log_prob function")
        reference = (
            next(iter(model.parameters()), None)
            if isinstance(model, torch.nn.Module)
            else getattr(model, "mean", None)
        )
        dtype = reference.dtype if isinstance(reference, Tensor) else torch.float32
        device = reference.device if isinstance(reference, Tensor) else torch.device("cpu")
        x = self.sample(n, seed=seed, dtype=torch.float64)
        log_q_x = torch.cat(
            [
                log_q(chunk.to(device=device, dtype=dtype)).double().cpu()
                for chunk in x.split(batch_size)
            ]
        )
        gap = self.log_prob(x) - log_q_x
        return float(gap.mean()), float(gap.std() / math.sqrt(n))

    def _sample(self, n: int, g: torch.Generator) -> Tensor:
        raise NotImplementedError

    def _log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{self.name} has no exact log-density")

    def _monte_carlo_entropy(self, n: int = 400_000, seed: int = 12345) -> float:
        x = self.sample(n, seed=seed, dtype=torch.float64)
        return float(-self.log_prob(x).mean())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GaussianMixture1D(ToyDensity):
    """A mixture of Gaussians on the line, ``p(x) = sum_k w_k N(x; m_k, s_k^2)``.

    The default is the bimodal density of chapter 2: ``0.5 N(-2, 0.5^2) + 0.5 N(2, 0.5^2)``.
    """

    dim = 1
    name = "mixture of Gaussians"

    def __init__(
        self,
        means: Sequence[float] = (-2.0, 2.0),
        stds: Sequence[float] = (0.5, 0.5),
        weights: Sequence[float] | None = None,
    ) -> None:
        if len(means) != len(stds):
            raise ValueError(
                f"means and stds must have one entry per component, "
                f"got {len(means)} and {len(stds)}"
            )
        if min(stds) <= 0:
            raise ValueError(f"stds must be positive, got {stds}")
        weights = [1.0 / len(means)] * len(means) if weights is None else list(weights)
        if len(weights) != len(means) or min(weights) < 0 or abs(sum(weights) - 1) > 1e-9:
            raise ValueError(
                f"weights must be {len(means)} non-negative numbers summing to one, got {weights}"
            )
        self.means = torch.tensor(means, dtype=torch.float64)
        self.stds = torch.tensor(stds, dtype=torch.float64)
        self.weights = torch.tensor(weights, dtype=torch.float64)
        lo = float((self.means - 5 * self.stds).min())
        hi = float((self.means + 5 * self.stds).max())
        self.bounds = ((lo, hi),)

    def _sample(self, n: int, g: torch.Generator) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=g)
        eps = torch.randn(n, generator=g, dtype=torch.float64)
        return (self.means[k] + self.stds[k] * eps).unsqueeze(1)

    def _log_prob(self, x: Tensor) -> Tensor:
        m, s, w = (t.to(x) for t in (self.means, self.stds, self.weights))
        comp = -0.5 * ((x - m) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(comp + torch.log(w), dim=1)

    def entropy(self) -> float:
        # Quadrature on a fine grid: the density is smooth and the box holds all the mass.
        ((lo, hi),) = self.bounds
        x = torch.linspace(lo - 5, hi + 5, 200_001, dtype=torch.float64).unsqueeze(1)
        logp = self._log_prob(x)
        dx = float(x[1, 0] - x[0, 0])
        return float(-(logp.exp() * logp).sum() * dx)

    def __repr__(self) -> str:
        return (
            f"GaussianMixture1D(means={self.means.tolist()}, stds={self.stds.tolist()}, "
            f"weights={self.weights.tolist()})"
        )


class Checkerboard(ToyDensity):
    """Uniform on the 8 dark squares of a 4 x 4 checkerboard of unit squares on
    ``[-2, 2]^2``: ``log p = -ln 8`` there and ``-inf`` elsewhere; ``H = ln 8``."""

    name = "checkerboard"
    bounds = ((-2.5, 2.5), (-2.5, 2.5))

    def _sample(self, n: int, g: torch.Generator) -> Tensor:
        x1 = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
        # x2 in one of two unit intervals per column, chosen so the squares alternate.
        x2 = (
            torch.rand(n, generator=g, dtype=torch.float64)
            + 2 * torch.randint(0, 2, (n,), generator=g).to(torch.float64)
            - 2
        )
        x2 = x2 + (torch.floor(x1) % 2)
        return torch.stack([x1, x2], dim=1)

    def _log_prob(self, x: Tensor) -> Tensor:
        inside = (x.abs() <= 2).all(dim=1)
        dark = ((torch.floor(x[:, 0]) + torch.floor(x[:, 1])) % 2) == 0
        out = torch.full_like(x[:, 0], -math.inf)
        return torch.where(inside & dark, torch.full_like(out, -math.log(8)), out)

    def entropy(self) -> float:
        return math.log(8)


class GaussianRing(ToyDensity):
    """Equal mixture of ``n_modes`` Gaussians (std ``std``) on a circle of radius ``radius``.

    Its entropy has no closed form; ``entropy()`` estimates it by Monte Carlo with
    400,000 samples (standard error below 0.002 nats).
    """

    name = "ring of Gaussians"

    def __init__(self, n_modes: int = 8, radius: float = 2.0, std: float = 0.2) -> None:
        n_modes = check_positive_int(n_modes, "n_modes", "a number of modes")
        self.n_modes, self.radius, self.std = n_modes, radius, std
        angles = torch.arange(n_modes, dtype=torch.float64) * 2 * math.pi / n_modes
        self.centers = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        r = radius + 5 * std
        self.bounds = ((-r, r), (-r, r))
        self._entropy = None

    def _sample(self, n: int, g: torch.Generator) -> Tensor:
        k = torch.randint(0, self.n_modes, (n,), generator=g)
        return self.centers[k] + self.std * torch.randn(n, 2, generator=g, dtype=torch.float64)

    def _log_prob(self, x: Tensor) -> Tensor:
        c = self.centers.to(x)
        d2 = ((x.unsqueeze(1) - c) ** 2).sum(dim=2)
        comp = -0.5 * d2 / self.std**2 - math.log(2 * math.pi * self.std**2)
        return torch.logsumexp(comp, dim=1) - math.log(self.n_modes)

    def entropy(self) -> float:
        if self._entropy is None:
            self._entropy = self._monte_carlo_entropy()
        return self._entropy

    def __repr__(self) -> str:
        return f"GaussianRing(n_modes={self.n_modes}, radius={self.radius}, std={self.std})"


class SineWave(ToyDensity):
    """The sine data: ``x2 ~ U[-3, 3]``, ``x1 = sin(x2) + noise``, noise ``~ N(0, s^2)``.

    Exact density ``p(x1, x2) = (1/6) N(x1; sin x2, s^2)`` for ``|x2| <= 3``; entropy
    ``ln 6 + 0.5 ln(2 pi e s^2)``.
    """

    name = "sine wave"
    bounds = ((-2.0, 2.0), (-3.5, 3.5))

    def __init__(self, noise: float = 0.1) -> None:
        if noise <= 0:
            raise ValueError(f"noise must be positive, got {noise}")
        self.noise = noise

    def _sample(self, n: int, g: torch.Generator) -> Tensor:
        x2 = torch.rand(n, generator=g, dtype=torch.float64) * 6 - 3
        x1 = torch.sin(x2) + self.noise * torch.randn(n, generator=g, dtype=torch.float64)
        return torch.stack([x1, x2], dim=1)

    def _log_prob(self, x: Tensor) -> Tensor:
        x1, x2 = x[:, 0], x[:, 1]
        logp = (
            -math.log(6)
            - 0.5 * ((x1 - torch.sin(x2)) / self.noise) ** 2
            - math.log(self.noise)
            - 0.5 * math.log(2 * math.pi)
        )
        return torch.where(x2.abs() <= 3, logp, torch.full_like(logp, -math.inf))

    def entropy(self) -> float:
        return math.log(6) + 0.5 * math.log(2 * math.pi * math.e * self.noise**2)

    def __repr__(self) -> str:
        return f"SineWave(noise={self.noise})"


class TwoMoons(ToyDensity):
    """scikit-learn's two moons (``make_moons``), centred; no exact log-density."""

    name = "two moons"
    bounds = ((-2.0, 2.0), (-1.5, 1.5))

    def __init__(self, noise: float = 0.05) -> None:
        self.noise = noise

    def _sample(self, n: int, g: torch.Generator) -> Tensor:
        from sklearn.datasets import make_moons

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
        x, _ = make_moons(n, noise=self.noise, random_state=seed)
        return torch.from_numpy(x - np.array([0.5, 0.25]))

    def __repr__(self) -> str:
        return f"TwoMoons(noise={self.noise})"


class StudentT2D(ToyDensity):
    """Heavy tails (chapter 8): ``x = A t`` for two independent Student-t coordinates
    ``t_i`` with ``df`` degrees of freedom and the fixed matrix ``A = [[1.5, 0], [0.9, 0.6]]``,
    which stretches and correlates them. Its density falls off like a power of ``|x|``, not
    like a Gaussian: ``log p(x) = sum_i log t_df((A^{-1} x)_i) - log |det A|``, with
    ``log t_df(u) = log Gamma((df + 1)/2) - log Gamma(df/2) - log(df pi)/2
    - (df + 1)/2 log(1 + u^2/df)``."""

    name = "Student-t"
    bounds = ((-8.0, 8.0), (-8.0, 8.0))

    def __init__(self, df: float = 3.0) -> None:
        if not df > 0:
            raise ValueError(f"df must be positive, got {df}")
        self.df = float(df)
        self.matrix = torch.tensor([[1.5, 0.0], [0.9, 0.6]], dtype=torch.float64)

    def _sample(self, n: int, g: torch.Generator) -> Tensor:
        z = torch.randn(n, 2, generator=g, dtype=torch.float64)
        shape = torch.full((n, 2), self.df / 2, dtype=torch.float64)
        chi2 = 2 * torch._standard_gamma(shape, generator=g)
        return (z / torch.sqrt(chi2 / self.df)) @ self.matrix.T

    def _log_prob(self, x: Tensor) -> Tensor:
        a = self.matrix.to(x)
        t = torch.linalg.solve(a, x.T).T
        nu = self.df
        log_t = (
            math.lgamma((nu + 1) / 2)
            - math.lgamma(nu / 2)
            - 0.5 * math.log(nu * math.pi)
            - (nu + 1) / 2 * torch.log1p(t**2 / nu)
        )
        return log_t.sum(dim=1) - torch.linalg.slogdet(a)[1]

    def __repr__(self) -> str:
        return f"StudentT2D(df={self.df})"


TOY_DENSITIES = {
    "checkerboard": Checkerboard,
    "ring": GaussianRing,
    "sine": SineWave,
    "moons": TwoMoons,
}


class BetaMixture1D(ToyDensity):
    """A mixture of Beta densities on ``[0, 1]``, ``p(x) = sum_k w_k Beta(x; a_k, b_k)``,
    with ``Beta(x; a, b) = x^(a-1) (1-x)^(b-1) / B(a, b)``; ``-inf`` outside ``[0, 1]``.

    The default (chapter 4) has three components: a broad one near 0.15 and two narrower ones
    near 0.75 and 0.85. All shapes must be at least 1, so the density is bounded and its
    entropy follows by quadrature.
    """

    dim = 1
    bounds = ((0.0, 1.0),)
    name = "mixture of Betas"

    def __init__(
        self,
        a: Sequence[float] = (3.0, 18.0, 30.0),
        b: Sequence[float] = (12.0, 7.0, 6.0),
        weights: Sequence[float] = (0.45, 0.35, 0.2),
    ) -> None:
        if not len(a) == len(b) == len(weights):
            raise ValueError(
                f"a, b and weights need one entry per component, got "
                f"{len(a)}, {len(b)} and {len(weights)}"
            )
        if min(a) < 1 or min(b) < 1:
            raise ValueError(
                f"the shapes a and b must be at least 1 (a bounded density), got a={a}, b={b}"
            )
        if min(weights) < 0 or abs(sum(weights) - 1) > 1e-9:
            raise ValueError(f"weights must be non-negative and sum to one, got {weights}")
        self.a = torch.tensor(a, dtype=torch.float64)
        self.b = torch.tensor(b, dtype=torch.float64)
        self.weights = torch.tensor(weights, dtype=torch.float64)

    def _sample(self, n: int, g: torch.Generator) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=g)
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=g)))
        x = rng.beta(self.a[k].numpy(), self.b[k].numpy())
        return torch.from_numpy(x).unsqueeze(1)

    def _log_prob(self, x: Tensor) -> Tensor:
        a, b, w = (t.to(x) for t in (self.a, self.b, self.weights))
        inside = (x >= 0) & (x <= 1)
        u = x.clamp(0, 1)
        log_norm = torch.lgamma(a + b) - torch.lgamma(a) - torch.lgamma(b)
        comp = (a - 1) * torch.log(u) + (b - 1) * torch.log1p(-u) + log_norm
        log_p = torch.logsumexp(comp + torch.log(w), dim=1)
        return torch.where(inside.squeeze(1), log_p, torch.full_like(log_p, -math.inf))

    def entropy(self) -> float:
        # Midpoint rule on a fine grid of [0, 1]: the density is bounded and smooth.
        n = 400_000
        x = ((torch.arange(n, dtype=torch.float64) + 0.5) / n).unsqueeze(1)
        log_p = self._log_prob(x)
        return float(-(log_p.exp() * log_p).mean())

    def __repr__(self) -> str:
        return (
            f"BetaMixture1D(a={self.a.tolist()}, b={self.b.tolist()}, "
            f"weights={self.weights.tolist()})"
        )


class MirroredGumbel(ToyDensity):
    """A density skewed to the left (chapter 1): ``x = -(loc + scale g)`` with
    ``g ~ Gumbel(0, 1)``, a long left tail and a short right one.

    With ``u = (-x - loc) / scale``, ``log p(x) = -u - exp(-u) - log scale``; the entropy
    is ``log scale + gamma + 1`` (``gamma`` Euler's constant).
    """

    dim = 1
    name = "mirrored Gumbel"
    bounds = ((-5.0, 0.5),)

    def __init__(self, loc: float = 1.0, scale: float = 0.5) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.loc, self.scale = float(loc), float(scale)
        self.bounds = ((-self.loc - 8 * self.scale, -self.loc + 3 * self.scale),)

    def _sample(self, n: int, g: torch.Generator) -> Tensor:
        u = torch.rand(n, 1, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        return -(self.loc - self.scale * torch.log(-torch.log(u)))

    def _log_prob(self, x: Tensor) -> Tensor:
        u = (-x[:, 0] - self.loc) / self.scale
        return -u - torch.exp(-u) - math.log(self.scale)

    def entropy(self) -> float:
        return math.log(self.scale) + EULER_GAMMA + 1

    def __repr__(self) -> str:
        return f"MirroredGumbel(loc={self.loc}, scale={self.scale})"


class CorrelatedGaussian(ToyDensity):
    """A Gaussian ``N(m, A A^T)`` with a lower-triangular factor ``A`` (chapter 2):
    ``x = m + A z`` for ``z ~ N(0, I)``, so
    ``log p(x) = -D/2 log(2 pi) - sum_i log |A_ii| - ||A^{-1} (x - m)||^2 / 2`` and
    ``H = D/2 log(2 pi e) + sum_i log |A_ii|``.

    The default, in dimension 3, has the correlations 0.87, -0.81 and -0.42.
    """

    name = "correlated Gaussian"

    def __init__(
        self,
        mean: Sequence[float] = (1.0, -2.0, 0.5),
        scale_tril: Sequence[Sequence[float]] = (
            (1.0, 0.0, 0.0),
            (0.9, 0.5, 0.0),
            (-0.6, 0.4, 0.3),
        ),
    ) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float64)
        self.scale_tril = torch.tensor(scale_tril, dtype=torch.float64)
        d = len(self.mean)
        if self.scale_tril.shape != (d, d) or not torch.equal(
            self.scale_tril, self.scale_tril.tril()
        ):
            raise ValueError(
                f"scale_tril must be a lower-triangular ({d}, {d}) matrix, got "
                f"{self.scale_tril.tolist()}"
            )
        if bool((self.scale_tril.diagonal() == 0).any()):
            raise ValueError(
                "scale_tril must have a nonzero diagonal (an invertible factor), "
                f"got {self.scale_tril.diagonal().tolist()}"
            )
        self.dim = d
        spread = 5 * self.scale_tril.norm(dim=1)
        self.bounds = tuple(
            (float(m - s), float(m + s)) for m, s in zip(self.mean, spread, strict=True)
        )

    def _sample(self, n: int, g: torch.Generator) -> Tensor:
        z = torch.randn(n, self.dim, generator=g, dtype=torch.float64)
        return self.mean + z @ self.scale_tril.T

    def _log_prob(self, x: Tensor) -> Tensor:
        a = self.scale_tril.to(x)
        z = torch.linalg.solve_triangular(a, (x - self.mean.to(x)).T, upper=False).T
        return (
            -0.5 * (z**2).sum(dim=1)
            - torch.log(a.diagonal().abs()).sum()
            - 0.5 * self.dim * math.log(2 * math.pi)
        )

    def entropy(self) -> float:
        return 0.5 * self.dim * math.log(2 * math.pi * math.e) + float(
            torch.log(self.scale_tril.diagonal().abs()).sum()
        )

    def __repr__(self) -> str:
        return (
            f"CorrelatedGaussian(mean={self.mean.tolist()}, scale_tril={self.scale_tril.tolist()})"
        )


def kumaraswamy_log_prob(x: Tensor, a: Tensor | float, b: Tensor | float) -> Tensor:
    """The Kumaraswamy log-density on ``(0, 1)``,
    ``log p(x) = log a + log b + (a - 1) log x + (b - 1) log(1 - x^a)``, elementwise, for
    positive shapes ``a`` and ``b`` (numbers or tensors that broadcast against ``x``)."""
    a, b = torch.as_tensor(a, dtype=x.dtype), torch.as_tensor(b, dtype=x.dtype)
    return torch.log(a) + torch.log(b) + (a - 1) * torch.log(x) + (b - 1) * torch.log1p(-(x**a))


class KumaraswamySquare(ToyDensity):
    """A density on the unit square whose second coordinate changes shape with the first
    (chapter 4): ``x1 ~ Kumaraswamy(2, 3)`` and ``x2 | x1 ~ Kumaraswamy(1 + 6 x1, 3)``, so
    ``log p(x) = log k(x1; 2, 3) + log k(x2; 1 + 6 x1, 3)`` with
    ``k(x; a, b) = a b x^(a-1) (1 - x^a)^(b-1)``, and ``-inf`` outside the square.

    Both coordinates are drawn by inverting the distribution function
    ``F(x) = 1 - (1 - x^a)^b``. The entropy has no closed form: ``entropy()`` estimates it by
    Monte Carlo with 400,000 samples.
    """

    name = "Kumaraswamy square"
    bounds = ((0.0, 1.0), (0.0, 1.0))

    def __init__(self) -> None:
        self._entropy: float | None = None

    def _sample(self, n: int, g: torch.Generator) -> Tensor:
        u = torch.rand(n, 2, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        x1 = (1 - (1 - u[:, 0]) ** (1 / 3)) ** (1 / 2)
        x2 = (1 - (1 - u[:, 1]) ** (1 / 3)) ** (1 / (1 + 6 * x1))
        return torch.stack([x1, x2], dim=1).clamp(1e-9, 1 - 1e-9)

    def _log_prob(self, x: Tensor) -> Tensor:
        inside = ((x > 0) & (x < 1)).all(dim=1)
        u = torch.where(inside.unsqueeze(1), x, torch.full_like(x, 0.5))
        log_p = kumaraswamy_log_prob(u[:, 0], 2.0, 3.0) + kumaraswamy_log_prob(
            u[:, 1], 1 + 6 * u[:, 0], 3.0
        )
        return torch.where(inside, log_p, torch.full_like(log_p, -math.inf))

    def entropy(self) -> float:
        if self._entropy is None:
            self._entropy = self._monte_carlo_entropy()
        return self._entropy


def log_banana(x: Tensor) -> Tensor:
    """The banana's unnormalised log-density (chapter 3),
    ``log p~(x) = -x1^2 / 2 - ((x2 - x1^2 / 2) / 0.5)^2 / 2``, for ``x`` of shape ``(B, 2)``;
    returns ``(B,)``. Its normaliser is ``Z = 2 pi * 0.5 = pi`` (``Banana.log_z``)."""
    x1, x2 = x[:, 0], x[:, 1]
    return -0.5 * x1**2 - 0.5 * ((x2 - 0.5 * x1**2) / 0.5) ** 2


class Banana(ToyDensity):
    """The banana of chapter 3: ``x1 ~ N(0, 1)`` and ``x2 | x1 ~ N(x1^2 / 2, 0.5^2)``, so
    ``log p(x) = log_banana(x) - log Z`` with ``Z = pi``; ``H = log(2 pi e) + log 0.5``."""

    name = "banana"
    bounds = ((-4.0, 4.0), (-2.0, 8.0))
    #: ``log Z`` of ``exp(log_banana)``: ``Z = (2 pi)^(1/2) * (2 pi)^(1/2) * 0.5 = pi``.
    log_z = math.log(math.pi)

    def _sample(self, n: int, g: torch.Generator) -> Tensor:
        x1 = torch.randn(n, generator=g, dtype=torch.float64)
        x2 = 0.5 * x1**2 + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
        return torch.stack([x1, x2], dim=1)

    def _log_prob(self, x: Tensor) -> Tensor:
        return log_banana(x) - self.log_z

    def entropy(self) -> float:
        return math.log(2 * math.pi * math.e) + math.log(0.5)


class MovedSine(ToyDensity):
    """Chapter 5's sine wave moved far from the origin (chapter 8):
    ``x = s * y + t`` for ``y ~ SineWave()``, with ``s = (8, 0.05)`` and ``t = (-30, 12)``, so
    ``log p(x) = log p_sine((x - t) / s) - sum_i log s_i`` and
    ``H = H_sine + sum_i log s_i``."""

    name = "moved sine wave"
    bounds = ((-46.0, -14.0), (11.825, 12.175))

    def __init__(self) -> None:
        self.sine = SineWave()
        self.scale = torch.tensor([8.0, 0.05], dtype=torch.float64)
        self.shift = torch.tensor([-30.0, 12.0], dtype=torch.float64)

    def _sample(self, n: int, g: torch.Generator) -> Tensor:
        return self.sine._sample(n, g) * self.scale + self.shift

    def _log_prob(self, x: Tensor) -> Tensor:
        return self.sine._log_prob((x - self.shift.to(x)) / self.scale.to(x)) - torch.log(
            self.scale
        ).sum().to(x)

    def entropy(self) -> float:
        return self.sine.entropy() + float(torch.log(self.scale).sum())
