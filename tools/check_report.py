"""Run every exercise check on the tests' tables of wrong and right answers, and count.

The tables live in ``tests/test_checks_*.py``: ``WRONG`` (realistic wrong answers, each
with a pattern for the mistake its message must name) and ``RIGHT`` (right answers
written differently, in float32 and float64). For each check this prints how many wrong
answers it rejects, how many of those with a message that names the mistake, and how many
right answers it accepts; ``--verbose`` also prints every message.

Usage: ``python tools/check_report.py [--verbose]``; exits with status 1 unless every
wrong answer is rejected, at least 90 % are named, and every right answer is accepted.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import warnings
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from check_tables import outcome  # noqa: E402

MODULES = ["change_of_variables", "affine", "planar", "piecewise", "coupling", "vae"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="print every message")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    order: list[str] = []
    for module in MODULES:
        tables = importlib.import_module(f"test_checks_{module}")
        for row in tables.WRONG:
            key = f"{module}.{row.check.__name__}"
            if key not in counts:
                order.append(key)
            raised, message = outcome(row)
            named = raised and re.search(row.named, message, re.IGNORECASE | re.DOTALL)
            c = counts[key]
            c[0] += 1
            c[1] += raised
            c[2] += bool(named)
            if args.verbose or not named:
                mark = "named" if named else ("REJECTED, NOT NAMED" if raised else "ACCEPTED")
                print(f"[{mark}] {key} {row.id}: {message.strip()[:300]}")
        for row in tables.RIGHT:
            key = f"{module}.{row.check.__name__}"
            if key not in counts:
                order.append(key)
            raised, message = outcome(row)
            counts[key][3] += 1
            counts[key][4] += not raised
            if raised:
                print(f"[REFUSED RIGHT ANSWER] {key} {row.id}: {message.strip()[:300]}")
    print()
    header = f"{'check':<44}{'wrong':>6}{'rej.':>6}{'named':>6}{'right':>6}{'acc.':>6}"
    print(header)
    print("-" * len(header))
    total = [0, 0, 0, 0, 0]
    for key in order:
        c = counts[key]
        total = [t + v for t, v in zip(total, c, strict=False)]
        print(f"{key:<44}" + "".join(f"{v:>6}" for v in c))
    print("-" * len(header))
    print(f"{'total':<44}" + "".join(f"{v:>6}" for v in total))
    wrong, rejected, named, right, accepted = total
    print(
        f"\nrejected {rejected}/{wrong}, named {named}/{wrong} "
        f"({100 * named / max(wrong, 1):.0f} %), right answers accepted {accepted}/{right}"
    )
    ok = rejected == wrong and named >= 0.9 * wrong and accepted == right
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
