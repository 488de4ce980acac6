"""The dashboard on a hub with the default web settings: reading needs the token.

The page loads without it (static files are open), asks for the token once however many
calls were refused, and then shows the devices and the live feed. Chromium, headless.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.hubproc import wait_for
from tests.web.conftest import WebHub, run_simulate, start_web_hub, stop_web_hub
from tests.web.test_browser import shot

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]


@pytest.fixture(scope="module")
def private_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebHub]:
    web = start_web_hub(tmp_path_factory.mktemp("privatehub"), {"web": {"public_read": False}})
    try:
        run_simulate(
            web.broker, "--nodes", "1", "--buggies", "0", "--rounds", "3", "--seed", "5",
            "--start", str(time.time() - 60),
        )  # fmt: skip
        wait_for(lambda: web.hub.sample_count() > 5, 30, what="simulated data")
        yield web
    finally:
        stop_web_hub(web)


def test_the_dashboard_asks_for_the_token_once_then_shows_the_overview(
    browser: Any, private_hub: WebHub
) -> None:
    assert private_hub.http.get("/api/devices").status_code == 401
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    violations: list[str] = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.goto(f"{private_hub.base}/#/overview")
    page.wait_for_selector("#token-dialog[open]", timeout=10_000)
    page.fill("#token-input", private_hub.token)
    page.click("#token-form button[value=save]")
    page.wait_for_selector('#devices article[data-device="airq-1"]', timeout=10_000)
    assert page.locator("#token-dialog[open]").count() == 0  # asked once, not per call
    page.wait_for_selector('body[data-live="on"]', timeout=10_000)
    shot(page, "overview-after-token-light-desktop")
    context.close()
    assert not errors, errors
    assert not violations, violations
