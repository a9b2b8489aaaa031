"""Input checks at the public entry points of the package, and the one dtype policy.

Every public function and method that takes a batch checks it once, on entry: a float32
or float64 tensor of shape ``(B, *event_shape)`` (``check_batch`` for points ``(B, D)``,
``check_images`` for images ``(B, C, H, W)``), ``B >= 1``, finite, of the dtype of the
model's parameters; a context with ``check_context``; every count and size with
``check_positive_int``, whose message says what the number counts. The layers inside a
flow then run without further checks. A bad input gets a ``TypeError`` or ``ValueError``
that names the argument, what was expected, what came in and the fix.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "FLOAT_DTYPES",
    "MEANINGS",
    "check_batch",
    "check_context",
    "check_dtype",
    "check_events",
    "check_images",
    "check_pixel_values",
    "check_positive_float",
    "check_positive_int",
    "check_shape",
    "check_times",
    "module_dtype",
]


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


def check_dtype(
    x: Tensor, dtype: torch.dtype | None, name: str = "input", owner: str = "the model"
) -> None:
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


def check_batch(
    x: Tensor,
    dim: int | None,
    name: str = "input",
    dtype: torch.dtype | None = None,
    owner: str = "the model",
) -> Tensor:
    """Check that ``x`` is a finite float32 or float64 batch of shape ``(B, dim)`` with
    ``B >= 1`` (and of dtype ``dtype`` when given).

    Raises ``TypeError`` for a non-tensor or a wrong dtype and ``ValueError`` for a
    wrong shape, an empty batch or non-finite values, with a message naming what was
    expected, what came in and the fix.
    """
    if not isinstance(x, Tensor):
        hint = (
            f"; convert it with torch.as_tensor({name}, dtype=torch.float32)"
            if type(x).__module__ == "numpy" or isinstance(x, (list, tuple))
            else ""
        )
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
    _check_finite(x, name, "rows")
    return x


def _check_finite(x: Tensor, name: str, what: str) -> None:
    # The sum is finite only if every entry is: one cheap reduction in the common case,
    # and the exact elementwise test only when the sum is not finite.
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).flatten(1).any(dim=1).nonzero().flatten()
        raise ValueError(
            f"{name} contains non-finite values (NaN or inf) in {what} {bad[:5].tolist()}"
            + (" ..." if len(bad) > 5 else "")
        )


#: What each integer argument of the package counts, for the messages of
#: ``check_positive_int``; an argument not listed here is described by its name alone.
MEANINGS = {
    "n": "a number of samples",
    "n_samples": "a number of samples per step",
    "steps": "a number of steps",
    "batch_size": "a number of points per mini-batch",
    "chunk_size": "a number of samples per chunk",
    "dim": "a dimension",
    "context_dim": "the size of the context",
    "params_per_dim": "outputs per coordinate",
    "n_layers": "a number of layers",
    "layers": "a number of layers",
    "levels": "a number of levels",
    "bins": "a number of spline bins",
    "num_bins": "a number of bins",
    "hidden": "a number of hidden channels",
    "width": "a token width",
    "n_heads": "a number of attention heads",
    "n_blocks": "a number of blocks",
    "passes": "a number of passes",
    "per_class": "a number of samples per class",
    "latent_dim": "the dimension of the latent space",
    "n_steps": "a number of steps",
    "max_iter": "a number of iterations",
    "resolution": "a number of grid points per axis",
    "factor": "how many times larger the outer box is",
    "side": "the side of an image in pixels",
    "test_size": "a number of test images",
}


def check_positive_int(value: object, name: str, meaning: str | None = None) -> int:
    """Return ``value`` as a positive ``int`` (Python and NumPy integers are accepted);
    raise a ``TypeError`` for anything that is not an integer and a ``ValueError`` for
    ``value < 1``. The message names the argument and what it counts (``meaning``, or the
    entry of ``MEANINGS`` for ``name``)."""
    meaning = meaning or MEANINGS.get(name)
    what = f"{name} must be a positive integer" + (f" ({meaning})" if meaning else "")
    if isinstance(value, bool) or value is None:
        raise TypeError(f"{what}, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        hint = (
            f"; use {name}={int(value)}" if isinstance(value, float) and value.is_integer() else ""
        )
        raise TypeError(f"{what}, got {value!r} of type {type(value).__name__}{hint}") from None
    if number < 1:
        raise ValueError(f"{what}, got {number}")
    return number


def check_shape(shape: object, name: str = "shape") -> tuple[int, ...]:
    """Return ``shape`` as a tuple of positive ints: the shape of one sample, ``(D,)`` for
    points or ``(C, H, W)`` for images."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        shape = tuple(operator.index(s) for s in shape)  # type: ignore[union-attr]
    except TypeError:
        raise TypeError(
            f"{name} must be a tuple of positive integers such as (D,) or (C, H, W), got {shape!r}"
        ) from None
    if not shape or min(shape) < 1:
        raise ValueError(
            f"{name} must be a tuple of positive integers such as (D,) or (C, H, W), got {shape}"
        )
    return shape


