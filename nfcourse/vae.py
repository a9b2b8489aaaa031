"""A variational autoencoder whose posterior is a normalizing flow (chapter 6).

The encoder maps an image ``x`` to a Gaussian ``q0(z0 | x) = N(mu(x), diag sigma(x)^2)`` and
to the parameters of ``K`` planar layers, one set per image (amortised, as in Rezende and
Mohamed 2015). A sample ``z0 = mu + sigma * eps`` is pushed through the layers,
``zK = f_K o ... o f_1 (z0)``, and the decoder gives Bernoulli logits of ``p(x | zK)``.
Since ``log qK(zK | x) = log q0(z0 | x) - sum_k log |det J_k|``, the evidence lower bound is

    ELBO(x) = E_eps[ log p(x | zK) + log p(zK) - log q0(z0 | x) + sum_k log |det J_k| ],

and the importance-weighted bound (Burda et al. 2016) with ``S`` samples is
``log (1/S) sum_s exp(w_s)``, ``w_s`` the bracket above for sample ``s``. Every function
works on leading batch shapes ``(*, B, D)`` so that ``S`` posterior samples of ``B`` images
travel together.

The planar layers are chapter 3's, ``nfcourse.flows.planar``, called with one parameter
set per image: ``f(z) = z + u_hat tanh(w^T z + b)`` with ``u_hat = constrained_u(u, w)``,
so that ``w^T u_hat > -1`` and ``f`` is invertible, and
``log |det J| = log |1 + u_hat^T psi(z)|``, ``psi(z) = tanh'(w^T z + b) w``
(``planar_forward``; ``planar_inverse`` inverts it). The Gaussian log-densities are those
of the base distributions, ``nfcourse.distributions``.

``posterior="iaf"`` replaces the planar layers by ``K`` steps of an inverse autoregressive
flow (Kingma et al. 2016, chapter 7): the encoder also outputs a context vector ``h(x)``,
and step ``t`` is ``z_t = mu_t + sigma_t * z_{t-1}`` with ``(log sigma_t, mu_t)`` from a
MADE over ``z_{t-1}`` that also sees ``h`` (chapter 7's ``IAF`` layer with a context), so
that coordinate ``i`` of ``mu_t, sigma_t`` depends only on the coordinates before ``i`` in
the step's ordering. The Jacobian of a step is triangular with diagonal ``sigma_t``;
``sum_k log |det J_k| = sum_t sum_i log sigma_t,i``, and one pass of each MADE gives the
sample and its density.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core import Compose
from .distributions import diagonal_normal_log_prob, standard_normal_log_prob
from .flows.autoregressive import IAF, layer_orders
from .flows.planar import SOFTPLUS_ONE, constrained_u, planar_forward, planar_inverse
from .validation import check_batch, check_pixel_values, check_positive_int

__all__ = [
    "gaussian_kl",
    "bernoulli_log_likelihood",
    "importance_weighted_bound",
    "check_flat_images",
    "ELBOTerms",
    "PosteriorSample",
    "Encoder",
    "Decoder",
    "IAFPosterior",
    "FlowPosteriorVAE",
    "grid_log_joint",
]

# --- the maths, as pure functions ---------------------------------------------------------


def gaussian_kl(mu: Tensor, log_sigma: Tensor) -> Tensor:
    """Closed-form ``KL(N(mu, diag sigma^2) || N(0, I)) =
    0.5 sum (mu^2 + sigma^2 - 1 - 2 log sigma)``, the plain VAE's regulariser."""
    return 0.5 * (mu**2 + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma).sum(dim=-1)


def bernoulli_log_likelihood(x: Tensor, logits: Tensor) -> Tensor:
    """``log p(x | z) = sum_i x_i log p_i + (1 - x_i) log(1 - p_i)`` with
    ``p_i = sigmoid(logits_i)``, computed stably as ``sum x_i l_i - softplus(l_i)``."""
    return (x * logits - F.softplus(logits)).sum(dim=-1)


