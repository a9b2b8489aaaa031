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
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from ..core import Flow
from ..densities import SineWave
from ..flows.coupling import (
    AdditiveCoupling,
    AffineCoupling,
    PiecewiseLinearCoupling,
    alternating_mask,
)
from ..images import bits_per_dim as _bits_per_dim
from ..validation import check_positive_int
from ._toolkit import (
    ExerciseError,
    Slip,
    as_number,
    as_tensor,
    check_gradients,
    compare,
    compare_gradients,
    run,
)
from ._training import (
    BELOW_ENTROPY,
    Goal,
    Measurement,
    check_fit,
    mean_nll,
)

__all__ = [
    "SINE_GOAL",
    "check_affine_coupling_forward",
    "check_affine_coupling_inverse",
    "check_bits_per_dim",
    "check_coupling_jacobian",
    "check_dequantize",
    "check_fit_sine",
    "make_conditioner",
]


def make_conditioner(dim: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A small random network ``R^{D/2} -> R^D`` for the exercises: its first ``D/2``
    outputs are the log-scales ``s``, the last ``D/2`` the shifts ``t``."""
    if check_positive_int(dim, "dim") < 2 or dim % 2:
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


def _reference_inverse(x: Tensor, conditioner: nn.Module) -> tuple[Tensor, Tensor]:
    d = x.shape[1] // 2
    s, t = conditioner(x[:, :d]).chunk(2, dim=1)
    return torch.cat([x[:, :d], (x[:, d:] - t) * torch.exp(-s)], dim=1), -s.sum(dim=1)


def _unpack_pair(
    out: object, name: str, what: str, shape: tuple[int, ...], n: int
) -> tuple[Tensor, Tensor]:
    if not (isinstance(out, tuple | list) and len(out) == 2):
        kind = type(out).__name__ + (
            f" of shape {tuple(out.shape)}" if isinstance(out, Tensor) else ""
        )
        raise ExerciseError(f"{name} should return a pair ({what}, log_det), got a {kind}")
    first = as_tensor(out[0], f"the {what} of {name}", shape, ("batch", "coordinates"))
    log_det = as_tensor(out[1], f"the log_det of {name}", (n,), ("batch",))
    return first, log_det


_SPLIT_HINT = (
    "split z into halves along the coordinates: z[:, :d] and z[:, d:], or "
    "z.chunk(2, dim=1); torch.split(z, 2) cuts pieces of size 2 along the batch"
)


def _coupling_cases(
    seeds: Iterable[tuple[int, int, int]],
) -> Iterator[tuple[int, int, nn.Module, Tensor]]:
    """``(dim, n, conditioner, z)`` for each ``(dim, n, seed)``."""
    for dim, n, seed in seeds:
        conditioner = make_conditioner(dim, seed)
        z = 1.5 * torch.randn(
            n, dim, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64
        )
        yield dim, n, conditioner, z


def check_affine_coupling_forward(fn: Callable, atol: float = 1e-8) -> None:
    """Check ``fn(z, conditioner) -> (x, log_det)`` of the affine coupling: the first half
    of ``z`` conditions, ``(s, t) = conditioner(z_A)`` split in two halves,
    ``x_B = exp(s) z_B + t``, ``log_det = sum(s)``; gradients must reach the conditioner."""
    name = getattr(fn, "__name__", "your function")
    for dim, n, conditioner, z in _coupling_cases(((4, 6, 0), (6, 9, 1))):
        d = dim // 2
        x, log_det = _unpack_pair(
            run(fn, z.clone(), conditioner, name=name, hint=_SPLIT_HINT), name, "x", (n, dim), n
        )
        with torch.no_grad():
            x_ref, log_det_ref, s = _reference_forward(z, conditioner)
            za, zb = z[:, :d], z[:, d:]
            t = x_ref[:, d:] - zb * torch.exp(s)
            s_b, t_b = conditioner(zb).chunk(2, dim=1)

            def with_b(x_b: Tensor, first: Tensor = za) -> Tensor:
                return torch.cat([first, x_b], dim=1)

            compare(
                x,
                x_ref,
                f"x for D = {dim}",
                atol=atol,
                groups={"the conditioning half x_A": torch.arange(dim) < d},
                labels=[f"sample {k}" for k in range(n)],
                slips=[
                    Slip("the scale is exp(s), not s", with_b(zb * s + t)),
                    Slip(
                        "you swapped s and t: the first half of the conditioner's "
                        "output is the log-scale s, the second the shift t",
                        with_b(zb * torch.exp(t) + s),
                    ),
                    Slip(
                        "shift after scaling: x_B = exp(s) z_B + t, not exp(s) (z_B + t)",
                        with_b((zb + t) * torch.exp(s)),
                    ),
                    Slip(
                        "the scale is exp(s); exp(-s) belongs to the inverse",
                        with_b(zb * torch.exp(-s) + t),
                    ),
                    Slip(
                        "the conditioner takes z_A, the half that passes through; you fed it z_B",
                        with_b(zb * torch.exp(s_b) + t_b),
                    ),
                    Slip(
                        "the two halves are swapped in the output: x = cat([x_A, x_B]) "
                        "with the conditioning half first",
                        torch.cat([x_ref[:, d:], za], dim=1),
                    ),
                    Slip(
                        "the conditioning half x_A must equal z_A: a coupling passes it "
                        "through unchanged",
                        torch.cat([za * torch.exp(s) + t, x_ref[:, d:]], dim=1),
                    ),
                ],
                advice="compute (s, t) from z_A only, with s the first half of the "
                "output, and x_B = exp(s) z_B + t",
            )
            compare(
                log_det,
                log_det_ref,
                f"log_det for D = {dim}",
                atol=atol,
                terms={
                    "the term sum(s)": s.sum(1),
                    "sum(t)": t.sum(1),
                    "sum(exp(s))": torch.exp(s).sum(1),
                    "sum(z_B)": zb.sum(1),
                },
                slips=[
                    Slip(
                        "log_det is log |det J| = sum of s, not the sum of exp(s)",
                        torch.exp(s).sum(dim=1),
                    ),
                    Slip("log_det should sum s over the coordinates, not average", s.mean(dim=1)),
                    Slip(
                        "this is the inverse's log-det, -sum(s); the forward map stretches by "
                        "exp(s), so its log-det is +sum(s)",
                        -s.sum(dim=1),
                    ),
                    Slip(
                        "log_det sums the conditioner's whole output (s and t); only s enters",
                        s.sum(dim=1) + t.sum(dim=1),
                    ),
                ],
            )
        params = dict(conditioner.named_parameters())
        check_gradients(
            x.sum() + log_det.sum(),
            {f"the conditioner's {k}": v for k, v in params.items()},
            f"{name}'s output",
        )
    params = {f"the conditioner's {k}": v for k, v in conditioner.named_parameters()}
    for k, what in enumerate(("x", "log_det")):
        compare_gradients(
            fn,
            lambda z, cond, k=k: _reference_forward(z, cond)[k],
            [z, conditioner],
            f"the {what} of {name}",
            wrt={0: "z"},
            params=params,
            pick=lambda out, k=k: out[k],
            name=name,
            advice="training reaches the conditioner's weights through x and log_det, "
            "so s and t must stay tensors of the graph (no .detach(), no torch.no_grad())",
        )
    print(
        "Correct: the affine coupling keeps x_A = z_A, maps x_B = exp(s) z_B + t and its "
        "log-det is the sum of s (checked for D = 4 and D = 6)."
    )


def check_affine_coupling_inverse(fn: Callable, atol: float = 1e-8) -> None:
    """Check ``fn(x, conditioner) -> (z, log_det)``, the inverse of the affine coupling:
    ``z_A = x_A``, ``z_B = (x_B - t) exp(-s)`` with ``(s, t) = conditioner(x_A)``,
    ``log_det = -sum(s)``."""
    name = getattr(fn, "__name__", "your function")
    for dim, n, conditioner, z in _coupling_cases(((4, 6, 2), (6, 9, 3))):
        d = dim // 2
        with torch.no_grad():
            x, log_det_forward, s = _reference_forward(z, conditioner)
        z_back, log_det = _unpack_pair(
            run(fn, x.clone(), conditioner, name=name, hint=_SPLIT_HINT), name, "z", (n, dim), n
        )
        with torch.no_grad():
            xa, xb = x[:, :d], x[:, d:]
            t = xb - z[:, d:] * torch.exp(s)
            s_b, t_b = conditioner(xb).chunk(2, dim=1)

            def with_b(z_b: Tensor) -> Tensor:
                return torch.cat([xa, z_b], dim=1)

            compare(
                z_back,
                z,
                f"inverse(forward(z)) for D = {dim}",
                atol=atol,
                labels=[f"sample {k}" for k in range(n)],
                slips=[
                    Slip(
                        "undo the shift before the scale: z_B = (x_B - t) exp(-s)",
                        with_b(xb * torch.exp(-s) - t),
                    ),
                    Slip(
                        "to undo a stretch by exp(s), multiply by exp(-s)",
                        with_b((xb - t) * torch.exp(s)),
                    ),
                    Slip(
                        "undo the shift by subtracting t: z_B = (x_B - t) exp(-s)",
                        with_b((xb + t) * torch.exp(-s)),
                    ),
                    Slip("the scale is exp(s), not s: divide by exp(s)", with_b((xb - t) / s)),
                    Slip(
                        "the conditioner takes x_A (which equals z_A), so that it "
                        "returns the same (s, t) as in the forward pass; you fed it x_B",
                        with_b((xb - t_b) * torch.exp(-s_b)),
                    ),
                    Slip(
                        "you swapped s and t: the first half of the conditioner's "
                        "output is the log-scale s",
                        with_b((xb - s) * torch.exp(-t)),
                    ),
                ],
            )
            compare(
                log_det,
                -log_det_forward,
                f"log_det for D = {dim}",
                atol=atol,
                terms={
                    "the term -sum(s)": -s.sum(1),
                    "sum(t)": t.sum(1),
                    "sum(exp(s))": torch.exp(s).sum(1),
                },
                slips=[
                    Slip(
                        "this is the forward map's log-det: the inverse shrinks where the "
                        "forward map stretches, so its log-det is -sum(s)",
                        log_det_forward,
                    ),
                    Slip(
                        "log_det should sum -s over the coordinates, not average", -s.mean(dim=1)
                    ),
                    Slip(
                        "the inverse's log-det is -sum(s), not -sum(exp(s))",
                        -torch.exp(s).sum(dim=1),
                    ),
                ],
            )
    params = {f"the conditioner's {k}": v for k, v in conditioner.named_parameters()}
    for k, what in enumerate(("z", "log_det")):
        compare_gradients(
            fn,
            lambda x, cond, k=k: _reference_inverse(x, cond)[k],
            [x, conditioner],
            f"the {what} of {name}",
            wrt={0: "x"},
            params=params,
            pick=lambda out, k=k: out[k],
            name=name,
            advice="the log-likelihood log p(x) is trained through the inverse: s and t "
            "must stay tensors of the graph (no .detach(), no torch.no_grad())",
        )
    print(
        "Correct: your inverse undoes the affine coupling and its log-det is -sum(s) "
        "(checked for D = 4 and D = 6)."
    )


def _reflected_jacobian(d: Tensor) -> Tensor:
    """The Jacobian, conditioning coordinates first, of a coupling whose transformed
    coordinates have the slopes ``d`` (one of them negative: a reflection)."""
    n = len(d)
    g = torch.Generator().manual_seed(5)
    jac = torch.eye(2 * n, dtype=d.dtype)
    jac[n:, :n] = torch.randn(n, n, generator=g, dtype=d.dtype)
    return jac + torch.diag_embed(torch.cat([d.new_zeros(n), d - 1]))


def _check_log_det_reflection(log_det_fn: Callable) -> None:
    """A triangular Jacobian with a negative diagonal entry (the coupling layers above
    only have positive ones): a log-det without abs gives NaN here."""
    d = torch.tensor([1.7, -0.6, 2.2], dtype=torch.float64)
    jac = _reflected_jacobian(d)
    what = "your log-det of a coupling Jacobian with a negative diagonal entry"
    log_det = as_number(run(log_det_fn, jac.clone(), 3, name="triangular_log_det"), what)
    compare(
        log_det.reshape(1),
        torch.log(d.abs()).sum().reshape(1),
        what,
        nan_hint="the abs is missing: a diagonal entry of a Jacobian can be negative (a "
        "coupling whose scale is negative reflects that coordinate), and the log of a "
        "negative number is NaN; the change of variables uses |det J|, so sum log |J_ii|",
        slips=[
            Slip(
                "missing abs: J_ii = -0.6 is negative (a reflection) and its log is NaN; "
                "the change of variables uses |det J|, so sum log |J_ii|",
                torch.log(d).sum().reshape(1),
            ),
            Slip(
                "missing abs: the product of the diagonal is negative (one reflection) and "
                "its log is NaN; sum log |J_ii|",
                torch.log(d.prod()).reshape(1),
            ),
        ],
    )
    compare_gradients(
        lambda d, n: log_det_fn(_reflected_jacobian(d), n),
        lambda d, n: torch.log(d.abs()).sum(),
        [d, 3],
        "your log-det",
        wrt={0: "the diagonal entries J_ii"},
        name="triangular_log_det",
        advice="a flow trains through its log-det, so keep it a tensor of the graph",
    )


def check_coupling_jacobian(
    jacobian_fn: Callable, log_det_fn: Callable, atol: float = 1e-8
) -> None:
    """Check ``jacobian_fn(layer, z)``, the ``D x D`` Jacobian ``dx/dz`` of a coupling layer
    at one point ``z`` ``(D,)`` with rows and columns reordered as
    ``[layer.cond_index, layer.trans_index]``, and ``log_det_fn(jac, n_cond)``, the
    log-determinant computed from the diagonal of that matrix alone."""
    with torch.random.fork_rng():  # leave the student's random state alone
        torch.manual_seed(0)
        layers = [
            AffineCoupling(alternating_mask(6, 1), hidden=(8,), zero_init=False),
            PiecewiseLinearCoupling(
                alternating_mask(5, 0), hidden=(8,), bins=6, bound=3.0, zero_init=False
            ),
        ]
    g = torch.Generator().manual_seed(4)
    for layer in layers:
        layer = layer.double()
        z = torch.randn(layer.dim, generator=g, dtype=torch.float64)
        order = torch.cat([layer.cond_index, layer.trans_index])
        full = torch.autograd.functional.jacobian(lambda v: layer(v.unsqueeze(0))[0][0], z)
        expected = full[order][:, order]
        kind = type(layer).__name__
        jac = as_tensor(
            run(jacobian_fn, layer, z.clone(), name="coupling_jacobian"),
            f"the Jacobian of the {kind}",
            tuple(expected.shape),
            ("rows: outputs x_i", "columns: inputs z_j"),
        )
        compare(
            jac,
            expected,
            f"the Jacobian of the {kind}",
            atol=atol,
            labels=[f"row {i}" for i in range(layer.dim)],
            slips=[
                Slip(
                    "reorder rows and columns: jac[order][:, order] with "
                    "order = cat([layer.cond_index, layer.trans_index])",
                    full,
                ),
                Slip(
                    "your matrix is transposed: row i holds the derivatives of output x_i",
                    expected.T,
                ),
                Slip("reorder the rows AND the columns with the same order", full[order]),
                Slip(
                    "reorder the columns as well as the rows, with the same order", full[:, order]
                ),
                Slip(
                    "this is the Jacobian of the inverse map; the exercise asks for "
                    "dx/dz of the forward map",
                    torch.linalg.inv(expected),
                ),
            ],
        )
        n_cond = len(layer.cond_index)
        jac_ref = expected.clone()
        log_det = as_number(
            run(log_det_fn, jac_ref.clone(), n_cond, name="triangular_log_det"),
            "triangular_log_det",
        )
        reported = layer(z.unsqueeze(0))[1][0].detach()
        diag = torch.diagonal(jac_ref)
        compare(
            log_det.reshape(1),
            reported.reshape(1),
            f"your log-det of the {kind}",
            atol=atol,
            slips=[
                Slip(
                    "the determinant of a triangular matrix is the product of its "
                    "diagonal: sum the logs of |J_ii|, not the J_ii",
                    diag.sum().reshape(1),
                ),
                Slip(
                    "sum the logs of the diagonal entries |J_ii|, not of every entry",
                    torch.log(jac_ref.abs() + (jac_ref == 0)).sum().reshape(1),
                ),
                Slip(
                    "the diagonal entries can be below one; the log-det is sum log "
                    "|J_ii|, you returned sum |log J_ii|",
                    diag.abs().log().abs().sum().reshape(1),
                ),
                Slip(
                    "that is the log-det of the inverse: the forward layer's is +sum log |J_ii|",
                    -diag.abs().log().sum().reshape(1),
                ),
                Slip(
                    "you returned det J itself; take the log of its absolute value",
                    diag.prod().reshape(1),
                ),
                Slip(
                    "the first n_cond diagonal entries are ones; sum the logs of the "
                    "LAST D - n_cond entries, not the first ones",
                    diag[: len(diag) - n_cond].abs().log().sum().reshape(1),
                ),
            ],
        )
    _check_log_det_reflection(log_det_fn)
    print(
        "Correct: with the conditioning coordinates first the Jacobian is lower "
        "triangular, and the sum of log |J_ii| is the layer's log-det."
    )


def check_dequantize(fn: Callable, levels: int = 17) -> None:
    """Check ``fn(x, levels, generator) -> y``: ``y = (x + u) / L`` with ``u ~ U[0, 1)``,
    one independent draw per pixel and image, taken from ``generator``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, levels, (400, 64), generator=g).to(torch.float64)
    x[0] = 0.0
    x[1] = levels - 1
    y = as_tensor(
        run(fn, x.clone(), levels, torch.Generator().manual_seed(1), name="dequantize"),
        "dequantize's output",
        tuple(x.shape),
        ("images", "pixels"),
    )
    y = y.detach().to(torch.float64)
    if not bool(torch.isfinite(y).all()):
        raise ExerciseError("dequantize returned NaN or inf")
    if float(y.max()) > 1.5:
        if bool(((levels * y - x) == 0).all()) or torch.equal(torch.floor(y), x):
            raise ExerciseError("divide by the number of levels L: y must lie in [0, 1)")
        if float((y - x / levels).min()) >= 0 and float((y - x / levels).max()) < 1:
            raise ExerciseError(
                "the noise u must be added before dividing by L, so that "
                "y stays inside the cell [x/L, (x+1)/L)"
            )
        raise ExerciseError("y must lie in [0, 1): y = (x + u) / L")
    if (
        bool(((levels - 1) * y - x).ge(0).all())
        and bool(((levels - 1) * y - x).lt(1).all())
        and float(y.max()) > 1
    ):
        raise ExerciseError(
            "divide by L, the number of levels, not by L - 1: y must lie in [0, 1)"
        )
    cell = torch.floor(levels * y + 1e-9)
    if bool((y < 0).any()) or bool((y >= 1).any()) or not torch.equal(cell, x):
        u = levels * y - x
        if float(u.min()) < -0.5 and abs(float(u.mean())) < 0.1:
            raise ExerciseError(
                "the noise has negative values: a standard normal (randn) is "
                "not U[0, 1); use torch.rand"
            )
        if float((x / levels - y).abs().max()) < 1e-12:
            raise ExerciseError("y = x / L: the noise u is missing")
        raise ExerciseError(
            "each y must stay inside its pixel's cell [x/L, (x+1)/L), in "
            "[0, 1): y = (x + u) / L with u from torch.rand, in [0, 1)"
        )
    u = levels * y - x
    if float(u.std()) < 0.05:
        raise ExerciseError(
            "the noise u looks constant (the same value everywhere, e.g. "
            "0.5); draw it uniformly on [0, 1) for every pixel, e.g. "
            "torch.rand(x.shape, generator=generator)"
        )
    if float((u - u[:1]).abs().max()) < 1e-9:
        raise ExerciseError(
            "every image gets the same noise vector (one draw of shape "
            "(D,) broadcast over the batch): the noise must be independent "
            "across images, torch.rand(x.shape, generator=generator)"
        )
    if float((u - u[:, :1]).abs().max()) < 1e-9:
        raise ExerciseError(
            "every pixel of an image gets the same noise value (one draw "
            "per image): the noise must be independent across pixels, "
            "torch.rand(x.shape, generator=generator)"
        )
    rows = torch.corrcoef(u[:, :8].T)  # correlation between pixels, across images
    cols = torch.corrcoef(u[:8])  # correlation between images, across pixels
    off = (rows - torch.eye(8, dtype=torch.float64)).abs().max().item()
    off_img = (cols - torch.eye(8, dtype=torch.float64)).abs().max().item()
    if off > 0.5 or off_img > 0.8:
        raise ExerciseError(
            "the noise of different pixels or images is correlated: draw "
            "one independent U[0, 1) value per pixel and image"
        )
    mean, std = float(u.mean()), float(u.std())
    if abs(mean - 0.5) > 0.02 or abs(std - math.sqrt(1 / 12)) > 0.02:
        raise ExerciseError(
            f"the noise has mean {mean:.3f} and standard deviation "
            f"{std:.3f}; U[0, 1) has 0.5 and {math.sqrt(1 / 12):.3f}"
        )
    again = as_tensor(
        run(fn, x.clone(), levels, torch.Generator().manual_seed(1), name="dequantize"),
        "dequantize's output",
        tuple(x.shape),
    )
    if not torch.equal(again.detach().to(torch.float64), y):
        raise ExerciseError(
            "two calls with generators seeded alike gave different noise: "
            "draw u from the generator argument, torch.rand(x.shape, "
            "generator=generator), not from the global random state"
        )
    print(
        f"Correct: every y lies in its cell [x/L, (x+1)/L), the noise is independent "
        f"across pixels and images, comes from the generator, and has mean {mean:.3f} "
        f"and standard deviation {std:.3f}, as U[0, 1) should."
    )


