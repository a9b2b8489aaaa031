"""Feedback for the exercises of chapter 4 (piecewise-linear flows).

Each check calls the student's function on fixed, seeded cases in float64 (bin masses
``q`` of shape ``(K,)``, points of shape ``(N,)``), compares with the package's
``piecewise_linear`` and, when the answer is off, looks for the usual slips (a cumulative
sum that includes the current bin, a slope of ``q_k`` instead of ``K q_k``, the point
``x = 1`` falling outside the last bin) to say what to fix.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .. import testing
from ..core import Flow
from ..densities import KumaraswamySquare
from ..flows.piecewise import piecewise_linear
from ._toolkit import (
    ExerciseError,
    Slip,
    as_tensor,
    compare,
    compare_gradients,
    run,
)
from ._training import (
    Goal,
    check_fit,
    mean_nll,
    require_registered,
)

__all__ = [
    "SQUARE_GOAL",
    "check_fit_square",
    "check_piecewise_forward",
    "check_piecewise_inverse",
    "check_piecewise_log_det",
    "check_smoothed_bin_masses",
]

DTYPE = torch.float64


def _cases(seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """``(x, q)`` pairs: random masses for K = 5, 3 and 1 (one bin much heavier than the
    rest), and points that include 0, 1, every bin edge and random points."""
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


def _bins(x: Tensor, num_bins: int) -> Tensor:
    return torch.clamp(torch.floor(num_bins * x).long(), max=num_bins - 1)


def _heights(q: Tensor) -> Tensor:
    return torch.cat([torch.zeros(1, dtype=DTYPE), q.cumsum(0)])


def _safe(fn: Callable[[], Tensor]) -> Tensor | None:
    try:
        return fn()
    except (IndexError, RuntimeError):
        return None


def _gather(
    fn: Callable[[Tensor, Tensor], Tensor], cases: list[tuple[Tensor, Tensor]]
) -> Tensor | None:
    """One slip evaluated case by case and joined (None when it cannot run)."""
    out = []
    for case in cases:
        value = _safe(lambda case=case: fn(*case))
        if value is None:
            return None
        out.append(value)
    return torch.cat(out)


def _answers(
    fn: Callable[[Tensor, Tensor], Tensor],
    cases: list[tuple[Tensor, Tensor]],
    name: str,
    what: str,
    hint: str,
) -> list[Tensor]:
    """The student's answer for every case, each checked to be a tensor of its shape."""
    answers = []
    for x, q in cases:
        answer = run(fn, x.clone(), q.clone(), name=name, hint=hint)
        answers.append(as_tensor(answer, f"{what} for K = {len(q)}", x.shape, ("points",)))
    return answers


def _grad_case(seed: int = 7) -> tuple[Tensor, Tensor]:
    """Points strictly inside the bins (where the map is differentiable) and masses for
    K = 6, for the gradient comparisons."""
    g = torch.Generator().manual_seed(seed)
    q = torch.softmax(1.5 * torch.randn(6, generator=g, dtype=DTYPE), dim=0)
    k = torch.arange(12) % 6
    x = (k + 0.05 + 0.9 * torch.rand(12, generator=g, dtype=DTYPE)) / 6
    return x, q


def _bin_of(x: Tensor, q: Tensor) -> Tensor:
    return torch.clamp(torch.floor(len(q) * x.detach()).long(), max=len(q) - 1)


def _forward_formula(x: Tensor, q: Tensor) -> Tensor:
    k, c = _bin_of(x, q), torch.cat([q.new_zeros(1), q.cumsum(0)])
    return c[k] + len(q) * q[k] * (x - k / len(q))


def _log_det_formula(x: Tensor, q: Tensor) -> Tensor:
    return math.log(len(q)) + torch.log(q[_bin_of(x, q)])


def _inverse_formula(y: Tensor, q: Tensor) -> Tensor:
    c = torch.cat([q.new_zeros(1), q.cumsum(0)])
    k = torch.searchsorted(c[1:-1].detach().contiguous(), y.detach(), right=True)
    return (k + (y - c[k]) / q[k]) / len(q)


_GRADIENT_ADVICE = (
    "a flow trains its bin masses through this function, so every step from q (and x) "
    "to the answer must stay a torch operation; only the bin index k may be computed "
    "without gradient"
)


