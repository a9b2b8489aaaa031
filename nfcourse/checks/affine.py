"""Feedback for the exercises of chapter 2 (affine flows, ``solutions/02_affine_flows.md``).

* ``check_affine_log_det``: ``log |det|`` of ``x = a * z + b`` from the scales ``a``.
* ``check_affine_layer``: the repaired tutorial layer, an ``nfcourse.Transform``.
* ``check_combine_affine``: two elementwise affine maps folded into one.
* ``check_triangular_log_det``: ``log |det T|`` of a triangular matrix in ``O(D)``.
"""

from __future__ import annotations

import contextlib
import io

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .. import testing
from ..core import Compose, Transform
from ..flows.affine import ElementwiseAffine
from . import ExerciseError, call_student, check_close

__all__ = [
    "check_affine_log_det",
    "check_affine_layer",
    "check_combine_affine",
    "check_triangular_log_det",
]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _as_scalar(got, name: str) -> Tensor:
    if not isinstance(got, Tensor):
        raise ExerciseError(f"{name} should return a torch.Tensor, got {type(got).__name__}")
    if got.numel() != 1:
        raise ExerciseError(
            f"{name} should return one number (a tensor of shape ()), got shape "
            f"{tuple(got.shape)}; did you forget to sum over the coordinates?"
        )
    return got.reshape(())


def _quiet_close(got, expected, what: str) -> None:
    """``check_close`` without its confirmation line (the check prints one at the end)."""
    with contextlib.redirect_stdout(io.StringIO()):
        check_close(got, expected, what)


def _close(a, b, tol: float = 1e-6) -> bool:
    return bool(torch.isfinite(a)) and abs(float(a) - float(b)) <= tol * (1 + abs(float(b)))


def check_affine_log_det(affine_log_det) -> None:
    """``affine_log_det(scale)``: ``sum_i log |a_i|`` for a scale vector ``a`` of shape
    ``(D,)`` whose entries may be negative."""
    name = "affine_log_det"
    positive = torch.tensor([0.5, 2.0, 3.0, 0.8], dtype=torch.float64)
    got = _as_scalar(call_student(affine_log_det, positive.clone(), name=name), name)
    expected = torch.log(positive).sum()
    if not _close(got, expected):
        if _close(got, positive.prod()):
            raise ExerciseError(f"{name}(a) returned det(diag(a)) = prod(a) = {float(got):.4g}; "
                                "a flow needs the log of its absolute value")
        if _close(got, positive.sum()):
            raise ExerciseError(f"{name}(a) returned sum(a) = {float(got):.4g}; the log-det "
                                "is the sum of the logs of the scales")
        raise ExerciseError(f"for a = {positive.tolist()}, {name}(a) returned {float(got):.6g}; "
                            f"expected {float(expected):.6g}")
    mixed = torch.tensor([0.5, -2.0, 3.0, -0.8], dtype=torch.float64)
    got = _as_scalar(call_student(affine_log_det, mixed.clone(), name=name), name)
    expected = torch.linalg.slogdet(torch.diag(mixed))[1]
    if not bool(torch.isfinite(got)):
        raise ExerciseError(
            f"for a = {mixed.tolist()}, {name}(a) returned {float(got)}: a scale can be "
            "negative (a reflection), and the log of a negative number is NaN; the "
            "change of variables uses |det J|, so take log |a_i|"
        )
    if not _close(got, expected):
        raise ExerciseError(f"for a = {mixed.tolist()}, {name}(a) returned {float(got):.6g}; "
                            f"expected log|det diag(a)| = {float(expected):.6g}")
    print("Correct: your log-det equals log|det| of the Jacobian diag(a), negative scales "
          "included.")


