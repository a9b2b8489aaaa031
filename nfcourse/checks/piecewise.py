"""Feedback for the exercises of chapter 4 (piecewise-linear flows).

Each check calls the student's function on fixed, seeded cases in float64 (bin masses
``q`` of shape ``(K,)``, points of shape ``(N,)``), compares with the package's
``piecewise_linear`` and, when the answer is off, looks for the usual slips (a cumulative
sum that includes the current bin, a slope of ``q_k`` instead of ``K q_k``, the point
``x = 1`` falling outside the last bin) to say what to fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..flows.piecewise import piecewise_linear
from . import ExerciseError, call_student, check_close

__all__ = [
    "check_piecewise_forward",
    "check_piecewise_log_det",
    "check_piecewise_inverse",
    "check_smoothed_bin_masses",
]

DTYPE = torch.float64


def _cases(seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """``(x, q)`` pairs: random masses for K = 5, 3 and 1, and points that include 0, 1,
    every bin edge and random points."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for num_bins in (5, 3, 1):
        q = torch.softmax(1.5 * torch.randn(num_bins, generator=g, dtype=DTYPE), dim=0)
        edges = torch.arange(num_bins + 1, dtype=DTYPE) / num_bins
        x = torch.cat([edges, torch.rand(20, generator=g, dtype=DTYPE)])
        cases.append((x, q))
    return cases


