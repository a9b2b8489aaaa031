"""constraints.txt pins every direct dependency for every tested Python, and tools/pins.py
writes such pins from the versions that the tested environments installed."""

import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import pins  # noqa: E402

MAKEFILE = (ROOT / "Makefile").read_text()
PYTHONS = re.search(r"^PYTHON_VERSIONS \?= (.+)$", MAKEFILE, re.M)[1].split()


def _applicable(lines: list[str], package: str, python: str) -> list[str]:
    """The versions that the pins among `lines` give `package` under Python `python`."""
    versions = []
    for line in lines:
        req = Requirement(line)
        if pins.name(req.name) == package and (
            req.marker is None or req.marker.evaluate({"python_version": python})
        ):
            versions.append(str(req.specifier))
    return versions


def _requirement_lines(path: Path) -> list[str]:
    return [
        line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]


def test_every_direct_dependency_has_exactly_one_exact_pin_under_every_tested_python():
    lines = _requirement_lines(ROOT / "constraints.txt")
    for package in sorted(pins.direct_dependencies() | pins.KEEP):
        for python in PYTHONS:
            versions = _applicable(lines, package, python)
            assert len(versions) == 1, f"{package} under Python {python}: pins {versions}"
            assert re.fullmatch(r"==\d[\w.+]*", versions[0]), f"{package}: {versions[0]}"


def test_constraints_are_sorted_one_package_per_line():
    lines = _requirement_lines(ROOT / "constraints.txt")
    names = [pins.name(line) for line in lines]
    assert names == sorted(names), "keep constraints.txt sorted by package name"
    assert all(line.count("==") == 1 for line in lines)


def test_pins_share_one_line_when_every_python_agrees():
    assert pins.pins("tqdm", {(3, 10): "4.67.1", (3, 13): "4.67.1"}) == ["tqdm==4.67.1"]


@pytest.mark.parametrize(
    "by_python",
    [
        {(3, 10): "2.2.6", (3, 11): "2.4.6", (3, 12): "2.4.6", (3, 13): "2.4.6"},
        {(3, 10): "1.0", (3, 11): "1.1", (3, 12): "1.1", (3, 13): "1.2"},
        {(3, 10): "1.0", (3, 11): "1.1", (3, 12): "1.0", (3, 13): "1.0"},
    ],
    ids=["oldest-differs", "three-runs", "one-in-the-middle"],
)
def test_pins_give_each_python_its_own_version_through_markers(by_python):
    lines = pins.pins("numpy", by_python)
    for (major, minor), version in by_python.items():
        assert _applicable(lines, "numpy", f"{major}.{minor}") == [f"=={version}"], lines
    # Versions beyond those tested get the pin of the nearest tested one.
    assert _applicable(lines, "numpy", "3.9") == [f"=={by_python[(3, 10)]}"]
    assert _applicable(lines, "numpy", "3.14") == [f"=={by_python[(3, 13)]}"]


def test_write_pins_the_frozen_versions_and_keeps_every_other_line(tmp_path, monkeypatch):
    monkeypatch.setattr(pins, "direct_dependencies", lambda: {"numpy", "jupyterlab-myst"})
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# header\ntorch==2.13.0\nnumpy==1.0\nruff==0.9.0\n")
    (tmp_path / "3.10.freeze").write_text("numpy==2.2.6\njupyterlab_myst==2.4.2\nsix==1.17.0\n")
    (tmp_path / "3.12.freeze").write_text("numpy==2.4.6\njupyterlab_myst==2.4.2\n")

    pins.main(["unpinned", str(constraints)])
    pins.main(
        ["write", str(constraints), str(tmp_path / "3.10.freeze"), str(tmp_path / "3.12.freeze")]
    )

    assert constraints.read_text().splitlines() == [
        "# header",
        "jupyterlab-myst==2.4.2",
        'numpy==2.2.6; python_version < "3.12"',
        'numpy==2.4.6; python_version >= "3.12"',
        "ruff==0.9.0",
        "torch==2.13.0",
    ]


def test_write_refuses_an_environment_that_lacks_a_direct_dependency(tmp_path, monkeypatch):
    monkeypatch.setattr(pins, "direct_dependencies", lambda: {"numpy", "tqdm"})
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("torch==2.13.0\n")
    (tmp_path / "3.11.freeze").write_text("numpy==2.4.6\n")
    (tmp_path / "3.12.freeze").write_text("numpy==2.5.5\ntqdm==4.70.1\n")
    with pytest.raises(SystemExit, match="no version of tqdm"):
        pins.main(
            [
                "write",
                str(constraints),
                str(tmp_path / "3.11.freeze"),
                str(tmp_path / "3.12.freeze"),
            ]
        )
    assert constraints.read_text() == "torch==2.13.0\n"


def test_write_keeps_the_pins_of_an_extra_that_no_environment_installs(tmp_path, monkeypatch):
    monkeypatch.setattr(pins, "direct_dependencies", lambda: {"numpy", "ruff"})
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("numpy==1.0\nruff==0.16.9\ntorch==2.13.0\n")
    (tmp_path / "3.11.freeze").write_text("numpy==2.4.6\n")
    pins.main(["write", str(constraints), str(tmp_path / "3.11.freeze")])
    assert constraints.read_text() == "numpy==2.4.6\nruff==0.16.9\ntorch==2.13.0\n"