def _check_piecewise_gradients(fn: Callable, reference: Callable, name: str, what: str) -> None:
    x, q = _grad_case()
    points = _forward_formula(x, q).detach() if reference is _inverse_formula else x
    compare_gradients(
        fn,
        reference,
        [points, q],
        what,
        wrt={0: "the points", 1: "the masses q"},
        name=name,
        advice=_GRADIENT_ADVICE,
    )


def check_piecewise_forward(piecewise_forward: Callable) -> None:
    """Exercise 1: ``piecewise_forward(x, q)`` returns ``g(x)`` for points ``x`` of shape
    ``(N,)`` in ``[0, 1]`` and bin masses ``q`` of shape ``(K,)``."""
    name = "piecewise_forward"
    hint = (
        "At x = 1, floor(K x) = K is one past the last bin: clamp the bin index to K - 1 "
        "(the point 1 belongs to the last bin)"
    )
    cases = _cases()
    answers = _answers(piecewise_forward, cases, name, f"{name}(x, q)", hint)
    expected = torch.cat([_reference(x, q)[0] for x, q in cases])
    labels = [f"x = {float(v):.4g} (K = {len(q)})" for x, q in cases for v in x]
    edge = torch.cat([torch.isclose(x * len(q), torch.round(x * len(q))) for x, q in cases])
    one = torch.cat([x == 1 for x, _ in cases])

    def slip(fn: Callable[..., Tensor]) -> Tensor | None:
        return _gather(lambda x, q: fn(x, q, len(q), _bins(x, len(q)), _heights(q)), cases)

    compare(
        torch.cat([a.detach().to(DTYPE) for a in answers]),
        expected,
        f"{name}(x, q)",
        like=answers,
        labels=labels,
        groups={"the point x = 1": one, "the bin edges k / K (0 and 1 included)": edge},
        terms={
            "the offset of the bin's left edge, K q_k k / K": slip(lambda x, q, K, k, c: q[k] * k),
            "the term c_k": slip(lambda x, q, K, k, c: c[k]),
            "the term K q_k (x - k/K)": slip(lambda x, q, K, k, c: K * q[k] * (x - k / K)),
        },
        slips=[
            Slip(
                "your map starts bin k at the cumulative mass *including* bin k: the "
                "height at the left edge k/K is c_k = q_0 + ... + q_{k-1}, the masses of "
                "the bins before k (so c_0 = 0)",
                slip(lambda x, q, K, k, c: c[k + 1] + K * q[k] * (x - k / K)),
            ),
            Slip(
                "the slope in bin k is rise over run, q_k / (1/K) = K q_k; you used q_k",
                slip(lambda x, q, K, k, c: c[k] + q[k] * (x - k / K)),
            ),
            Slip(
                "the distance into the bin is x - k/K, in units of x; you used x - k",
                slip(lambda x, q, K, k, c: c[k] + K * q[k] * (x - k)),
            ),
            Slip(
                "the height is c_k + K q_k (x - k/K): the part inside the bin is missing",
                slip(lambda x, q, K, k, c: c[k]),
            ),
            Slip(
                "the bin index is floor(K x); rounding (torch.round) picks the next bin "
                "for points in the right half of a bin",
                slip(
                    lambda x, q, K, k, c: (
                        c[torch.round(K * x).long().clamp(max=K - 1)]
                        + K
                        * q[torch.round(K * x).long().clamp(max=K - 1)]
                        * (x - torch.round(K * x).clamp(max=K - 1) / K)
                    )
                ),
            ),
            Slip(
                "c_k is the sum of the masses *before* bin k: indexing cumsum(q) at k - 1 "
                "wraps around to the last entry (the total, 1) for k = 0",
                slip(lambda x, q, K, k, c: q.cumsum(0)[k - 1] + K * q[k] * (x - k / K)),
            ),
        ],
    )
    _check_piecewise_gradients(piecewise_forward, _forward_formula, name, f"{name}(x, q)")
    print(
        f"Correct: {name} matches the package's piecewise_linear at the bin edges, at 0 "
        "and 1, and at random points, for K = 5, 3 and 1."
    )


