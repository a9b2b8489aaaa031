# Two commands set everything up on a fresh machine (Python 3.10+, make, Node.js/npm):
#   make book   create .venv, install, execute every chapter, build the website
#   make test   same environment, run the whole suite (unit tests, notebooks, website)
# The venv recipe below also makes the per-version environments of `make pythons`
# (make VENV=.venv-3.12 PYTHON=python3.12 venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Every install reads the pins; `make pins` refreshes them (see tools/pins.py).
CONSTRAINTS ?= constraints.txt
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -c $(CONSTRAINTS)
# make pythons: the Python versions to test, each in its own .venv-3.X.
PYTHON_VERSIONS ?= 3.10 3.11 3.12 3.13
WIDGETS_JS := book/_widgets_js/embed-amd.js book/_widgets_js/require.js
HTML   := book/_build/html
# One thread per process: faster and steadier for these small models on a 2-core machine.
export OMP_NUM_THREADS ?= 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: all venv book test unit notebooks website lab exercises check-exercises check-browser \
	classroom bench lint mutation pythons pins clean

all: book

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e ".[course]"
	mkdir -p $(VENV)/etc/jupyter
	printf '{"ServerApp": {"allow_root": true, "ip": "127.0.0.1"}}\n' \
		> $(VENV)/etc/jupyter/jupyter_server_config.json
	mkdir -p $(VENV)/share/jupyter/lab/settings
	printf '%s\n' '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers":' \
		'{"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}' \
		> $(VENV)/share/jupyter/lab/settings/overrides.json
	touch $@

$(WIDGETS_JS):
	bash tools/fetch_widgets_js.sh book/_widgets_js

# The execution cache is keyed on the notebooks' code only: when the package changes, the
# website is rebuilt from scratch so that it shows what the package computes now.
PACKAGE_STAMP := book/_build/.package-stamp
$(PACKAGE_STAMP): $(shell find nfcourse -name '*.py')
	rm -rf book/_build
	mkdir -p book/_build
	touch $@

book: $(STAMP) $(WIDGETS_JS) $(PACKAGE_STAMP)
	$(BIN)/jupyter-book build book -W -n --keep-going
	@echo "The website: $(CURDIR)/$(HTML)/index.html"

exercises: $(STAMP)
	$(BIN)/python tools/make_exercises.py

check-exercises: $(STAMP)
	$(BIN)/python tools/make_exercises.py --check

# The nbgrader course folder for teachers (book/teachers.md); HIDDEN_SEED=N changes the
# inputs of the hidden tests.
classroom: $(STAMP)
	$(BIN)/python tools/make_classroom.py --out build/classroom \
		$(if $(HIDDEN_SEED),--hidden-seed $(HIDDEN_SEED))

unit: $(STAMP)
	$(BIN)/python -m pytest tests -m "not notebook and not website" -n 2 -q

notebooks: $(STAMP)
	$(BIN)/python -m pytest chapters solutions exercises --notebooks --nbval-lax \
		--nbval-current-env -n 2 --dist loadfile -q

website: book
	$(BIN)/python -m pytest tests/test_website.py -q

test: $(STAMP) check-browser lint book
	NFCOURSE_REQUIRE_WEBSITE=1 $(BIN)/python -m pytest tests chapters solutions exercises \
		--notebooks --nbval-lax --nbval-current-env -n 2 --dist loadfile \
		--durations=25 -q

check-browser:
	@command -v chromium >/dev/null 2>&1 || { echo "make test opens the website in \
	headless Chromium: install it first (apt-get install chromium; .ci/run does)"; exit 1; }

# Unit tests and notebooks under each Python of PYTHON_VERSIONS found on this machine
# (PATH or pyenv), each in its own .venv-3.X; one summary line per version. Versions in
# PYTHONS_SKIP are left out (CI leaves out .venv's, which make test has just tested).
pythons:
	MAKE="$(MAKE)" PYTHONS_SKIP="$(PYTHONS_SKIP)" bash tools/pythons.sh $(PYTHON_VERSIONS)

# Fresh environments with the direct dependencies unpinned (torch stays pinned), the tests
# under every Python version, then constraints.txt pins what those green runs installed.
pins: $(STAMP)
	rm -rf $(addprefix $(VENV)-,$(PYTHON_VERSIONS)) build/pythons build/pins
	mkdir -p build/pins
	$(BIN)/python tools/pins.py unpinned constraints.txt > build/pins/constraints.txt
	$(MAKE) pythons CONSTRAINTS=build/pins/constraints.txt
	$(BIN)/python tools/pins.py write constraints.txt build/pythons/*.freeze
	-git diff constraints.txt

lab: $(STAMP)
	$(BIN)/jupyter lab --ip=127.0.0.1 --notebook-dir=. chapters/00_introduction.md

# The benchmark's reference libraries live in an environment of their own, so that
# make bench never changes what .venv holds (and which tests make test runs).
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
$(BENCH_STAMP): pyproject.toml constraints.txt bench/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --disable-pip-version-check -c constraints.txt \
		-e ".[course]" -r bench/requirements.txt
	touch $@

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m pytest tests/test_bench.py -q
	$(BENCH_VENV)/bin/python bench/run.py

# ruff, configured in pyproject.toml; installed from the dev extra on first use. The lint
# rules, then the formatting (`ruff format nfcourse tests tools bench conftest.py` applies it).
LINT_PATHS := nfcourse tests tools bench conftest.py
lint: $(STAMP)
	test -x $(BIN)/ruff || $(PIP) -e ".[dev]"
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

# Mutation testing of core.py, flows/ and vae.py with mutmut (configured in pyproject.toml:
# the unit tests of those modules only, and for each mutant only the tests that reach the
# mutated function, stopping at the first failure). Time-boxed to MUTATION_TIME seconds on
# two workers; the score and the surviving mutants are in tests/MUTATION.md.
MUTATION_TIME ?= 2100
mutation: $(STAMP)
	test -x $(BIN)/mutmut || $(PIP) -e ".[dev]"
	rm -rf mutants
	OMP_NUM_THREADS=1 timeout $(MUTATION_TIME) $(BIN)/mutmut run --max-children 2 || true
	$(BIN)/mutmut results

clean:
	rm -rf build book/_build book/_widgets_js mutants
