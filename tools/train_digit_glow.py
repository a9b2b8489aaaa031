"""Train chapter 9's converged image flow on the shipped MNIST digits, resumably.

    python tools/train_digit_glow.py              # start, or resume from the checkpoint
    python tools/train_digit_glow.py --measure 20 # time 20 steps and exit

The model is ``glow((1, 28, 28), **DIGIT_GLOW_SETTINGS)`` with a ``VariationalDequantizer``
(``DIGIT_DEQUANTIZER_SETTINGS``), trained on the 4,000 training digits of ``load_mnist()``
by the variational-dequantization bound: Adam, a short linear warm-up and then a learning
rate decaying along a cosine to zero, batches of 64, gradients clipped by their norm, and
an exponential moving average of the weights (Polyak averaging) that is evaluated and
shipped. One thread.

Every ``--eval-every`` steps the averaged model is scored on the 1,000 test digits and on
1,000 training digits with fixed noise (mean, median, 99th percentile and largest per-image
bits per dimension); those rows and the running training loss go to the learning curve
``digit_glow_curve.csv``. A checkpoint (model, averaged model, optimiser, generator, curve)
is written every ``--checkpoint-minutes`` minutes to ``build/train_<name>/checkpoint.pt``,
and a run that finds it resumes where it stopped. ``--shift-bound none --name unbounded``
trains the ablation of chapter 9 (couplings with unbounded shifts), whose files stay in
``build/train_unbounded/``. At the end the averaged weights go to
``nfcourse/pretrained/digit_glow.pt`` and the record (budget, seeds, machine, torch, wall
time, peak memory, metrics) to ``digit_glow.json``; ``nfcourse.pretrained`` loads them and
``tests/test_pretrained.py`` scores them again against the record.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import resource
import time
from pathlib import Path

import torch

from nfcourse.flows.dequantization import (
    VariationalDequantizer,
    dequantization_nll,
    pixels_to_levels,
)
from nfcourse.flows.glow import glow
from nfcourse.images import bits_per_dim, load_mnist
from nfcourse.pretrained import (
    DIGIT_DEQUANTIZER_SETTINGS,
    DIGIT_GLOW_EVAL_SEED,
    DIGIT_GLOW_SETTINGS,
    digit_glow_paths,
    per_image_bits,
)

LEVELS = 256
SHAPE = (1, 28, 28)
CHECKPOINTS = Path("build")
CURVE_FIELDS = [
    "step",
    "seconds",
    "learning_rate",
    "train_batch_bits",
    "grad_norm",
    "train_mean",
    "test_mean",
    "test_median",
    "test_p99",
    "test_max",
    "train_max",
]


def summary(bits: torch.Tensor) -> dict[str, float]:
    """Mean, median, 99th percentile and largest of per-image bits per dimension."""
    q = torch.quantile(bits.double(), torch.tensor([0.5, 0.99], dtype=torch.float64))
    return {
        "mean": float(bits.mean()),
        "median": float(q[0]),
        "p99": float(q[1]),
        "max": float(bits.max()),
    }


class Averaged:
    """An exponential moving average of a module's floating-point state (parameters and
    buffers); other buffers (ActNorm's ``initialized``) are copied."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for k, v in module.state_dict().items():
            if v.is_floating_point():
                self.state[k].lerp_(v, 1 - self.decay)
            else:
                self.state[k].copy_(v)


def build(shift_bound: float | None = DIGIT_GLOW_SETTINGS["shift_bound"]):
    settings = {**DIGIT_GLOW_SETTINGS, "shift_bound": shift_bound}
    flow = glow(SHAPE, seed=0, **settings)
    dequantizer = VariationalDequantizer(SHAPE, LEVELS, seed=1, **DIGIT_DEQUANTIZER_SETTINGS)
    return flow, dequantizer


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=14000)
    parser.add_argument(
        "--shift-bound",
        default=str(DIGIT_GLOW_SETTINGS["shift_bound"]),
        help="the couplings' largest shift, or 'none' (an unbounded shift, the ablation)",
    )
    parser.add_argument(
        "--name",
        default="digit_glow",
        help="the stem of the package files (digit_glow, or digit_glow_unbounded for the "
        "ablation) and of the run's folder build/train_<name>/",
    )
    parser.add_argument(
        "--until",
        type=int,
        default=0,
        help="stop at this step of the schedule of --steps and write the results there",
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--clip", type=float, default=500.0)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--measure", type=int, default=0, help="time N steps and exit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shift_bound = None if args.shift_bound.lower() == "none" else float(args.shift_bound)
    folder = CHECKPOINTS / f"train_{args.name}"
    checkpoint = folder / "checkpoint.pt"
    wall_start = time.perf_counter()

    train_grey, test_grey = load_mnist()
    train = pixels_to_levels(train_grey).view(-1, *SHAPE)
    test = pixels_to_levels(test_grey).view(-1, *SHAPE)
    train_probe = train[:1000]
    flow, dequantizer = build(shift_bound)
    modules = torch.nn.ModuleDict({"flow": flow, "dequantizer": dequantizer})
    optimizer = torch.optim.Adam(modules.parameters(), lr=args.lr)
    noise = torch.Generator().manual_seed(args.seed)
    d = train[0].numel()

    step, seconds, curve, averaged = 0, 0.0, [], None
    if checkpoint.is_file() and not args.measure:
        saved = torch.load(checkpoint, weights_only=True)
        if saved["steps"] != args.steps:
            raise SystemExit(
                f"{checkpoint} was made for --steps {saved['steps']}, not {args.steps}; "
                "pass the same budget or delete the checkpoint to start again"
            )
        modules.load_state_dict(saved["modules"])
        optimizer.load_state_dict(saved["optimizer"])
        noise.set_state(saved["generator"])
        averaged = Averaged(modules, args.ema)
        averaged.state = saved["averaged"]
        step, seconds, curve = saved["step"], saved["seconds"], saved["curve"]
        print(f"resumed at step {step} ({seconds / 60:.1f} min of training)", flush=True)

    def evaluate() -> dict[str, float]:
        copy_flow, copy_deq = build(shift_bound)
        copy = torch.nn.ModuleDict({"flow": copy_flow, "dequantizer": copy_deq})
        copy.load_state_dict(averaged.state)
        copy.eval()
        te = summary(per_image_bits(copy_flow, copy_deq, test, DIGIT_GLOW_EVAL_SEED))
        tr = summary(per_image_bits(copy_flow, copy_deq, train_probe, DIGIT_GLOW_EVAL_SEED))
        return {
            "train_mean": tr["mean"],
            "train_max": tr["max"],
            "test_mean": te["mean"],
            "test_median": te["median"],
            "test_p99": te["p99"],
            "test_max": te["max"],
        }

    def save_checkpoint() -> None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        part = checkpoint.with_suffix(".part")
        torch.save(
            {
                "steps": args.steps,
                "modules": modules.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": noise.get_state(),
                "averaged": averaged.state,
                "step": step,
                "seconds": seconds,
                "curve": curve,
            },
            part,
        )
        part.replace(checkpoint)

    total = args.measure or args.steps
    stop = args.measure or args.until or args.steps
    running, count, last_checkpoint = 0.0, 0, time.perf_counter()
    tick = time.perf_counter()
    while step < stop:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total, args.lr, args.warmup)
        batch = train[torch.randint(len(train), (args.batch,), generator=noise)]
        loss = dequantization_nll(flow, batch, LEVELS, dequantizer, generator=noise).mean()
        if not torch.isfinite(loss):
            raise RuntimeError(f"the loss is {float(loss)} at step {step}")
        optimizer.zero_grad()
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(modules.parameters(), args.clip))
        optimizer.step()
        if averaged is None:  # after the first step: ActNorm is initialised
            averaged = Averaged(modules, args.ema)
        else:
            averaged.update(modules)
        step += 1
        running += bits_per_dim(float(loss.detach()), d, LEVELS)
        count += 1
        now = time.perf_counter()
        seconds += now - tick
        tick = now
        if args.measure:
            continue
        if step % args.log_every == 0 or step == stop:
            row = {
                "step": step,
                "seconds": round(seconds, 1),
                "learning_rate": optimizer.param_groups[0]["lr"],
                "train_batch_bits": round(running / count, 4),
                "grad_norm": round(grad_norm, 2),
            }
            running, count = 0.0, 0
            if step % args.eval_every == 0 or step == stop:
                row.update({k: round(v, 4) for k, v in evaluate().items()})
                tick = time.perf_counter()  # evaluation is not training time
            curve.append(row)
            print(
                "  ".join(f"{k} {v}" for k, v in row.items() if k != "learning_rate"),
                flush=True,
            )
        if time.perf_counter() - last_checkpoint > 60 * args.checkpoint_minutes:
            save_checkpoint()
            last_checkpoint = time.perf_counter()
            tick = time.perf_counter()
    if args.measure:
        print(f"{stop} steps: {seconds / stop:.3f} s per step, {args.threads} thread(s)")
        return
    if step > stop:
        raise SystemExit(f"the checkpoint is at step {step}, past --until {stop}")
    save_checkpoint()

    copy_flow, copy_deq = build(shift_bound)
    copy = torch.nn.ModuleDict({"flow": copy_flow, "dequantizer": copy_deq})
    copy.load_state_dict(averaged.state)
    copy.eval()
    results = {}
    for name, pixels in (("train", train), ("test", test)):
        results[name] = {
            k: round(v, 4)
            for k, v in summary(
                per_image_bits(copy_flow, copy_deq, pixels, DIGIT_GLOW_EVAL_SEED)
            ).items()
        }
    weights, record_path, curve_path = digit_glow_paths(args.name)
    torch.save(copy.state_dict(), weights)
    with curve_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
        writer.writeheader()
        for row in curve:
            writer.writerow(row)
    record = {
        "model": "glow((1, 28, 28), "
        + ", ".join(
            f"{k}={v}" for k, v in {**DIGIT_GLOW_SETTINGS, "shift_bound": shift_bound}.items()
        )
        + ") with VariationalDequantizer((1, 28, 28), 256, "
        + ", ".join(f"{k}={v}" for k, v in DIGIT_DEQUANTIZER_SETTINGS.items())
        + ")",
        "parameters": sum(p.numel() for p in modules.parameters()),
        "data": "load_mnist(): 4,000 training and 1,000 test digits",
        "command": "python tools/train_digit_glow.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v),
        "shift_bound": shift_bound,
        "schedule_steps": args.steps,
        "steps": step,
        "batch_size": args.batch,
        "learning_rate": args.lr,
        "schedule": f"linear warm-up over {args.warmup} steps, then cosine to zero",
        "gradient_clip": args.clip,
        "weight_average": f"exponential, decay {args.ema}",
        "seed": args.seed,
        "evaluation_seed": DIGIT_GLOW_EVAL_SEED,
        "train_seconds": round(seconds, 1),
        "wall_seconds_this_process": round(time.perf_counter() - wall_start, 1),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "threads": args.threads,
        "machine": f"{platform.machine()}, {platform.processor() or 'unknown CPU'}, "
        f"{platform.system()}, {torch.get_num_threads()} thread(s)",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "bits_per_dim": results,
    }
    Path(record_path).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["bits_per_dim"]))
    print(f"saved {weights} ({Path(weights).stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
