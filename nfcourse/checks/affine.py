"""Feedback for the exercises of chapter 2 (affine flows, ``solutions/02_affine_flows.md``).

* ``check_affine_log_det``: ``log |det|`` of ``x = a * z + b`` from the scales ``a``.
* ``check_affine_layer``: the repaired tutorial layer, an ``nfcourse.Transform``.
* ``check_combine_affine``: two elementwise affine maps folded into one.
* ``check_triangular_log_det``: ``log |det T|`` of a triangular matrix in ``O(D)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .. import testing
from ..core import Compose, Flow, Transform
from ..densities import CorrelatedGaussian
from ..flows.affine import ElementwiseAffine, LUAffine, TriangularAffine
from . import check_transform
from ._toolkit import (
    ExerciseError,
    Slip,
    as_number,
    as_tensor,
    check_gradients,
    compare,
    compare_gradients,
    compare_gradients_numerically,
    run,
)
from ._training import Goal, check_fit, mean_nll

__all__ = [
    "LU_GOAL",
    "check_affine_layer",
    "check_affine_log_det",
    "check_combine_affine",
    "check_fit_lu",
    "check_triangular_log_det",
]

F64 = torch.float64


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _scalar_answer(got: object, name: str) -> Tensor:
    """A log-det of one map: a tensor holding one number (a Python number cannot carry a
    gradient back to the parameters, so it is refused with the reason)."""
    if isinstance(got, int | float) and not isinstance(got, bool):
        raise ExerciseError(
            f"{name} returned a Python number ({got!r}), not a tensor: .item(), float() or "
            "math.log turned it into a plain number, which no gradient can flow through; "
            "keep torch operations (torch.log, .sum())"
        )
    return as_number(got, f"{name}'s answer")


class _CallRecorder(TorchFunctionMode):
    """Records the names of the torch functions called inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        self.names.add(getattr(func, "__name__", str(func)).removeprefix("linalg_"))
        return func(*args, **(kwargs or {}))


def _scale_cases() -> list[Tensor]:
    """Scale vectors: all positive; one, three and one-of-one negative entries (an odd
    number: a reflection, so a product is negative); and two long vectors whose product
    under- and overflows in float64 although the log-det is an ordinary number."""
    return [
        torch.tensor([0.5, 2.0, 3.0, 0.8], dtype=F64),
        torch.tensor([0.5, -2.0, 3.0, 0.8], dtype=F64),
        torch.tensor([-0.5, -2.0, 3.0, -0.8, 1.7], dtype=F64),
        torch.tensor([-0.25], dtype=F64),
        torch.full((200,), 0.01, dtype=F64),
        torch.cat([torch.full((150,), 150.0, dtype=F64), torch.tensor([-0.3], dtype=F64)]),
    ]


def _short(t: Tensor) -> str:
    values = [round(v, 3) for v in t.tolist()]
    return str(values) if len(values) <= 6 else f"[{values[0]}, ... ({len(values)} entries)]"


def _called_first(recorder: _CallRecorder, slips: list[Slip]) -> list[Slip]:
    """Put first the slips whose message names a torch function the student called
    (``torch.logdet`` and ``log(a).sum()`` both give NaN for a negative determinant)."""
    called = [s for s in slips if any(f"torch.{n} " in s.message for n in recorder.names)]
    return called + [s for s in slips if s not in called]


def _per_case(fn: Callable[[Tensor], Tensor], cases: list[Tensor]) -> Tensor | None:
    """``fn`` on every case, stacked (``None`` when it fails on one: a slip that cannot
    run matches nothing)."""
    out = []
    for a in cases:
        try:
            out.append(torch.as_tensor(fn(a), dtype=F64).reshape(()))
        except Exception:
            return None
    return torch.stack(out)