def check_piecewise_log_det(piecewise_log_det: Callable) -> None:
    """Exercise 2: ``piecewise_log_det(x, q)`` returns ``log g'(x)``, shape ``(N,)``, for
    points strictly inside the bins."""
    name = "piecewise_log_det"
    hint = "Find the bin with k = floor(K x), clamped to K - 1, as in exercise 1"
    g = torch.Generator().manual_seed(1)
    cases = []
    for num_bins in (5, 3, 1, 8):
        q = torch.softmax(1.5 * torch.randn(num_bins, generator=g, dtype=DTYPE), dim=0)
        k = torch.randint(num_bins, (30,), generator=g)
        x = (k + 0.05 + 0.9 * torch.rand(30, generator=g, dtype=DTYPE)) / num_bins
        cases.append((x, q))
    answers = _answers(piecewise_log_det, cases, name, f"{name}(x, q)", hint)
    expected = torch.cat([_reference(x, q)[1] for x, q in cases])
    labels = [f"x = {float(v):.4g} (K = {len(q)})" for x, q in cases for v in x]

    def slip(fn: Callable[..., Tensor]) -> Tensor | None:
        return _gather(lambda x, q: fn(x, q, len(q), _bins(x, len(q)), _heights(q)), cases)

    def y_bins(x: Tensor, q: Tensor, K: int) -> Tensor:
        return torch.searchsorted(_heights(q)[1:-1].contiguous(), x, right=True)

    compare(
        torch.cat([a.detach().to(DTYPE) for a in answers]),
        expected,
        f"{name}(x, q)",
        like=answers,
        labels=labels,
        slips=[
            Slip(
                "you returned log q_k: the slope is K q_k, so the log-det is log K + log q_k",
                slip(lambda x, q, K, k, c: torch.log(q[k])),
            ),
            Slip(
                "you returned the slope K q_k itself; the log-det is its logarithm, log(K q_k)",
                slip(lambda x, q, K, k, c: K * q[k]),
            ),
            Slip(
                "this is the inverse's log-det, -log(K q_k): the forward map's slope "
                "in bin k is K q_k, so its log-det is +log(K q_k)",
                slip(lambda x, q, K, k, c: -torch.log(K * q[k])),
            ),
            Slip(
                "the slope is K q_k (rise q_k over run 1/K), not q_k / K",
                slip(lambda x, q, K, k, c: torch.log(q[k] / K)),
            ),
            Slip(
                "the bin of x is floor(K x): the x-axis has equal bins of width 1/K; you "
                "looked x up among the cumulative masses c_k, the bin edges of y",
                slip(lambda x, q, K, k, c: math.log(K) + torch.log(q[y_bins(x, q, K)])),
            ),
            Slip(
                "the bin index is floor(K x), not round(K x)",
                slip(
                    lambda x, q, K, k, c: (
                        math.log(K) + torch.log(q[torch.round(K * x).long().clamp(max=K - 1)])
                    )
                ),
            ),
            Slip(
                "log K is a natural log, and it is added: log(K q_k) = log K + log q_k",
                slip(lambda x, q, K, k, c: math.log10(K) + torch.log(q[k])),
            ),
        ],
        constants={math.log(n): f"log K with K = {n}" for n in (3, 5, 8)},
        terms={
            "the term log K": torch.cat(
                [torch.full((len(x),), math.log(len(q))) for x, q in cases]
            ),
            "the term log q_k": torch.cat([torch.log(q[_bins(x, len(q))]) for x, q in cases]),
            "x": torch.cat([x for x, _ in cases]),
        },
    )
    _check_piecewise_gradients(piecewise_log_det, _log_det_formula, name, f"{name}(x, q)")
    print(
        f"Correct: {name} gives log(K q_k) in every bin, for K = 5, 3, 1 and 8; it "
        "matches the log-derivative of the package's map."
    )


