"""Shared machinery of the exercises that build a model and train it.

The student's function builds a model from package parts, trains it and returns
``(model, history)``: the trained model and the loss of every step. ``check_fit`` runs it
reproducibly within a step budget, measures the outcome against the truth (a KL divergence
on fresh points of the target density, or another measure on data the student never saw)
and, when the goal is missed, reads the evidence left behind (the loss history, the
parameters and their gradients, the value of the student's loss next to the values that
known slips would give) to name the likely cause. Each chapter's ``check_fit_*`` is one call
of it with its target, its goal and its slips.

The random state is forked around the student's function (``torch.random.fork_rng``): the
run is seeded and repeatable, and the caller's global random state is left as it was.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..core import Flow
from ..densities import ToyDensity
from ..targets import exact_reverse_kl
from ..training import TrainingDiverged
from ..validation import check_positive_int
from ._toolkit import ExerciseError, explain_error, run

__all__ = [
    "BELOW_ENTROPY",
    "FORWARD_KL",
    "Goal",
    "LR_HINT",
    "Measurement",
    "REVERSE_KL",
    "SIGN_SLIP",
    "WENT_UP",
    "check_fit",
    "describe_shortfall",
    "fresh_kl",
    "history_of",
    "mean_nll",
    "measure_fit",
    "require_registered",
    "run_training",
    "safe_value",
]


class Density(Protocol):
    """A target density: ``sample(n, seed=..., dtype=...)`` and an exact ``log_prob``."""

    def sample(self, n: int, seed: int | None = 0, dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` seeded samples of shape ``(n, D)`` in ``dtype``."""

    def log_prob(self, x: Tensor) -> Tensor:
        """The exact ``log p(x)``, shape ``(B,)``, for ``x`` of shape ``(B, D)``."""


#: A target: a density of ``nfcourse.densities`` (sampled, with an exact log-density), or
#: an unnormalised log-density ``log p~(x)`` of shape ``(B,)`` for ``x`` ``(B, D)``.
Target = Density | Callable[[Tensor], Tensor]

LR_HINT = (
    "the learning rate is probably too large (try a smaller one, for example a "
    "tenth), or the data reach a region where the model is not defined"
)


#: What a negative log-likelihood below the entropy of the data means, during training
#: (``run_training``'s ``floor``) and in the loss the flow ends with (``describe_shortfall``).
BELOW_ENTROPY = (
    "an honest negative log-likelihood cannot go below the entropy of the data; "
    "is the sign of your loss right?"
)
#: The slip named when the loss equals minus the model's negative log-likelihood.
SIGN_SLIP = "your loss is the mean log-likelihood, not its negative"


def fresh_kl(
    target: Density, model: Any, seed: int, n: int = 20_000, action: str = "evaluating your flow"
) -> tuple[float, float]:
    """``KL(p || q)`` and its standard error on ``n`` fresh points of ``target`` (as
    ``ToyDensity.kl_divergence``, for any density with ``sample`` and ``log_prob``), with a
    model that fails on them reported as the student's."""
    kl_divergence = getattr(target, "kl_divergence", None)
    if kl_divergence is None:
        kl_divergence = functools.partial(ToyDensity.kl_divergence, target)
    try:
        return kl_divergence(model, n=n, seed=seed)
    except Exception as failure:  # the model cannot evaluate fresh points
        raise ExerciseError(
            f"{action} on fresh points failed: {type(failure).__name__}: {failure}"
        ) from None


def mean_nll(flow: nn.Module, data: Tensor) -> float:
    """The flow's mean negative log-likelihood of ``data``, in the flow's dtype."""
    x = data.to(next(iter(flow.parameters()), data).dtype)
    with torch.no_grad():
        return float(-flow.log_prob(x).mean())


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def history_of(history: object, name: str, budget: int) -> list[float]:
    """The loss history as a list of floats, with checks on its type and length."""
    if isinstance(history, Tensor):
        history = history.detach().flatten().tolist()
    if not isinstance(history, (list, tuple)):
        raise ExerciseError(
            f"{name} should return (model, history) with history the list of losses of "
            f"every step (what nfcourse.train returns); got {type(history).__name__}"
        )
    values = []
    for v in history:
        if isinstance(v, Tensor):
            if v.numel() != 1:
                raise ExerciseError(
                    f"every entry of the history should be one number, got a tensor of shape "
                    f"{tuple(v.shape)}: record loss.item() at every step"
                )
            v = v.item()
        values.append(float(v))
    if not values:
        raise ExerciseError(f"the history {name} returned is empty: did the training run?")
    if len(values) > budget:
        raise ExerciseError(
            f"{name} trained for {len(values)} steps; the budget is {budget}. Reach the goal "
            "within the budget (a larger learning rate helps more than more steps)"
        )
    return values