def check_affine_log_det(affine_log_det: Callable[[Tensor], Tensor]) -> None:
    """``affine_log_det(scale)``: ``sum_i log |a_i|`` for a scale vector ``a`` of shape
    ``(D,)`` whose entries may be negative (an odd number of them, too) and whose product
    may under- or overflow."""
    name = "affine_log_det"
    cases = _scale_cases()
    recorder = _CallRecorder()
    answers = []
    for a in cases:
        with recorder:
            out = run(affine_log_det, a.clone(), name=name)
        answers.append(_scalar_answer(out, name))
    got = torch.stack([a.detach().to(F64) for a in answers])
    expected = torch.stack([torch.log(a.abs()).sum() for a in cases])
    odd = torch.tensor([bool((a < 0).sum() % 2) for a in cases])
    long = torch.tensor([len(a) > 100 for a in cases])
    with torch.no_grad():
        compare(
            got,
            expected,
            f"{name}(a)",
            like=answers,
            labels=[f"a = {_short(a)}" for a in cases],
            groups={
                "the scale vectors with an odd number of negative entries": odd,
                "the long vectors, whose product under- or overflows": long,
            },
            large=long,
            nan_hint="a scale can be negative (a reflection), and the log of a negative "
            "number is NaN; the change of variables uses |det J|, so take "
            "log |a_i|",
            slips=_called_first(
                recorder,
                [
                    Slip(
                        "the log of a negative scale is NaN: a scale can be negative (a "
                        "reflection), and the change of variables uses |det J|, so sum "
                        "log |a_i|",
                        _per_case(lambda a: torch.log(a).sum(), cases),
                    ),
                    Slip(
                        "log(prod(a)) fails twice: the product is negative when an odd number "
                        "of scales is (log gives NaN; the change of variables needs "
                        "|det J|), and it under- or overflows for many coordinates; sum "
                        "log |a_i| instead",
                        _per_case(lambda a: torch.log(a.prod()), cases),
                    ),
                    Slip(
                        "log|prod(a)| is right in exact arithmetic, but the product of many "
                        "scales under- or overflows in floating point: sum log |a_i| "
                        "instead",
                        _per_case(lambda a: torch.log(a.prod().abs()), cases),
                    ),
                    Slip(
                        "torch.logdet gives NaN when the determinant is negative (an odd "
                        "number of negative scales); |det J| is what counts: sum log |a_i| "
                        "(a D x D matrix also costs O(D^2) memory and O(D^3) time)",
                        _per_case(lambda a: torch.logdet(torch.diag(a)), cases),
                    ),
                    Slip(
                        "you returned det(diag(a)) = prod(a); a flow needs the log of its "
                        "absolute value, sum log |a_i|",
                        _per_case(lambda a: a.prod(), cases),
                    ),
                    Slip(
                        "you returned sum(a); the log-det is the sum of the logs of the "
                        "scales' absolute values",
                        _per_case(lambda a: a.sum(), cases),
                    ),
                    Slip(
                        "you returned sum |a_i|; the log-det is the sum of log |a_i|",
                        _per_case(lambda a: a.abs().sum(), cases),
                    ),
                    Slip(
                        "you took |log a_i|, the absolute value of the log; the absolute value "
                        "belongs inside: log |a_i| (negative for |a_i| < 1)",
                        _per_case(lambda a: torch.log(a.abs()).abs().sum(), cases),
                    ),
                    Slip(
                        "you averaged log |a_i| over the coordinates; the log-det sums them",
                        _per_case(lambda a: torch.log(a.abs()).mean(), cases),
                    ),
                    Slip(
                        "log(a_i^2) = 2 log |a_i|: with the square, halve it",
                        _per_case(lambda a: torch.log(a**2).sum(), cases),
                    ),
                ],
            ),
        )
    scale = cases[2].clone().requires_grad_()
    check_gradients(
        _scalar_answer(run(affine_log_det, scale, name=name), name),
        {"the scales a": scale},
        f"{name}(a)",
    )
    compare_gradients(
        affine_log_det,
        lambda a: torch.log(a.abs()).sum(),
        [cases[2]],
        f"{name}(a)",
        wrt={0: "the scales a"},
        name=name,
    )
    print(
        "Correct: your log-det equals log|det| of the Jacobian diag(a): negative scales "
        "(an odd number of them too), long vectors, and gradients reach a."
    )


def _construct(layer_class: type[Transform], dim: int) -> Transform:
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
        raise ExerciseError(
            f"{name}.__init__ is not written yet: replace "
            "`raise NotImplementedError()` with your code"
        ) from None
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def _plain_tensors(layer: nn.Module) -> list[str]:
    """Tensor attributes of the layer that are not registered parameters or buffers."""
    registered = {id(t) for t in layer.parameters()} | {id(t) for t in layer.buffers()}
    return [
        key
        for key, value in vars(layer).items()
        if isinstance(value, Tensor) and id(value) not in registered
    ]