def check_piecewise_inverse(piecewise_inverse: Callable) -> None:
    """Exercise 3: ``piecewise_inverse(y, q)`` returns ``g^{-1}(y)`` for ``y`` of shape
    ``(N,)`` in ``[0, 1]``: at the cumulative masses c_k, 0, 1 and random points."""
    name = "piecewise_inverse"
    hint = (
        "Search among the inner edges c_1, ..., c_{K-1} with "
        "torch.searchsorted(inner_edges, y, right=True): it returns a bin index between "
        "0 and K - 1, and both of its arguments must be tensors of the same dtype"
    )
    cases = []
    for x, q in _cases(seed=2):
        y, _ = _reference(x, q)  # edges c_k, 0, 1 and random images
        y = torch.cat([y, torch.rand(10, generator=torch.Generator().manual_seed(3), dtype=DTYPE)])
        cases.append((y, q))
    answers = _answers(piecewise_inverse, cases, name, f"{name}(y, q)", hint)
    expected = torch.cat([_reference(y, q, inverse=True)[0] for y, q in cases])
    labels = [f"y = {float(v):.4g} (K = {len(q)})" for y, q in cases for v in y]
    edge = torch.cat(
        [torch.isclose(y.unsqueeze(1), _heights(q).unsqueeze(0)).any(1) for y, q in cases]
    )

    def slip(fn: Callable[..., Tensor]) -> Tensor | None:
        def each(y: Tensor, q: Tensor) -> Tensor:
            K, c = len(q), _heights(q)
            k = torch.searchsorted(c[1:-1].contiguous(), y, right=True)
            return fn(y, q, K, k, c)

        return _gather(each, cases)

    def high(y: Tensor, q: Tensor, K: int, c: Tensor) -> Tensor:
        return torch.searchsorted(c, y, right=True).clamp(max=K - 1)

    def x_bins(y: Tensor, K: int) -> Tensor:
        return torch.clamp(torch.floor(K * y).long(), max=K - 1)

    compare(
        torch.cat([a.detach().to(DTYPE) for a in answers]),
        expected,
        f"{name}(y, q)",
        like=answers,
        labels=labels,
        groups={"the cumulative masses c_k (the bin edges of y)": edge},
        nan_hint="a bin with c_k <= y < c_{k+1} has q_k > 0, so check which bin you divide by",
        slips=[
            Slip(
                "your bin index is one too large: searching all of c_0, ..., c_K counts "
                "c_0 = 0 too; search among the inner edges c_1, ..., c_{K-1} (or "
                "subtract one)",
                slip(
                    lambda y, q, K, k, c: (
                        (high(y, q, K, c) + (y - c[high(y, q, K, c)]) / q[high(y, q, K, c)]) / K
                    )
                ),
            ),
            Slip(
                "the bin of y must be looked up among the cumulative masses c_k (the "
                "edges in y-space); floor(K y) finds the bin of an x, with equal widths",
                slip(
                    lambda y, q, K, k, c: (
                        (x_bins(y, K) + (y - c[x_bins(y, K)]) / q[x_bins(y, K)]) / K
                    )
                ),
            ),
            Slip(
                "x = (k + (y - c_k) / q_k) / K: the division by K is missing",
                slip(lambda y, q, K, k, c: k + (y - c[k]) / q[k]),
            ),
            Slip(
                "x = k/K + (y - c_k) / (K q_k): you divided by q_k only, not by the slope K q_k",
                slip(lambda y, q, K, k, c: k / K + (y - c[k]) / q[k]),
            ),
            Slip(
                "x = k/K + (y - c_k) / (K q_k): the offset inside the bin is measured "
                "from c_k, the bin's lower edge; you used c_{k+1}",
                slip(lambda y, q, K, k, c: (k + (y - c[k + 1]) / q[k]) / K),
            ),
            Slip(
                "you applied the forward map again: the inverse solves "
                "y = c_k + K q_k (x - k/K) for x",
                slip(lambda y, q, K, k, c: _reference(y, q)[0]),
            ),
        ],
    )
    _check_piecewise_gradients(piecewise_inverse, _inverse_formula, name, f"{name}(y, q)")
    print(
        f"Correct: {name} inverts the map at the cumulative masses c_k, at 0 and 1, and "
        "at random points, for K = 5, 3 and 1."
    )


def _smoothed_reference(x: Tensor, num_bins: int, pseudo_count: float) -> Tensor:
    counts = torch.bincount(_bins(x, num_bins), minlength=num_bins).to(DTYPE)
    return (counts + pseudo_count) / (len(x) + num_bins * pseudo_count)