def _diverged_message(text: str, floor: tuple[float, str] | None) -> str:
    """Why ``nfcourse.train`` stopped: a loss that ran off below the lowest value the true
    loss can take points at a sign error, one that grew without bound at a loss the
    optimiser cannot descend, anything else (NaN) at the learning rate."""
    summary = re.sub(r"^training diverged: ", "", text.split(". Likely causes")[0].split(";")[0])
    last = re.search(r"last finite loss: ([-+0-9.e]+|inf|nan)", text)
    value = float(last.group(1)) if last else math.nan
    ran_off = "became -inf" in text or (
        floor is not None and math.isfinite(value) and value < floor[0] - max(1.0, abs(floor[0]))
    )
    if floor is not None and ran_off:
        return (
            f"training diverged: {summary}. The loss ran off far below "
            f"{floor[0]:.4g}, the lowest value the true loss can take: {floor[1]}. A "
            "loss with the wrong overall sign (the mean log-likelihood, not its negative, "
            "or a KL with its sign flipped) runs off the same way"
        )
    if math.isfinite(value) and value > 1e6:
        return (
            f"training diverged: {summary}. The loss grew without bound instead of "
            "falling: the optimiser is not descending the loss you meant. Check that "
            "every term reaches the parameters through the flow (a sample that is "
            "detached, or drawn without gradients, leaves a term the optimiser cannot "
            f"see), and the signs of the terms; otherwise {LR_HINT}"
        )
    return f"training diverged: {summary}. NaN during training: {LR_HINT}"