def importance_weighted_bound(log_weights: Tensor) -> Tensor:
    """``log (1/S) sum_s exp(log_weights[s])`` over the first axis (the ``S`` samples),
    computed with ``logsumexp`` so that weights of ``exp(-100)`` do not underflow.

    With ``log_weights[s] = log p(x, z_s) - log q(z_s | x)``, ``z_s ~ q``, this is the
    bound of Burda et al. (2016): one sample gives the ELBO, and it rises towards
    ``log p(x)`` as ``S`` grows."""
    if log_weights.dim() < 1 or log_weights.shape[0] < 1:
        raise ValueError(
            "log_weights must have the samples along its first axis, "
            f"got shape {tuple(log_weights.shape)}"
        )
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


def check_flat_images(x: Tensor, data_dim: int = 784, name: str = "x") -> Tensor:
    """Check a batch of flattened images: a float tensor ``(B, data_dim)`` with values in
    ``[0, 1]`` (Bernoulli probabilities or binary pixels), with the shared validators."""
    if isinstance(x, Tensor) and x.dim() == 3 and x.shape[1] * x.shape[2] == data_dim:
        raise ValueError(
            f"{name} must have shape (B, {data_dim}), got {tuple(x.shape)}; "
            f"flatten the images with {name}.reshape(len({name}), -1)"
        )
    if isinstance(x, Tensor) and not x.is_floating_point():
        raise TypeError(
            f"{name} must be a float32 or float64 tensor with values in [0, 1], "
            f"got {x.dtype}; divide integer pixels by 255 and call .float()"
        )
    x = check_batch(x, data_dim, name, owner="the VAE")
    return check_pixel_values(
        x, name, 1.0, fix="divide 0..255 pixels by 255 (Bernoulli probabilities or binary pixels)"
    )


class ELBOTerms(NamedTuple):
    """The four terms of the flow ELBO, each of shape ``(*, B)``."""

    log_likelihood: Tensor  #: log p(x | zK), the decoder
    log_prior: Tensor  #: log p(zK), the standard normal prior
    log_q0: Tensor  #: log q0(z0 | x), the encoder's Gaussian
    sum_log_abs_det: Tensor  #: sum_k log |det J_k|, the flow

    @property
    def log_qK(self) -> Tensor:
        """``log qK(zK | x) = log q0(z0 | x) - sum_k log |det J_k|``."""
        return self.log_q0 - self.sum_log_abs_det

    @property
    def elbo(self) -> Tensor:
        """``log p(x | zK) + log p(zK) - log q0(z0 | x) + sum_k log |det J_k|``."""
        return self.log_likelihood + self.log_prior - self.log_q0 + self.sum_log_abs_det


class PosteriorSample(NamedTuple):
    """A draw from the flow posterior: ``z0``, ``zK`` of shape ``(*, B, D)``; ``log_q0``
    and ``sum_log_abs_det`` of shape ``(*, B)``."""

    z0: Tensor
    zK: Tensor
    log_q0: Tensor
    sum_log_abs_det: Tensor


# --- the networks ---------------------------------------------------------------------------


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.Softplus()]
    return nn.Sequential(*layers)


def _hidden_sizes(hidden: int | Sequence[int]) -> list[int]:
    sizes = [hidden] if isinstance(hidden, int) else list(hidden)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"hidden must be a positive width or a list of them, got {hidden!r}")
    return sizes


