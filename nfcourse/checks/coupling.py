"""Feedback for the exercises of chapter 5 (coupling flows).

* ``check_affine_coupling_forward``: ``x_A = z_A``, ``x_B = exp(s) z_B + t`` and its log-det;
* ``check_affine_coupling_inverse``: the inverse and its log-det;
* ``check_coupling_jacobian``: the Jacobian with conditioning coordinates first, and the
  log-det read off its diagonal;
* ``check_dequantize``: uniform dequantization ``(x + u) / L``;
* ``check_bits_per_dim``: bits per dimension from a negative log-likelihood in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..flows.coupling import AffineCoupling, PiecewiseLinearCoupling, alternating_mask
from ..images import bits_per_dim as _bits_per_dim
from . import ExerciseError, call_student

__all__ = [
    "make_conditioner",
    "check_affine_coupling_forward",
    "check_affine_coupling_inverse",
    "check_coupling_jacobian",
    "check_dequantize",
    "check_bits_per_dim",
]


def make_conditioner(dim: int, seed: int = 0, dtype=torch.float64) -> nn.Module:
    """A small random network ``R^{D/2} -> R^D`` for the exercises: its first ``D/2``
    outputs are the log-scales ``s``, the last ``D/2`` the shifts ``t``."""
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be even and at least 2, got {dim}")
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(dim // 2, 16), nn.Tanh(), nn.Linear(16, dim)).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.6 * torch.randn(p.shape, generator=g, dtype=dtype))
    return net


def _reference_forward(z: Tensor, conditioner: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
    d = z.shape[1] // 2
    s, t = conditioner(z[:, :d]).chunk(2, dim=1)
    x = torch.cat([z[:, :d], z[:, d:] * torch.exp(s) + t], dim=1)
    return x, s.sum(dim=1), s


def _unpack_pair(out, name: str, what: str) -> tuple[Tensor, Tensor]:
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ExerciseError(f"{name} should return a pair ({what}, log_det), "
                            f"got {type(out).__name__}")
    for label, t in zip((what, "log_det"), out):
        if not isinstance(t, Tensor):
            raise ExerciseError(f"{name}: {label} should be a torch.Tensor, "
                                f"got {type(t).__name__}")
    return out


def _worst(diff: Tensor) -> tuple[float, int]:
    per_sample = diff.reshape(diff.shape[0], -1).amax(dim=1)
    k = int(per_sample.argmax())
    return float(per_sample[k]), k


def check_affine_coupling_forward(fn: Callable, atol: float = 1e-8) -> None:
    """Check ``fn(z, conditioner) -> (x, log_det)`` of the affine coupling: the first half
    of ``z`` conditions, ``(s, t) = conditioner(z_A)`` split in two halves,
    ``x_B = exp(s) z_B + t``, ``log_det = sum(s)``."""
    name = getattr(fn, "__name__", "your function")
    for dim, n, seed in ((4, 6, 0), (6, 9, 1)):
        conditioner = make_conditioner(dim, seed)
        z = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed + 10),
                        dtype=torch.float64)
        with torch.no_grad():
            x, log_det = _unpack_pair(call_student(fn, z.clone(), conditioner, name=name),
                                      name, "x")
            x_ref, log_det_ref, s = _reference_forward(z, conditioner)
        d = dim // 2
        if x.shape != z.shape:
            raise ExerciseError(f"x has shape {tuple(x.shape)} for z of shape "
                                f"{tuple(z.shape)}; a coupling keeps the shape (B, D)")
        x = x.to(torch.float64)
        if not torch.allclose(x[:, :d], z[:, :d], atol=atol, rtol=0):
            raise ExerciseError(
                "the conditioning half x_A must equal z_A: a coupling passes it through "
                f"unchanged (D = {dim}, off by {_worst((x[:, :d] - z[:, :d]).abs())[0]:.3g})"
            )
        err, k = _worst((x - x_ref).abs())
        if err > atol:
            t = x_ref[:, d:] - z[:, d:] * torch.exp(s)
            hints = [
                (z[:, d:] * s + t, "the scale is exp(s), not s"),
                (z[:, d:] * torch.exp(t) + s, "you swapped s and t: the first half of the "
                 "conditioner's output is the log-scale s, the second the shift t"),
                ((z[:, d:] + t) * torch.exp(s), "shift after scaling: x_B = exp(s) z_B + t"),
            ]
            for wrong, hint in hints:
                if torch.allclose(x[:, d:], wrong, atol=1e-6):
                    raise ExerciseError(f"x_B is not right: {hint}")
            raise ExerciseError(
                f"x_B differs from exp(s) * z_B + t by {err:.3g} at sample {k} (D = {dim}); "
                "compute (s, t) from z_A only, with s the first half of the output"
            )
        if log_det.shape != (n,):
            raise ExerciseError(
                f"log_det has shape {tuple(log_det.shape)}; expected ({n},), one number per "
                "sample: sum the log-scales over the transformed coordinates (dim=1)"
            )
        log_det = log_det.to(torch.float64)
        if not torch.allclose(log_det, log_det_ref, atol=atol, rtol=0):
            if torch.allclose(log_det, torch.exp(s).sum(dim=1), atol=1e-6):
                raise ExerciseError("log_det is log |det J| = sum of s, not the sum of exp(s)")
            if torch.allclose(log_det, s.mean(dim=1), atol=1e-6):
                raise ExerciseError("log_det should sum s over the coordinates, not average")
            err, k = _worst((log_det - log_det_ref).abs().unsqueeze(1))
            raise ExerciseError(f"log_det differs from sum(s) by {err:.3g} at sample {k}")
    print("Correct: the affine coupling keeps x_A = z_A, maps x_B = exp(s) z_B + t and its "
          "log-det is the sum of s (checked for D = 4 and D = 6).")


def check_affine_coupling_inverse(fn: Callable, atol: float = 1e-8) -> None:
    """Check ``fn(x, conditioner) -> (z, log_det)``, the inverse of the affine coupling:
    ``z_A = x_A``, ``z_B = (x_B - t) exp(-s)`` with ``(s, t) = conditioner(x_A)``,
    ``log_det = -sum(s)``."""
    name = getattr(fn, "__name__", "your function")
    for dim, n, seed in ((4, 6, 2), (6, 9, 3)):
        conditioner = make_conditioner(dim, seed)
        z = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed + 10),
                        dtype=torch.float64)
        with torch.no_grad():
            x, log_det_forward, s = _reference_forward(z, conditioner)
            z_back, log_det = _unpack_pair(call_student(fn, x.clone(), conditioner, name=name),
                                           name, "z")
        if z_back.shape != z.shape:
            raise ExerciseError(f"z has shape {tuple(z_back.shape)}; expected {tuple(z.shape)}")
        z_back = z_back.to(torch.float64)
        d = dim // 2
        err, k = _worst((z_back - z).abs())
        if err > atol:
            if not torch.allclose(z_back[:, :d], z[:, :d], atol=atol, rtol=0):
                raise ExerciseError("z_A must equal x_A: the conditioning half passes through")
            t = x[:, d:] - z[:, d:] * torch.exp(s)
            if torch.allclose(z_back[:, d:], x[:, d:] * torch.exp(-s) - t, atol=1e-6):
                raise ExerciseError("undo the shift before the scale: z_B = (x_B - t) exp(-s)")
            if torch.allclose(z_back[:, d:], (x[:, d:] - t) * torch.exp(s), atol=1e-6):
                raise ExerciseError("to undo a stretch by exp(s), multiply by exp(-s)")
            raise ExerciseError(
                f"inverse(forward(z)) misses z by {err:.3g} at sample {k} (D = {dim}); the "
                "conditioner takes x_A, which equals z_A, so it returns the same (s, t)"
            )
        if log_det.shape != (n,):
            raise ExerciseError(f"log_det has shape {tuple(log_det.shape)}; expected ({n},)")
        log_det = log_det.to(torch.float64)
        if not torch.allclose(log_det, -log_det_forward, atol=atol, rtol=0):
            if torch.allclose(log_det, log_det_forward, atol=1e-6):
                raise ExerciseError("the inverse shrinks where the forward map stretches: "
                                    "its log-det is minus the sum of s")
            err, k = _worst((log_det + log_det_forward).abs().unsqueeze(1))
            raise ExerciseError(f"log_det differs from -sum(s) by {err:.3g} at sample {k}")
    print("Correct: your inverse undoes the affine coupling and its log-det is -sum(s) "
          "(checked for D = 4 and D = 6).")


def check_coupling_jacobian(jacobian_fn: Callable, log_det_fn: Callable,
                            atol: float = 1e-8) -> None:
    """Check ``jacobian_fn(layer, z)``, the ``D x D`` Jacobian ``dx/dz`` of a coupling layer
    at one point ``z`` ``(D,)`` with rows and columns reordered as
    ``[layer.cond_index, layer.trans_index]``, and ``log_det_fn(jac, n_cond)``, the
    log-determinant computed from the diagonal of that matrix alone."""
    with torch.random.fork_rng():  # leave the student's random state alone
        torch.manual_seed(0)
        layers = [AffineCoupling(alternating_mask(6, 1), hidden=(8,), zero_init=False),
                  PiecewiseLinearCoupling(alternating_mask(5, 0), hidden=(8,), bins=6,
                                          bound=3.0, zero_init=False)]
    g = torch.Generator().manual_seed(4)
    for layer in layers:
        layer = layer.double()
        z = torch.randn(layer.dim, generator=g, dtype=torch.float64)
        order = torch.cat([layer.cond_index, layer.trans_index])
        full = torch.autograd.functional.jacobian(lambda v: layer(v.unsqueeze(0))[0][0], z)
        expected = full[order][:, order]
        jac = call_student(jacobian_fn, layer, z.clone(), name="coupling_jacobian")
        if not isinstance(jac, Tensor):
            raise ExerciseError(f"coupling_jacobian should return a tensor, "
                                f"got {type(jac).__name__}")
        if jac.shape != expected.shape:
            raise ExerciseError(f"the Jacobian of a map of R^{layer.dim} has shape "
                                f"{tuple(expected.shape)}, got {tuple(jac.shape)}")
        jac = jac.detach().to(torch.float64)
        if not torch.allclose(jac, expected, atol=atol, rtol=0):
            if torch.allclose(jac, full, atol=atol, rtol=0):
                raise ExerciseError("reorder rows and columns: jac[order][:, order] with "
                                    "order = cat([layer.cond_index, layer.trans_index])")
            if torch.allclose(jac, expected.T, atol=atol, rtol=0):
                raise ExerciseError("your matrix is transposed: row i holds the derivatives "
                                    "of output x_i")
            diff = (jac - expected).abs()
            i, j = (int(v) for v in torch.unravel_index(diff.argmax(), diff.shape))
            raise ExerciseError(f"the Jacobian differs from autograd's at row {i}, column "
                                f"{j} by {float(diff[i, j]):.3g}")
        n_cond = len(layer.cond_index)
        log_det = call_student(log_det_fn, jac.clone(), n_cond, name="triangular_log_det")
        reported = layer(z.unsqueeze(0))[1][0].detach()
        if not isinstance(log_det, Tensor) or log_det.numel() != 1:
            raise ExerciseError("triangular_log_det should return a tensor holding one number")
        log_det = log_det.detach().to(torch.float64).reshape(())
        if abs(float(log_det - reported)) > atol:
            if abs(float(log_det - torch.diagonal(jac).sum())) < 1e-6:
                raise ExerciseError("the determinant of a triangular matrix is the product of "
                                    "its diagonal: sum the logs of |J_ii|, not the J_ii")
            raise ExerciseError(
                f"your log-det {float(log_det):.6g} differs from the layer's "
                f"{float(reported):.6g}; sum log |J_ii| over the diagonal"
            )
    print("Correct: with the conditioning coordinates first the Jacobian is lower "
          "triangular, and the sum of log |J_ii| is the layer's log-det.")


def check_dequantize(fn: Callable, levels: int = 17) -> None:
    """Check ``fn(x, levels, generator) -> y``: ``y = (x + u) / L`` with ``u ~ U[0, 1)``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, levels, (400, 64), generator=g).to(torch.float64)
    y = call_student(fn, x.clone(), levels, torch.Generator().manual_seed(1), name="dequantize")
    if not isinstance(y, Tensor) or y.shape != x.shape:
        raise ExerciseError(f"dequantize should return a tensor of shape {tuple(x.shape)}")
    if not y.is_floating_point():
        raise ExerciseError("dequantize should return floating-point values")
    y = y.to(torch.float64)
    if float(y.max()) > 1.5:
        if torch.equal(torch.floor(y), x):
            raise ExerciseError("divide by the number of levels L: y must lie in [0, 1)")
        if float((y - x / levels).min()) >= 0 and float((y - x / levels).max()) < 1:
            raise ExerciseError("the noise u must be added before dividing by L, so that "
                                "y stays inside the cell [x/L, (x+1)/L)")
        raise ExerciseError("y must lie in [0, 1): y = (x + u) / L")
    if bool((y < 0).any()) or bool((y >= 1).any()):
        raise ExerciseError("y must lie in [0, 1): use u from torch.rand, in [0, 1)")
    cell = torch.floor(levels * y)
    if not torch.equal(cell, x):
        raise ExerciseError("each y must stay inside its pixel's cell [x/L, (x+1)/L): "
                            "y = (x + u) / L with u in [0, 1)")
    u = levels * y - x
    if float(u.std()) < 0.05:
        raise ExerciseError("the noise u looks constant; draw it uniformly on [0, 1) for "
                            "every pixel, e.g. torch.rand(x.shape, generator=generator)")
    mean, std = float(u.mean()), float(u.std())
    if abs(mean - 0.5) > 0.02 or abs(std - math.sqrt(1 / 12)) > 0.02:
        raise ExerciseError(f"the noise has mean {mean:.3f} and standard deviation "
                            f"{std:.3f}; U[0, 1) has 0.5 and {math.sqrt(1 / 12):.3f}")
    print(f"Correct: every y lies in its cell [x/L, (x+1)/L), and the noise has mean "
          f"{mean:.3f} and standard deviation {std:.3f}, as U[0, 1) should.")