def run_training(
    fn: Callable[..., object],
    *args: object,
    name: str,
    budget: int,
    model_type: type | tuple[type, ...],
    model_hint: str,
    seed: int = 0,
    floor: tuple[float, str] | None = None,
) -> tuple[Any, list[float]]:
    """Call ``fn(*args)`` with the random state forked and seeded; check that it returns
    ``(model, history)``; turn a diverged or crashed run into a message that says why
    (``floor``: the lowest value the true loss can take and what falling below it means)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            out = run(fn, *args, name=name, passthrough=(Exception,))
        except ExerciseError:
            raise
        except TrainingDiverged as error:
            raise ExerciseError(_diverged_message(str(error), floor)) from None
        except Exception as error:  # the student's code failed: say what and where
            message = _first_line(error)
            if "does not require grad" in message:
                raise ExerciseError(
                    f"{name} stopped with {type(error).__name__}: {message}. The loss has no "
                    "gradient: it was computed under torch.no_grad() or from detached "
                    "values, or the model's tensors are not nn.Parameters"
                ) from None
            if "non-finite" in message or "nan" in message.lower().split():
                raise ExerciseError(
                    f"{name} stopped with {type(error).__name__}: {message}. Values became "
                    f"NaN or inf during training: {LR_HINT}"
                ) from None
            raise ExerciseError(explain_error(error, name)) from None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ExerciseError(
            f"{name} should return the pair (model, history), got {type(out).__name__}"
        )
    model, history = out
    if not isinstance(model, model_type):
        raise ExerciseError(
            f"the model {name} returns should be {model_hint}, got {type(model).__name__}"
        )
    return model, history_of(history, name, budget)


def _unregistered_tensors(model: nn.Module) -> list[str]:
    """Tensors that require gradients but are plain attributes, not ``nn.Parameter``s."""
    found = []
    for prefix, module in model.named_modules():
        for key, value in vars(module).items():
            if (
                isinstance(value, Tensor)
                and not isinstance(value, nn.Parameter)
                and value.requires_grad
                and value.is_leaf
            ):
                found.append(f"{prefix}.{key}" if prefix else key)
    return found


def require_registered(model: nn.Module) -> None:
    """Raise ``ExerciseError`` when the model holds trainable tensors that are not
    registered as parameters."""
    plain = _unregistered_tensors(model)
    if plain:
        raise ExerciseError(_unregistered_message(plain))


def _unregistered_message(plain: list[str]) -> str:
    """Why tensors that are not ``nn.Parameter``s never train."""
    return (
        f"{', '.join(plain)} require gradients but are plain tensors, not "
        "nn.Parameter: the module does not register them, so model.parameters() "
        "and the optimiser never see them. Wrap them in nn.Parameter(...)"
    )


def _parameters_without_gradient(model: nn.Module) -> list[str]:
    """Parameters the loss did not reach, when the loss reached others (after a run, the
    last step's gradients are still in ``.grad``)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not any(p.grad is not None for _, p in named):
        return []
    return [n for n, p in named if p.grad is None]


def _parameters_left_at_zero(model: nn.Module) -> list[str]:
    """Parameters that start at zero in the package's layers, have a non-zero gradient,
    and are still exactly zero: the optimiser never updated them."""
    return [
        n
        for n, p in model.named_parameters()
        if p.grad is not None
        and bool((p.detach() == 0).all())
        and float(p.grad.detach().abs().max()) > 0
    ]


def _close(a: float, b: float, rtol: float = 0.05, atol: float = 0.05) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= atol + rtol * abs(b)


def describe_shortfall(
    history: Sequence[float],
    model: nn.Module,
    loss_value: float | None = None,
    slips: Iterable[tuple[float, str]] = (),
    floor: tuple[float, str] | None = None,
    went_up: str = "check the sign of your loss and of the update",
    model_hint: str | None = None,
    fallback: str = "",
    budget: int | None = None,
) -> str:
    """The likely cause of a missed goal, from the evidence, most specific first.

    Args:
        history: the loss of every step.
        model: the trained model.
        loss_value: the correct loss evaluated at the trained model, comparable with the
            last entry of ``history`` (``None``: not comparable).
        slips: ``(value, message)``: what the loss of a known slip evaluates to at the
            trained model; the first one that the last loss matches, while the correct
            loss does not, is named.
        floor: ``(value, message)``: the lowest value an honest loss can take; a history
            that falls clearly below it names the message.
        went_up: the hint when the loss rose over the run.
        model_hint: a reason the model cannot reach the goal whatever the training (for
            example a family that lacks the needed shape), or ``None``.
        fallback: said when nothing more specific fits.
        budget: the step budget; a run that used at most half of it is named.
    """
    h = list(history)
    for step, value in enumerate(h):
        if not math.isfinite(value):
            return f"the loss became {value} at step {step}: {LR_HINT}"
    plain = _unregistered_tensors(model)
    if plain:
        return _unregistered_message(plain)
    unreached = _parameters_without_gradient(model)
    if unreached:
        return (
            f"the loss never reaches the parameters {', '.join(unreached[:4])}: no "
            "gradient arrives there (is a value detached, computed under "
            "torch.no_grad(), or taken from another module than the one you return?)"
        )
    first, last = h[0], h[-1]
    if len(h) > 1 and abs(last - first) <= 1e-6 * (1 + abs(first)):
        return (
            f"the loss did not move ({first:.4g} at the start, {last:.4g} at the end): "
            "are the parameters registered with the optimiser (nn.Parameter, and "
            "model.parameters() passed to it), and does the loss depend on them?"
        )
    stuck = _parameters_left_at_zero(model)
    if stuck:
        return (
            f"the parameters {', '.join(stuck[:4])} have gradients but never changed: "
            "they are not in the optimiser. Pass all of model.parameters() to it"
        )
    if last > first + max(0.05, 0.01 * abs(first)):
        return f"the loss went up, from {first:.4g} to {last:.4g}: {went_up}"
    if loss_value is not None and not _close(last, loss_value):
        for value, message in slips:
            if _close(last, value):
                return message
    if floor is not None:
        value, message = floor
        if min(h) < value - max(0.1, 0.02 * abs(value)):
            return (
                f"your loss fell to {min(h):.4g}, below {value:.4g}, the lowest value "
                f"the true loss can take: {message}"
            )
    if model_hint:
        return model_hint
    n = len(h)
    if budget is not None and n <= budget // 2:
        return (
            f"you trained for only {n} of the {budget} steps allowed, and the loss "
            "had not settled: train for more steps, or with a larger learning rate"
        )
    if n >= 20:
        tail = sum(h[-n // 10 :]) / len(h[-n // 10 :])
        before = sum(h[-2 * (n // 10) : -(n // 10)]) / (n // 10)
        if before - tail > 0.005 * (1 + abs(tail)):
            return (
                f"the loss was still falling when training stopped ({before:.4g} -> "
                f"{tail:.4g} over the last tenth of the run): train for more steps "
                "(within the budget) or with a larger learning rate"
            )
    return fallback or (
        "the loss settled above the goal: try a larger model, a different "
        "learning rate, or more steps within the budget"
    )


# --- one build-and-train check -------------------------------------------------------------

#: The hint when the loss rose over the run, for a loss that is minimised.
WENT_UP = "is the sign of your loss right, and the learning rate not too large?"

#: How ``Goal`` phrases a forward KL ``KL(p || q)`` on fresh points of the target.
FORWARD_KL = (
    "{subject} KL(p || q) = {value:.{digits}f}{error} nats on {n:,} fresh points",
    "{subject} KL(p || q) = {value:.4g} nats on fresh points",
)
#: How ``Goal`` phrases the exact reverse KL ``KL(q || p)`` on samples of the flow.
REVERSE_KL = (
    "{subject} KL(q || p) = {value:.{digits}f}{error} nats on {n:,} samples of your flow",
    "{subject} KL(q || p) = {value:.4g} nats{note}",
)


@dataclass(frozen=True)
class Goal:
    """What a training exercise asks for: a measure of the trained model below ``value``
    (above it when ``higher``) within ``steps`` optimisation steps, measured on ``n`` fresh
    points.

    ``phrases`` = ``(reached, missed)`` are templates for the verdict, formatted with
    ``subject``, ``value``, ``error`` (`` ± 0.0012``, or empty without a standard error),
    ``digits``, ``n`` and ``note`` (why the measure failed, or empty). ``nonnegative``: the
    measure cannot be negative (a KL divergence), so an estimate clearly below zero means the
    model's density does not integrate to one.
    """

    value: float
    steps: int
    n: int = 20_000
    higher: bool = False
    phrases: tuple[str, str] = FORWARD_KL
    digits: int = 4
    nonnegative: bool = True

    def __post_init__(self) -> None:
        check_positive_int(self.steps, "steps")
        check_positive_int(self.n, "n")

    def met_by(self, measured: Measurement) -> bool:
        """Whether ``measured`` is finite, on the right side of the goal and possible."""
        value = measured.value
        if not math.isfinite(value) or self.impossible(measured):
            return False
        return value > self.value if self.higher else value < self.value

    def impossible(self, measured: Measurement) -> bool:
        """A measure that cannot be negative, estimated clearly below zero."""
        return (
            self.nonnegative
            and math.isfinite(measured.value)
            and measured.value < -3 * (measured.error or 0.0)
        )

    def phrase(self, measured: Measurement, subject: str, reached: bool) -> str:
        """The sentence that states the measured value (see the class docstring)."""
        template = self.phrases[0 if reached else 1]
        error = "" if measured.error is None else f" ± {measured.error:.{self.digits}f}"
        return template.format(
            subject=subject,
            value=measured.value,
            error=error,
            digits=self.digits,
            n=self.n,
            note=measured.note,
        )


@dataclass(frozen=True)
class Measurement:
    """A measured outcome: ``value``, its standard error (``None`` when not estimated) and
    ``note``, a remark on a measurement that failed (for example a flow that cannot be
    sampled)."""

    value: float
    error: float | None = None
    note: str = ""


def measure_fit(
    model: Any, target: Target, n: int = 20_000, seed: int = 0, log_z: float | None = None
) -> Measurement:
    """How close ``model`` is to ``target``, with its standard error.

    For a density with ``sample`` and ``log_prob``: ``KL(p || q)``, the mean of
    ``log p(x) - log q(x)`` on ``n`` fresh points ``x ~ p`` (``fresh_kl``). For an
    unnormalised log-density ``log p~`` with normaliser ``log_z``: the exact reverse
    ``KL(q || p) = E_q[log q(x) - log p~(x)] + log Z`` on ``n`` samples of the flow; a flow
    that cannot be sampled measures NaN, with the failure in ``note``.
    """
    n = check_positive_int(n, "n")
    if callable(getattr(target, "sample", None)):
        return Measurement(*fresh_kl(target, model, seed=seed, n=n))
    if log_z is None:
        raise ValueError(
            "log_z must be given for a target that is a log-density function: "
            "the reverse KL needs the normaliser log Z of exp(log p~)"
        )
    try:
        kl, error = exact_reverse_kl(model, lambda x: -target(x), log_z, n=n, seed=seed)
    except Exception as failure:  # a broken flow cannot even be sampled
        return Measurement(
            math.nan, None, f" (sampling it failed: {type(failure).__name__}: {failure})"
        )
    return Measurement(kl, error)


def safe_value(fn: Callable[[], object]) -> float:
    """``float(fn())`` without gradients (a loss value at the trained model), or NaN when it
    cannot be evaluated."""
    try:
        with torch.no_grad():
            return float(fn())
    except Exception:  # a candidate that fails to evaluate matches nothing
        return math.nan


def check_fit(
    fit: Callable[..., object],
    *args: object,
    name: str,
    goal: Goal,
    target: Target | None = None,
    log_z: float | None = None,
    seed: int = 0,
    model_type: type | tuple[type, ...] = Flow,
    model_hint: str = "the nfcourse.Flow you trained",
    floor: tuple[float, str] | None = None,
    inspect: Callable[[Any], None] | None = None,
    measure: Callable[[Any], Measurement] | None = None,
    loss: Callable[[Any], float] | None = None,
    slips: Callable[[Any, float], Iterable[tuple[float, str]]] | None = None,
    diagnose: Callable[[Any, list[float], Measurement], str | None] | None = None,
    went_up: str = WENT_UP,
    limitation: Callable[[Any], str | None] | None = None,
    fallback: str = "",
    subject: str = "your flow reaches",
) -> tuple[Any, list[float], Measurement]:
    """Run the student's ``fit(*args)`` within ``goal.steps`` steps, measure the model it
    returns and print the verdict, or raise ``ExerciseError`` naming the likely mistake.

    Args:
        fit: the student's function; it returns ``(model, history)``.
        args: what ``fit`` is called with (the training data, a generator, a log-density).
        name: the name of ``fit`` in messages.
        goal: the value to reach, the step budget and how to phrase the outcome.
        target: what the model should match (see ``measure_fit``), measured on
            ``goal.n`` fresh points drawn with the seed ``10_000 + seed``.
        log_z: the normaliser of a ``target`` that is an unnormalised log-density.
        seed: seeds the run (the random state is forked around it).
        model_type, model_hint: what the model must be, and how to say it.
        floor: ``(value, message)``: the lowest value the true loss can take and what a
            loss below it means (a wrong sign); named when training diverges below it or
            the history falls below it.
        inspect: called with the model before the measure; raises ``ExerciseError`` for a
            model that is not what the exercise asks (a missing layer, a wrong shape).
        measure: the model's score, instead of ``measure_fit`` on ``target``.
        loss: the correct loss at the trained model, comparable with the history.
        slips: ``(model, loss) -> [(value, message), ...]``: what the loss of each known
            slip evaluates to; the one the history ends at is named. Without it, and with
            ``loss``, the slip named is a loss of the wrong sign.
        diagnose: ``(model, history, measurement) -> reason or None``: the exercise's own
            evidence, tried before the generic evidence of ``describe_shortfall``.
        went_up: the hint when the loss rose over the run.
        limitation: ``model -> reason or None``: why this model cannot reach the goal
            whatever the training (a family that lacks the needed shape).
        fallback: said when nothing more specific fits.
        subject: how the verdict names the model ("your flow reaches").

    Returns:
        ``(model, history, measurement)`` when the goal is met.
    """
    model, history = run_training(
        fit,
        *args,
        name=name,
        budget=goal.steps,
        model_type=model_type,
        model_hint=model_hint,
        seed=seed,
        floor=floor,
    )
    if inspect is not None:
        inspect(model)
    if measure is not None:
        measured = measure(model)
    elif target is not None:
        measured = measure_fit(model, target, n=goal.n, seed=10_000 + seed, log_z=log_z)
    else:
        raise ValueError("check_fit needs a target or a measure")
    if goal.met_by(measured):
        side = "above" if goal.higher else "below"
        print(
            f"Correct: {goal.phrase(measured, subject, reached=True)} (goal: {side} "
            f"{goal.value}) after {len(history)} steps."
        )
        return model, history, measured
    reason = diagnose(model, history, measured) if diagnose is not None else None
    if reason is None:
        loss_value = None if loss is None else safe_value(lambda: loss(model))
        if slips is not None:
            try:
                known = list(slips(model, math.nan if loss_value is None else loss_value))
            except Exception:  # slips that cannot be evaluated on this model match nothing
                known = []
        else:
            known = [] if loss_value is None else [(-loss_value, SIGN_SLIP)]
        reason = describe_shortfall(
            history,
            model,
            budget=goal.steps,
            loss_value=loss_value,
            slips=known,
            floor=floor,
            went_up=went_up,
            model_hint=limitation(model) if limitation is not None else None,
            fallback=fallback,
        )
    if goal.impossible(measured):
        reason = (
            "a KL divergence cannot be negative: your flow's log_prob does not "
            "integrate to one. " + reason
        )
    side = "above" if goal.higher else "below"
    raise ExerciseError(
        f"{goal.phrase(measured, subject, reached=False)}; the goal is "
        f"{side} {goal.value}. Likely cause: {reason}"
    )
