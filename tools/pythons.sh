#!/usr/bin/env bash
# Test the course under every Python version given (make pythons: 3.10 3.11 3.12 3.13).
#
# For each version, the interpreter python3.X is looked up on PATH, then in pyenv's
# versions folder ($PYENV_ROOT, by default ~/.pyenv); a version this machine lacks is
# reported and skipped. Each interpreter gets its own virtual environment .venv-3.X,
# installed by the Makefile's venv recipe from the same constraints file, and runs the
# unit tests and every chapter, solution and exercise notebook under nbval (not the
# website, which `make test` checks). One summary line per version at the end; the exit
# status is non-zero when a version that was found fails. PYTHONS_SKIP lists versions not
# to run again (CI: the version of .venv, which `make test` has just tested in full).
#
# Logs and the installed versions (pip freeze) land in build/pythons/.
set -uo pipefail
cd "$(dirname "$0")/.."
make=${MAKE:-make}
logs=build/pythons
mkdir -p "$logs"

find_python() {
  local version=$1 candidate
  candidate=$(command -v "python$version" 2>/dev/null)
  # pyenv's shims exist for every installed version but only run the active ones.
  if [ -n "$candidate" ] && "$candidate" -c "" >/dev/null 2>&1; then
    echo "$candidate"
    return
  fi
  for candidate in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$version".*/bin/"python$version" \
                     2>/dev/null | sort -V -r); do
    if "$candidate" -c "" >/dev/null 2>&1; then
      echo "$candidate"
      return
    fi
  done
  return 1
}

# "870 passed, 2 skipped in 61.20s" from pytest -q, without the timing.
counts() {
  grep -E '^=* ?[0-9]+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed)' "$1" \
    | sed -e 's/ in [0-9.]*s.*$//' -e 's/^=* *//'
}

summary=()
status=0
for version in "$@"; do
  if [[ " ${PYTHONS_SKIP:-} " == *" $version "* ]]; then
    summary+=("python$version  skipped (PYTHONS_SKIP)")
    continue
  fi
  if ! python=$(find_python "$version"); then
    summary+=("python$version  not found on this machine: skipped")
    continue
  fi
  log=$logs/$version.log
  echo "== python$version: $python (log: $log)"
  start=$(date +%s)
  # -k: run the notebooks even when a unit test fails, so that the summary counts both.
  "$make" --no-print-directory -k VENV=".venv-$version" PYTHON="$python" \
    venv unit notebooks 2>&1 | tee "$log"
  result=${PIPESTATUS[0]}
  seconds=$(( $(date +%s) - start ))
  if [ -x ".venv-$version/bin/python" ]; then
    ".venv-$version/bin/python" -m pip freeze --disable-pip-version-check --exclude-editable \
      > "$logs/$version.freeze" 2>/dev/null
  fi
  mapfile -t runs < <(counts "$log")
  line="python$version  $("$python" -c 'import platform; print(platform.python_version())')"
  if [ "$result" -eq 0 ]; then line+="  ok    "; else line+="  FAILED"; status=1; fi
  line+="  unit: ${runs[0]:-did not run}; notebooks: ${runs[1]:-did not run}; ${seconds} s"
  summary+=("$line")
done

echo
echo "== Python versions"
printf '%s\n' "${summary[@]}"
exit "$status"
