#!/usr/bin/env bash
# Install (idempotently) VictoriaMetrics, the real server the InfluxDB tests and bench write to
# (it takes InfluxDB v2 line protocol on /api/v2/write and is read back through /api/v1/export).
# Prints the path of the server binary on stdout; everything else goes to stderr.
set -euo pipefail

log() { printf 'victoria-metrics: %s\n' "$*" >&2; }

find_binary() {
    local candidate
    for candidate in victoria-metrics victoria-metrics-prod /usr/bin/victoria-metrics \
        /usr/bin/victoria-metrics-prod; do
        if command -v "$candidate" >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if ! find_binary >/dev/null; then
    sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    log "installing the Debian package victoria-metrics"
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
        victoria-metrics >&2; then
        $sudo apt-get -o DPkg::Lock::Timeout=600 update >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
            victoria-metrics >&2
    fi
    # The package ships a systemd service; tests start their own private server instead.
fi
find_binary