def _construct(layer_class, dim: int) -> Transform:
    """Build the student's layer with PyTorch's debug fill on: memory that is allocated but
    never initialised (``torch.empty``, ``torch.Tensor(n)``) holds NaN instead of leftovers."""
    name = getattr(layer_class, "__name__", "your layer")
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    try:
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = True
        return layer_class(dim)
    except NotImplementedError:
        raise ExerciseError(f"{name}.__init__ is not written yet: replace "
                            "`raise NotImplementedError()` with your code") from None
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def check_affine_layer(layer_class, dim: int = 3) -> None:
    """The repaired tutorial layer: ``layer_class(dim)`` must be an ``nfcourse.Transform``
    whose parameters start at chosen values (the identity map), whose scale stays
    positive for any parameter value, whose log-det and inverse are right, and which
    composes with ``nfcourse.Compose``."""
    name = getattr(layer_class, "__name__", "your layer")
    layer = _construct(layer_class, dim)
    if not isinstance(layer, Transform):
        raise ExerciseError(f"{name} should subclass nfcourse.Transform (so that forward "
                            f"returns (x, log_det) and checks its input); got a "
                            f"{type(layer).__mro__[1].__name__} subclass")
    params = dict(layer.named_parameters())
    if not params:
        raise ExerciseError(f"{name}({dim}) has no parameters: create the log-scale and the "
                            "shift with nn.Parameter")
    for pname, p in params.items():
        if not bool(torch.isfinite(p).all()):
            raise ExerciseError(
                f"parameter '{pname}' holds values that were never set: torch.Tensor(n) and "
                "torch.empty(n) allocate memory without initialising it; start from chosen "
                "values, for example torch.zeros(dim)"
            )
    layer = layer.double()
    z = torch.randn(6, dim, generator=_generator(0), dtype=torch.float64)
    try:
        x, log_det = layer(z)
    except NotImplementedError:
        raise ExerciseError(f"{name}._forward is not written yet") from None
    if not isinstance(x, Tensor) or not isinstance(log_det, Tensor):
        raise ExerciseError(f"{name}._forward should return a pair (x, log_det) of tensors")
    if log_det.shape != (6,):
        raise ExerciseError(f"the log-det should have one entry per sample, shape (B,) = (6,); "
                            f"got {tuple(log_det.shape)} (expand a sum over coordinates to "
                            "the batch)")
    if not torch.allclose(x, z) or not torch.allclose(log_det, torch.zeros(6).double()):
        raise ExerciseError(f"a fresh {name} should be the identity map (scale 1, shift 0, "
                            "log-det 0): initialise the log-scale and the shift to zeros")
    # The scale must stay positive whatever values training gives the parameters.
    with torch.no_grad():
        for p in layer.parameters():
            p.fill_(-1.5)
    _, log_det = layer(z)
    if not bool(torch.isfinite(log_det).all()):
        raise ExerciseError("with every parameter set to -1.5 your log-det is not finite: "
                            "store the log of the scale and use scale = exp(log_scale), "
                            "which is positive for any real parameter")
    g = _generator(1)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    z = torch.randn(8, dim, generator=g, dtype=torch.float64)
    err = testing.log_det_error(layer, z)
    if not bool((err <= 1e-6).all()):
        k = int(err.argmax())
        raise ExerciseError(f"your log-det differs from log|det| of the autograd Jacobian by "
                            f"{float(err[k]):.3g} at sample {k}; the Jacobian of "
                            "exp(s) * z + b is diag(exp(s))")
    try:
        point_err, log_det_err = testing.round_trip_error(layer, z)
    except NotImplementedError:
        raise ExerciseError(f"{name}._inverse is not written yet") from None
    if not bool((point_err <= 1e-6).all()):
        raise ExerciseError(f"inverse(forward(z)) misses z by {float(point_err.max()):.3g}: "
                            "the inverse of x = exp(s) * z + b is z = (x - b) * exp(-s)")
    if not bool((log_det_err <= 1e-6).all()):
        raise ExerciseError("the inverse log-det should be minus the forward log-det; they sum "
                            f"to {float(log_det_err.max()):.3g}")
    stack = Compose(layer, layer_class(dim).double(), ElementwiseAffine(dim, 2.0).double())
    with torch.no_grad():
        for p in stack.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    try:
        testing.check_log_det(stack, z, atol=1e-6)
    except AssertionError as error:
        raise ExerciseError(f"a stack of your layers in nfcourse.Compose fails: {error}") from None
    print(f"Correct: {name} starts at the identity, keeps its scale positive, has the right "
          "log-det and inverse, and composes with nfcourse.Compose.")


