"""One real hub for the web tests: Mosquitto, `hub run` with the web API on a free port, fed by
`hub simulate`, and (for the browser tests) Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import browser  # noqa: F401 (a fixture)
from tests.support.hubproc import REPO, HubProcess, Publisher, wait_for
from tests.support.mosquitto import Mosquitto, free_port, mosquitto_binary

ARTIFACTS = REPO / "test-artifacts" / "web"
TOKEN_LINE = re.compile(r"New web API token \(shown once, stored hashed in [^)]*\): (\S+)")

# A rule the tests can trip at will: CO2 above 5000 ppm fires at once.
TEST_RULE = {
    "id": "test_co2_extreme",
    "metric": "co2",
    "comparison": ">",
    "threshold": 5000,
    "clear": 4000,
    "for": "0s",
    "severity": "critical",
    "message": "{device}: CO2 at {value:.0f} ppm (test rule)",
}


@dataclass
class WebHub:
    hub: HubProcess
    broker: Mosquitto
    base: str
    token: str
    http: httpx.Client

    def publisher(self, client_id: str) -> Publisher:
        return Publisher(self.broker.host, self.broker.port, client_id=client_id)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def run_simulate(broker: Mosquitto, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "hub", "simulate", "--broker", broker.url, *args],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return out.stdout


def start_web_hub(workdir: Path, extra: dict[str, Any] | None = None) -> WebHub:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed (.ci/run installs it: apt-get install mosquitto)")
    broker = Mosquitto(workdir / "broker")
    broker.start()
    port = free_port()
    extra = dict(extra or {})
    config: dict[str, Any] = {
        # The browser tests read without the token unless a test turns public_read off.
        "web": {"port": port, "host": "127.0.0.1", "public_read": True, **extra.pop("web", {})},
        "alerts": {"rules": [TEST_RULE]},
        **extra,
    }
    hub = HubProcess(workdir, broker.url, config).start()
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=base, timeout=10)
    wait_for(lambda: _up(http), 20, what="web API up")
    match = wait_for(lambda: TOKEN_LINE.search(hub.log()), 10, what="token in the log")
    return WebHub(hub, broker, base, match.group(1), http)


def _up(http: httpx.Client) -> bool:
    try:
        # 401: up, and reading needs the token (web.public_read is off)
        return http.get("/api/health").status_code in (200, 401)
    except httpx.HTTPError:
        return False


def stop_web_hub(web: WebHub) -> None:
    web.http.close()
    try:
        web.hub.stop()
    finally:
        web.broker.stop()


@pytest.fixture(scope="package")
def web_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebHub]:
    """A hub with two simulated air nodes and a buggy (20 rounds), shared by the web tests.

    Its overview is readable without the token (`web.public_read`), as on a LAN where the
    user opted in; what reading needs by default is tested in test_auth.py.
    """
    web = start_web_hub(tmp_path_factory.mktemp("webhub"), {"web": {"public_read": True}})
    try:
        run_simulate(
            web.broker, "--nodes", "2", "--buggies", "1", "--rounds", "20", "--seed", "3",
            "--start", str(time.time() - 200),
        )  # fmt: skip
        wait_for(lambda: web.hub.sample_count() >= 2 * 7 * 20 + 20 * 8, 30, what="simulated data")
        yield web
    finally:
        stop_web_hub(web)