def _set_parameters(layer: nn.Module, value: float | Callable[[Tensor], Tensor]) -> None:
    """Set every parameter to ``value`` (a number, or a function of the parameter)."""
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(value(p) if callable(value) else torch.full_like(p, value))


def check_affine_layer(layer_class: type[Transform], dim: int = 3) -> None:
    """The repaired tutorial layer: ``layer_class(dim)`` must be an ``nfcourse.Transform``
    whose parameters are ``nn.Parameter``s that start at chosen values (the identity map),
    whose scale stays positive and nonzero for ANY parameter value (negative and zero
    included: a raw scale behind ``abs()`` reaches zero), whose log-det and inverse are
    right, whose parameters all receive gradients, and which composes with
    ``nfcourse.Compose``."""
    name = getattr(layer_class, "__name__", "your layer")
    layer = _construct(layer_class, dim)
    if not isinstance(layer, Transform):
        raise ExerciseError(
            f"{name} should subclass nfcourse.Transform (so that forward "
            f"returns (x, log_det) and checks its input); got a "
            f"{type(layer).__mro__[1].__name__} subclass"
        )
    params = dict(layer.named_parameters())
    plain = _plain_tensors(layer)
    if plain:
        raise ExerciseError(
            f"{name} keeps {', '.join(plain)} as a plain tensor: an optimizer only trains "
            "what layer.parameters() lists, so wrap it in nn.Parameter(...)"
        )
    if not params:
        raise ExerciseError(
            f"{name}({dim}) has no parameters: create the log-scale and the "
            "shift with nn.Parameter"
        )
    for pname, p in params.items():
        if not bool(torch.isfinite(p).all()):
            raise ExerciseError(
                f"parameter '{pname}' holds values that were never set: torch.Tensor(n) and "
                "torch.empty(n) allocate memory without initialising it; start from chosen "
                "values, for example torch.zeros(dim)"
            )
        if p.shape != (dim,):
            raise ExerciseError(
                f"parameter '{pname}' has shape {tuple(p.shape)}; each "
                f"parameter has one value per coordinate, shape ({dim},)"
            )
    layer = layer.double()
    z = torch.randn(6, dim, generator=_generator(0), dtype=F64)
    out = run(layer, z.clone(), name=f"{name}.forward")
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ExerciseError(
            f"{name}._forward should return a pair (x, log_det), got a {type(out).__name__}"
        )
    x = as_tensor(out[0], f"the x of {name}", (6, dim), ("batch", "coordinates"))
    log_det = as_tensor(out[1], f"the log-det of {name}", (6,), ("batch",))
    if not torch.allclose(x.detach().to(F64), z):
        raise ExerciseError(
            f"a fresh {name} should be the identity map (scale 1, shift 0, "
            "log-det 0): initialise the log-scale and the shift to zeros"
        )
    # The scale must stay positive and nonzero whatever values training gives the
    # parameters: a raw scale goes negative (log gives NaN) and, behind abs(), through zero.
    for value in (-1.5, 0.0):
        _set_parameters(layer, value)
        _, log_det = run(layer, z.clone(), name=f"{name}.forward")
        if not bool(torch.isfinite(log_det.detach()).all()):
            if value < 0:
                raise ExerciseError(
                    "with every parameter set to -1.5 your log-det is not finite: a raw scale "
                    "parameter turns negative during training and its log is NaN. Store the "
                    "log of the scale and use scale = exp(log_scale), positive for any real "
                    "parameter"
                )
            raise ExerciseError(
                "with every parameter set to 0 your log-det is infinite: the scale is 0 and "
                "the map is not invertible. A raw scale parameter with log|scale| (abs()) "
                "fixes the NaN of a negative scale but not the zero that training crosses "
                "on its way from positive to negative values. Store the log of the scale: "
                "scale = exp(log_scale) is positive for any real parameter"
            )
    g = _generator(1)
    _set_parameters(layer, lambda p: 0.7 * torch.randn(p.shape, generator=g, dtype=p.dtype))

    def log_det_slips(points: Tensor, expected: Tensor) -> list[Slip]:
        slips = [
            Slip(
                "the log-det averages the log-scales over the coordinates; sum them",
                expected / dim,
            )
        ]
        for pname, p in layer.named_parameters():
            p = p.detach()
            slips += [
                Slip(
                    f"the log-det sums exp({pname}), the scales; it is the sum of the log-scales",
                    torch.full_like(expected, float(torch.exp(p).sum())),
                ),
                Slip(
                    f"the log-det sums {pname}, but only the log-scale enters it",
                    torch.full_like(expected, float(p.sum()))
                    if float((p.sum() - expected[0]).abs()) > 1e-6
                    else None,
                ),
            ]
        return slips

    check_transform(
        layer, dim=dim, n=8, atol=1e-8, seed=3, quiet=True, log_det_slips=log_det_slips
    )
    z = torch.randn(8, dim, generator=g, dtype=F64)
    x, log_det = layer(z)
    named = dict(layer.named_parameters())
    check_gradients(x.sum() + log_det.sum(), named, f"{name}'s output and log-det")
    x_back, log_det_back = layer.inverse(x.detach().to(F64))
    check_gradients(x_back.sum() + log_det_back.sum(), named, f"{name}.inverse")
    x_ref = x.detach().to(F64)
    for what, value in (
        (f"the log-det of {name}.forward", lambda: layer(z)[1]),
        (f"the x of {name}.forward", lambda: layer(z)[0]),
        (f"the log-det of {name}.inverse", lambda: layer.inverse(x_ref)[1]),
        (f"the z of {name}.inverse", lambda: layer.inverse(x_ref)[0]),
    ):
        compare_gradients_numerically(
            value,
            named,
            what,
            advice="An optimizer follows the autograd gradient, so the log-det must be "
            "computed from the parameters with torch operations",
        )
    stack = Compose(layer, layer_class(dim).double(), ElementwiseAffine(dim, 2.0).double())
    with torch.no_grad():
        for p in stack.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    try:
        testing.check_log_det(stack, z, atol=1e-6)
    except AssertionError as error:
        raise ExerciseError(f"a stack of your layers in nfcourse.Compose fails: {error}") from None
    print(
        f"Correct: {name} starts at the identity, keeps its scale positive for any "
        "parameter value, has the right log-det and inverse, passes gradients to every "
        "parameter, and composes with nfcourse.Compose."
    )