def check_combine_affine(combine_affine) -> None:
    """``combine_affine(a1, b1, a2, b2) -> (a, b)`` with
    ``a * z + b = a2 * (a1 * z + b1) + b2`` for every ``z``."""
    name = "combine_affine"
    g = _generator(2)
    a1, b1, a2, b2 = (torch.randn(5, generator=g, dtype=torch.float64) + 0.5 for _ in range(4))
    out = call_student(combine_affine, a1, b1, a2, b2, name=name)
    if not isinstance(out, tuple | list) or len(out) != 2:
        raise ExerciseError(f"{name} should return a pair (a, b), got {type(out).__name__}")
    a, b = out
    if isinstance(a, Tensor) and a.shape == a1.shape and torch.allclose(a, a1 + a2):
        raise ExerciseError("your scale is a1 + a2: applying the second map multiplies "
                            "by a2 whatever the first produced, so the scales multiply")
    _quiet_close(a, a2 * a1, "the combined scale a")
    if isinstance(b, Tensor) and b.shape == b1.shape and torch.allclose(b, b1 + b2):
        raise ExerciseError("your shift is b1 + b2: the second layer also scales the first "
                            "layer's shift, so b = a2 * b1 + b2")
    _quiet_close(b, a2 * b1 + b2, "the combined shift b")
    # Fold a stack of five layers with the student's function and compare with Compose.
    layers = [ElementwiseAffine(3).double() for _ in range(5)]
    with torch.no_grad():
        for layer in layers:
            layer.log_scale.copy_(0.4 * torch.randn(3, generator=g, dtype=torch.float64))
            layer.shift.copy_(torch.randn(3, generator=g, dtype=torch.float64))
    with torch.no_grad():
        a = torch.ones(3, dtype=torch.float64)
        b = torch.zeros(3, dtype=torch.float64)
        for layer in layers:
            a, b = call_student(combine_affine, a, b, torch.exp(layer.log_scale), layer.shift,
                                name=name)
        z = torch.randn(10, 3, generator=g, dtype=torch.float64)
        x, log_det = Compose(layers)(z)
    _quiet_close(a * z + b, x, "a * z + b, with (a, b) folded from five layers,")
    _quiet_close(torch.log(a.abs()).sum().expand(10), log_det, "sum(log|a|) of the folded map")
    print("Correct: your (a, b) is the composed map, and folding five layers with it gives "
          "the same points and log-det as nfcourse.Compose.")


class _CallRecorder(TorchFunctionMode):
    """Records the names of the torch functions called inside the block."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(getattr(func, "__name__", str(func)).removeprefix("linalg_"))
        return func(*args, **(kwargs or {}))


_CUBIC = {"det", "slogdet", "logdet", "lu", "lu_factor", "lu_factor_ex", "inv", "solve",
          "eig", "eigvals", "svd", "svdvals", "qr", "cholesky"}


def check_triangular_log_det(triangular_log_det) -> None:
    """``triangular_log_det(T)``: ``log |det T| = sum_i log |T_ii|`` for a lower-triangular
    ``T`` of shape ``(D, D)``, using only the diagonal (``O(D)``)."""
    name = "triangular_log_det"
    g = _generator(3)
    d = 6
    t = torch.tril(torch.randn(d, d, generator=g, dtype=torch.float64))
    t.diagonal().copy_(torch.tensor([1.5, -0.4, 2.5, -3.0, 0.7, 1.2], dtype=torch.float64))
    recorder = _CallRecorder()
    with recorder:
        got = call_student(triangular_log_det, t.clone(), name=name)
    got = _as_scalar(got, name)
    expected = torch.linalg.slogdet(t)[1]
    if not bool(torch.isfinite(got)):
        raise ExerciseError(f"{name} returned {float(got)} for a matrix with negative diagonal "
                            "entries: take the log of |T_ii|")
    if _close(got, torch.diagonal(t).abs().sum()) or _close(got, torch.diagonal(t).sum()):
        raise ExerciseError(f"{name} returned the sum of the diagonal entries; the log-det is "
                            "the sum of their logs (log |T_ii|)")
    if _close(got, torch.log(t.abs() + (t == 0)).sum()):
        raise ExerciseError(f"{name} summed log|T_ij| over the whole triangle; only the "
                            "diagonal enters the determinant of a triangular matrix")
    if not _close(got, expected):
        raise ExerciseError(f"{name} returned {float(got):.6g}; log|det T| is "
                            f"{float(expected):.6g}")
    cubic = sorted(recorder.names & _CUBIC)
    if cubic:
        raise ExerciseError(f"the value is right, but {name} calls {', '.join(cubic)}, which "
                            "costs O(D^3) for a D x D matrix; read the diagonal instead (O(D))")
    print("Correct: your log-det matches torch.linalg.slogdet and reads only the diagonal.")


# --- Exercise: fit a correlated Gaussian with an LU flow, with your own training loop -------

import math  # noqa: E402

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from . import ExerciseError  # noqa: E402
from ._training import describe_shortfall, run_training  # noqa: E402

LU_STEPS = 300
LU_KL_GOAL = 0.02
_LU_MEAN = (1.0, -2.0, 0.5)
_LU_FACTOR = ((1.0, 0.0, 0.0), (0.9, 0.5, 0.0), (-0.6, 0.4, 0.3))


def correlated_sample(n: int, seed: int = 0, dtype=None) -> Tensor:
    """``n`` draws, shape ``(n, 3)``, of the correlated Gaussian ``N(m, A A^T)`` of the LU
    exercise (correlations about 0.87, -0.81 and -0.42)."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor(_LU_MEAN, dtype=torch.float64)
    factor = torch.tensor(_LU_FACTOR, dtype=torch.float64)
    x = mean + torch.randn(n, 3, generator=g, dtype=torch.float64) @ factor.T
    return x.to(dtype or torch.get_default_dtype())


