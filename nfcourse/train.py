"""The one training loop of the course: seeded, with a progress bar and a NaN guard."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["TrainingDiverged", "train", "fit_maximum_likelihood", "fit_reverse_kl"]


class TrainingDiverged(FloatingPointError):
    """Raised when the loss becomes NaN or infinite during training."""


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
) -> list[float]:
    """Minimise ``loss_fn(step)`` for ``steps`` steps of Adam and return the loss history.

    Args:
        loss_fn: called with the step number, returns a scalar loss.
        parameters: a module or an iterable of parameters to optimise.
        steps: the number of optimisation steps.
        lr: Adam's learning rate (ignored when ``optimizer`` is given).
        seed: seeds ``torch`` before the first step, so that runs repeat; ``None`` keeps
            the current random state.
        clip_grad_norm: clip the gradient norm to this value when given.
        progress: show a ``tqdm`` progress bar (in a notebook or a terminal).

    Raises:
        TrainingDiverged: when the loss is NaN or infinite, naming the step.
    """
    if seed is not None:
        torch.manual_seed(seed)
    if isinstance(parameters, nn.Module):
        parameters = parameters.parameters()
    parameters = [p for p in parameters if p.requires_grad]
    if not parameters:
        raise ValueError("train() got no trainable parameters")
    if optimizer is None:
        optimizer = torch.optim.Adam(parameters, lr=lr)
    history: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=0.5)
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(step)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"the loss became {value} at step {step} (last finite loss: "
                f"{history[-1] if history else 'none'}); try a smaller learning rate than "
                f"lr={optimizer.param_groups[0]['lr']:g}, gradient clipping, or check the "
                "data for values outside the model's domain"
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


def fit_maximum_likelihood(
    flow: nn.Module,
    data: Tensor,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int | None = 0,
    **kwargs,
) -> list[float]:
    """Fit ``flow`` to ``data`` (shape ``(N, D)``) by maximum likelihood (forward KL), with
    mini-batches drawn at random. Returns the per-step mean negative log-likelihood."""
    if data.dim() != 2:
        raise ValueError(f"data must have shape (N, D), got {tuple(data.shape)}")
    generator = torch.Generator(device="cpu").manual_seed(0 if seed is None else seed)
    n = data.shape[0]

    def loss_fn(step: int) -> Tensor:
        idx = torch.randint(n, (min(batch_size, n),), generator=generator)
        return flow.forward_kl(data[idx.to(data.device)])

    return train(loss_fn, flow, steps, lr=lr, seed=seed,
                 desc=kwargs.pop("desc", "maximum likelihood"), **kwargs)


def fit_reverse_kl(
    flow: nn.Module,
    log_target: Callable[[Tensor], Tensor],
    steps: int,
    n_samples: int = 256,
    lr: float = 1e-3,
    seed: int | None = 0,
    **kwargs,
) -> list[float]:
    """Fit ``flow`` to an unnormalised log-density by minimising the reverse KL.
    Returns the per-step estimate of ``KL(q || p) - log Z``."""
    return train(lambda step: flow.reverse_kl(log_target, n_samples), flow, steps, lr=lr,
                 seed=seed, desc=kwargs.pop("desc", "reverse KL"), **kwargs)
