"""Training (every chapter): the one loop, seeded, with a progress bar and a divergence
guard, and the ``fit_*`` functions built on it.

* ``train``: minimise any loss ``loss_fn(step)`` with Adam (or a given optimiser);
* ``fit_maximum_likelihood``: a flow on data (points or images; with a context for a
  conditional flow; optionally dequantized afresh at every step, on a cosine schedule);
* ``fit_reverse_kl``: a flow on an unnormalised log-density (chapter 3);
* ``fit_vae``: a VAE with a flow posterior on the ELBO (chapter 6).

``seed`` means what it means everywhere in the package (``nfcourse.seeding``): an integer
makes a run repeat, drawing its random numbers from a random state of its own and leaving
the caller's global random state as it was; ``None`` draws from the global state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .core import Flow, NonFiniteLogProb, NonFiniteSamples
from .seeding import generator, seeded
from .vae import FlowPosteriorVAE, check_flat_images
from .validation import check_positive_int

__all__ = ["TrainingDiverged", "train", "fit_maximum_likelihood", "fit_reverse_kl", "fit_vae"]

#: A loss above this (in absolute value) counts as a divergence: no model of the course
#: comes near it, and an exploding loss soon overflows.
MAX_LOSS = 1e10


class TrainingDiverged(FloatingPointError):
    """Raised when the loss becomes NaN, infinite or explodes during training."""


def _device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def train(
    loss_fn: Callable[[int], Tensor],
    parameters: Iterable[nn.Parameter] | nn.Module,
    steps: int,
    lr: float = 1e-3,
    seed: int | None = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    clip_grad_norm: float | None = None,
    progress: bool = True,
    desc: str = "training",
    max_loss: float = MAX_LOSS,
) -> list[float]:
    """Minimise ``loss_fn(step)`` for ``steps`` steps of Adam and return the loss history.

    Args:
        loss_fn: called with the step number, returns a scalar loss.
        parameters: a module or an iterable of parameters to optimise.
        steps: the number of optimisation steps (a positive integer).
        lr: Adam's learning rate (ignored when ``optimizer`` is given).
        seed: an integer runs the loop on a fork of torch's global random state seeded
            with it, so that the random numbers ``loss_fn`` draws repeat from run to run and
            the caller's global state is left as it was; ``None`` uses the global state.
        clip_grad_norm: clip the gradient norm to this value when given.
        progress: show a ``tqdm`` progress bar (in a notebook or a terminal).
        max_loss: a loss above this in absolute value counts as a divergence.

    Raises:
        TrainingDiverged: when the loss is NaN, infinite or beyond ``max_loss``, naming the
            step and likely causes.
    """
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be a function of the step number, got {type(loss_fn).__name__}"
        )
    steps = check_positive_int(steps, "steps")
    if isinstance(parameters, nn.Module):
        parameters = parameters.parameters()
    parameters = [p for p in parameters if p.requires_grad]
    if not parameters:
        raise ValueError(
            "train() got no trainable parameters: pass a module or a list of "
            "tensors with requires_grad=True"
        )
    if optimizer is None:
        optimizer = torch.optim.Adam(parameters, lr=lr)
    history: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=0.5)
    with seeded(seed):
        for step in bar:
            optimizer.zero_grad(set_to_none=True)
            try:
                loss = loss_fn(step)
            except (NonFiniteSamples, NonFiniteLogProb) as error:
                raise TrainingDiverged(f"training diverged at step {step}: {error}") from error
            value = float(loss.detach())
            if not math.isfinite(value) or abs(value) > max_loss:
                what = (
                    f"became {value}"
                    if not math.isfinite(value)
                    else f"exploded to {value:.3g} (beyond max_loss={max_loss:g})"
                )
                raise TrainingDiverged(
                    f"training diverged: the loss {what} at step {step} (last finite loss: "
                    f"{history[-1] if history else 'none'}). Likely causes: a learning rate "
                    f"too large for this model (try a smaller learning rate than "
                    f"lr={optimizer.param_groups[0]['lr']:g}), no gradient clipping (try "
                    "clip_grad_norm=1.0), or data outside the model's domain or far from "
                    "its scale (standardise it)"
                )
            loss.backward()
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(parameters, clip_grad_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            history.append(value)
            if step % 50 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{value:.4f}")
    return history


def _cosine(
    optimizer: torch.optim.Optimizer, schedule: str | None, steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if schedule is None:
        return None
    if schedule != "cosine":
        raise ValueError(
            f"schedule must be None (a constant learning rate) or 'cosine' (a "
            f"cosine decay to zero over the steps), got {schedule!r}"
        )
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)


def fit_maximum_likelihood(
    flow: Flow,
    data: Tensor,
    steps: int,
    batch_size: int | None = 256,
    lr: float = 1e-3,
    seed: int | None = 0,
    context: Tensor | None = None,
    dequantize_levels: int | None = None,
    schedule: str | None = None,
    **kwargs: object,
) -> list[float]:
    """Fit ``flow`` to ``data`` by maximum likelihood (forward KL): Adam on the mean
    negative log-likelihood of mini-batches of ``batch_size`` samples drawn at random (with
    replacement), or of the whole of ``data`` at every step for ``batch_size=None``.
    ``data`` (``(N, *event_shape)``) and ``context`` are checked once here, not at every
    step. Returns the per-step loss.

    Args:
        flow: the flow; a conditional one needs ``context``.
        data: the samples, points ``(N, D)`` or images ``(N, C, H, W)``.
        steps, lr, seed: as in ``train``; ``seed`` also draws the mini-batches and the
            dequantization noise, from one generator (the batch indices first).
        batch_size: the number of samples per step; ``None`` for the whole data set
            (full-batch gradient descent, as chapter 4 fits a histogram).
        context: ``(N, C)`` contexts, row ``i`` that of ``data[i]`` (chapter 12).
        dequantize_levels: ``L`` for integer pixels ``0..L-1``: every batch is
            dequantized afresh, ``y = (x + u) / L``, ``u ~ U[0, 1)`` (chapter 5).
        schedule: ``"cosine"`` decays the learning rate to zero over the steps.
        kwargs: passed on to ``train`` (``progress``, ``clip_grad_norm``, ``desc``, ...).

    Raises:
        TrainingDiverged: when the loss becomes NaN, infinite or explodes (see ``train``).
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be an nfcourse.Flow, got {type(flow).__name__}")
    data = flow._check(data, "data")
    context = flow._check_context(context, data.shape[0])
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    steps = check_positive_int(steps, "steps")
    if dequantize_levels is not None:
        levels = check_positive_int(
            dequantize_levels, "dequantize_levels", "the number of grey levels"
        )
        if (
            bool((data != data.round()).any())
            or float(data.min()) < 0
            or float(data.max()) > levels - 1
        ):
            raise ValueError(
                f"with dequantize_levels={levels}, data must hold integer pixels "
                f"0..{levels - 1}, got values in [{float(data.min()):.4g}, "
                f"{float(data.max()):.4g}]"
            )
    device = _device(flow)
    data = data.to(device)
    context = None if context is None else context.to(device)
    draws = generator(seed)
    n = data.shape[0]

    def loss_fn(step: int) -> Tensor:
        batch, batch_context = data, context
        if batch_size is not None:
            idx = torch.randint(n, (min(batch_size, n),), generator=draws).to(device)
            batch = data[idx]
            batch_context = None if context is None else context[idx]
        if dequantize_levels is not None:
            noise = torch.rand(batch.shape, generator=draws, dtype=batch.dtype)
            batch = (batch + noise.to(device)) / dequantize_levels
        return -flow._log_prob(batch, batch_context).mean()

    optimizer = kwargs.pop("optimizer", None) or torch.optim.Adam(flow.parameters(), lr=lr)
    return train(
        loss_fn,
        flow,
        steps,
        seed=seed,
        optimizer=optimizer,
        scheduler=kwargs.pop("scheduler", None) or _cosine(optimizer, schedule, steps),
        desc=kwargs.pop("desc", "maximum likelihood"),
        **kwargs,
    )


