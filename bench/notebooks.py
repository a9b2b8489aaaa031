"""Execution time and peak memory of every notebook of the course.

Each notebook runs in a fresh kernel (started in the notebook's folder, as in JupyterLab),
cell by cell; the wall time covers the cells, not the kernel start. The peak memory is the
kernel's resident-set high-water mark (``VmHWM`` in ``/proc``), read before it shuts down.

Usage: ``python bench/notebooks.py [paths...]`` (default: chapters, solutions, exercises).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jupytext
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("chapters", "solutions", "exercises")
CHAPTER_BUDGET_S = 60.0
COURSE_BUDGET_S = 600.0
MEMORY_BUDGET_MB = 2048.0


@dataclass
class NotebookRun:
    path: str
    seconds: float
    peak_mb: float
    error: str = ""


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_notebook(path: Path, timeout: int = 600) -> NotebookRun:
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    rel = path.relative_to(ROOT).as_posix()
    with client.setup_kernel():
        pid = client.km.provisioner.process.pid
        start = time.perf_counter()
        error = ""
        try:
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
        except Exception as exc:  # report, do not stop the whole table
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:120]}"
        seconds = time.perf_counter() - start
        peak = _peak_rss_mb(pid)
    return NotebookRun(rel, seconds, peak, error)


def notebook_paths(args: list[str] | None = None) -> list[Path]:
    if args:
        return [Path(a).resolve() for a in args]
    return [p for folder in FOLDERS for p in sorted((ROOT / folder).glob("[0-9]*.md"))]


def report(runs: list[NotebookRun]) -> str:
    lines = ["| notebook | seconds | peak memory (MB) | status |", "| --- | ---: | ---: | --- |"]
    for r in runs:
        flags = []
        if r.path.startswith("chapters/") and r.seconds > CHAPTER_BUDGET_S:
            flags.append(f"over {CHAPTER_BUDGET_S:.0f} s")
        if r.peak_mb > MEMORY_BUDGET_MB:
            flags.append(f"over {MEMORY_BUDGET_MB:.0f} MB")
        if r.error:
            flags.append(r.error)
        lines.append(
            f"| {r.path} | {r.seconds:.1f} | {r.peak_mb:.0f} | {'; '.join(flags) or 'ok'} |"
        )
    total = sum(r.seconds for r in runs)
    lines.append(
        f"| **total** | **{total:.1f}** | {max((r.peak_mb for r in runs), default=0):.0f}"
        f" | {'ok' if total <= COURSE_BUDGET_S else f'over {COURSE_BUDGET_S:.0f} s'} |"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    runs = []
    for path in notebook_paths(args.paths):
        run = run_notebook(path)
        print(
            f"{run.path}: {run.seconds:.1f} s, {run.peak_mb:.0f} MB {run.error}",
            file=sys.stderr,
            flush=True,
        )
        runs.append(run)
    print(report(runs))
    return 0 if all(not r.error for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
