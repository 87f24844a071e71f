#!/usr/bin/env bash
# The fast `pyversions` subset of the tests on every Python hfwatchd claims, each in its own venv.
#
#   bash tests/pyversions.sh [pytest args...]
#
# For each minor version from requires-python's lowest to PYVERSIONS_HIGHEST (default 13) that exists
# here (python3.X on PATH, else pyenv's), builds .venv-py3X, installs hfwatchd (editable) and pytest,
# imports every module, then runs `pytest -m pyversions` on the modules holding such tests. One line
# per version; versions not on this machine are skipped. Exits non-zero if any version present fails.
set -uo pipefail
cd "$(dirname "$0")/.."

lowest=$(sed -n 's/^requires-python = ">=3\.\([0-9][0-9]*\)".*/\1/p' pyproject.toml)
highest=${PYVERSIONS_HIGHEST:-13}
if [ -z "$lowest" ]; then
    echo "pyversions: cannot read requires-python from pyproject.toml" >&2
    exit 64
fi

# python3.X that runs and is 3.X: on PATH first, then any pyenv install of it (a pyenv shim on PATH
# exists even for versions pyenv does not select, and then fails when run).
find_python() {
    local minor=$1 candidate full
    candidate=$(command -v "python3.$minor" 2>/dev/null) &&
        "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != (3, $minor))" 2>/dev/null &&
        { echo "$candidate"; return 0; }
    command -v pyenv >/dev/null 2>&1 || return 1
    for full in $(pyenv versions --bare 2>/dev/null | grep -E "^3\.$minor\.[0-9]+$" | sort -t. -k3,3nr); do
        candidate=$(PYENV_VERSION=$full pyenv which "python3.$minor" 2>/dev/null) &&
            "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != (3, $minor))" 2>/dev/null &&
            { echo "$candidate"; return 0; }
    done
    return 1
}

# every module of the package, so syntax or stdlib names newer than the interpreter fail here
import_all='import importlib, pkgutil, hfwatchd
for m in pkgutil.iter_modules(hfwatchd.__path__):
    if m.name != "__main__":  # running it is the CLI
        importlib.import_module("hfwatchd." + m.name)'

# only the modules that hold marked tests are collected: the others may import what this slim venv
# lacks (hypothesis, transformers)
mapfile -t files < <(grep -l '@pytest.mark.pyversions' tests/test_*.py)
if [ "${#files[@]}" = 0 ]; then
    echo "pyversions: no test is marked @pytest.mark.pyversions" >&2
    exit 1
fi

failed=0
ran=0
stamp_of=$(sha256sum pyproject.toml | cut -c1-64)
for minor in $(seq "$lowest" "$highest"); do
    start=$SECONDS
    if ! python=$(find_python "$minor"); then
        echo "python3.$minor: skipped (not on this machine)"
        continue
    fi
    venv=.venv-py3$minor
    log=$venv/pyversions.log
    version=$("$python" -c 'import platform; print(platform.python_version())')
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c '' 2>/dev/null; then
        rm -rf "$venv"
        "$python" -m venv "$venv" || { echo "python3.$minor ($version): FAILED to create $venv"; failed=1; continue; }
    fi
    echo '*' > "$venv/.gitignore"  # as 3.13's venv writes itself: the venv never shows in git status
    : > "$log"
    # installing again only when the dependencies may have changed: the install is editable
    if [ "$(cat "$venv/.pyversions-stamp" 2>/dev/null)" != "$stamp_of" ]; then
        if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -e . pytest >>"$log" 2>&1; then
            echo "python3.$minor ($version): FAILED to install (see $log)"
            tail -n 20 "$log" | sed 's/^/    /'
            failed=1
            continue
        fi
        echo "$stamp_of" > "$venv/.pyversions-stamp"
    fi
    if ! "$venv/bin/python" -c "$import_all" >>"$log" 2>&1; then
        echo "python3.$minor ($version): FAILED to import hfwatchd (see $log)"
        tail -n 20 "$log" | sed 's/^/    /'
        failed=1
        continue
    fi
    "$venv/bin/python" -m pytest -q -m pyversions "${files[@]}" "$@" >>"$log" 2>&1
    rc=$?
    # pytest's closing line ("7 passed in 3.1s", "1 failed, 6 passed in 4.0s", "7 deselected in 0.5s")
    summary=$(grep -E ' in [0-9.]+s' "$log" | tail -n 1 | tr -d '=' | sed 's/^ *//; s/ *$//')
    if [ "$rc" = 0 ]; then
        echo "python3.$minor ($version): ok, ${summary:-passed} ($((SECONDS - start))s)"
        ran=$((ran + 1))
    else
        # exit 5 (nothing collected) is a failure too: the subset must run on every version
        echo "python3.$minor ($version): FAILED, pytest exit $rc: ${summary:-see $log} ($((SECONDS - start))s)"
        grep -E '^(FAILED|ERROR) ' "$log" | sed 's/^/    /'
        failed=1
    fi
done
if [ "$ran" = 0 ] && [ "$failed" = 0 ]; then
    echo "pyversions: no Python between 3.$lowest and 3.$highest found" >&2
    exit 1
fi
exit "$failed"
