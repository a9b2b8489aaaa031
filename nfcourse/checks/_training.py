"""Shared machinery of the exercises that build a model and train it.

The student's function builds a model from package parts, trains it and returns
``(model, history)``: the trained model and the loss of every step. A check runs it
reproducibly, measures the outcome against the truth (a KL divergence or an ELBO on data
the student never saw) and, when the goal is missed, reads the evidence left behind (the
loss history, the parameters and their gradients, the value of the student's loss next to
the values that known slips would give) to name the likely cause.

The random state is forked around the student's function (``torch.random.fork_rng``): the
run is seeded and repeatable, and the caller's global random state is left as it was.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from ..training import TrainingDiverged
from . import ExerciseError
from ._toolkit import explain_error, run

__all__ = [
    "run_training",
    "history_of",
    "describe_shortfall",
    "require_registered",
    "fresh_kl",
    "reached_kl_goal",
    "mean_nll",
    "BELOW_ENTROPY",
    "STAYED_BELOW_ENTROPY",
    "SIGN_SLIP",
]

LR_HINT = ("the learning rate is probably too large (try a smaller one, for example a "
           "tenth), or the data reach a region where the model is not defined")


#: What a negative log-likelihood below the entropy of the data means, during training
#: (``run_training``'s ``floor``) and in the loss the flow ends with (``describe_shortfall``).
BELOW_ENTROPY = ("an honest negative log-likelihood cannot go below the entropy of the data; "
                 "is the sign of your loss right?")
STAYED_BELOW_ENTROPY = ("an honest negative log-likelihood cannot stay below the entropy of "
                        "the data")
#: The slip named when the loss equals minus the model's negative log-likelihood.
SIGN_SLIP = "your loss is the mean log-likelihood, not its negative"


def fresh_kl(target, model, seed: int, n: int = 20_000,
             action: str = "evaluating your flow") -> tuple[float, float]:
    """``target.kl_divergence(model)`` on ``n`` fresh points (a toy density of
    ``nfcourse.densities``), with a model that fails on them reported as the student's."""
    try:
        return target.kl_divergence(model, n=n, seed=seed)
    except Exception as failure:  # the model cannot evaluate fresh points
        raise ExerciseError(f"{action} on fresh points failed: "
                            f"{type(failure).__name__}: {failure}") from None


def reached_kl_goal(kl: float, error: float | None, goal: float, steps: int,
                    n: int = 20_000, subject: str = "your flow reaches",
                    digits: int = 4) -> bool:
    """Print the verdict and return ``True`` when ``kl`` is finite and below ``goal``."""
    if not (math.isfinite(kl) and kl < goal):
        return False
    spread = "" if error is None else f" ± {error:.{digits}f}"
    print(f"Correct: {subject} KL(p || q) = {kl:.{digits}f}{spread} nats on {n:,} fresh "
          f"points (goal: below {goal}) after {steps} steps.")
    return True


def mean_nll(flow: nn.Module, data: Tensor) -> float:
    """The flow's mean negative log-likelihood of ``data``, in the flow's dtype."""
    x = data.to(next(iter(flow.parameters()), data).dtype)
    with torch.no_grad():
        return float(-flow.log_prob(x).mean())


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def history_of(history, name: str, budget: int) -> list[float]:
    """The loss history as a list of floats, with checks on its type and length."""
    if isinstance(history, Tensor):
        history = history.detach().flatten().tolist()
    if not isinstance(history, (list, tuple)):
        raise ExerciseError(
            f"{name} should return (model, history) with history the list of losses of "
            f"every step (what nfcourse.train returns); got {type(history).__name__}")
    values = []
    for v in history:
        if isinstance(v, Tensor):
            if v.numel() != 1:
                raise ExerciseError(
                    f"every entry of the history should be one number, got a tensor of shape "
                    f"{tuple(v.shape)}: record loss.item() at every step")
            v = v.item()
        values.append(float(v))
    if not values:
        raise ExerciseError(f"the history {name} returned is empty: did the training run?")
    if len(values) > budget:
        raise ExerciseError(
            f"{name} trained for {len(values)} steps; the budget is {budget}. Reach the goal "
            "within the budget (a larger learning rate helps more than more steps)")
    return values


def _diverged_message(text: str, floor: tuple[float, str] | None) -> str:
    """Why ``nfcourse.train`` stopped: a loss that ran off below the lowest value the true
    loss can take points at a sign error, one that grew without bound at a loss the
    optimiser cannot descend, anything else (NaN) at the learning rate."""
    summary = re.sub(r"^training diverged: ", "", text.split(". Likely causes")[0].split(";")[0])
    last = re.search(r"last finite loss: ([-+0-9.e]+|inf|nan)", text)
    value = float(last.group(1)) if last else math.nan
    ran_off = "became -inf" in text or (floor is not None and math.isfinite(value)
                                        and value < floor[0] - max(1.0, abs(floor[0])))
    if floor is not None and ran_off:
        return (f"training diverged: {summary}. The loss ran off far below "
                f"{floor[0]:.4g}, the lowest value the true loss can take: {floor[1]}. A "
                "loss with the wrong overall sign (the mean log-likelihood, not its negative, "
                "or a KL with its sign flipped) runs off the same way")
    if math.isfinite(value) and value > 1e6:
        return (f"training diverged: {summary}. The loss grew without bound instead of "
                "falling: the optimiser is not descending the loss you meant. Check that "
                "every term reaches the parameters through the flow (a sample that is "
                "detached, or drawn without gradients, leaves a term the optimiser cannot "
                f"see), and the signs of the terms; otherwise {LR_HINT}")
    return f"training diverged: {summary}. NaN during training: {LR_HINT}"


