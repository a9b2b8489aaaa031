"""The benchmark's own code (``bench/``): it must find the bugs it exists to find, cover
every transform, compare like with like, and render its report. No timing is asserted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import nfcourse
import nfcourse.flows as flows
from bench import continuous, correctness, quality, run, speed

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------
# Correctness: coverage and planted bugs
# --------------------------------------------------------------------------------------


def test_every_exported_transform_has_a_factory():
    correctness.check_coverage()
    exported = set(correctness.exported_transforms())
    assert {"AffineCoupling", "PlanarFlow", "PiecewiseLinear", "Compose"} <= exported
    assert exported <= set(correctness.FACTORIES) | set(correctness.ABSTRACT)


def test_coverage_check_fails_loudly_for_a_new_transform_without_factory(monkeypatch):
    class BrandNewFlow(nfcourse.Transform):
        pass

    monkeypatch.setattr(flows, "BrandNewFlow", BrandNewFlow, raising=False)
    with pytest.raises(RuntimeError, match="no factory for BrandNewFlow"):
        correctness.check_coverage()


def test_coverage_check_fails_for_a_factory_of_a_name_no_longer_exported():
    factories = dict(correctness.FACTORIES, RenamedFlow=None)
    with pytest.raises(RuntimeError, match="no longer exports: RenamedFlow"):
        correctness.check_coverage(factories)


class TailLogDetBug(flows.ElementwiseAffine):
    """Reports a log-det off by 1e-6, but only for points far in the tails."""

    def _forward(self, z):
        x, log_det = super()._forward(z)
        return x, log_det + 1e-6 * (z.abs().amax(dim=1) > 10)


class TailRoundTripBug(flows.ElementwiseAffine):
    """An inverse that drifts by 1e-6 far in the tails; the log-dets are right."""

    def _inverse(self, x):
        z, log_det = super()._inverse(x)
        return z + 1e-6 * (x.abs() > 30), log_det


class LoopOnlyLogDetBug(flows.ElementwiseAffine):
    """Data-dependent control flow (no vmap) and a log-det twice too large."""

    def _forward(self, z):
        if bool((z.abs() > 1e6).any()):
            raise ValueError("too far")
        x, log_det = super()._forward(z)
        return x, 2 * log_det


def _points(dim=3, n=300):
    return correctness.sample_points(dim, n, torch.Generator().manual_seed(0))


def _randomized(cls):
    t = cls(3).double()
    with torch.no_grad():
        t.log_scale.copy_(torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64))
        t.shift.copy_(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    return t


def test_measure_passes_a_correct_transform():
    row = correctness.measure("ElementwiseAffine", _randomized(flows.ElementwiseAffine), _points())
    assert row.ok and row.log_det_error < 1e-12 and row.round_trip_error < 1e-12
    assert row.jacobian == "vmap" and row.points == 300 and row.dim == 3


def test_measure_finds_a_log_det_bug_hidden_in_the_tails():
    row = correctness.measure("bug", _randomized(TailLogDetBug), _points())
    assert not row.ok
    assert row.log_det_error == pytest.approx(1e-6, rel=1e-3)


def test_measure_finds_a_round_trip_bug_hidden_in_the_tails():
    row = correctness.measure("bug", _randomized(TailRoundTripBug), _points())
    assert not row.ok
    assert row.round_trip_error == pytest.approx(1e-6, rel=1e-3)
    assert row.log_det_error < 1e-12


def test_measure_falls_back_to_a_loop_and_still_finds_the_bug():
    t = _randomized(LoopOnlyLogDetBug)
    row = correctness.measure("bug", t, _points(n=40))
    assert row.jacobian == "loop"
    assert row.log_det_error == pytest.approx(abs(float(t.log_scale.detach().sum())), rel=1e-9)


def test_measure_reports_nan_log_dets_as_failures():
    class NaNLogDet(flows.ElementwiseAffine):
        def _forward(self, z):
            x, log_det = super()._forward(z)
            return x, log_det * torch.where(z[:, 0] > 19, float("nan"), 1.0)

    row = correctness.measure("nan", _randomized(NaNLogDet), _points())
    assert not row.ok and row.log_det_error == float("inf")


def test_sample_points_reach_the_far_tails_and_the_bin_edges():
    g = torch.Generator().manual_seed(0)
    z = correctness.sample_points(4, 2000, g)
    assert z.dtype == torch.float64 and z.shape == (2000, 4)
    assert float(z.abs().max()) == 20.0
    assert int((z.abs() == 20).all(dim=1).sum()) > 0  # some points far out in every coordinate
    u = correctness.unit_interval_points(3, 1000, 8, g)
    edges = torch.arange(9, dtype=torch.float64) / 8
    assert all(bool((u == e).any()) for e in edges)
    assert bool((u < 0).any()) and bool((u > 1).any()) and bool((u.abs() == 20).any())


@pytest.mark.parametrize("name", sorted(correctness.FACTORIES))
def test_factories_build_float64_transforms_away_from_the_identity(name):
    g = torch.Generator().manual_seed(0)
    transform, z = correctness.FACTORIES[name](50, g)
    assert isinstance(transform, nfcourse.Transform)
    assert z.dtype == torch.float64 and z.shape[0] == 50
    assert all(p.dtype == torch.float64 for p in transform.parameters())
    transform.eval()
    with torch.no_grad():
        x, _ = transform.forward(z)
    assert float((x - z).abs().max()) > 1e-3


# --------------------------------------------------------------------------------------
# Speed: the wrappers compare the same operation; the tables render
# --------------------------------------------------------------------------------------


@pytest.fixture
def reference_libraries():
    for name in ("zuko", "nflows", "normflows"):
        pytest.importorskip(name, reason="the reference libraries come with `make bench`")


@pytest.mark.parametrize("case", [c[0] for c in speed.LAYER_CASES])
def test_every_library_layer_round_trips_through_the_two_directions(reference_libraries, case):
    _, build, kwargs = next(c for c in speed.LAYER_CASES if c[0] == case)
    layers = build(**kwargs)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, kwargs["dim"], generator=g)
    counts = set()
    for layer in layers:
        counts.add(sum(p.numel() for p in layer.module.parameters()))
        with torch.no_grad():
            if layer.normalize is None:  # normflows' planar layer: sampling only
                out, log_det = layer.generate(x)
                assert out.shape == x.shape and log_det.shape == (64,)
                continue
            z, log_det_n = layer.normalize(x)
            x_back, log_det_g = layer.generate(z)
        assert z.shape == x.shape and log_det_n.shape == (64,), layer.library
        torch.testing.assert_close(x_back, x, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(log_det_n + log_det_g, torch.zeros(64), atol=1e-4, rtol=0)
    assert len(counts) == 1, f"{case}: parameter counts differ {counts}"


def test_training_flows_have_the_same_parameter_count(reference_libraries):
    from bench import libraries

    flows_ = libraries.training_flows()
    x = torch.randn(32, 2)
    counts = {name: libraries.parameter_count(m) for name, (m, _) in flows_.items()}
    assert set(counts.values()) == {17_672}, counts
    for name, (_, log_prob) in flows_.items():
        assert log_prob(x).shape == (32,), name


def test_layer_speed_measures_every_case_on_the_cpu(reference_libraries):
    with speed.single_thread():
        rows, params = speed.layer_speed(
            "cpu", batches=(32,), repeats=1, min_time=0.0, verbose=False
        )
    assert len(rows) == 2 * len(speed.LAYER_CASES)
    assert all(s > 0 for r in rows for s in r.seconds.values())
    assert all(r.ratio is not None for r in rows if r.direction == "generate")
    assert params["affine coupling, D = 8"] == {"course": 5000, "zuko": 5000, "nflows": 5000}


def test_median_seconds_takes_the_median_of_the_repeats(monkeypatch):
    ticks = iter([0.0, 1.0] * 2 + [0.0, 5.0, 0.0, 1.0, 0.0, 2.0])
    monkeypatch.setattr(speed.time, "perf_counter", lambda: next(ticks))
    result = speed.median_seconds(
        {"f": lambda: None}, torch.device("cpu"), repeats=3, min_time=0.5
    )
    assert result == {"f": 2.0}


def test_layer_table_flags_slower_rows_and_library_errors():
    rows = [
        speed.LayerRow("planar, D = 8", "generate", 1024, {"course": 2e-4, "normflows": 1e-4}),
        speed.LayerRow(
            "affine coupling, D = 8",
            "normalize",
            65536,
            {"course": 1e-3, "zuko": 2e-3},
            {"nflows": "RuntimeError: device"},
        ),
    ]
    table = speed.format_layers(rows)
    assert "**2.00** (slower)" in table and "| 0.50 |" in table
    assert "error" in table and "RuntimeError: device" in table
    assert "200 µs" in table and "1.00 ms" in table


def test_training_table_reports_the_ratio_to_the_fastest_library():
    rows = [
        speed.TrainingRow("course", 100, 0.5),
        speed.TrainingRow("zuko", 100, 0.4),
        speed.TrainingRow("nflows", 100, 0.8),
    ]
    table = speed.format_training(rows, steps=500, repeats=3)
    assert "fastest library's, zuko): **1.25** (slower)" in table
    assert "| course | 100 | 200 | 5.00 | 1.00 |" in table


# --------------------------------------------------------------------------------------
# Quality summary and the report
# --------------------------------------------------------------------------------------


def _quality_row(flow, kl_c, kl_r, se=0.01):
    return {
        "flow": flow,
        "params": 10,
        "kl_checkerboard": kl_c,
        "se_checkerboard": se,
        "kl_ring": kl_r,
        "se_ring": se,
        "seconds_checkerboard": 1.0,
        "seconds_ring": 2.0,
    }


def test_quality_summary_says_which_side_is_better_beyond_the_noise():
    rows = [
        _quality_row("course: affine (RealNVP)", 0.20, 0.05),
        _quality_row("zuko NSF (spline, K=8)", 0.10, 0.051),
        _quality_row("zuko RealNVP (affine)", 0.30, 0.20),
    ]
    lines = quality.summary(rows)
    assert lines[0].startswith("- checkerboard, best against best: course: affine (RealNVP)")
    assert "is worse than zuko NSF" in lines[0]
    assert "like for like" in lines[1] and "is better than zuko RealNVP" in lines[1]
    assert "is within two standard errors of zuko NSF" in lines[2]
    assert "0.2000 ± 0.0100" in quality.format_table(rows)


def test_report_renders_with_machine_header_and_no_raw_tex(tmp_path, monkeypatch):
    monkeypatch.setitem(run.BUDGETS, "points", (2000, 20))
    monkeypatch.setattr(
        run.correctness,
        "FACTORIES",
        {k: v for k, v in correctness.FACTORIES.items() if k != "Compose"},
    )
    monkeypatch.setattr(
        run.correctness, "ABSTRACT", dict(correctness.ABSTRACT, Compose="left out in this test")
    )
    out = tmp_path / "REPORT.md"
    report = run.main(["--quick", "--sections", "correctness,gpu", "--output", str(out)])
    assert out.read_text(encoding="utf-8") == report
    assert re.search(r"- Date: \d{4}-\d\d-\d\d", report)
    assert "- Machine: " in report and "cores" in report
    assert f"torch {torch.__version__}" in report and "Threads:" in report
    assert "| PlanarFlow | 3 | 20 |" in report
    if not torch.cuda.is_available():
        assert "no CUDA device" in report
    assert "$" not in report and "\\" not in report


def test_unknown_section_is_refused():
    with pytest.raises(SystemExit):
        run.main(["--sections", "speeed"])


def test_committed_report_page_includes_the_report_and_has_no_raw_tex():
    page = (ROOT / "book" / "benchmarks.md").read_text(encoding="utf-8")
    assert "```{include} bench_report.md" in page
    assert "{code-cell}" not in page and "jupytext" not in page
    committed = (ROOT / "book" / "bench_report.md").read_text(encoding="utf-8")
    assert "- Date: " in committed and "- Machine: " in committed
    for text in (page, committed):
        assert "$" not in text and "\\" not in text


def test_requirements_pin_the_reference_libraries():
    pins = (ROOT / "bench" / "requirements.txt").read_text(encoding="utf-8")
    for pin in ("zuko==1.6.0", "nflows==0.14", "normflows==1.7.3", "torchcfm==1.0.7"):
        assert re.search(rf"^{re.escape(pin)}$", pins, re.M), pin


def test_seed_spread_summary_needs_the_ranges_to_separate():
    spread = {
        "course: affine (RealNVP)": {"checkerboard": [0.30, 0.32], "ring": [0.2, 0.4]},
        "zuko RealNVP (affine)": {"checkerboard": [0.20, 0.25], "ring": [0.3, 0.35]},
    }
    lines = quality.spread_summary(spread)
    assert "checkerboard, over 2 seeds" in lines[0] and "is worse than zuko" in lines[0]
    assert "is not clearly different from zuko" in lines[1]
    assert "0.3100 (0.3000 to 0.3200)" in quality.format_spread(spread)


# --------------------------------------------------------------------------------------
# Autoregressive flows beside zuko's MAF
# --------------------------------------------------------------------------------------


def test_autoregressive_flows_have_the_same_parameter_count_as_zukos_maf(reference_libraries):
    from bench import autoregressive

    x = torch.randn(16, 2)
    counts = {}
    for name in autoregressive.FLOWS:
        module, log_prob = autoregressive.make_flow(name)
        counts[name] = sum(p.numel() for p in module.parameters())
        assert log_prob(x).shape == (16,), name
    assert len(set(counts.values())) == 1, counts
    times = autoregressive.step_times(steps=2, rounds=2, batch_size=8)
    assert list(times) == list(autoregressive.FLOWS)
    assert all(len(v) == 2 and all(t > 0 for t in v) for v in times.values())


def test_shift_after_scale_maf_is_a_flow_with_an_exact_log_det():
    from bench import autoregressive
    from nfcourse import testing

    flow, log_prob = autoregressive.make_flow("course MAF, shift after scale", dim=3)
    flow = testing.perturb(flow.double(), seed=1)
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for layer in flow.transform.transforms:
        assert isinstance(layer, autoregressive.ShiftAfterScaleMAF)
        testing.check_round_trip(layer, z)
        testing.check_log_det(layer, z)
        testing.check_log_det(layer, z, direction="inverse")
    # the shift acts in base units: x = (z + t) exp(s), not exp(s) z + t
    layer = flow.transform.transforms[0]
    s, t = layer._params(torch.zeros(1, 3, dtype=torch.float64))
    x, _ = layer(z)
    first = int(layer.order.argmin())  # the coordinate whose parameters see nothing
    torch.testing.assert_close(x[:, first], (z[:, first] + t[0, first]) * s[0, first].exp())


def test_autoregressive_tables_render_ratios_and_the_cost_against_dim():
    from bench import autoregressive

    rows = [
        {
            "flow": f,
            "density": "ring",
            "kl": 0.5,
            "se": 0.01,
            "per_100": 9.0,
            "cpu_per_100": t,
            "params": 18_960,
            "seed": 0,
        }
        for f, t in zip(autoregressive.FLOWS, (1.0, 3.0, 2.5, 2.0), strict=True)
    ]
    table = autoregressive.format_table(rows)
    assert "| ring | course MAF | 18,960 | 1 | 0.500 ± 0.010 | 9.00 | 1.00 |" in table
    assert "| ring | zuko MAF | 18,960 | 1 | 0.500 ± 0.010 | 9.00 | 2.00 |" in table
    # a second seed: the KL becomes a mean and a range, the times means over the seeds
    rows += [
        dict(
            r,
            seed=1,
            kl=r["kl"] + (0.2 if r["flow"] == "course MAF" else 0.01),
            cpu_per_100=3 * r["cpu_per_100"],
        )
        for r in rows
    ]
    table = autoregressive.format_table(rows)
    assert "| ring | course MAF | 18,960 | 2 | 0.600 (0.500 to 0.700) | 9.00 | 2.00 |" in table
    summary = autoregressive.spread_summary(rows)
    assert summary == [
        "- ring, over 2 seeds: course MAF (mean KL 0.600) is not clearly different from "
        "zuko MAF (mean KL 0.505).",
        "- ring, over 2 seeds: course IAF (mean KL 0.505) is not clearly different from "
        "zuko MAF (mean KL 0.505).",
        "- ring, over 2 seeds: course MAF, shift after scale (mean KL 0.505) is not clearly "
        "different from zuko MAF (mean KL 0.505).",
    ]
    worse = [dict(r, kl=r["kl"] + 1) if r["flow"] == "course IAF" else r for r in rows]
    assert (
        "course IAF (mean KL 1.505) is worse than zuko MAF"
        in autoregressive.spread_summary(worse)[1]
    )
    times = {
        "course MAF": [1.0, 3.0, 2.0],
        "course IAF": [2.0, 2.0, 6.0],
        "course MAF, shift after scale": [2.0, 2.0, 2.0],
        "zuko MAF": [2.0, 2.0, 2.0],
    }
    text = autoregressive.format_step_times(times)
    assert "| course MAF | 2.000 | 1.00 | 0.50 to 1.50 |" in text
    assert "| course IAF | 2.000 | 1.00 | 1.00 to 3.00 |" in text
    assert "median of 3 rounds" in text
    cost = autoregressive.cost_against_dim(dims=(2, 4), batch=8, repeats=1)
    text = autoregressive.format_cost(cost)
    assert text.count("\n") == 3 and "MAF sample" in text and "| 4 |" in text


# --------------------------------------------------------------------------------------
# The recommended spline flow beside zuko's NSF
# --------------------------------------------------------------------------------------


def _spline_row(density, seed, kl, zuko_kl):
    return {
        "density": density,
        "seed": seed,
        "params": 23_140,
        "kl": kl,
        "se": 0.001,
        "seconds": 40.0,
        "cpu_s_per_100": 1.0,
        "zuko_params": 23_928,
        "zuko_width": 56,
        "zuko_kl": zuko_kl,
        "zuko_se": 0.001,
        "zuko_seconds": 50.0,
        "ratio": 0.8,
    }


def test_spline_table_with_one_seed_compares_each_density():
    from bench import spline

    table = spline.format_table(
        [_spline_row("ring", 0, 0.013, 0.029), _spline_row("sine", 0, 0.006, 0.003)], 3000
    )
    assert "ring                    0.013 +-0.001   40.0   0.029 +-0.001   50.0   0.80" in table
    assert "KL target 0.1: met on every density" in table
    assert "KL no worse than zuko: not on sine" in table
    assert "step time ratio <= 1: on every density" in table


def test_spline_table_with_several_seeds_compares_ranges():
    from bench import spline

    rows = [
        _spline_row("sine", 0, 0.0059, 0.0036),
        _spline_row("sine", 1, 0.0051, 0.0054),
        _spline_row("ring", 0, 0.20, 0.01),
        _spline_row("ring", 1, 0.15, 0.02),
    ]
    table = spline.format_table(rows, 3000)
    assert "sine s1" in table and "ring s0" in table
    assert "sine: mean KL over 2 seeds 0.0055, zuko 0.0045" in table
    assert "KL no worse than zuko (ranges over the seeds): not on ring" in table
    assert "KL target 0.1: missed on ring" in table


def test_spline_results_file_is_only_written_from_the_full_run():
    from bench import spline

    for flags in (["--quick"], ["--seeds", "0", "1"], ["--densities", "sine"]):
        with pytest.raises(SystemExit):
            spline.main(["--write", *flags])


# --------------------------------------------------------------------------------------
# Continuous flows: every model trains, is scored by its exact density, and renders
# --------------------------------------------------------------------------------------


def test_continuous_section_trains_scores_and_renders(monkeypatch):
    monkeypatch.setattr(
        continuous,
        "BUDGETS",
        {
            "ml_steps": (2, 2),
            "fm_steps": (3, 3),
            "coupling_steps": (2, 2),
            "batch": (64, 64),
            "n_test": (300, 300),
        },
    )
    rows = continuous.run(quick=True, densities=("sine",), verbose=False)
    by_model = {r["model"]: r for r in rows}
    expected = {
        "CNF, max. likelihood",
        "flow matching (course)",
        "flow matching, OT (course)",
        "coupling (ch. 5)",
    }
    if continuous.torchcfm_version() is not None:
        expected |= {"flow matching (torchcfm)", "flow matching, OT (torchcfm)"}
    assert set(by_model) == expected
    for name, row in by_model.items():
        assert row["kl"] == row["kl"] and row["se"] > 0, name  # finite, not NaN
        assert (row["nfe"] is None) == (name == "coupling (ch. 5)"), name
    assert (
        by_model["CNF, max. likelihood"]["params"] == by_model["flow matching (course)"]["params"]
    )
    table = continuous.format_table(rows)
    assert "| sine | CNF, max. likelihood | 4,994 | 2 |" in table
    assert "$" not in table and "\\" not in table


def test_inference_tables_render_and_the_posterior_run_scores_every_observation():
    from bench import inference

    rows = [{"target": "U1", "ess": 0.5, "elbo": 1.0, "log_z": 1.8, "se": 0.01, "exact": 1.9}]
    table = inference.format_importance(rows)
    assert "| U1 | 0.500 | 1.000 | 1.800 ± 0.010 | 1.900 | -0.100 |" in table
    result = inference.posterior_estimation(steps=5, n_sims=500, n_obs=3)
    assert len(result["kls"]) == 3 and len(result["prior"]) == 3
    assert all(p > 0 for p in result["prior"])
    assert "| 3 |" in inference.format_posterior(result)