def fit_reverse_kl(
    flow: Flow,
    log_target: Callable[[Tensor], Tensor],
    steps: int,
    n_samples: int = 256,
    lr: float = 1e-3,
    seed: int | None = 0,
    **kwargs: object,
) -> list[float]:
    """Fit ``flow`` to an unnormalised log-density by minimising the reverse KL with
    ``n_samples`` samples per step. Returns the per-step estimate of ``KL(q || p) - log Z``.

    Raises:
        TrainingDiverged: when the loss becomes NaN, infinite or explodes (see ``train``).
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be an nfcourse.Flow, got {type(flow).__name__}")
    if not callable(log_target):
        raise TypeError(
            f"log_target must be a function from points (n, D) to log-densities "
            f"(n,), got {type(log_target).__name__}"
        )
    n_samples = check_positive_int(n_samples, "n_samples")
    samples = generator(seed, _device(flow))
    return train(
        lambda step: flow.reverse_kl(log_target, n_samples, generator=samples),
        flow,
        steps,
        lr=lr,
        seed=seed,
        desc=kwargs.pop("desc", "reverse KL"),
        **kwargs,
    )


def fit_vae(
    model: FlowPosteriorVAE,
    images: Tensor,
    steps: int,
    batch_size: int = 50,
    lr: float = 3e-3,
    flow_lr: float | None = None,
    warmup: float = 0.5,
    seed: int | None = 0,
    progress: bool = True,
    desc: str | None = None,
) -> list[float]:
    """Maximise the ELBO of a VAE (chapter 6) on grey-level ``images`` ``(N, data_dim)``.

    Every step draws ``batch_size`` images at random and binarises them afresh
    (``x ~ Bernoulli(grey levels)``, dynamic binarisation). Adam starts at ``lr`` (the flow
    head at ``flow_lr``, see :meth:`FlowPosteriorVAE.parameter_groups`) and decays to zero
    on a cosine; the KL part of the loss is warmed up, its weight ``beta`` rising linearly
    from 0.01 to 1 over the first ``warmup`` fraction of the steps (0 for none).
    Frozen parameters stay fixed. Returns the per-step loss in nats per image.
    """
    if not isinstance(model, FlowPosteriorVAE):
        raise TypeError(
            f"model must be an nfcourse.vae.FlowPosteriorVAE, got {type(model).__name__}"
        )
    images = check_flat_images(images, model.data_dim, "images")
    if not 0 <= warmup <= 1:
        raise ValueError(f"warmup must be a fraction of the steps in [0, 1], got {warmup}")
    steps = check_positive_int(steps, "steps")
    device = next(model.parameters()).device
    images = images.to(device)
    batch_size = check_positive_int(batch_size, "batch_size")
    index_generator = generator(seed)
    optimizer = torch.optim.Adam(model.parameter_groups(lr, flow_lr))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    warmup_steps = warmup * steps

    def loss_fn(step: int) -> Tensor:
        idx = torch.randint(len(images), (batch_size,), generator=index_generator)
        x = torch.bernoulli(images[idx.to(device)])
        beta = min(1.0, 0.01 + step / warmup_steps) if warmup_steps else 1.0
        return model.loss(x, beta=beta)

    return train(
        loss_fn,
        [p for p in model.parameters() if p.requires_grad],
        steps,
        seed=seed,
        optimizer=optimizer,
        scheduler=scheduler,
        progress=progress,
        desc=desc or f"VAE, {'IAF ' if model.iaf is not None else ''}K = {model.n_flows}",
    )