def held_out_kl(flow: nn.Module, test: Tensor, log_p: Tensor) -> float:
    """KL(p || q) in nats, estimated on fresh float64 points ``test`` drawn from p, whose
    exact log-density there is ``log_p``: the mean of log p - log q, with q evaluated in the
    flow's own dtype."""
    dtype = next(iter(flow.parameters()), test).dtype
    with torch.no_grad():
        log_q = flow.log_prob(test.to(dtype)).double()
    return float((log_p - log_q).mean())


def run_training(fn: Callable, *args, name: str, budget: int, model_type: type | tuple,
                 model_hint: str, seed: int = 0,
                 floor: tuple[float, str] | None = None) -> tuple[nn.Module, list[float]]:
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
                    "values, or the model's tensors are not nn.Parameters") from None
            if "non-finite" in message or "nan" in message.lower().split():
                raise ExerciseError(
                    f"{name} stopped with {type(error).__name__}: {message}. Values became "
                    f"NaN or inf during training: {LR_HINT}") from None
            raise ExerciseError(explain_error(error, name)) from None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ExerciseError(
            f"{name} should return the pair (model, history), got {type(out).__name__}")
    model, history = out
    if not isinstance(model, model_type):
        raise ExerciseError(
            f"the model {name} returns should be {model_hint}, got {type(model).__name__}")
    return model, history_of(history, name, budget)


def _unregistered_tensors(model: nn.Module) -> list[str]:
    """Tensors that require gradients but are plain attributes, not ``nn.Parameter``s."""
    found = []
    for prefix, module in model.named_modules():
        for key, value in vars(module).items():
            if (isinstance(value, Tensor) and not isinstance(value, nn.Parameter)
                    and value.requires_grad and value.is_leaf):
                found.append(f"{prefix}.{key}" if prefix else key)
    return found


def require_registered(model: nn.Module) -> None:
    """Raise ``ExerciseError`` when the model holds trainable tensors that are not
    registered as parameters."""
    plain = _unregistered_tensors(model)
    if plain:
        raise ExerciseError(_unregistered_message(plain))


def _unregistered_message(plain: list[str]) -> str:
    return (f"{', '.join(plain)} require gradients but are plain tensors, not "
            "nn.Parameter: the module does not register them, so model.parameters() "
            "and the optimiser never see them. Wrap them in nn.Parameter(...)")


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
    return [n for n, p in model.named_parameters()
            if p.grad is not None and bool((p.detach() == 0).all())
            and float(p.grad.detach().abs().max()) > 0]


def _close(a: float, b: float, rtol: float = 0.05, atol: float = 0.05) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= atol + rtol * abs(b)


def describe_shortfall(
    history: Sequence[float], model: nn.Module,
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
        return (f"the loss never reaches the parameters {', '.join(unreached[:4])}: no "
                "gradient arrives there (is a value detached, computed under "
                "torch.no_grad(), or taken from another module than the one you return?)")
    first, last = h[0], h[-1]
    if len(h) > 1 and abs(last - first) <= 1e-6 * (1 + abs(first)):
        return (f"the loss did not move ({first:.4g} at the start, {last:.4g} at the end): "
                "are the parameters registered with the optimiser (nn.Parameter, and "
                "model.parameters() passed to it), and does the loss depend on them?")
    stuck = _parameters_left_at_zero(model)
    if stuck:
        return (f"the parameters {', '.join(stuck[:4])} have gradients but never changed: "
                "they are not in the optimiser. Pass all of model.parameters() to it")
    if last > first + max(0.05, 0.01 * abs(first)):
        return f"the loss went up, from {first:.4g} to {last:.4g}: {went_up}"
    if loss_value is not None and not _close(last, loss_value):
        for value, message in slips:
            if _close(last, value):
                return message
    if floor is not None:
        value, message = floor
        if min(h) < value - max(0.1, 0.02 * abs(value)):
            return (f"your loss fell to {min(h):.4g}, below {value:.4g}, the lowest value "
                    f"the true loss can take: {message}")
    if model_hint:
        return model_hint
    n = len(h)
    if budget is not None and n <= budget // 2:
        return (f"you trained for only {n} of the {budget} steps allowed, and the loss "
                "had not settled: train for more steps, or with a larger learning rate")
    if n >= 20:
        tail = sum(h[-n // 10:]) / len(h[-n // 10:])
        before = sum(h[-2 * (n // 10):-(n // 10)]) / (n // 10)
        if before - tail > 0.005 * (1 + abs(tail)):
            return (f"the loss was still falling when training stopped ({before:.4g} -> "
                    f"{tail:.4g} over the last tenth of the run): train for more steps "
                    "(within the budget) or with a larger learning rate")
    return fallback or ("the loss settled above the goal: try a larger model, a different "
                        "learning rate, or more steps within the budget")