def correlated_log_prob(x: Tensor) -> Tensor:
    """The exact log-density of :func:`correlated_sample`, shape ``(B,)``."""
    mean = torch.tensor(_LU_MEAN, dtype=torch.float64)
    factor = torch.tensor(_LU_FACTOR, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(mean, scale_tril=factor).log_prob(x.double())


def check_fit_lu(fit_lu, seed: int = 0) -> None:
    """Exercise: the student's ``fit_lu(data)`` fits an LU flow to 1,000 correlated points
    with a hand-written loop of ``torch.optim.Adam`` and returns ``(flow, history)``; the
    flow must reach ``KL(p || q) < 0.02`` nats within 300 steps."""
    from ..core import Flow
    from ..flows.affine import LUAffine, TriangularAffine

    data = correlated_sample(1000, seed=seed)
    flow, history = run_training(
        fit_lu, data.clone(), name="fit_lu", budget=LU_STEPS, model_type=Flow,
        model_hint="the nfcourse.Flow you trained", seed=seed)
    test = correlated_sample(20_000, seed=10_000 + seed, dtype=torch.float64)
    dtype = next(iter(flow.parameters()), test).dtype
    with torch.no_grad():
        log_q = flow.log_prob(test.to(dtype)).double()
    kl = float((correlated_log_prob(test) - log_q).mean())
    if math.isfinite(kl) and 0 <= kl < LU_KL_GOAL:
        print(f"Correct: your LU flow reaches KL(p || q) = {kl:.4f} nats on 20,000 fresh "
              f"points (goal: below {LU_KL_GOAL}) after {len(history)} steps.")
        return
    x = data.to(dtype)
    correct = float(-flow.log_prob(x).mean().detach())
    mixes = any(isinstance(m, (LUAffine, TriangularAffine)) for m in flow.modules())
    reason = describe_shortfall(
        history, flow, budget=LU_STEPS, loss_value=correct,
        slips=[(-correct, "your loss is the mean log-likelihood, not its negative: the "
                          "optimiser minimises, so the loss is -flow.log_prob(x).mean()")],
        went_up=("did you call optimizer.zero_grad() before every backward()? Without it "
                 "the gradients of all past steps pile up. (A learning rate that is too "
                 "large, or a step along the gradient instead of against it, does the same.)"),
        model_hint=None if mixes else (
            "no layer of your flow mixes the coordinates: an elementwise affine map only "
            "scales and shifts each axis, so it cannot make correlated data; LUAffine "
            "(W = P L U) can"))
    raise ExerciseError(
        f"your flow reaches KL(p || q) = {kl:.4g} nats on fresh points; the goal is below "
        f"{LU_KL_GOAL}. Likely cause: {reason}")


__all__ += ["check_fit_lu", "correlated_sample", "correlated_log_prob"]
