#!/usr/bin/env bash
# The whole test suite from a fresh machine: system tools, a venv, lint, types, tests.
# Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Real downloaders for the end-to-end tests (wget, curl, aria2c, headless Chromium).
need=()
command -v wget >/dev/null || need+=(wget)
command -v curl >/dev/null || need+=(curl)
command -v aria2c >/dev/null || need+=(aria2)
command -v chromium >/dev/null || need+=(chromium)
command -v firefox-esr >/dev/null || need+=(firefox-esr)
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing ${need[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "missing ${need[*]}: install them (Debian: sudo apt-get install ${need[*]}); their tests will fail" >&2
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check hfwatchd tests bench
.venv/bin/mypy
.venv/bin/lint-imports --no-cache  # the module layering in pyproject.toml

# the fast subset on every Python requires-python claims that this machine has (3.10 ... 3.13)
bash tests/pyversions.sh

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
    # pytest's "no tests collected" (e.g. a -k or -m filter that selects nothing) is not a failure
    echo "pytest collected no tests for these arguments" >&2
    exit 0
fi
exit "$rc"
