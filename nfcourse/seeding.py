"""What ``seed`` means in this package, everywhere.

An integer ``seed`` makes a result repeat: the random numbers come from a random state of
their own, a ``torch.Generator`` seeded with it (or, where a torch layer such as
``nn.Linear`` draws from the global state, a fork of that state, seeded and then thrown
away). The caller's global random state is left exactly as it was. ``seed=None`` draws from
torch's global random state instead, and advances it, so that ``torch.manual_seed`` in a
notebook controls the result.

No function of the package calls ``torch.manual_seed`` on the caller's global state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["generator", "seeded"]


def generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``; ``None`` for ``seed=None``
    (torch functions then use the global random state)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer or None, got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with torch's global random state seeded with ``seed`` and restore the
    caller's state afterwards (on the CPU and on the current CUDA device); with
    ``seed=None`` run it on the global state unchanged."""
    if seed is None:
        yield
        return
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer or None, got {seed!r}")
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
