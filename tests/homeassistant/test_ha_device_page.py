"""One node's device page in Home Assistant's own frontend (issue #20), as a user opens it:
Settings > Devices > airq-1, in headless Chromium, against a REAL Home Assistant Core, a real
Mosquitto and a real `hub run --simulate`. The page must show the node's device (Espressif,
esp32dev, its MAC) with the node's own sensors and the hub's derived sensors and alerts on the
same card, each once, under the names Home Assistant users write, and nothing unavailable.

Screenshots land in test-artifacts/homeassistant/ (the node, the buggy and the hub itself).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.homeassistant.harness import HomeAssistant
from tests.support.hubproc import REPO, HubProcess, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = [
    pytest.mark.homeassistant,
    pytest.mark.mosquitto,
    pytest.mark.browser,
    pytest.mark.slow,
]

ARTIFACTS = REPO / "test-artifacts" / "homeassistant"

# What the node announces itself (firmware/packages/*.yaml names) and what the hub adds.
NODE_SENSORS = ["CO2", "Humidity", "PM1", "PM2.5", "PM10", "Temperature", "VOC Index"]
HUB_SENSORS = ["Absolute humidity", "Comfort score", "Dew point", "CO2 high", "CO2 critical"]


def _logged_in_page(browser: Any, ha: HomeAssistant) -> Any:
    """A page logged in as the onboarded owner: the frontend keeps its tokens in
    localStorage under `hassTokens`, as after a login through the form."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1400})
    tokens = {
        "access_token": ha.token,
        "token_type": "Bearer",
        "expires_in": 1800,
        "hassUrl": ha.base,
        "clientId": f"{ha.base}/",
        "expires": int(time.time() * 1000) + 1_800_000,
        "refresh_token": ha.refresh_token,
    }
    ctx.add_init_script(
        "if (location.protocol.startsWith('http'))"
        f" localStorage.setItem('hassTokens', {json.dumps(json.dumps(tokens))})"
    )
    return ctx.new_page()


def _shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_a_node_has_one_device_page_with_its_own_and_the_hubs_sensors(
    ha: HomeAssistant, ha_broker: Mosquitto, hub_dir: Path, browser: Any
) -> None:
    hub = HubProcess(hub_dir, ha_broker.url, {
        "simulate": {"enabled": True, "airq_nodes": 1, "buggies": 1, "interval": "1s", "seed": 20},
    })  # fmt: skip
    try:
        hub.start()

        def device(name: str) -> dict[str, Any] | None:
            found = [d for d in ha.mqtt_devices() if d.get("name") == name]
            return found[0] if len(found) == 1 else None

        def named(device_id: str) -> set[str]:
            entities = [e for e in ha.entities() if e.get("device_id") == device_id]
            states = ha.states()
            return {
                str(states[e["entity_id"]]["attributes"].get("friendly_name", ""))
                for e in entities
                if e["entity_id"] in states and states[e["entity_id"]]["state"] != "unavailable"
            }

        node = wait_for(lambda: device("airq-1"), 30, interval=0.5, what="airq-1 in HA")
        wanted = {f"airq-1 {n}" for n in NODE_SENSORS + HUB_SENSORS}
        wait_for(lambda: wanted <= named(node["id"]), 45, interval=0.5, what="airq-1's sensors")

        page = _logged_in_page(browser, ha)
        page.goto(f"{ha.base}/config/devices/device/{node['id']}")
        page.get_by_text("Comfort score").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)  # the last states render
        shot = _shot(page, "device-airq-1")

        # (the frontend renders in shadow roots: Playwright's text locators pierce them)
        assert page.get_by_text("esp32dev", exact=True).count() == 1, shot
        assert page.get_by_text("by Espressif", exact=True).count() == 1, shot
        assert page.get_by_text(re.compile(r"MAC: ([0-9A-F]{2}:){5}[0-9A-F]{2}")).count() == 1
        for name in NODE_SENSORS + HUB_SENSORS:
            assert page.get_by_text(name, exact=True).count() == 1, (name, shot)
        assert page.get_by_text("Unavailable", exact=True).count() == 0, shot
        assert page.get_by_text(re.compile(r"_2$")).count() == 0, shot
        # One page for the node: no second airq-1 device anywhere in the registry.
        assert [d["name"] for d in ha.devices()].count("airq-1") == 1

        # The buggy (no ESPHome of its own) and the hub itself have real makers and models.
        for name, maker in (("buggy", "telemetry-hub"), ("Telemetry hub", "telemetry-hub")):
            other = wait_for(lambda name=name: device(name), 30, what=f"{name} in HA")
            page.goto(f"{ha.base}/config/devices/device/{other['id']}")
            page.get_by_text(f"by {maker}").first.wait_for(timeout=30_000)
            page.wait_for_timeout(1500)
            _shot(page, f"device-{name.lower().replace(' ', '-')}")
            assert page.get_by_text("Unavailable", exact=True).count() == 0, name
        page.context.close()
    finally:
        hub.stop()