def check_combine_affine(
    combine_affine: Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]],
) -> None:
    """``combine_affine(a1, b1, a2, b2) -> (a, b)`` with
    ``a * z + b = a2 * (a1 * z + b1) + b2`` for every ``z`` (scales of both signs)."""
    name = "combine_affine"
    g = _generator(2)
    a1, b1, a2, b2 = (2 * torch.randn(5, generator=g, dtype=F64) + 0.3 for _ in range(4))
    a1[0], a2[1] = -1.5, -0.7
    out = run(combine_affine, a1, b1, a2, b2, name=name)
    if not isinstance(out, tuple | list) or len(out) != 2:
        raise ExerciseError(f"{name} should return a pair (a, b), got a {type(out).__name__}")
    a = as_tensor(out[0], "the combined scale a", (5,))
    b = as_tensor(out[1], "the combined shift b", (5,))
    both = torch.cat([a.detach().to(F64), b.detach().to(F64)])
    pair = torch.cat
    compare(
        both,
        pair([a2 * a1, a2 * b1 + b2]),
        "your (a, b)",
        like=(a, b),
        labels=[f"a[{i}]" for i in range(5)] + [f"b[{i}]" for i in range(5)],
        groups={"the scale a": torch.arange(10) < 5, "the shift b": torch.arange(10) >= 5},
        slips=[
            Slip(
                "your scale is a1 + a2: applying the second map multiplies by a2 "
                "whatever the first produced, so the scales multiply, a = a2 * a1",
                pair([a1 + a2, a2 * b1 + b2]),
            ),
            Slip(
                "your shift is b1 + b2: the second map also scales the first map's "
                "shift, so b = a2 * b1 + b2",
                pair([a2 * a1, b1 + b2]),
            ),
            Slip(
                "your scale is a1 + a2 and your shift b1 + b2: affine maps compose by "
                "substitution, a2 (a1 z + b1) + b2",
                pair([a1 + a2, b1 + b2]),
            ),
            Slip(
                "you composed in the wrong order (map 2 first): x = a2 (a1 z + b1) + b2, "
                "so b = a2 * b1 + b2, not a1 * b2 + b1",
                pair([a2 * a1, a1 * b2 + b1]),
            ),
            Slip(
                "b = a2 * b1 + b2: the shift b2 is added after scaling, not scaled",
                pair([a2 * a1, a2 * (b1 + b2)]),
            ),
            Slip(
                "b = a2 * b1 + b2: it is b1 that the second map scales, not b2",
                pair([a2 * a1, b1 + a2 * b2]),
            ),
            Slip(
                "b = a2 * b1 + b2: the scale of map 2 multiplies b1, not a1's",
                pair([a2 * a1, a1 * b1 + b2]),
            ),
        ],
    )
    # Fold a stack of five layers with the student's function and compare with Compose.
    layers = [ElementwiseAffine(3).double() for _ in range(5)]
    with torch.no_grad():
        for layer in layers:
            layer.log_scale.copy_(0.4 * torch.randn(3, generator=g, dtype=F64))
            layer.shift.copy_(torch.randn(3, generator=g, dtype=F64))
        a = torch.ones(3, dtype=F64)
        b = torch.zeros(3, dtype=F64)
        for layer in layers:
            a, b = run(combine_affine, a, b, torch.exp(layer.log_scale), layer.shift, name=name)
        z = torch.randn(10, 3, generator=g, dtype=F64)
        x, _ = Compose(layers)(z)
    compare(a * z + b, x, "a * z + b, with (a, b) folded from five layers,", like=(a, b))
    print(
        "Correct: your (a, b) is the composed map, and folding five layers with it gives "
        "the same points as nfcourse.Compose."
    )


