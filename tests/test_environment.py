"""The project's own files install everything, with torch pinned, and agree with each other."""

import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli along
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["course"]
    return {_name(r): r.replace(" ", "") for r in reqs}


def _conda_pip_requirements() -> dict[str, str]:
    text = (ROOT / "environment.yml").read_text()
    pip_block = text.split("- pip:", 1)[1]
    reqs = [line.strip()[2:] for line in pip_block.splitlines() if line.strip().startswith("- ")]
    return {_name(r): r.replace(" ", "") for r in reqs if not r.startswith("-")}


def _constraints() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return {_name(r): r.strip() for r in lines if r.strip() and not r.startswith("#")}


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    conda = _conda_pip_requirements()
    pyproject = _pyproject_requirements()
    assert set(conda) - {"torch"} == set(pyproject) - {"torch"}
    for name, req in pyproject.items():
        if name != "torch":
            assert conda[name] == req, (
                f"{name}: {conda[name]} in environment.yml, {req} in pyproject"
            )


def test_torch_is_pinned_to_the_constraint_everywhere():
    pin = _constraints()["torch"]
    assert re.fullmatch(r"torch==\d+\.\d+\.\d+", pin)
    assert _conda_pip_requirements()["torch"] == pin
    assert "- -c constraints.txt" in (ROOT / "environment.yml").read_text()
    makefile = (ROOT / "Makefile").read_text()
    installs = [
        line for line in makefile.splitlines() if "pip install" in line or "$(PIP)" in line
    ]
    assert installs and all(
        any(c in line for c in ("constraints.txt", "$(CONSTRAINTS)", "$(PIP)"))
        for line in installs
    )
    assert "CONSTRAINTS ?= constraints.txt" in makefile
    assert "-c $(CONSTRAINTS)" in makefile


def test_jupyterlab_listens_on_loopback_with_its_token_on():
    makefile = (ROOT / "Makefile").read_text()
    lab = makefile.split("\nlab:", 1)[1].split("\n\n", 1)[0]
    assert "--ip=127.0.0.1" in lab
    for forbidden in (
        "token=''",
        'token=""',
        "--IdentityProvider.token=",
        "--NotebookApp.token",
        "--ServerApp.token",
        "--no-browser-auth",
        "disable_check_xsrf",
    ):
        assert forbidden not in makefile


def test_ci_runs_the_readme_test_command_and_every_python():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make pythons" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make book" in (ROOT / "README.md").read_text()


def test_no_notebook_is_committed_as_ipynb():
    ignored = (ROOT / ".gitignore").read_text()
    assert "*.ipynb" in ignored


def test_the_supported_python_versions_agree_everywhere():
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    tested = re.search(r"^PYTHON_VERSIONS \?= (.+)$", (ROOT / "Makefile").read_text(), re.M)[1]
    tested = tested.split()
    classifiers = [
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert classifiers == tested, "pyproject's classifiers and make pythons' versions differ"
    readme = (ROOT / "README.md").read_text().splitlines()
    promise = next(line for line in readme if line.startswith("On a fresh machine with Python"))
    assert re.findall(r"3\.\d+", promise) == tested, f"README says: {promise}"
    requires = SpecifierSet(project["requires-python"])
    minors = [int(v.split(".")[1]) for v in tested]
    assert minors == list(range(minors[0], minors[-1] + 1))
    assert all(f"{v}.0" in requires for v in tested)
    assert f"3.{minors[0] - 1}.0" not in requires and f"3.{minors[-1] + 1}.0" not in requires
    conda = re.search(r"^\s*- python=(\d+\.\d+)\s*$", (ROOT / "environment.yml").read_text(), re.M)
    assert conda and conda[1] in tested
