"""Benchmark of chapter 11 at larger budgets: out-of-distribution detection and lossless
compression on scikit-learn's 8 x 8 digits.

* ``detection``: the chapter's MAF (four layers with ActNorm, MADEs of ``hidden`` units)
  and its low-capacity background model (one layer, one hidden unit), trained for
  ``steps`` steps; the ROC AUC of the likelihood, the typicality score and the likelihood
  ratio for each kind of input of the chapter.
* ``compression``: the chapter's ``DiscretizedMAF`` trained for ``steps`` steps; bits per
  pixel of its ANS bitstream on the test digits (checked to decode exactly), of the model
  and of gzip, bz2, lzma and PNG.

Run it with ``python -m bench.applications`` (``--quick`` for a short smoke run), or
through ``bench/run.py --sections applications``.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import lzma
import math
import time

import numpy as np
import torch

import nfcourse
from nfcourse.applications import anomaly, compression
from nfcourse.flows.autoregressive import maf_flow
from nfcourse.images import dequantize, load_digits

__all__ = ["detection", "compression_table", "format_detection", "format_compression"]

LEVELS = 17


def _fit(flow, train, steps, lr=3e-3, seed=1):
    noise = torch.Generator().manual_seed(seed)

    def loss(step):
        pick = torch.randint(len(train), (128,), generator=noise)
        return flow.forward_kl(dequantize(train[pick], LEVELS, noise))

    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    nfcourse.train(loss, flow, steps, optimizer=optimizer, scheduler=schedule, progress=False)
    return flow.eval()


def _bits(flow, images, seed=0):
    d = images.shape[1]
    y = dequantize(images, LEVELS, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        nll = -flow.log_prob(y).double()
    return (nll + d * math.log(LEVELS)) / (d * math.log(2))


def _inputs(train, test):
    n = len(test)
    g = torch.Generator().manual_seed(5)
    out = {
        "noise": anomaly.noise_images(n, generator=g),
        "shapes": anomaly.shape_images(n, generator=g),
        "flipped": anomaly.transform_images(test, "flip"),
        "rotated": anomaly.transform_images(test, "rotate"),
        "inverted": anomaly.transform_images(test, "invert"),
    }
    g = torch.Generator().manual_seed(6)
    for k in (2, 8):
        pick = torch.randint(n, (n, k), generator=g)
        out[f"average of {k}"] = test[pick].mean(dim=1).round()
    out["mean image"] = train.mean(dim=0).round().expand(n, -1).clone()
    out["blank"] = anomaly.constant_images(torch.zeros(n, dtype=torch.long))
    out["blurred"] = anomaly.blur_images(test)
    return out


def detection(steps: int, hidden: tuple[int, ...] = (64,)) -> tuple[list[tuple], dict]:
    """Rows ``(kind, AUC likelihood, AUC typicality, AUC ratio)`` and a dict of facts."""
    torch.set_num_threads(1)
    train, test = load_digits()
    d = train.shape[1]
    start = time.perf_counter()
    flow = _fit(maf_flow(d, n_layers=4, hidden=hidden, actnorm=True), train, steps)
    background = _fit(
        maf_flow(d, n_layers=1, hidden=(1,), actnorm=True), train, max(1, (2 * steps) // 3)
    )
    seconds = time.perf_counter() - start
    b_test, b_train = _bits(flow, test), _bits(flow, train)
    entropy = b_train.mean()
    ratio_test = b_test - _bits(background, test)
    rows = []
    for kind, x in _inputs(train, test).items():
        b = _bits(flow, x)
        rows.append(
            (
                kind,
                anomaly.roc_auc(b_test, b),
                anomaly.roc_auc((b_test - entropy).abs(), (b - entropy).abs()),
                anomaly.roc_auc(ratio_test, b - _bits(background, x)),
            )
        )
    facts = {
        "test bits/dim": float(b_test.mean()),
        "train bits/dim": float(entropy),
        "seconds": seconds,
    }
    return rows, facts


def compression_table(steps: int, hidden: tuple[int, ...] = (64,)) -> tuple[dict, dict]:
    """Bits per pixel of each method on the test digits, and a dict of facts."""
    torch.set_num_threads(1)
    train, test = load_digits()
    d = train.shape[1]
    model = compression.DiscretizedMAF(d, LEVELS, hidden=hidden, seed=0)
    batches = torch.Generator().manual_seed(1)

    def loss(step):
        pick = torch.randint(len(train), (128,), generator=batches)
        return -model.log_prob(train[pick]).mean() / d

    start = time.perf_counter()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    nfcourse.train(loss, model, steps, optimizer=optimizer, scheduler=schedule, progress=False)
    seconds = time.perf_counter() - start
    model = model.double().eval()
    x = test.double()
    words, tables = compression.encode(model, x)
    exact = torch.equal(compression.decode(model, words, len(x)), x)
    with torch.no_grad():
        model_bits = float(-model.log_prob(x).sum()) / math.log(2)
    raw = x.numpy().astype(np.uint8)
    png = io.BytesIO()
    from PIL import Image

    Image.fromarray(raw.reshape(-1, 8)).save(png, format="PNG", optimize=True)
    bits = {
        "ANS bitstream": 8 * words.nbytes,
        "tables' promise": compression.ideal_bits(x, tables),
        "model -log2 P": model_bits,
        "gzip -9": 8 * len(gzip.compress(raw.tobytes(), 9)),
        "bz2 -9": 8 * len(bz2.compress(raw.tobytes(), 9)),
        "lzma -9e": 8 * len(lzma.compress(raw.tobytes(), preset=9 | lzma.PRESET_EXTREME)),
        "PNG": 8 * len(png.getvalue()),
    }
    return (
        {k: v / raw.size for k, v in bits.items()},
        {"decoded exactly": exact, "seconds": seconds},
    )


def format_detection(rows: list[tuple]) -> str:
    lines = ["| input | likelihood | typicality | likelihood ratio |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {a:.3f} | {b:.3f} | {c:.3f} |" for k, a, b, c in rows]
    return "\n".join(lines)


def format_compression(bpp: dict) -> str:
    lines = ["| method | bits per pixel |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in bpp.items()]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets, a smoke run")
    args = parser.parse_args(argv)
    steps = 100 if args.quick else 3000
    rows, facts = detection(steps)
    print(format_detection(rows))
    print(facts)
    bpp, facts = compression_table(steps)
    print(format_compression(bpp))
    print(facts)


if __name__ == "__main__":
    main()
