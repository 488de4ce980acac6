"""Debian's Chromium through Playwright, for the dashboard and Home Assistant page tests
(tools/browser.sh installs both). Import `browser` into a conftest to use it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def chromium_path() -> str | None:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    return path if Path(path).exists() else None


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright (tools/browser.sh installs both)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed: run tools/browser.sh")
        pytest.skip("playwright is not installed: run tools/browser.sh")
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: run tools/browser.sh")
        pytest.skip("chromium is not installed: run tools/browser.sh")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, chromium_sandbox=False)
        try:
            yield browser
        finally:
            browser.close()