def check_smoothed_bin_masses(smoothed_bin_masses: Callable) -> None:
    """Exercise 4: ``smoothed_bin_masses(x, K, pseudo_count)`` returns the masses
    ``(n_k + a) / (N + K a)`` of shape ``(K,)`` for data ``x`` of shape ``(N,)`` (with
    empty bins, the point x = 1, and a = 0)."""
    name = "smoothed_bin_masses"
    hint = (
        "Count the points of each bin with torch.bincount(k, minlength=K), where "
        "k = floor(K x) clamped to K - 1"
    )
    g = torch.Generator().manual_seed(4)
    x = torch.cat(
        [
            0.5 * torch.rand(40, generator=g, dtype=DTYPE),
            torch.tensor([0.0, 1.0, 0.5, 1.0], dtype=DTYPE),
        ]
    )  # sparse above 0.5
    settings = ((8, 1.0), (8, 0.0), (3, 0.5), (1, 1.0), (5, 2.0))
    answers, labels = [], []
    for num_bins, a in settings:
        answer = run(smoothed_bin_masses, x.clone(), num_bins, a, name=name, hint=hint)
        answers.append(
            as_tensor(answer, f"{name}(x, K={num_bins}, pseudo_count={a})", (num_bins,), ("bins",))
        )
        labels += [f"bin {k} (K = {num_bins}, pseudo_count = {a})" for k in range(num_bins)]
    n = len(x)

    def each(fn: Callable[[Tensor, int, float], Tensor]) -> Tensor:
        out = []
        for num_bins, a in settings:
            counts = torch.bincount(_bins(x, num_bins), minlength=num_bins).to(DTYPE)
            out.append(fn(counts, num_bins, a))
        return torch.cat(out)

    def dropped_ones(counts: Tensor, K: int, a: float) -> Tensor:
        counts = counts.clone()
        counts[-1] -= int((x == 1).sum())
        return (counts + a) / (counts.sum() + K * a)

    empty = each(lambda c, K, a: c == 0)
    compare(
        torch.cat([t.detach().to(DTYPE) for t in answers]),
        each(lambda c, K, a: (c + a) / (n + K * a)),
        f"{name}",
        like=answers,
        labels=labels,
        groups={"the empty bins": empty},
        slips=[
            Slip(
                "the pseudo-count goes into every bin, not only the empty ones: "
                "(n_k + a) / (N + K a) for all k",
                each(lambda c, K, a: (c + a * (c == 0)) / (c + a * (c == 0)).sum()),
            ),
            Slip(
                "the pseudo-count goes into every bin, not only the empty ones; and the "
                "denominator is N + K a",
                each(lambda c, K, a: (c + a * (c == 0)) / (n + K * a)),
            ),
            Slip(
                "each of the K bins gets the pseudo-count, so divide by N + K a, not N + a",
                each(lambda c, K, a: (c + a) / (n + a)),
            ),
            Slip(
                "the masses must sum to 1: divide by N + K a, not N",
                each(lambda c, K, a: (c + a) / n),
            ),
            Slip(
                "the pseudo-count a is missing from the numerator: (n_k + a) / (N + K a)",
                each(lambda c, K, a: c / (n + K * a)),
            ),
            Slip(
                "the points x = 1 are dropped: floor(K x) = K for them; clamp the bin "
                "index to K - 1 so that they count in the last bin",
                each(dropped_ones),
            ),
            Slip(
                "the pseudo-count is missing altogether: the masses are (n_k + a) / (N + K a)",
                each(lambda c, K, a: c / n),
            ),
            Slip(
                "you returned the counts n_k + a, not masses: divide by N + K a",
                each(lambda c, K, a: c + a),
            ),
        ],
    )
    # Data that leaves the LAST bins empty: a count that stops at the largest bin index
    # (torch.bincount without minlength) comes out too short here, and only here.
    low = 0.6 * torch.rand(30, generator=g, dtype=DTYPE)
    for num_bins, a in ((8, 1.0), (5, 0.5)):
        what = f"{name}(x, K={num_bins}, pseudo_count={a}) for data below 0.6"
        answer = run(smoothed_bin_masses, low.clone(), num_bins, a, name=name, hint=hint)
        filled = int(_bins(low, num_bins).max()) + 1
        if isinstance(answer, Tensor) and tuple(answer.shape) == (filled,):
            raise ExerciseError(
                f"{what} has shape ({filled},); expected ({num_bins},): no data point falls "
                f"in the last {num_bins - filled} bins, and torch.bincount without minlength "
                "returns only as many counts as the largest bin index + 1. Pass "
                "minlength=K, torch.bincount(k, minlength=K), so that the empty last bins "
                "get a count of 0 (and then their pseudo-count)"
            )
        answer = as_tensor(answer, what, (num_bins,), ("bins",))
        compare(
            answer,
            _smoothed_reference(low, num_bins, a),
            what,
            labels=[f"bin {k}" for k in range(num_bins)],
            groups={"the empty last bins": torch.arange(num_bins) >= filled},
        )
    print(
        f"Correct: {name} gives (n_k + a) / (N + K a), with empty bins (the last ones "
        "too), the point x = 1, and a = 0 (the maximum-likelihood masses)."
    )