def check_bits_per_dim(fn: Callable) -> None:
    """Check ``fn(nll_nats, dim, levels)``: ``(NLL + D ln L) / (D ln 2)``."""
    cases = [(0.0, 64, 17), (-80.0, 64, 17), (150.0, 784, 256), (-3.5, 2, 5)]
    for nll, dim, levels in cases:
        got = call_student(fn, nll, dim, levels, name="bits_per_dim")
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise ExerciseError(f"bits_per_dim should return a number, "
                                f"got {type(got).__name__}") from None
        expected = _bits_per_dim(nll, dim, levels)
        if abs(got - expected) <= 1e-9 * max(1.0, abs(expected)):
            continue
        where = f"for NLL = {nll} nats, D = {dim}, L = {levels}"
        if abs(got - nll / (dim * math.log(2))) < 1e-9:
            raise ExerciseError(f"{where}: add the scaling term D ln L to the NLL: the "
                                "density of y = (x + u)/L is L^D times the density of x + u")
        if abs(got - (nll - dim * math.log(levels)) / (dim * math.log(2))) < 1e-9:
            raise ExerciseError(f"{where}: the scaling term D ln L is added, not subtracted")
        if abs(got - (nll + dim * math.log(levels)) / dim) < 1e-9:
            raise ExerciseError(f"{where}: you have nats per dimension; divide by ln 2 "
                                "for bits")
        if abs(got - (nll + dim * math.log(levels)) / math.log(2)) < 1e-9:
            raise ExerciseError(f"{where}: divide by the number of dimensions D")
        raise ExerciseError(f"{where}: got {got:.6g} bits per dimension, expected "
                            f"{expected:.6g}")
    print(f"Correct: for example the uniform model (NLL = 0) of 17-level pixels gets "
          f"log2(17) = {math.log2(17):.4f} bits per dimension.")


