"""Train chapter 9's Glow on the shipped MNIST digits for a longer budget and save it.

    python tools/train_image_flows.py [--steps N] [--threads T]

The model is ``nfcourse.flows.glow.glow`` with the chapter's settings (two levels of four
steps, 16 hidden channels), trained with uniform dequantization on the 4,000 training
digits of ``load_mnist()``: Adam, a learning rate decaying along a cosine, batches of 64
images, fresh noise at every step. The weights go to
``nfcourse/pretrained/glow_mnist.pt`` and the settings and results (steps, batch size,
seed, wall time, machine, torch version, train and test bits per dimension) to
``glow_mnist.json`` beside them; ``nfcourse.pretrained.pretrained_glow()`` loads both.

One thread by default: on a shared machine two threads were slower. ``--measure 50`` times
50 steps and exits without saving anything, to choose ``--steps``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from nfcourse.flows.dequantization import dequantization_nll, pixels_to_levels
from nfcourse.flows.glow import glow
from nfcourse.images import bits_per_dim, load_mnist
from nfcourse.pretrained import PRETRAINED_GLOW_SETTINGS, pretrained_glow_paths

LEVELS = 256
EVAL_SEED = 5  # the noise of the evaluation, as in the chapter


def evaluate(flow: torch.nn.Module, pixels: torch.Tensor, seed: int = EVAL_SEED) -> float:
    """Bits per dimension of the uniform-dequantization bound on ``pixels``."""
    flow.eval()
    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        nll = torch.cat(
            [dequantization_nll(flow, part, LEVELS, generator=noise) for part in pixels.split(500)]
        )
    flow.train()
    return bits_per_dim(float(nll.mean()), pixels[0].numel(), LEVELS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--measure", type=int, default=0, help="time this many steps and exit without saving"
    )
    parser.add_argument("--log-every", type=int, default=250)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    train_grey, test_grey = load_mnist()
    train = pixels_to_levels(train_grey).view(-1, 1, 28, 28)
    test = pixels_to_levels(test_grey).view(-1, 1, 28, 28)
    d = train[0].numel()
    model = glow((1, 28, 28), seed=args.seed, **PRETRAINED_GLOW_SETTINGS)
    steps = args.measure or args.steps
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    noise = torch.Generator().manual_seed(args.seed)
    train_start = time.perf_counter()
    running = 0.0
    for step in range(1, steps + 1):
        batch = train[torch.randint(len(train), (args.batch,), generator=noise)]
        loss = dequantization_nll(model, batch, LEVELS, generator=noise).mean()
        if not torch.isfinite(loss):
            raise RuntimeError(f"the loss is {float(loss)} at step {step}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        running += bits_per_dim(float(loss.detach()), d, LEVELS)
        if step % args.log_every == 0 or step == steps:
            count = args.log_every if step % args.log_every == 0 else step % args.log_every
            print(
                f"step {step:6d}: train batch {running / count:.3f} bits/dim, "
                f"{time.perf_counter() - train_start:7.1f} s",
                flush=True,
            )
            running = 0.0
    train_seconds = time.perf_counter() - train_start
    if args.measure:
        print(
            f"{steps} steps in {train_seconds:.1f} s "
            f"({train_seconds / steps:.3f} s per step, {args.threads} threads)"
        )
        return

    train_bits, test_bits = evaluate(model, train), evaluate(model, test)
    print(f"train {train_bits:.4f} bits/dim, test {test_bits:.4f} bits/dim")
    weights, results = pretrained_glow_paths()
    weights.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    torch.save(model.state_dict(), weights)
    record = {
        "model": "glow((1, 28, 28), "
        + ", ".join(f"{k}={v}" for k, v in PRETRAINED_GLOW_SETTINGS.items())
        + ")",
        "data": "load_mnist(): 4,000 training and 1,000 test digits",
        "dequantization": "uniform",
        "steps": steps,
        "batch_size": args.batch,
        "learning_rate": args.lr,
        "schedule": "cosine",
        "seed": args.seed,
        "evaluation_seed": EVAL_SEED,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "threads": args.threads,
        "machine": f"{platform.machine()}, {platform.processor() or 'unknown CPU'}, "
        f"{platform.system()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "train_bits_per_dim": round(train_bits, 4),
        "test_bits_per_dim": round(test_bits, 4),
    }
    Path(results).write_text(json.dumps(record, indent=2) + "\n")
    size = Path(weights).stat().st_size
    print(f"saved {weights} ({size / 1024:.0f} KiB) and {results}")


if __name__ == "__main__":
    main()