# --- Exercise: a piecewise-linear coupling on the unit square -------------------------------


SQUARE_GOAL = Goal(0.08, steps=300)


def _structure_problem(layer: nn.Module) -> str | None:
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
            return (
                f"_inverse on a batch of shape (16, 2) returned shapes {tuple(u.shape)} "
                f"and {tuple(log_det.shape)}; expected (16, 2) and (16,)"
            )
        err = testing.log_det_error(layer, x, direction="inverse")
        if not bool((err <= 1e-6).all()):
            return (
                f"the log-det of your _inverse differs from the autograd Jacobian by "
                f"{float(err.max()):.3g}: it must be log g1'(x1) + log g2'(x2 | x1), both "
                "terms, and the masses of x2 must be computed from x1 alone (then the "
                "Jacobian is triangular)"
            )
        x_back, log_det_back = layer.forward(u)
        miss = (x_back - x).abs().detach()
        if not bool((miss <= 1e-6).all()):
            return (
                f"_forward does not undo _inverse: forward(inverse(x)) misses x by "
                f"{float(miss.max()):.3g}. In _forward, first recover x1, "
                "then compute the masses of x2 from x1 (not from u1)"
            )
        gap = (log_det_back + log_det).abs().detach()
        if not bool((gap <= 1e-6).all()):
            return (
                "the log-det of _forward is not minus the log-det of _inverse (they "
                f"sum to {float(gap.max()):.3g})"
            )
    except NotImplementedError:
        return "the layer is not finished: replace `raise NotImplementedError()`"
    except Exception as error:  # the student's layer failed on valid input
        return f"your layer raised {type(error).__name__}: {error}"
    return None


def check_fit_square(
    fit_square: Callable[[Tensor], tuple[Flow, list[float]]], seed: int = 0
) -> None:
    """Exercise: the student's ``fit_square(data)`` builds a flow of their piecewise-linear
    coupling with a uniform base on the unit square, fits it by maximum likelihood to 2,000
    points of ``nfcourse.densities.KumaraswamySquare`` and returns ``(flow, history)``; the
    flow must reach ``KL(p || q) < 0.08`` nats within 300 steps, and the layer must pass the
    log-det and round-trip tests."""
    data = KumaraswamySquare().sample(2000, seed=seed, dtype=torch.get_default_dtype())

    def inspect(flow: Flow) -> None:
        require_registered(flow)
        problem = _structure_problem(flow.transform)
        if problem:
            raise ExerciseError(f"your coupling layer is not a valid flow yet: {problem}")

    check_fit(
        fit_square,
        data.clone(),
        name="fit_square",
        goal=SQUARE_GOAL,
        target=KumaraswamySquare(),
        seed=seed,
        subject="your coupling reaches",
        inspect=inspect,
        loss=lambda flow: mean_nll(flow, data),
        went_up="is the sign of your loss right (the negative log-likelihood, minimised)?",
        fallback=(
            "the fit stops short: with more bins the histograms can follow the "
            "density more closely, and a wider conditioner lets the masses of x2 "
            "follow x1"
        ),
    )