# --- Exercise: train a coupling flow to a KL goal ---------------------------------------------

import math  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402

from . import ExerciseError  # noqa: E402
from ._training import describe_shortfall, run_training  # noqa: E402

SINE_STEPS = 400
SINE_KL_GOAL = 0.1


def check_fit_sine(fit_sine: Callable, seed: int = 0) -> None:
    """Exercise: the student's ``fit_sine(data, generator)`` trains a coupling flow on
    10,000 samples of ``nfcourse.data.SineWave`` in mini-batches and returns
    ``(flow, history)``; the flow must reach ``KL(p || q) < 0.1`` nats (measured by
    ``SineWave.kl_divergence`` on 20,000 fresh samples) within 400 steps."""
    from ..core import Flow
    from ..data import SineWave
    from ..flows.coupling import AdditiveCoupling, AffineCoupling, PiecewiseLinearCoupling

    target = SineWave()
    data = target.sample(10_000, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    flow, history = run_training(
        fit_sine, data.clone(), generator, name="fit_sine", budget=SINE_STEPS,
        model_type=Flow, model_hint="the nfcourse.Flow you trained", seed=seed,
        floor=(target.entropy(), "an honest negative log-likelihood cannot go below the "
                                 "entropy of the data; is the sign of your loss right?"))
    try:
        kl, error = target.kl_divergence(flow, seed=10_000 + seed)
    except Exception as failure:  # the flow cannot evaluate fresh points
        raise ExerciseError(f"evaluating your flow on fresh points failed: "
                            f"{type(failure).__name__}: {failure}") from None
    if math.isfinite(kl) and kl < SINE_KL_GOAL:
        print(f"Correct: your flow reaches KL(p || q) = {kl:.4f} ± {error:.4f} nats on "
              f"20,000 fresh points (goal: below {SINE_KL_GOAL}) after {len(history)} steps.")
        return
    entropy = target.entropy()
    test_nll = entropy + kl if math.isfinite(kl) else math.inf
    tail = history[-max(1, len(history) // 10):]
    recent = sum(tail) / len(tail)
    x = data.to(next(flow.parameters()).dtype)
    with torch.no_grad():
        train_nll = float(-flow.log_prob(x).mean())
    kinds = {type(m) for m in flow.modules()}
    additive = AdditiveCoupling in kinds and not kinds & {AffineCoupling,
                                                          PiecewiseLinearCoupling}
    flipped = math.isfinite(train_nll) and abs(recent + train_nll) <= 0.1 * (1 + abs(recent))
    if flipped:
        reason = ("your loss is the mean log-likelihood, not its negative: the optimiser "
                  "minimises, so the loss is -log q(x) averaged over the batch")
    elif math.isfinite(test_nll) and recent < test_nll - 0.3:
        reason = (f"your losses end near {recent:.3f} nats, but fresh points score "
                  f"{test_nll:.3f}: the flow learned the points it saw, not the density. "
                  "Is a new random batch drawn at every step (torch.randint with the "
                  "generator, inside the loss function)?")
    else:
        reason = describe_shortfall(
            history, flow, budget=SINE_STEPS, loss_value=train_nll,
            slips=[(-train_nll, "your loss is the mean log-likelihood, not its negative")],
            floor=(entropy, "an honest negative log-likelihood cannot stay below the "
                            "entropy of the data"),
            went_up="is the sign of your loss right, and the learning rate not too large?",
            model_hint=("additive couplings keep volume: only the last elementwise layer "
                        "can change it, so the narrow band of the sine wave is hard to "
                        "reach. Affine or piecewise-linear couplings can stretch and "
                        "squeeze") if additive else None)
    raise ExerciseError(
        f"your flow reaches KL(p || q) = {kl:.4g} nats on fresh points; the goal is below "
        f"{SINE_KL_GOAL}. Likely cause: {reason}")


__all__ += ["check_fit_sine"]
