"""Numerical checks every transform must pass (used by the tests and by the chapters).

* ``log_det_error``: the log-determinant a transform reports, against
  ``log |det J|`` of the Jacobian computed by autograd.
* ``round_trip_error``: ``f^{-1}(f(z))`` against ``z``, and the two log-dets against
  each other (they must sum to zero).
* ``parameters_without_gradient``: the parameters a loss does not reach.

Each ``check_*`` function raises ``AssertionError`` with a message that names the sample
and the size of the discrepancy, and returns the measured error when the check passes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "autograd_log_abs_det",
    "log_det_error",
    "round_trip_error",
    "check_log_det",
    "check_round_trip",
    "check_batch_shapes",
    "parameters_without_gradient",
    "check_gradients_reach",
    "perturb",
]


def _forward_fn(transform, direction: str) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    if direction == "forward":
        return transform.forward if hasattr(transform, "forward") else transform
    if direction == "inverse":
        return transform.inverse
    raise ValueError(f"direction must be 'forward' or 'inverse', got {direction!r}")


def autograd_log_abs_det(fn: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """``log |det J_fn(z_b)|`` for every row ``z_b`` of ``z`` (shape ``(B, D)``), by building
    the full ``D x D`` Jacobian of ``fn`` at each point with autograd."""
    out = []
    for zb in z:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v.unsqueeze(0))[0], zb)
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


def log_det_error(transform, z: Tensor, direction: str = "forward") -> Tensor:
    """Per-sample absolute difference between the reported log-det and autograd's."""
    fn = _forward_fn(transform, direction)
    _, reported = fn(z)
    expected = autograd_log_abs_det(lambda v: fn(v)[0], z)
    return (reported.detach() - expected).abs()


def check_log_det(transform, z: Tensor, atol: float = 1e-8, direction: str = "forward") -> float:
    """Assert the reported log-det matches the autograd Jacobian at every row of ``z``."""
    err = log_det_error(transform, z, direction)
    worst = int(err.argmax())
    if not bool((err <= atol).all()):
        raise AssertionError(
            f"{direction} log-det differs from log|det J| of the autograd Jacobian by "
            f"{float(err[worst]):.3g} at sample {worst} (tolerance {atol:g}); "
            f"{int((err > atol).sum())} of {len(err)} samples are off"
        )
    return float(err.max())


def round_trip_error(transform, z: Tensor) -> tuple[Tensor, Tensor]:
    """``(|f^{-1}(f(z)) - z|_max per sample, |logdet_f + logdet_{f^{-1}}| per sample)``."""
    x, log_det_forward = transform.forward(z)
    z_back, log_det_inverse = transform.inverse(x)
    point_err = (z_back - z).abs().amax(dim=1).detach()
    log_det_err = (log_det_forward + log_det_inverse).abs().detach()
    return point_err, log_det_err


def check_round_trip(transform, z: Tensor, atol: float = 1e-8) -> float:
    """Assert ``f^{-1}(f(z)) = z`` and that the forward and inverse log-dets cancel."""
    point_err, log_det_err = round_trip_error(transform, z)
    for what, err in (("f^{-1}(f(z)) - z", point_err), ("log-det forward + inverse", log_det_err)):
        worst = int(err.argmax())
        if not bool((err <= atol).all()):
            raise AssertionError(
                f"round trip fails: |{what}| is {float(err[worst]):.3g} at sample {worst} "
                f"(tolerance {atol:g})"
            )
    return float(torch.maximum(point_err.max(), log_det_err.max()))


def check_batch_shapes(transform, dim: int, batch_sizes=(1, 7), dtype=torch.float64) -> None:
    """Assert forward and inverse return ``(B, dim)`` points and ``(B,)`` log-dets."""
    for b in batch_sizes:
        z = torch.randn(b, dim, dtype=dtype) * 0.5
        for name, fn in (("forward", transform.forward), ("inverse", transform.inverse)):
            out, log_abs_det = fn(z)
            if out.shape != (b, dim) or log_abs_det.shape != (b,):
                raise AssertionError(
                    f"{name} on a batch of shape {(b, dim)} returned shapes "
                    f"{tuple(out.shape)} and {tuple(log_abs_det.shape)}; "
                    f"expected {(b, dim)} and {(b,)}"
                )


def parameters_without_gradient(module: nn.Module, loss: Tensor) -> list[str]:
    """Names of the parameters of ``module`` that receive no (or an all-zero) gradient
    from ``loss``."""
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
    return [
        n for (n, _), g in zip(params, grads, strict=True) if g is None or not bool((g != 0).any())
    ]


def check_gradients_reach(module: nn.Module, loss: Tensor) -> None:
    """Assert every trainable parameter of ``module`` gets a non-zero gradient."""
    missing = parameters_without_gradient(module, loss)
    if missing:
        raise AssertionError(f"no gradient reaches these parameters: {', '.join(missing)}")


def perturb(module: nn.Module, scale: float = 0.5, seed: int = 0) -> nn.Module:
    """Add Gaussian noise of size ``scale`` to every parameter of ``module``, in place.

    Flows start at or near the identity (zero-initialised last layers); a test run on such a
    flow would miss bugs that only show once the parameters are not zero. Seeded by its own
    generator, so the global random state is left untouched. Returns ``module``.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device))
    return module
