"""The one training loop of the course: seeded, with a progress bar and a divergence guard.

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

from .core import Flow
from .seeding import generator, seeded
from .validation import check_batch, check_count, module_dtype

__all__ = ["TrainingDiverged", "train", "fit_maximum_likelihood", "fit_reverse_kl"]

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
        raise TypeError(f"loss_fn must be a function of the step number, got "
                        f"{type(loss_fn).__name__}")
    steps = check_count(steps, "steps")
    if isinstance(parameters, nn.Module):
        parameters = parameters.parameters()
    parameters = [p for p in parameters if p.requires_grad]
    if not parameters:
        raise ValueError("train() got no trainable parameters: pass a module or a list of "
                         "tensors with requires_grad=True")
    if optimizer is None:
        optimizer = torch.optim.Adam(parameters, lr=lr)
    history: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=0.5)
    with seeded(seed):
        for step in bar:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(step)
            value = float(loss.detach())
            if not math.isfinite(value) or abs(value) > max_loss:
                what = f"became {value}" if not math.isfinite(value) else \
                    f"exploded to {value:.3g} (beyond max_loss={max_loss:g})"
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


def fit_maximum_likelihood(
    flow: Flow,
    data: Tensor,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int | None = 0,
    **kwargs: object,
) -> list[float]:
    """Fit ``flow`` to ``data`` (shape ``(N, D)``) by maximum likelihood (forward KL), with
    mini-batches of ``batch_size`` points drawn at random. Returns the per-step mean
    negative log-likelihood. ``data`` is checked once here, not at every step.

    Raises:
        TrainingDiverged: when the loss becomes NaN, infinite or explodes (see ``train``).
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be an nfcourse.Flow, got {type(flow).__name__}")
    check_batch(data, flow.dim, "data", dtype=module_dtype(flow), owner="the flow")
    batch_size = check_count(batch_size, "batch_size")
    device = _device(flow)
    data = data.to(device)
    indices = generator(seed)
    n = data.shape[0]

    def loss_fn(step: int) -> Tensor:
        idx = torch.randint(n, (min(batch_size, n),), generator=indices)
        return -flow._log_prob(data[idx.to(device)]).mean()

    return train(loss_fn, flow, steps, lr=lr, seed=seed,
                 desc=kwargs.pop("desc", "maximum likelihood"), **kwargs)


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
        raise TypeError(f"log_target must be a function from points (n, D) to log-densities "
                        f"(n,), got {type(log_target).__name__}")
    n_samples = check_count(n_samples, "n_samples")
    samples = generator(seed, _device(flow))
    return train(lambda step: flow.reverse_kl(log_target, n_samples, generator=samples),
                 flow, steps, lr=lr, seed=seed, desc=kwargs.pop("desc", "reverse KL"),
                 **kwargs)