def check_bits_per_dim(fn: Callable) -> None:
    """Check ``fn(nll_nats, dim, levels)``: ``(NLL + D ln L) / (D ln 2)``; a Python number
    or a tensor (float32 or float64) is accepted."""
    cases = [(0.0, 64, 17), (-80.0, 64, 17), (150.0, 784, 256), (-3.5, 2, 5), (12.0, 3, 2)]
    answers = [
        as_number(
            run(fn, nll, dim, levels, name="bits_per_dim"), f"bits_per_dim({nll}, {dim}, {levels})"
        )
        for nll, dim, levels in cases
    ]
    got = torch.stack([a.detach().to(torch.float64) for a in answers])

    def each(f: Callable[[float, int, int], float]) -> Tensor:
        return torch.tensor(
            [f(nll, dim, levels) for nll, dim, levels in cases], dtype=torch.float64
        )

    ln2 = math.log(2)
    expected = each(_bits_per_dim)
    compare(
        got,
        expected,
        "bits_per_dim",
        like=answers,
        rtol=1e-6,
        labels=[f"NLL = {nll} nats, D = {dim}, L = {levels}" for nll, dim, levels in cases],
        slips=[
            Slip(
                "add the scaling term D ln L to the NLL: the density of y = (x + u)/L is "
                "L^D times the density of x + u",
                each(lambda n, d, L: n / (d * ln2)),
            ),
            Slip(
                "the scaling term D ln L is added, not subtracted",
                each(lambda n, d, L: (n - d * math.log(L)) / (d * ln2)),
            ),
            Slip(
                "you have nats per dimension; divide by ln 2 for bits",
                each(lambda n, d, L: (n + d * math.log(L)) / d),
            ),
            Slip(
                "divide by the number of dimensions D",
                each(lambda n, d, L: (n + d * math.log(L)) / ln2),
            ),
            Slip(
                "the scaling term is D ln L, in nats like the NLL; you added D log2 L "
                "(already bits) before dividing by ln 2",
                each(lambda n, d, L: (n + d * math.log2(L)) / (d * ln2)),
            ),
            Slip(
                "the scaling term is D ln L, one ln L per dimension; you added ln L once",
                each(lambda n, d, L: (n + math.log(L)) / (d * ln2)),
            ),
            Slip(
                "the scaling term is D ln L with L the number of levels, not L - 1",
                each(lambda n, d, L: (n + d * math.log(L - 1)) / (d * ln2)),
            ),
            Slip(
                "divide by ln 2 to turn nats into bits; you multiplied by it",
                each(lambda n, d, L: (n + d * math.log(L)) * ln2 / d),
            ),
            Slip(
                "bits per dimension counts the negative log-likelihood: NLL enters with "
                "a plus sign",
                each(lambda n, d, L: (-n + d * math.log(L)) / (d * ln2)),
            ),
        ],
    )
    print(
        f"Correct: for example the uniform model (NLL = 0) of 17-level pixels gets "
        f"log2(17) = {math.log2(17):.4f} bits per dimension."
    )