_CUBIC = {
    "det",
    "slogdet",
    "logdet",
    "lu",
    "lu_factor",
    "lu_factor_ex",
    "inv",
    "solve",
    "eig",
    "eigvals",
    "svd",
    "svdvals",
    "qr",
    "cholesky",
}


def _triangular_cases() -> list[Tensor]:
    """Lower-triangular matrices: an odd number (3) of negative diagonal entries; one
    negative 1 x 1; one with zeros below the diagonal and an entry of size below one; a
    200 x 200 matrix whose diagonal product underflows."""
    g = _generator(3)
    t6 = torch.tril(torch.randn(6, 6, generator=g, dtype=F64))
    t6.diagonal().copy_(torch.tensor([1.5, -0.4, 2.5, -3.0, -0.7, 1.2], dtype=F64))
    t1 = torch.tensor([[-0.3]], dtype=F64)
    t4 = torch.tril(torch.randn(4, 4, generator=g, dtype=F64))
    t4[2, :2] = 0.0
    t4.diagonal().copy_(torch.tensor([0.2, 4.0, -1.3, 0.9], dtype=F64))
    big = torch.tril(0.1 * torch.randn(200, 200, generator=g, dtype=F64))
    big.diagonal().copy_(torch.full((200,), 0.02, dtype=F64))
    big[0, 0] = -0.02
    return [t6, t1, t4, big]


