"""One real Home Assistant (and the broker it listens to) for every end-to-end test here.

Starting Home Assistant costs about 10 s and a restart 5 s, so the tests share one instance:
each test installs its automations (`set_automations`) and starts its own hub, and
`clean_broker` removes every retained message afterwards, so Home Assistant drops the test's
entities and devices and the next test starts from an empty registry.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.homeassistant.harness import HassUnavailable, HomeAssistant, ensure_hass
from tests.support.browser import browser  # noqa: F401 (a fixture)
from tests.support.mosquitto import Mosquitto, mosquitto_binary


@pytest.fixture(scope="session")
def hass_bin() -> str:
    try:
        return ensure_hass()
    except HassUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Home Assistant is required in CI: {exc}")
        print(f"\nSKIP reason: Home Assistant cannot be installed here: {exc}")
        pytest.skip(f"Home Assistant cannot be installed here: {exc}")


@pytest.fixture(scope="session")
def ha_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed (.ci/run installs it: apt-get install mosquitto)")
    with Mosquitto(tmp_path_factory.mktemp("ha-broker")) as broker:
        yield broker


@pytest.fixture(scope="session")
def shared_ha(tmp_path_factory: pytest.TempPathFactory, ha_broker: Mosquitto, hass_bin: str) -> Iterator[HomeAssistant]:  # fmt: skip
    ha = HomeAssistant(
        hass_bin, tmp_path_factory.mktemp("ha"), ha_broker.port,
        # frontend: the device page test looks at what a user sees (test_ha_device_page.py)
        extra_config={"frontend": None,
                      "counter": {"hub_notify_count": {"initial": 0, "step": 1},
                                   "hub_rc_count": {"initial": 0, "step": 1}},
                      "input_text": {"hub_rc_message": {"max": 255}}},
    )  # fmt: skip
    try:
        ha.start()
        yield ha
    finally:
        ha.stop()


def clear_retained(broker: Mosquitto, quiet: float = 0.5) -> int:
    """Publish an empty retained payload on every retained topic (discovery configs first
    go, so Home Assistant removes the entities and their devices)."""
    found: set[str] = set()
    last = [time.monotonic()]
    lock = threading.Lock()

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        if message.retain and message.payload:
            with lock:
                found.add(message.topic)
                last[0] = time.monotonic()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="ha-test-cleaner")
    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe("#", qos=1)
    while time.monotonic() - last[0] < quiet:
        time.sleep(0.05)
    for topic in sorted(found, key=lambda t: not t.startswith("homeassistant/")):
        client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()
    return len(found)


@pytest.fixture
def ha(shared_ha: HomeAssistant, ha_broker: Mosquitto) -> Iterator[HomeAssistant]:
    """The shared Home Assistant, started if a test stopped it, emptied after the test."""
    if shared_ha.proc is None or shared_ha.proc.poll() is not None:
        shared_ha.start()
    shared_ha.set_automations([])
    yield shared_ha
    if shared_ha.proc is None or shared_ha.proc.poll() is not None:
        shared_ha.start()
    clear_retained(ha_broker)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and shared_ha.mqtt_devices():
        time.sleep(0.2)


@pytest.fixture
def hub_dir(tmp_path: Path) -> Path:
    path = tmp_path / "hub"
    path.mkdir()
    return path