def _reference(x: Tensor, q: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
    """The package's map for one coordinate: values ``(N,)`` and log-derivatives ``(N,)``."""
    y, log_det = piecewise_linear(x.unsqueeze(1), torch.log(q).unsqueeze(0), inverse=inverse)
    return y[:, 0], log_det


def _call(fn: Callable, *args, name: str, hint: str):
    try:
        return call_student(fn, *args, name=name)
    except (IndexError, RuntimeError) as error:
        raise ExerciseError(
            f"{name} failed with {type(error).__name__}: {error}. {hint}"
        ) from None


def _as_tensor(got, what: str, shape) -> Tensor:
    if not isinstance(got, Tensor):
        raise ExerciseError(f"{what} should be a torch.Tensor, got {type(got).__name__}")
    if got.shape != shape:
        raise ExerciseError(f"{what} has shape {tuple(got.shape)}; expected {tuple(shape)} "
                            "(one value per point)")
    return got.detach().to(DTYPE)


def _bins(x: Tensor, num_bins: int) -> Tensor:
    return torch.clamp(torch.floor(num_bins * x).long(), max=num_bins - 1)


def _close(a: Tensor, b: Tensor, atol: float = 1e-6) -> bool:
    return bool(torch.isfinite(a).all()) and bool(((a - b).abs() <= atol).all())


def check_piecewise_forward(piecewise_forward: Callable) -> None:
    """Exercise 1: ``piecewise_forward(x, q)`` returns ``g(x)`` for points ``x`` of shape
    ``(N,)`` in ``[0, 1]`` and bin masses ``q`` of shape ``(K,)``."""
    name = "piecewise_forward"
    hint = ("At x = 1, floor(K x) = K is one past the last bin: clamp the bin index to K - 1 "
            "(the point 1 belongs to the last bin).")
    for x, q in _cases():
        num_bins = len(q)
        expected, _ = _reference(x, q)
        got = _as_tensor(_call(piecewise_forward, x, q, name=name, hint=hint),
                         f"{name}(x, q)", x.shape)
        if _close(got, expected):
            continue
        k = _bins(x, num_bins)
        c = torch.cat([torch.zeros(1, dtype=DTYPE), q.cumsum(0)])
        if _close(got, c[k + 1] + num_bins * q[k] * (x - k / num_bins)):
            raise ExerciseError(
                "your map starts bin k at the cumulative mass *including* bin k: the height at "
                "the left edge k/K is c_k = q_0 + ... + q_{k-1}, the masses of the bins before "
                "k (so c_0 = 0)"
            )
        if _close(got, c[k] + q[k] * (x - k / num_bins)):
            raise ExerciseError(
                "the slope in bin k is rise over run, q_k / (1/K) = K q_k; you used q_k"
            )
        if not math.isclose(float(got[0]), 0.0, abs_tol=1e-12):
            raise ExerciseError(f"g(0) should be 0, got {float(got[0]):.6g} (K = {num_bins})")
        if not math.isclose(float(got[num_bins]), 1.0, abs_tol=1e-12):
            raise ExerciseError(
                f"g(1) should be 1, got {float(got[num_bins]):.6g} (K = {num_bins}); the point "
                "1 lies in the last bin, k = K - 1"
            )
        check_close(got, expected, f"{name}(x, q) for K = {num_bins}", atol=1e-6, rtol=0)
    print(f"Correct: {name} matches the package's piecewise_linear at the bin edges, at 0 "
          "and 1, and at random points, for K = 5, 3 and 1.")


def check_piecewise_log_det(piecewise_log_det: Callable) -> None:
    """Exercise 2: ``piecewise_log_det(x, q)`` returns ``log g'(x)``, shape ``(N,)``, for
    points strictly inside the bins."""
    name = "piecewise_log_det"
    hint = "Find the bin with k = floor(K x), clamped to K - 1, as in exercise 1."
    g = torch.Generator().manual_seed(1)
    for num_bins in (5, 3, 1):
        q = torch.softmax(1.5 * torch.randn(num_bins, generator=g, dtype=DTYPE), dim=0)
        k = torch.randint(num_bins, (30,), generator=g)
        x = (k + 0.05 + 0.9 * torch.rand(30, generator=g, dtype=DTYPE)) / num_bins
        _, expected = _reference(x, q)
        got = _as_tensor(_call(piecewise_log_det, x, q, name=name, hint=hint),
                         f"{name}(x, q)", x.shape)
        if _close(got, expected):
            continue
        if num_bins > 1 and _close(got, torch.log(q[k])):
            raise ExerciseError("you returned log q_k: the slope is K q_k, so the log-det is "
                                "log K + log q_k")
        if _close(got, num_bins * q[k]):
            raise ExerciseError("you returned the slope K q_k itself; the log-det is its "
                                "logarithm, log(K q_k)")
        check_close(got, expected, f"{name}(x, q) for K = {num_bins}", atol=1e-6, rtol=0)
    print(f"Correct: {name} gives log(K q_k) in every bin, for K = 5, 3 and 1; it matches "
          "the log-derivative autograd finds for the package's map.")


def check_piecewise_inverse(piecewise_inverse: Callable) -> None:
    """Exercise 3: ``piecewise_inverse(y, q)`` returns ``g^{-1}(y)`` for ``y`` of shape
    ``(N,)`` in ``[0, 1]``."""
    name = "piecewise_inverse"
    hint = ("Search among the inner edges c_1, ..., c_{K-1} with "
            "torch.searchsorted(inner_edges, y, right=True): it returns a bin index between "
            "0 and K - 1, and both of its arguments must be tensors of the same dtype.")
    for x, q in _cases(seed=2):
        num_bins = len(q)
        y, _ = _reference(x, q)                  # edges c_k, 0, 1 and random images
        y = torch.cat([y, torch.rand(10, generator=torch.Generator().manual_seed(3),
                                     dtype=DTYPE)])
        expected, _ = _reference(y, q, inverse=True)
        got = _as_tensor(_call(piecewise_inverse, y, q, name=name, hint=hint),
                         f"{name}(y, q)", y.shape)
        if _close(got, expected):
            continue
        if not bool(torch.isfinite(got).all()):
            bad = int((~torch.isfinite(got)).nonzero()[0])
            raise ExerciseError(
                f"{name} returned NaN or inf at y = {float(y[bad]):.6g} (K = {num_bins}); "
                "a bin with c_k <= y < c_{k+1} has q_k > 0, so check which bin you divide by"
            )
        c = torch.cat([torch.zeros(1, dtype=DTYPE), q.cumsum(0)])
        k_high = torch.searchsorted(c, y, right=True).clamp(max=num_bins - 1)
        one_too_far = (k_high + (y - c[k_high]) / q[k_high]) / num_bins
        if num_bins > 1 and _close(got, one_too_far, atol=1e-6):
            raise ExerciseError(
                "your bin index is one too large: searching all of c_0, ..., c_K counts "
                "c_0 = 0 too; search among the inner edges c_1, ..., c_{K-1} (or subtract one)"
            )
        back, _ = _reference(got, q)
        if not _close(back, y):
            worst = int((back - y).abs().argmax())
            raise ExerciseError(
                f"g(your inverse(y)) misses y by {float((back - y).abs()[worst]):.3g} at "
                f"y = {float(y[worst]):.6g} (K = {num_bins}); solve "
                "y = c_k + K q_k (x - k/K) for x in the bin with c_k <= y < c_{k+1}"
            )
        check_close(got, expected, f"{name}(y, q) for K = {num_bins}", atol=1e-6, rtol=0)
    print(f"Correct: {name} inverts the map at the cumulative masses c_k, at 0 and 1, and "
          "at random points, for K = 5, 3 and 1.")


def _smoothed_reference(x: Tensor, num_bins: int, pseudo_count: float) -> Tensor:
    counts = torch.bincount(_bins(x, num_bins), minlength=num_bins).to(DTYPE)
    return (counts + pseudo_count) / (len(x) + num_bins * pseudo_count)


def check_smoothed_bin_masses(smoothed_bin_masses: Callable) -> None:
    """Exercise 4: ``smoothed_bin_masses(x, K, pseudo_count)`` returns the masses
    ``(n_k + a) / (N + K a)`` of shape ``(K,)`` for data ``x`` of shape ``(N,)``."""
    name = "smoothed_bin_masses"
    hint = ("Count the points of each bin with torch.bincount(k, minlength=K), where "
            "k = floor(K x) clamped to K - 1.")
    g = torch.Generator().manual_seed(4)
    x = torch.cat([0.5 * torch.rand(40, generator=g, dtype=DTYPE),
                   torch.tensor([0.0, 1.0, 0.5], dtype=DTYPE)])   # the bins above 0.5 are sparse
    for num_bins, pseudo_count in ((8, 1.0), (8, 0.0), (3, 0.5), (1, 1.0)):
        expected = _smoothed_reference(x, num_bins, pseudo_count)
        what = f"{name}(x, K={num_bins}, pseudo_count={pseudo_count})"
        got = _as_tensor(_call(smoothed_bin_masses, x, num_bins, pseudo_count, name=name,
                               hint=hint), what, (num_bins,))
        if _close(got, expected, atol=1e-10):
            continue
        if torch.isfinite(got).all() and not math.isclose(float(got.sum()), 1.0, abs_tol=1e-9):
            raise ExerciseError(
                f"the masses sum to {float(got.sum()):.6g}, not 1 (K = {num_bins}, pseudo-count "
                f"{pseudo_count}); each of the K bins gets the pseudo-count, so divide by "
                "N + K a"
            )
        check_close(got, expected, what, atol=1e-10, rtol=0)
    print(f"Correct: {name} gives (n_k + a) / (N + K a), with empty bins, the point x = 1, "
          "and a = 0 (the maximum-likelihood masses).")


# --- Exercise: a piecewise-linear coupling on the unit square -------------------------------

import copy  # noqa: E402
import math  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from .. import testing  # noqa: E402
from . import ExerciseError  # noqa: E402
from ._training import describe_shortfall, require_registered, run_training  # noqa: E402

SQUARE_STEPS = 300
SQUARE_KL_GOAL = 0.08


def _kumaraswamy_log_prob(x: Tensor, a: Tensor, b: float) -> Tensor:
    return torch.log(a) + math.log(b) + (a - 1) * torch.log(x) + (b - 1) * torch.log1p(-x**a)


def square_sample(n: int, seed: int = 0, dtype=None) -> Tensor:
    """``n`` draws, shape ``(n, 2)``, on the unit square: ``x1`` from the Kumaraswamy
    density with ``a = 2, b = 3``, then ``x2`` from the Kumaraswamy density with
    ``a = 1 + 6 x1, b = 3``, so the shape of ``x2`` changes with ``x1``. Both are drawn by
    inverting their distribution function ``F(x) = 1 - (1 - x^a)^b``."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 2, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    x1 = (1 - (1 - u[:, 0]) ** (1 / 3)) ** (1 / 2)
    x2 = (1 - (1 - u[:, 1]) ** (1 / 3)) ** (1 / (1 + 6 * x1))
    x = torch.stack([x1, x2], dim=1).clamp(1e-9, 1 - 1e-9)
    return x.to(dtype or torch.get_default_dtype())


def square_log_prob(x: Tensor) -> Tensor:
    """The exact log-density of :func:`square_sample`, shape ``(B,)``."""
    x = x.double()
    two = torch.tensor(2.0, dtype=torch.float64)
    return (_kumaraswamy_log_prob(x[:, 0], two, 3.0)
            + _kumaraswamy_log_prob(x[:, 1], 1 + 6 * x[:, 0], 3.0))


def _structure_problem(layer) -> str | None:
    """Test the student's layer in float64 at points inside the square: shapes, the
    log-det of the normalizing map against autograd, and both round trips."""
    g = torch.Generator().manual_seed(5)
    x = 0.02 + 0.96 * torch.rand(16, 2, generator=g, dtype=torch.float64)
    layer = copy.deepcopy(layer).double()
    with torch.no_grad():  # away from the identity, where slips can cancel
        for p in layer.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    try:
        u, log_det = layer.inverse(x)
        if u.shape != (16, 2) or log_det.shape != (16,):
            return (f"_inverse on a batch of shape (16, 2) returned shapes {tuple(u.shape)} "
                    f"and {tuple(log_det.shape)}; expected (16, 2) and (16,)")
        err = testing.log_det_error(layer, x, direction="inverse")
        if not bool((err <= 1e-6).all()):
            return (f"the log-det of your _inverse differs from the autograd Jacobian by "
                    f"{float(err.max()):.3g}: it must be log g1'(x1) + log g2'(x2 | x1), both "
                    "terms, and the masses of x2 must be computed from x1 alone (then the "
                    "Jacobian is triangular)")
        x_back, log_det_back = layer.forward(u)
        miss = (x_back - x).abs().detach()
        if not bool((miss <= 1e-6).all()):
            return (f"_forward does not undo _inverse: forward(inverse(x)) misses x by "
                    f"{float(miss.max()):.3g}. In _forward, first recover x1, "
                    "then compute the masses of x2 from x1 (not from u1)")
        gap = (log_det_back + log_det).abs().detach()
        if not bool((gap <= 1e-6).all()):
            return ("the log-det of _forward is not minus the log-det of _inverse (they "
                    f"sum to {float(gap.max()):.3g})")
    except NotImplementedError:
        return "the layer is not finished: replace `raise NotImplementedError()`"
    except Exception as error:  # the student's layer failed on valid input
        return f"your layer raised {type(error).__name__}: {error}"
    return None


def check_fit_square(fit_square: Callable, seed: int = 0) -> None:
    """Exercise: the student's ``fit_square(data)`` builds a flow of their piecewise-linear
    coupling with a uniform base on the unit square, fits it by maximum likelihood and
    returns ``(flow, history)``; the flow must reach ``KL(p || q) < 0.08`` nats within 300
    steps, and the layer must pass the log-det and round-trip tests."""
    from ..core import Flow

    data = square_sample(2000, seed=seed)
    flow, history = run_training(
        fit_square, data.clone(), name="fit_square", budget=SQUARE_STEPS, model_type=Flow,
        model_hint="the nfcourse.Flow you trained", seed=seed)
    require_registered(flow)
    problem = _structure_problem(flow.transform)
    if problem:
        raise ExerciseError(f"your coupling layer is not a valid flow yet: {problem}")
    test = square_sample(20_000, seed=10_000 + seed, dtype=torch.float64)
    dtype = next(iter(flow.parameters()), test).dtype
    with torch.no_grad():
        log_q = flow.log_prob(test.to(dtype)).double()
    kl = float((square_log_prob(test) - log_q).mean())
    if math.isfinite(kl) and 0 <= kl < SQUARE_KL_GOAL:
        print(f"Correct: your coupling reaches KL(p || q) = {kl:.4f} nats on 20,000 fresh "
              f"points (goal: below {SQUARE_KL_GOAL}) after {len(history)} steps.")
        return
    x = data.to(dtype)
    with torch.no_grad():
        correct = float(-flow.log_prob(x).mean())
    reason = describe_shortfall(
        history, flow, budget=SQUARE_STEPS, loss_value=correct,
        slips=[(-correct, "your loss is the mean log-likelihood, not its negative")],
        went_up="is the sign of your loss right (the negative log-likelihood, minimised)?",
        fallback=("the fit stops short: with more bins the histograms can follow the "
                  "density more closely, and a wider conditioner lets the masses of x2 "
                  "follow x1"))
    raise ExerciseError(
        f"your coupling reaches KL(p || q) = {kl:.4g} nats on fresh points; the goal is "
        f"below {SQUARE_KL_GOAL}. Likely cause: {reason}")


__all__ += ["check_fit_square", "square_sample", "square_log_prob"]
