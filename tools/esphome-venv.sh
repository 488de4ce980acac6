#!/usr/bin/env bash
# Create (idempotently) a virtualenv holding the real ESPHome, OUTSIDE the checkout, and print
# the path of its `esphome` executable on stdout (everything else goes to stderr).
#
#   HUB_ESPHOME_VENV      where the venv lives      (default /var/cache/hub-test/esphome-venv)
#   HUB_ESPHOME_VERSION   the esphome release      (default 2026.10.0)
#   HUB_ESPHOME_PYTHON    a Python >= 3.12, < 3.15 (default: searched, see find_python)
#
# ESPHome needs its own venv: it requires Python >= 3.12 (the hub's venv is 3.11) and pins its
# own aioesphomeapi and platformio. Exit status 2 means no suitable Python exists here.
set -euo pipefail

venv="${HUB_ESPHOME_VENV:-/var/cache/hub-test/esphome-venv}"
version="${HUB_ESPHOME_VERSION:-2026.10.0}"

log() { printf 'esphome-venv: %s\n' "$*" >&2; }

python_ok() {
    # True when "$1" runs and is a CPython in ESPHome's supported range.
    "$1" -c 'import sys; sys.exit(0 if (3, 12) <= sys.version_info[:2] < (3, 15) else 1)' \
        >/dev/null 2>&1
}

find_python() {
    local candidate
    if [[ -n "${HUB_ESPHOME_PYTHON:-}" ]]; then
        if python_ok "$HUB_ESPHOME_PYTHON"; then
            echo "$HUB_ESPHOME_PYTHON"
            return 0
        fi
        log "HUB_ESPHOME_PYTHON=$HUB_ESPHOME_PYTHON is not a Python >= 3.12, < 3.15"
        return 1
    fi
    local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
    for candidate in \
        "$pyenv_root"/versions/3.12*/bin/python3 \
        "$pyenv_root"/versions/3.13*/bin/python3 \
        "$pyenv_root"/versions/3.14*/bin/python3 \
        "$(command -v python3.12 || true)" \
        "$(command -v python3.13 || true)" \
        "$(command -v python3.14 || true)" \
        "$(command -v python3 || true)"; do
        if [[ -n "$candidate" && -x "$candidate" ]] && python_ok "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

esphome_bin="$venv/bin/esphome"
# Written last, so an interrupted install is never taken for a finished one.
marker="$venv/.hub-esphome-version"

if [[ -x "$esphome_bin" && -f "$marker" && "$(cat "$marker")" == "$version" ]]; then
    echo "$esphome_bin"
    exit 0
fi

if ! python="$(find_python)"; then
    log "cannot create the ESPHome venv: ESPHome $version needs Python >= 3.12, < 3.15, and none"
    log "was found (looked at \$HUB_ESPHOME_PYTHON, pyenv 3.12-3.14, python3.12/3.13/3.14, python3)."
    log "Install one (e.g. 'apt-get install python3.12-venv' or 'pyenv install 3.12') or set"
    log "HUB_ESPHOME_PYTHON to it."
    exit 2
fi

log "creating $venv with $python ($("$python" --version 2>&1)), esphome==$version"
mkdir -p "$(dirname "$venv")"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "esphome==$version" >&2
"$esphome_bin" version >&2
echo "$version" >"$marker"
echo "$esphome_bin"