class Encoder(nn.Module):
    """``x -> (mu, log sigma, (u_hat, w, b))``: the Gaussian ``q0(z0 | x)`` and the
    parameters of ``K`` planar layers for each image, all read off one MLP's last hidden
    layer. The raw ``u`` is projected to ``u_hat = constrained_u(u, w)``, so that every
    layer of every image is invertible (``w^T u_hat > -1``).

    Args:
        data_dim: pixels per image (784 for MNIST).
        latent_dim: the dimension ``D`` of ``z``.
        hidden: widths of the hidden layers (softplus activations).
        n_flows: the number ``K`` of planar layers (0 for a plain VAE).
        context_dim: with ``context_dim = C > 0`` the encoder outputs a context vector
            ``h`` of size ``C`` for an IAF posterior instead of planar parameters
            (``n_flows`` must then be 0).

    Returns from ``forward(x)`` with ``x`` of shape ``(B, data_dim)``: ``mu`` and
    ``log_sigma`` of shape ``(B, D)``, and ``u_hat, w`` of shape ``(B, K, D)``, ``b`` of
    shape ``(B, K)``; with a context, ``mu``, ``log_sigma`` and ``h`` of shape ``(B, C)``.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        hidden: int | Sequence[int] = 256,
        n_flows: int = 0,
        context_dim: int = 0,
    ):
        super().__init__()
        if n_flows < 0:
            raise ValueError(f"n_flows must be >= 0, got {n_flows}")
        if context_dim and n_flows:
            raise ValueError(
                "an encoder outputs either planar parameters (n_flows > 0) "
                "or an IAF context (context_dim > 0), not both; got "
                f"n_flows={n_flows}, context_dim={context_dim}"
            )
        sizes = _hidden_sizes(hidden)
        self.latent_dim, self.n_flows = latent_dim, n_flows
        self.body = _mlp([data_dim, *sizes])
        self.gaussian = nn.Linear(sizes[-1], 2 * latent_dim)
        self.flow_params = (
            nn.Linear(sizes[-1], n_flows * (2 * latent_dim + 1)) if n_flows else None
        )
        self.context = nn.Linear(sizes[-1], context_dim) if context_dim else None
        if n_flows:
            self._start_near_identity()

    @torch.no_grad()
    def _start_near_identity(self) -> None:
        # Random planar layers would start qK far from q0 and slow training down. Start with
        # a random unit-scale w per layer, shared by all images, and u with w^T u = log(e - 1):
        # then m(w^T u) = 0 and u_hat = 0, so each layer is the identity; the small weights
        # let the layers become image-dependent as training goes on.
        d, k = self.latent_dim, self.n_flows
        w = torch.randn(k, d) / math.sqrt(d)
        u = SOFTPLUS_ONE * w / (w * w).sum(dim=-1, keepdim=True)
        self.flow_params.weight.mul_(0.01)
        self.flow_params.bias.copy_(torch.cat([u, w, torch.zeros(k, 1)], dim=-1).flatten())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor]]:
        h = self.body(x)
        mu, log_sigma = self.gaussian(h).chunk(2, dim=-1)
        if self.context is not None:
            return mu, log_sigma, self.context(h)
        d, k = self.latent_dim, self.n_flows
        if self.flow_params is None:
            empty = h.new_zeros(x.shape[0], 0, d)
            return mu, log_sigma, (empty, empty, h.new_zeros(x.shape[0], 0))
        p = self.flow_params(h).reshape(x.shape[0], k, 2 * d + 1)
        u, w, b = p[..., :d], p[..., d : 2 * d], p[..., 2 * d]
        return mu, log_sigma, (constrained_u(u, w), w, b)


class Decoder(nn.Module):
    """``z -> logits`` of the Bernoulli likelihood ``p(x | z) = prod_i Bernoulli(x_i;
    sigmoid(logits_i))``; ``z`` of shape ``(*, D)`` gives logits ``(*, data_dim)``."""

    def __init__(self, latent_dim: int, data_dim: int, hidden: int | Sequence[int] = 256):
        super().__init__()
        sizes = _hidden_sizes(hidden)
        self.net = nn.Sequential(_mlp([latent_dim, *sizes[::-1]]), nn.Linear(sizes[0], data_dim))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)

    @torch.no_grad()
    def set_output_bias(self, pixel_means: Tensor) -> None:
        """Start from the average image: set the output bias to ``logit(pixel_means)``, so that
        the first training steps go into shapes rather than into overall brightness."""
        p = pixel_means.detach().reshape(-1).clamp(1e-3, 1 - 1e-3)
        self.net[-1].bias.copy_(torch.log(p) - torch.log1p(-p))


class IAFPosterior(Compose):
    """``K`` steps of an inverse autoregressive flow over ``z`` with a per-image context
    ``h`` (Kingma et al. 2016): ``z_t = mu_t + sigma_t * z_{t-1}`` where
    ``(log sigma_t, mu_t) = MADE_t(z_{t-1}, h)``, coordinate ``i`` depending only on the
    coordinates before it in step ``t``'s ordering (the identity ordering, reversed at
    every other step). The steps are chapter 7's ``IAF`` layers with a context, composed:
    the log-scale is bounded, ``log sigma = c tanh(a / c)`` with ``a`` the MADE's output,
    and the MADEs start at zero output, so a fresh posterior is the identity map on top
    of ``q0``.

    ``forward(z0, h)`` is one pass of each MADE and returns ``zK`` and
    ``sum_t sum_i log sigma_t,i`` (so ``log qK = log q0 - sum``); ``inverse(zK, h)`` takes
    ``D`` passes per step and returns ``z0`` and ``-sum_t sum_i log sigma_t,i``. Both take
    points of shape ``(*, B, D)``, leading sample axes included, with contexts ``h`` of
    shape ``(B, C)``, one per image; the log-dets have shape ``(*, B)``.

    Args:
        latent_dim: the dimension ``D`` of ``z``.
        n_steps: the number ``K`` of IAF steps.
        context_dim: the size ``C`` of the encoder's context ``h``.
        hidden: the hidden widths of each MADE.
        scale_bound: ``c``, the largest ``|log sigma|`` per step.
    """

    def __init__(
        self,
        latent_dim: int,
        n_steps: int,
        context_dim: int,
        hidden: Sequence[int] = (64,),
        scale_bound: float = 3.0,
    ) -> None:
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        n_steps = check_positive_int(
            n_steps,
            "n_flows",
            "the number K of IAF steps: an IAF posterior needs "
            "n_flows >= 1; use posterior='planar' with n_flows=0 for a plain VAE",
        )
        context_dim = check_positive_int(
            context_dim, "iaf_context", "the size of the encoder's context h"
        )
        super().__init__(
            IAF(latent_dim, hidden, order=order, scale_bound=scale_bound, context_dim=context_dim)
            for order in layer_orders(latent_dim, n_steps)
        )
        self.latent_dim = latent_dim
        self.scale_bound = float(scale_bound)

    def forward(self, z0: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """``zK`` and ``sum_t sum_i log sigma_t,i`` for ``z0`` ``(*, B, D)``, ``h``
        ``(B, C)``."""
        return self._rows(z0, h, inverse=False)

    def inverse(self, zK: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """``z0`` and ``-sum_t sum_i log sigma_t,i`` for ``zK`` ``(*, B, D)``, ``h``
        ``(B, C)``: ``D`` passes per step."""
        return self._rows(zK, h, inverse=True)

    def _rows(self, z: Tensor, h: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        # The sample axes are flattened into rows, each with the context of its image.
        rows = z.reshape(-1, self.latent_dim)
        context = h.expand(*z.shape[:-1], h.shape[-1]).reshape(-1, h.shape[-1])
        out, log_abs_det = (
            super().inverse(rows, context) if inverse else super().forward(rows, context)
        )
        return out.reshape(z.shape), log_abs_det.reshape(z.shape[:-1])


class FlowPosteriorVAE(nn.Module):
    """A VAE with the flow posterior ``qK(zK | x)``: ``z0 = mu(x) + sigma(x) * eps``,
    ``zK = f_K o ... o f_1 (z0)`` with amortised planar layers ``f_k``, prior ``N(0, I)``,
    Bernoulli decoder. ``n_flows = 0`` is the plain VAE of Kingma and Welling (2014).

    ``ELBO(x) = E[log p(x | zK) + log p(zK) - log q0(z0 | x) + sum_k log |det J_k|]``.

    Args:
        latent_dim: the dimension ``D`` of ``z``.
        n_flows: the number ``K`` of planar layers.
        hidden: widths of the encoder's hidden layers (the decoder mirrors them).
        data_dim: pixels per image (784 for 28 x 28).
        posterior: ``"planar"`` (the default) or ``"iaf"``: ``n_flows`` steps of an
            inverse autoregressive flow (:class:`IAFPosterior`) conditioned on a context
            vector from the encoder, instead of planar layers.
        iaf_hidden: with ``posterior="iaf"``, the hidden widths of each step's MADE
            (default ``(64,)``).
        iaf_context: with ``posterior="iaf"``, the size of the encoder's context vector
            (default ``latent_dim``).

    References: Rezende and Mohamed (2015), "Variational Inference with Normalizing Flows";
    Burda, Grosse and Salakhutdinov (2016), "Importance Weighted Autoencoders";
    Kingma et al. (2016), "Improved Variational Inference with Inverse Autoregressive Flow".
    """

    def __init__(
        self,
        latent_dim: int,
        n_flows: int = 0,
        hidden: int | Sequence[int] = 256,
        data_dim: int = 784,
        posterior: str = "planar",
        iaf_hidden: Sequence[int] | None = None,
        iaf_context: int | None = None,
    ):
        super().__init__()
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        if posterior not in ("planar", "iaf"):
            raise ValueError(f"posterior must be 'planar' or 'iaf', got {posterior!r}")
        if posterior == "planar" and (iaf_hidden is not None or iaf_context is not None):
            raise ValueError(
                "iaf_hidden and iaf_context apply to posterior='iaf' only; "
                "pass posterior='iaf' or leave them out"
            )
        self.latent_dim, self.n_flows, self.data_dim = latent_dim, n_flows, data_dim
        self.posterior = posterior
        if posterior == "iaf":
            context = latent_dim if iaf_context is None else iaf_context
            self.iaf: IAFPosterior | None = IAFPosterior(
                latent_dim, n_flows, context, (64,) if iaf_hidden is None else iaf_hidden
            )
            self.encoder = Encoder(data_dim, latent_dim, hidden, 0, context_dim=context)
        else:
            self.iaf = None
            self.encoder = Encoder(data_dim, latent_dim, hidden, n_flows)
        self.decoder = Decoder(latent_dim, data_dim, hidden)

    def parameter_groups(self, lr: float, flow_lr: float | None = None) -> list[dict]:
        """Optimiser groups: the head that outputs the flow parameters learns at ``flow_lr``
        (``lr / 10`` by default), everything else at ``lr``. Frozen parameters
        (``requires_grad = False``) are left out.

        Adam moves every weight by about ``lr`` per step whatever the size of its gradient;
        the flow head's many weights then shake all ``K`` layers at once, which slows the
        early training of a flow posterior down. A smaller step for that head avoids it."""
        flow = [
            p
            for n, p in self.named_parameters()
            if n.startswith("encoder.flow_params") and p.requires_grad
        ]
        ids = {id(p) for p in flow}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": rest, "lr": lr}]
        if flow:
            groups.append({"params": flow, "lr": lr / 10 if flow_lr is None else flow_lr})
        return groups

    def _check_dtype(self, x: Tensor, name: str = "x") -> None:
        dtype = next(self.parameters()).dtype
        if x.dtype != dtype:
            raise TypeError(
                f"{name} is {x.dtype} but the model has {dtype} parameters; "
                f"convert {name} with .to({dtype}) or the model with "
                f".to({x.dtype}) so that both have one dtype"
            )

    def _check_latents(self, x: Tensor, z: Tensor, name: str = "z") -> None:
        expected = f"(*, {x.shape[0]}, {self.latent_dim})"
        if not isinstance(z, Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of shape {expected}, got {type(z).__name__}"
            )
        if z.dim() < 2 or z.shape[-2:] != (x.shape[0], self.latent_dim):
            raise ValueError(
                f"{name} must have shape {expected}: leading sample dimensions, then one row "
                f"of {self.latent_dim} latent coordinates for each of the {x.shape[0]} images "
                f"of x; got shape {tuple(z.shape)}"
            )
        if z.dtype != x.dtype:
            raise TypeError(
                f"{name} is {z.dtype} but x is {x.dtype}; convert {name} with .to({x.dtype})"
            )
        if not bool(torch.isfinite(z).all()):
            raise ValueError(f"{name} contains NaN or inf")

    def _noise(self, x: Tensor, n_samples: int | None, eps: Tensor | None) -> Tensor:
        if n_samples is not None:
            n_samples = check_positive_int(n_samples, "n_samples")
        shape = (
            (x.shape[0], self.latent_dim)
            if n_samples is None
            else (n_samples, x.shape[0], self.latent_dim)
        )
        if eps is None:
            return torch.randn(shape, dtype=x.dtype, device=x.device)
        if not isinstance(eps, Tensor) or eps.shape[-2:] != shape[-2:]:
            got = tuple(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__
            raise ValueError(f"eps must have shape (*, {shape[-2]}, {shape[-1]}), got {got}")
        return eps

    def flow(self, z0: Tensor, u_hat: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """Push ``z0`` (``(*, B, D)``) through the ``K`` planar layers of chapter 3, each with
        its parameters for every image (``u_hat, w`` ``(B, K, D)``, ``b`` ``(B, K)``); returns
        ``zK`` and ``sum_k log |det J_k|``."""
        z, sum_log_abs_det = z0, z0.new_zeros(z0.shape[:-1])
        for k in range(self.n_flows):
            z, log_abs_det = planar_forward(z, u_hat[:, k], w[:, k], b[:, k])
            sum_log_abs_det = sum_log_abs_det + log_abs_det
        return z, sum_log_abs_det

    def sample_posterior(
        self, x: Tensor, n_samples: int | None = None, eps: Tensor | None = None
    ) -> PosteriorSample:
        """Draw ``zK ~ qK(. | x)``: one per image (shape ``(B, D)``), or ``n_samples`` per
        image (shape ``(S, B, D)``), or from given standard-normal noise ``eps``."""
        x = check_flat_images(x, self.data_dim)
        self._check_dtype(x)
        mu, log_sigma, flow_params = self.encoder(x)
        eps = self._noise(x, n_samples, eps)
        z0 = mu + torch.exp(log_sigma) * eps  # the reparameterisation
        log_q0 = diagonal_normal_log_prob(z0, mu, log_sigma)  # log q0(z0 | x)
        if self.iaf is not None:  # flow_params is the context h
            zK, sum_log_abs_det = self.iaf(z0, flow_params)
        else:  # zK, sum_k log |det J_k|
            zK, sum_log_abs_det = self.flow(z0, *flow_params)
        return PosteriorSample(z0, zK, log_q0, sum_log_abs_det)

    def elbo_terms(
        self, x: Tensor, n_samples: int | None = None, eps: Tensor | None = None
    ) -> ELBOTerms:
        """The four terms of the ELBO for one posterior sample per image (or ``n_samples``)."""
        z0, zK, log_q0, sum_log_abs_det = self.sample_posterior(x, n_samples, eps)
        log_likelihood = bernoulli_log_likelihood(x, self.decoder(zK))  # log p(x | zK)
        log_prior = standard_normal_log_prob(zK)  # log p(zK)
        return ELBOTerms(log_likelihood, log_prior, log_q0, sum_log_abs_det)

    def elbo(self, x: Tensor, n_samples: int | None = None, eps: Tensor | None = None) -> Tensor:
        """Single-sample estimates of the ELBO, shape ``(B,)`` (or ``(S, B)``), in nats."""
        return self.elbo_terms(x, n_samples, eps).elbo

    def loss(self, x: Tensor, beta: float = 1.0) -> Tensor:
        """The training loss: minus the ELBO averaged over the batch, in nats per image.

        ``beta < 1`` weighs down ``log p(zK) - log qK(zK | x)`` (the KL part) for a warm-up
        at the start of training; ``beta = 1`` is the ELBO itself."""
        t = self.elbo_terms(x)
        return -(t.log_likelihood + beta * (t.log_prior - t.log_qK)).mean()

    @torch.no_grad()
    def log_weights(self, x: Tensor, n_samples: int, chunk_size: int | None = None) -> Tensor:
        """``log p(x, zK_s) - log qK(zK_s | x)`` for ``n_samples`` draws per image, shape
        ``(S, B)``: their mean estimates the ELBO, :func:`importance_weighted_bound` of
        them bounds ``log p(x)`` more tightly. Drawn ``chunk_size`` samples at a time; by
        default as many as keep the decoder's output near four million numbers."""
        x = check_flat_images(x, self.data_dim)
        n_samples = check_positive_int(n_samples, "n_samples")
        if chunk_size is None:
            chunk_size = max(1, 4_000_000 // (x.shape[0] * self.data_dim))
        chunk_size = check_positive_int(chunk_size, "chunk_size")
        chunks = []
        for start in range(0, n_samples, chunk_size):
            chunks.append(self.elbo(x, n_samples=min(chunk_size, n_samples - start)))
        return torch.cat(chunks)

    @torch.no_grad()
    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x, z) = log p(x | z) + log p(z)`` for images ``x`` ``(B, data_dim)`` and
        latents ``z`` ``(*, B, D)``; the unnormalised true posterior ``p(z | x)``."""
        x = check_flat_images(x, self.data_dim)
        self._check_dtype(x)
        self._check_latents(x, z)
        return bernoulli_log_likelihood(x, self.decoder(z)) + standard_normal_log_prob(z)

    @torch.no_grad()
    def posterior_log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """``log qK(z | x)`` at given points ``z`` (``(*, B, D)``): invert the layers one by
        one (chapter 3's ``planar_inverse``, with this image's parameters; or the IAF steps,
        ``D`` passes each) and use ``log qK(zK) = log q0(z0) - sum_k log |det J_k|``."""
        x = check_flat_images(x, self.data_dim)
        self._check_dtype(x)
        self._check_latents(x, z)
        if self.iaf is not None:
            mu, log_sigma, h = self.encoder(x)
            z, total = self.iaf.inverse(z, h)
            return diagonal_normal_log_prob(z, mu, log_sigma) + total
        mu, log_sigma, (u_hat, w, b) = self.encoder(x)
        total = z.new_zeros(z.shape[:-1])
        for k in reversed(range(self.n_flows)):
            z, log_abs_det_inverse = planar_inverse(z, u_hat[:, k], w[:, k], b[:, k])
            total = total + log_abs_det_inverse
        return diagonal_normal_log_prob(z, mu, log_sigma) + total

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Pixel probabilities decoded from the flow image of the encoder mean (eps = 0)."""
        x = check_flat_images(x, self.data_dim)
        zK = self.sample_posterior(x, eps=x.new_zeros(x.shape[0], self.latent_dim)).zK
        return torch.sigmoid(self.decoder(zK))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Pixel probabilities ``sigmoid(decoder(z))`` for ``n`` draws ``z ~ N(0, I)``."""
        n = check_positive_int(n, "n")
        p = next(self.parameters())
        z = torch.randn(
            n,
            self.latent_dim,
            generator=generator,
            dtype=p.dtype,
            device="cpu" if generator is not None else p.device,
        ).to(p.device)
        return torch.sigmoid(self.decoder(z))


# --- training and evaluation ------------------------------------------------------------------


@torch.no_grad()
def grid_log_joint(
    model: FlowPosteriorVAE,
    x: Tensor,
    bounds: Sequence[Sequence[float]] = ((-8.0, 8.0), (-8.0, 8.0)),
    resolution: int = 241,
    batch_size: int = 4096,
) -> tuple[Tensor, Tensor, Tensor]:
    """The true posterior of a model with a 2D latent space, on a grid.

    Evaluates ``log p(x, z) = log p(x | z) + log p(z)`` at the ``resolution^2`` points ``z``
    of a grid over ``bounds`` for every image, decoding each grid point once, and
    ``log p(x) = log sum_g p(x, z_g) dA`` by quadrature (``dA`` the area of a cell), which
    is accurate when the posterior is smooth, several cells wide and inside the box.

    Returns ``z`` ``(G, 2)``, ``log p(x, z)`` ``(B, G)`` and ``log p(x)`` ``(B,)``;
    ``log p(z | x) = log p(x, z) - log p(x)``.
    """
    if model.latent_dim != 2:
        raise ValueError(f"grid_log_joint needs a 2D latent space, got {model.latent_dim}")
    x = check_flat_images(x, model.data_dim)
    (a, b), (c, d) = bounds
    g1 = torch.linspace(a, b, resolution, dtype=x.dtype, device=x.device)
    g2 = torch.linspace(c, d, resolution, dtype=x.dtype, device=x.device)
    z1, z2 = torch.meshgrid(g1, g2, indexing="xy")
    z = torch.stack([z1.flatten(), z2.flatten()], dim=1)
    log_joint = x.new_empty(x.shape[0], z.shape[0])
    for start in range(0, z.shape[0], batch_size):
        chunk = z[start : start + batch_size]
        logits = model.decoder(chunk)
        log_joint[:, start : start + batch_size] = (
            x @ logits.T - F.softplus(logits).sum(dim=-1) + standard_normal_log_prob(chunk)
        )
    cell = float((g1[1] - g1[0]) * (g2[1] - g2[0]))
    return z, log_joint, torch.logsumexp(log_joint, dim=1) + math.log(cell)
