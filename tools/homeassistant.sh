#!/usr/bin/env bash
# Build (idempotently) a real Home Assistant Core for the end-to-end tests, OUTSIDE the checkout,
# and print the path of its `hass` executable on stdout (everything else goes to stderr).
#
#   HUB_HA_STACK    "<homeassistant version>@<CPython version>": the one variable that moves the
#                   tests to a newer Home Assistant (default 2026.2.3@3.13.5). HA 2026.3+ needs
#                   Python >= 3.14.2, which cannot be had here (specs/home-assistant.md §1).
#   HUB_HA_CACHE    cache root (default /var/cache/hub-test)
#   HUB_HA_PYTHON_TARBALL_URL  where the CPython source comes from (default: the upstream
#                   tarball of Debian trixie's python3.13 source package, in the pool of the
#                   Debian mirror apt already uses)
#
# Layout: $HUB_HA_CACHE/python-<py>/ (the interpreter), $HUB_HA_CACHE/ha-<ha>-py<py>/ (the venv).
# Each is marked finished by a file written last, so an interrupted run is never taken for a
# finished one. Exit status 2: a prerequisite could not be installed (reason on stderr).
set -euo pipefail

stack="${HUB_HA_STACK:-2026.2.3@3.13.5}"
ha_version="${stack%@*}"
py_version="${stack#*@}"
py_minor="${py_version%.*}"
cache="${HUB_HA_CACHE:-/var/cache/hub-test}"
prefix="$cache/python-$py_version"
venv="$cache/ha-$ha_version-py$py_version"
# What HA would otherwise install at run time (specs/home-assistant.md §1); without the first
# nine, GET /api/services answers 500.
preinstall=(hassil==3.5.0 home-assistant-intents==2026.1.28 PyTurboJPEG==1.8.0 av==16.0.1
    ha-ffmpeg==3.2.2 mutagen==1.47.0 numpy==2.3.2 pymicro-vad==1.0.1 pyspeex-noise==1.0.2
    paho-mqtt==2.1.0 home-assistant-frontend==20260128.6)

log() { printf 'homeassistant.sh: %s\n' "$*" >&2; }
fail() {
    log "$*"
    exit 2
}

debian_mirror() {
    # The URIs: field of apt's Debian sources (deb822 first, then the one-line format).
    local uri=""
    if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
        uri="$(awk '/^URIs:/ {print $2}' /etc/apt/sources.list.d/*.sources |
            grep -v -- '-security' | head -n1 || true)"
    fi
    if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
        uri="$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
            /etc/apt/sources.list | grep -v -- '-security' | head -n1 || true)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

build_python() {
    local py="$prefix/bin/python$py_minor"
    if [[ -x "$py" && -f "$prefix/.hub-built" ]]; then
        return 0
    fi
    local debs=(build-essential libssl-dev libsqlite3-dev libffi-dev liblzma-dev libbz2-dev
        zlib1g-dev libreadline-dev xz-utils curl)
    local missing=()
    for deb in "${debs[@]}"; do
        dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$deb")
    done
    if ((${#missing[@]})); then
        log "apt-get install ${missing[*]}"
        if [[ $(id -u) -ne 0 ]]; then
            fail "need root to install ${missing[*]}"
        fi
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            "${missing[@]}") >&2 || fail "apt-get could not install ${missing[*]}"
    fi
    local url="${HUB_HA_PYTHON_TARBALL_URL:-$(debian_mirror)/pool/main/p/python$py_minor/python${py_minor}_${py_version}.orig.tar.xz}"
    local work
    work="$(mktemp -d "$cache/.python-build.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    log "downloading $url"
    curl -fsSL --retry 3 -o "$work/src.tar.xz" "$url" || fail "cannot download $url"
    tar -xJf "$work/src.tar.xz" -C "$work"
    local src
    src="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'Python-*' | head -n1)"
    [[ -n "$src" ]] || fail "no Python-* directory in $url"
    log "building CPython $py_version into $prefix (about 3-4 minutes on 2 cores)"
    rm -rf "$prefix"
    (cd "$src" && ./configure --prefix="$prefix" --quiet >/dev/null &&
        make -j"$(nproc)" -s >/dev/null 2>"$work/make.log" && make install -s >/dev/null 2>&1) ||
        {
            tail -n 40 "$work/make.log" >&2 || true
            fail "building CPython $py_version failed"
        }
    "$py" -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib' ||
        fail "CPython $py_version built without a needed module (ssl/sqlite3/ctypes/lzma/bz2/zlib)"
    touch "$prefix/.hub-built"
    rm -rf "$work"
    trap - EXIT
}

build_venv() {
    if [[ -x "$venv/bin/hass" && -f "$venv/.hub-ha-version" &&
        "$(cat "$venv/.hub-ha-version")" == "$stack" ]]; then
        return 0
    fi
    log "creating $venv with homeassistant==$ha_version (about 2 minutes, 1.1 GB)"
    rm -rf "$venv"
    "$prefix/bin/python$py_minor" -m venv "$venv"
    local pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
    "${pip[@]}" --upgrade pip >&2 || fail "pip upgrade failed"
    "${pip[@]}" "homeassistant==$ha_version" >&2 || fail "pip install homeassistant==$ha_version failed"
    local constraints
    constraints="$("$venv/bin/python" -c \
        'import homeassistant, os; print(os.path.join(os.path.dirname(homeassistant.__file__), "package_constraints.txt"))')"
    "${pip[@]}" -c "$constraints" "${preinstall[@]}" >&2 || fail "pre-installing HA's runtime requirements failed"
    "$venv/bin/hass" --version >&2
    echo "$stack" >"$venv/.hub-ha-version"
}

mkdir -p "$cache"
build_python
build_venv
echo "$venv/bin/hass"