def check_triangular_log_det(triangular_log_det: Callable[[Tensor], Tensor]) -> None:
    """``triangular_log_det(T)``: ``log |det T| = sum_i log |T_ii|`` for a lower-triangular
    ``T`` of shape ``(D, D)``, using only the diagonal (``O(D)``)."""
    name = "triangular_log_det"
    cases = _triangular_cases()
    recorder = _CallRecorder()
    answers = []
    for t in cases:
        with recorder:
            out = run(triangular_log_det, t.clone(), name=name)
        answers.append(_scalar_answer(out, name))
    got = torch.stack([a.detach().to(F64) for a in answers])
    expected = torch.stack([torch.linalg.slogdet(t)[1] for t in cases])
    odd = torch.tensor([bool((t.diagonal() < 0).sum() % 2) for t in cases])
    big = torch.tensor([len(t) > 100 for t in cases])

    def each(fn: Callable[[Tensor], Tensor]) -> Tensor | None:
        return _per_case(fn, cases)

    compare(
        got,
        expected,
        f"{name}(T)",
        like=answers,
        labels=[f"the {len(t)} x {len(t)} matrix" for t in cases],
        groups={
            "the matrices with an odd number of negative diagonal entries": odd,
            "the 200 x 200 matrix, whose diagonal product underflows": big,
        },
        large=big,
        nan_hint="a diagonal entry can be negative: take the log of |T_ii|",
        slips=_called_first(
            recorder,
            [
                Slip(
                    "the log of a negative diagonal entry is NaN: sum log |T_ii|",
                    each(lambda t: torch.log(t.diagonal()).sum()),
                ),
                Slip(
                    "log(prod(diag T)) fails twice: the product is negative when an odd "
                    "number of diagonal entries is (NaN), and the product of many entries "
                    "underflows; sum log |T_ii|",
                    each(lambda t: torch.log(t.diagonal().prod())),
                ),
                Slip(
                    "log|prod(diag T)| is right in exact arithmetic, but the product of many "
                    "entries underflows: sum log |T_ii| instead",
                    each(lambda t: torch.log(t.diagonal().prod().abs())),
                ),
                Slip(
                    "torch.logdet is NaN for a negative determinant (and costs O(D^3)): "
                    "sum log |T_ii| over the diagonal",
                    each(torch.logdet),
                ),
                Slip(
                    "you returned the sum of the diagonal entries (the trace); the log-det "
                    "is the sum of their logs, log |T_ii|",
                    each(lambda t: t.diagonal().sum()),
                ),
                Slip(
                    "you returned the sum of |T_ii|; the log-det is the sum of log |T_ii|",
                    each(lambda t: t.diagonal().abs().sum()),
                ),
                Slip(
                    "you summed log|T_ij| over the whole triangle; only the diagonal enters "
                    "the determinant of a triangular matrix",
                    each(lambda t: torch.log(t.abs() + (t == 0)).sum()),
                ),
                Slip(
                    "you took |log T_ii|: the absolute value belongs inside the log, "
                    "log |T_ii| (negative for |T_ii| < 1)",
                    each(lambda t: torch.log(t.diagonal().abs()).abs().sum()),
                ),
                Slip(
                    "you averaged log |T_ii|; the log-det sums them",
                    each(lambda t: torch.log(t.diagonal().abs()).mean()),
                ),
                Slip(
                    "you returned det T itself; the log-det is log |det T| = sum log |T_ii|",
                    each(lambda t: t.diagonal().prod()),
                ),
            ],
        ),
    )
    cubic = sorted(recorder.names & _CUBIC)
    if cubic:
        raise ExerciseError(
            f"the value is right, but {name} calls {', '.join(cubic)}, which "
            "costs O(D^3) for a D x D matrix; read the diagonal instead (O(D))"
        )
    t = cases[0].clone().requires_grad_()
    check_gradients(
        _scalar_answer(run(triangular_log_det, t, name=name), name),
        {"the diagonal of T": t},
        f"{name}(T)",
    )
    compare_gradients(
        triangular_log_det,
        lambda t: torch.log(t.diagonal().abs()).sum(),
        [cases[0]],
        f"{name}(T)",
        wrt={0: "the matrix T"},
        name=name,
    )
    print(
        "Correct: your log-det matches torch.linalg.slogdet (negative entries, an odd "
        "number of them, a 200 x 200 matrix) and reads only the diagonal."
    )


# --- Exercise: fit a correlated Gaussian with an LU flow, with your own training loop -------


LU_GOAL = Goal(0.02, steps=300)


def check_fit_lu(fit_lu: Callable[[Tensor], tuple[Flow, list[float]]], seed: int = 0) -> None:
    """Exercise: the student's ``fit_lu(data)`` fits an LU flow to 1,000 points of
    ``nfcourse.densities.CorrelatedGaussian`` with a hand-written loop of
    ``torch.optim.Adam`` and returns ``(flow, history)``; the flow must reach
    ``KL(p || q) < 0.02`` nats within 300 steps."""
    target = CorrelatedGaussian()
    data = target.sample(1000, seed=seed, dtype=torch.get_default_dtype())

    def limitation(flow: Flow) -> str | None:
        if any(isinstance(m, LUAffine | TriangularAffine) for m in flow.modules()):
            return None
        return (
            "no layer of your flow mixes the coordinates: an elementwise affine map only "
            "scales and shifts each axis, so it cannot make correlated data; LUAffine "
            "(W = P L U) can"
        )

    check_fit(
        fit_lu,
        data.clone(),
        name="fit_lu",
        goal=LU_GOAL,
        target=target,
        seed=seed,
        subject="your LU flow reaches",
        loss=lambda flow: mean_nll(flow, data),
        slips=lambda flow, loss: [
            (
                -loss,
                "your loss is the mean log-likelihood, not its "
                "negative: the optimiser minimises, so the loss is "
                "-flow.log_prob(x).mean()",
            )
        ],
        went_up=(
            "did you call optimizer.zero_grad() before every backward()? Without it "
            "the gradients of all past steps pile up. (A learning rate that is too "
            "large, or a step along the gradient instead of against it, does the same.)"
        ),
        limitation=limitation,
    )
