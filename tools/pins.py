"""Refresh the pins of constraints.txt from the versions that a green run installed.

``make pins`` runs this twice:

``python tools/pins.py unpinned constraints.txt > build/pins/constraints.txt``
    constraints.txt without the pins of the project's direct dependencies (those of
    pyproject.toml's ``dependencies`` and of every extra), except torch, whose build is
    chosen by hand. Every other line stays.
``python tools/pins.py write constraints.txt build/pythons/3.10.freeze ...``
    pins each direct dependency (torch excepted) at the version that ``pip freeze``
    reports in the given environments, one ``build/pythons/3.X.freeze`` per Python
    version. Where the versions disagree, each gets an environment marker
    (``numpy==2.2.6; python_version < "3.11"``). The file stays sorted, one package per
    line, comments at the top.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli along
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
KEEP = {"torch"}  # pinned by hand: the build matters, not only the version


def name(requirement: str) -> str:
    """The normalized project name of a requirement line (PEP 503)."""
    raw = re.split(r"[<>=!~\[ ;@]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", raw).lower()


def direct_dependencies() -> set[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {name(r) for r in requirements} - KEEP


def split(path: Path) -> tuple[list[str], list[str]]:
    """The leading comment lines and the requirement lines of a constraints file."""
    header, lines = [], []
    for line in path.read_text().splitlines():
        if not lines and (line.startswith("#") or not line.strip()):
            header.append(line)
        elif line.strip() and not line.startswith("#"):
            lines.append(line.strip())
    return header, lines


def python_version(freeze: Path) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)\.(\d+)", freeze.stem)
    if not match:
        raise SystemExit(
            f"{freeze}: expected a file named after its Python version, "
            "such as build/pythons/3.12.freeze"
        )
    return int(match[1]), int(match[2])


def frozen_versions(freeze: Path, wanted: set[str]) -> dict[str, str]:
    versions = {}
    for line in freeze.read_text().splitlines():
        if "==" in line:
            package, version = line.split("==", 1)
            if name(package) in wanted:
                versions[name(package)] = version.strip()
    return versions


def marker(low: tuple[int, int] | None, high: tuple[int, int] | None) -> str:
    parts = []
    if low:
        parts.append(f'python_version >= "{low[0]}.{low[1]}"')
    if high:
        parts.append(f'python_version < "{high[0]}.{high[1]}"')
    return " and ".join(parts)


def pins(package: str, by_python: dict[tuple[int, int], str]) -> list[str]:
    """One line per run of consecutive Python versions that share a version."""
    pythons = sorted(by_python)
    runs: list[list] = []
    for python in pythons:
        if runs and runs[-1][1] == by_python[python]:
            continue
        runs.append([python, by_python[python]])
    if len(runs) == 1:
        return [f"{package}=={runs[0][1]}"]
    lines = []
    for i, (start, version) in enumerate(runs):
        low = start if i > 0 else None
        high = runs[i + 1][0] if i + 1 < len(runs) else None
        lines.append(f"{package}=={version}; {marker(low, high)}")
    return lines


def write(path: Path, header: list[str], lines: list[str]) -> None:
    lines = sorted(lines, key=lambda line: (name(line), line))
    with open(path, "w") as f:
        f.write("\n".join(header + lines) + "\n")


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] not in ("unpinned", "write"):
        raise SystemExit(__doc__)
    path, direct = Path(argv[1]), direct_dependencies()
    header, lines = split(path)
    kept = [line for line in lines if name(line) not in direct]
    if argv[0] == "unpinned":
        sys.stdout.write("\n".join(header + kept) + "\n")
        return
    freezes = [Path(p) for p in argv[2:]]
    if not freezes:
        raise SystemExit("write: give the pip freeze of at least one environment")
    by_package: dict[str, dict[tuple[int, int], str]] = {p: {} for p in direct}
    for freeze in freezes:
        for package, version in frozen_versions(freeze, direct).items():
            by_package[package][python_version(freeze)] = version
    # An extra that the tested environments do not install (make lint's dev tools) keeps
    # its pins; a package that some environments have and others lack is an error.
    absent = sorted(p for p, versions in by_package.items() if not versions)
    partial = sorted(p for p, versions in by_package.items() if 0 < len(versions) < len(freezes))
    if partial:
        raise SystemExit(
            f"no version of {', '.join(partial)} in some of {', '.join(argv[2:])}; "
            "was every environment installed?"
        )
    if absent:
        print(f"not installed by the tested environments, pins kept: {', '.join(absent)}")
    kept += [line for line in lines if name(line) in absent]
    pinned = [
        line
        for package in direct
        if package not in absent
        for line in pins(package, by_package[package])
    ]
    write(path, header, kept + pinned)


if __name__ == "__main__":
    main(sys.argv[1:])
