#!/bin/sh
# Idempotent: Debian's Chromium and Playwright for Python, for tests/web/test_browser.py.
# Never runs `playwright install` (it downloads browsers; the tests use /usr/bin/chromium).
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! "$PY" -c 'import playwright, sys; from importlib.metadata import version; sys.exit(version("playwright") != "1.65.2")' 2>/dev/null; then
    "$PY" -m pip install -q playwright==1.65.2
fi
if ! "$PY" -c 'import schemathesis' 2>/dev/null; then
    "$PY" -m pip install -q schemathesis==4.32.5
fi
echo "browser: $(chromium --version 2>/dev/null | head -1), playwright $("$PY" -c 'from importlib.metadata import version; print(version("playwright"))')"