# --- Exercise: train a coupling flow to a KL goal ---------------------------------------------


SINE_GOAL = Goal(0.1, steps=400)


def check_fit_sine(
    fit_sine: Callable[[Tensor, torch.Generator], tuple[Flow, list[float]]], seed: int = 0
) -> None:
    """Exercise: the student's ``fit_sine(data, generator)`` trains a coupling flow on
    10,000 samples of ``nfcourse.densities.SineWave`` in mini-batches and returns
    ``(flow, history)``; the flow must reach ``KL(p || q) < 0.1`` nats (measured by
    ``SineWave.kl_divergence`` on 20,000 fresh samples) within 400 steps."""
    target = SineWave()
    entropy = target.entropy()
    data = target.sample(10_000, seed=seed)

    def diagnose(flow: Flow, history: list[float], measured: Measurement) -> str | None:
        test_nll = entropy + measured.value if math.isfinite(measured.value) else math.inf
        tail = history[-max(1, len(history) // 10) :]
        recent = sum(tail) / len(tail)
        train_nll = mean_nll(flow, data)
        if math.isfinite(train_nll) and abs(recent + train_nll) <= 0.1 * (1 + abs(recent)):
            return (
                "your loss is the mean log-likelihood, not its negative: the optimiser "
                "minimises, so the loss is -log q(x) averaged over the batch"
            )
        if math.isfinite(test_nll) and recent < test_nll - 0.3:
            return (
                f"your losses end near {recent:.3f} nats, but fresh points score "
                f"{test_nll:.3f}: the flow learned the points it saw, not the density. "
                "Is a new random batch drawn at every step (torch.randint with the "
                "generator, inside the loss function)?"
            )
        return None

    def limitation(flow: Flow) -> str | None:
        kinds = {type(m) for m in flow.modules()}
        if AdditiveCoupling not in kinds or kinds & {AffineCoupling, PiecewiseLinearCoupling}:
            return None
        return (
            "additive couplings keep volume: only the last elementwise layer can change "
            "it, so the narrow band of the sine wave is hard to reach. Affine or "
            "piecewise-linear couplings can stretch and squeeze"
        )

    check_fit(
        fit_sine,
        data.clone(),
        torch.Generator().manual_seed(seed),
        name="fit_sine",
        goal=SINE_GOAL,
        target=target,
        seed=seed,
        floor=(entropy, BELOW_ENTROPY),
        diagnose=diagnose,
        loss=lambda flow: mean_nll(flow, data),
        limitation=limitation,
    )