def check_images(
    x: object,
    shape: Sequence[int],
    name: str = "x",
    dtype: torch.dtype | None = None,
    owner: str = "the model",
) -> Tensor:
    """Check that ``x`` is a finite float32 or float64 batch of images of shape
    ``(B, C, H, W)`` with ``(C, H, W) = shape`` and ``B >= 1`` (of dtype ``dtype`` when
    given); raise ``TypeError`` or ``ValueError`` naming what came in and the fix."""
    c, h, w = shape
    expected = f"(B, {c}, {h}, {w}) (batch, channels, height, width)"
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape {expected}, got "
            f"{type(x).__name__}; convert it with torch.as_tensor"
        )
    check_dtype(x, dtype, name, owner)
    if x.dim() != 4:
        hint = ""
        if x.dim() == 2 and x.shape[1] == c * h * w:
            hint = f"; reshape flat images with {name}.view(-1, {c}, {h}, {w})"
        elif x.dim() == 3 and tuple(x.shape) == (c, h, w):
            hint = f"; a single image needs a batch axis: {name}.unsqueeze(0)"
        elif x.dim() == 3 and c == 1 and tuple(x.shape[1:]) == (h, w):
            hint = f"; add the channel axis with {name}.unsqueeze(1)"
        raise ValueError(f"{name} must have shape {expected}, got shape {tuple(x.shape)}{hint}")
    if tuple(x.shape[1:]) != (c, h, w):
        raise ValueError(
            f"{name} has images of shape {tuple(x.shape[1:])} but {owner} "
            f"works on {(c, h, w)}: expected {expected}, got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(
            f"{name} is an empty batch (shape {tuple(x.shape)}); pass at least one image"
        )
    _check_finite(x, name, "images")
    return x


def check_pixel_values(
    x: Tensor, name: str, high: float, integers: bool = False, fix: str = ""
) -> Tensor:
    """Check that the values of a checked batch of pixels lie in ``[0, high]`` (and are
    integers when ``integers``); the message gives the range that came in and ``fix``."""
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > high or (integers and bool((x != x.round()).any())):
        kind = f"integers 0..{high:g}" if integers else f"values in [0, {high:g}]"
        raise ValueError(
            f"{name} must hold {kind}, got values in [{lo:.4g}, {hi:.4g}]"
            + (f"; {fix}" if fix else "")
        )
    return x


def check_events(
    x: object,
    event_shape: Sequence[int] | None,
    name: str = "input",
    dtype: torch.dtype | None = None,
    owner: str = "the model",
) -> Tensor:
    """Check a batch of samples of shape ``(B, *event_shape)``: ``check_batch`` for points
    (``event_shape`` ``(D,)``, or ``None`` for any ``D``), ``check_images`` for images."""
    if event_shape is None or len(event_shape) == 1:
        return check_batch(
            x, None if event_shape is None else event_shape[0], name, dtype=dtype, owner=owner
        )
    if len(event_shape) == 3:
        return check_images(x, event_shape, name, dtype, owner)
    raise ValueError(
        f"samples of shape {tuple(event_shape)} are not supported: one sample "
        "is a vector (D,) or an image (C, H, W)"
    )


def check_context(
    context: object,
    context_dim: int,
    rows: int | None,
    dtype: torch.dtype | None = None,
    owner: str = "the model",
) -> Tensor | None:
    """Check a context batch once, at a public entry point.

    A model built with ``context_dim = C > 0`` needs a finite float tensor of shape
    ``(rows, C)`` (any number of rows when ``rows`` is ``None``) of its dtype; a model with
    ``context_dim = 0`` takes none and gets ``None`` back. Either mismatch is a
    ``ValueError`` that says what to pass."""
    if not context_dim:
        if context is not None:
            raise ValueError(
                f"{owner} takes no context (context_dim=0), got a context of "
                f"{_describe(context)}; build the model with context_dim=C to condition on "
                "a context of size C, or leave context out"
            )
        return None
    if context is None:
        raise ValueError(
            f"{owner} is conditional (context_dim={context_dim}) and needs a context: pass "
            f"context=... of shape (B, {context_dim}), one row per point"
        )
    context = check_batch(context, context_dim, "context", dtype=dtype, owner=owner)
    if rows is not None and context.shape[0] != rows:
        raise ValueError(
            f"context has {context.shape[0]} rows but the points have {rows}; pass one "
            f"context row per point, shape ({rows}, {context_dim})"
        )
    return context


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"shape {tuple(value.shape)}"
    return f"type {type(value).__name__}"


def check_positive_float(
    value: object,
    name: str,
    meaning: str | None = None,
    high: float | None = None,
) -> float:
    """Return ``value`` as a finite positive ``float`` (at most ``high`` when given); raise a
    ``TypeError`` for a non-number (a bool included) and a ``ValueError`` for NaN, inf,
    ``value <= 0`` or ``value > high``, naming the argument and what it sets (``meaning``)."""
    what = f"{name} must be a finite positive number" + (f" ({meaning})" if meaning else "")
    if high is not None:
        what += f" at most {high:g}"
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}, got {value!r} of type {type(value).__name__}")
    number = float(value)
    if not (number > 0 and number != float("inf")) or (high is not None and number > high):
        raise ValueError(f"{what}, got {number!r}")
    return number


def check_times(t: object, rows: int, name: str = "t", dtype: torch.dtype | None = None) -> Tensor:
    """Return one time per point as a column ``(rows, 1)``: ``t`` must be a tensor (or a
    sequence of numbers) of shape ``(rows,)`` or ``(rows, 1)``, finite, inside ``[0, 1]``;
    a ``ValueError`` names the shape or the range that came in and the fix."""
    t = torch.as_tensor(t, dtype=dtype)
    expected = f"({rows},) or ({rows}, 1), one time per point"
    if not t.is_floating_point():
        t = t.to(dtype or torch.get_default_dtype())
    if tuple(t.shape) not in ((rows,), (rows, 1)):
        raise ValueError(f"{name} must have shape {expected}, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf); times lie in [0, 1]")
    if bool(((t < 0) | (t > 1)).any()):
        raise ValueError(
            f"{name} must hold times in [0, 1] (0 the base, 1 the data), got values in "
            f"[{float(t.min()):.4g}, {float(t.max()):.4g}]"
        )
    return t.reshape(rows, 1)
