"""Input checks at the public entry points of the package, and the one dtype policy.

Every public function and method that takes a batch checks it once, on entry, with
``check_batch``: a float32 or float64 tensor of shape ``(B, D)``, ``B >= 1``, finite, of
the dtype of the model's parameters. The layers inside a flow then run without further
checks. A bad input gets a ``TypeError`` or ``ValueError`` that names the argument, what was
expected, what came in and the fix.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor, nn

__all__ = ["FLOAT_DTYPES", "check_batch", "check_dtype", "check_count", "module_dtype"]


FLOAT_DTYPES = (torch.float32, torch.float64)


def module_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of the first floating-point parameter (or else buffer) of ``module``, or
    ``None`` when it holds none (a permutation, say): the dtype its inputs must have."""
    for tensor in module.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    for tensor in module.buffers():
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def check_dtype(x: Tensor, dtype: torch.dtype | None, name: str = "input",
                owner: str = "the model") -> None:
    """The course's one dtype policy: tensors are float32 or float64, and a module's
    inputs have the dtype of its parameters, so that its outputs and log-determinants come
    back in that one dtype. Raises ``TypeError`` naming both dtypes and the fix."""
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a float32 or float64 tensor, got {x.dtype}; "
            "convert it with .float() or .double()"
        )
    if dtype is not None and x.dtype != dtype:
        short = {torch.float32: "float", torch.float64: "double"}
        raise TypeError(
            f"{name} is {x.dtype} but {owner} has {dtype} parameters; convert the input "
            f"with .{short.get(dtype, 'to')}() or the model with .{short[x.dtype]}() "
            "so that both have one dtype"
        )


def check_batch(x: Tensor, dim: int | None, name: str = "input",
                dtype: torch.dtype | None = None, owner: str = "the model") -> Tensor:
    """Check that ``x`` is a finite float32 or float64 batch of shape ``(B, dim)`` with
    ``B >= 1`` (and of dtype ``dtype`` when given).

    Raises ``TypeError`` for a non-tensor or a wrong dtype and ``ValueError`` for a
    wrong shape, an empty batch or non-finite values, with a message naming what was
    expected, what came in and the fix.
    """
    if not isinstance(x, Tensor):
        hint = (f"; convert it with torch.as_tensor({name}, dtype=torch.float32)"
                if type(x).__module__ == "numpy" or isinstance(x, (list, tuple)) else "")
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (B, D), got {type(x).__name__}{hint}"
        )
    check_dtype(x, dtype, name, owner)
    if x.dim() != 2:
        expected = f"(B, {dim})" if dim is not None else "(B, D)"
        raise ValueError(
            f"{name} must have shape {expected} (batch first), got shape {tuple(x.shape)}"
        )
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f"{name} has {x.shape[1]} features but this transform works in dimension {dim}: "
            f"expected shape (B, {dim}), got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(
            f"{name} is an empty batch (shape {tuple(x.shape)}); pass at least one point"
        )
    # The sum is finite only if every entry is: one cheap reduction in the common case,
    # and the exact elementwise test only when the sum is not finite.
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()
        raise ValueError(
            f"{name} contains non-finite values (NaN or inf) in rows {bad[:5].tolist()}"
            + (" ..." if len(bad) > 5 else "")
        )
    return x


def check_count(n: object, name: str = "n") -> int:
    """Return ``n`` as a positive ``int``; raise a ``TypeError`` for a non-integer and a
    ``ValueError`` for ``n < 1``, naming the argument."""
    if isinstance(n, bool) or n is None:
        raise TypeError(f"{name} must be a positive integer (a number of samples), got {n!r}")
    try:
        value = operator.index(n)
    except TypeError:
        hint = f"; use {name}={int(n)}" if isinstance(n, float) and n.is_integer() else ""
        raise TypeError(
            f"{name} must be a positive integer (a number of samples), got {n!r} of type "
            f"{type(n).__name__}{hint}"
        ) from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer (a number of samples), got {value}")
    return value
