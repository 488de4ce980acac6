"""The alerts component inside a real `hub run` with a real Mosquitto: discovery payloads and
state topics, re-send on homeassistant/status, alert state surviving a restart, CLI ack."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.hubproc import REPO, HubProcess, Publisher, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.mosquitto]

ALERT_CFG = "homeassistant/binary_sensor/hub_buggy/alert_rc_cell_voltage_critical/config"
ALERT_STATE = "hub/alerts/buggy/rc_cell_voltage_critical/state"
# `hub alerts` before its registration in hub/cli/__init__.py: the same click group, run directly.
HUB_ALERTS = [
    sys.executable,
    "-c",
    "from hub.cli.alerts import alerts; alerts(prog_name='hub alerts')",
]


class Watcher:
    def __init__(self, mosquitto: Mosquitto) -> None:
        self.messages: dict[str, bytes] = {}
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="watcher")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([("homeassistant/#", 0), ("hub/#", 0)])  # fmt: skip
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages[message.topic] = message.payload
            self.counts[message.topic] = self.counts.get(message.topic, 0) + 1

    def get(self, topic: str) -> bytes | None:
        with self.lock:
            return self.messages.get(topic)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _send(pub: Publisher, device: str, values: dict[str, float]) -> None:
    pub.publish(f"hub/readings/{device}", orjson.dumps({"values": values, "source": "serial"}))
    pub.flush()


def test_discovery_states_restart_and_cli(tmp_path: Path, mosquitto: Mosquitto) -> None:
    hub = HubProcess(tmp_path, mosquitto.url, {"alerts": {"tick": "0.2s"}})
    watcher = Watcher(mosquitto)
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        hub.start()
        _send(pub, "buggy", {"cell_voltage_avg": 3.8, "current": 20.0})
        config = orjson.loads(wait_for(lambda: watcher.get(ALERT_CFG), 10, what="alert config"))
        assert config["device_class"] == "battery"  # reads "Low", not "Unsafe"
        assert config["state_topic"] == ALERT_STATE
        assert config["availability_topic"] == "hub/status"
        assert config["device"]["via_device"].startswith("hub_")
        assert config["default_entity_id"] == "binary_sensor.buggy_rc_cell_voltage_critical"
        sensor = orjson.loads(wait_for(lambda: watcher.get("homeassistant/sensor/hub_buggy/cell_voltage_avg/config"), 10, what="sensor config"))  # fmt: skip
        assert (sensor["unit_of_measurement"], sensor["device_class"]) == ("V", "voltage")
        assert {a["topic"] for a in sensor["availability"]} == {
            "hub/status",
            "hub/availability/buggy",
        }
        assert "expire_after" not in sensor  # RC data is not periodic
        assert wait_for(lambda: watcher.get("hub/state/buggy/cell_voltage_avg"), 10) == b"3.8"
        assert wait_for(lambda: watcher.get(ALERT_STATE), 10) == b"OFF"
        assert watcher.get("hub/availability/buggy") == b"online"
        wait_for(lambda: watcher.get("homeassistant/sensor/hub_hub_test/readings_stored/config"), 10)  # fmt: skip

        _send(pub, "airq-1", {"co2": 700})
        co2 = orjson.loads(wait_for(lambda: watcher.get("homeassistant/sensor/hub_airq_1/co2/config"), 10))  # fmt: skip
        assert co2["expire_after"] == 600

        # Home Assistant restarts: discovery is sent again.
        before = watcher.counts[ALERT_CFG]
        pub.publish("homeassistant/status", b"online")
        pub.flush()
        wait_for(lambda: watcher.counts[ALERT_CFG] > before, 10, what="re-sent discovery")

        # A sag fires (for: 2 s), attributes then state.
        for _ in range(14):
            _send(pub, "buggy", {"cell_voltage_avg": 3.1})
            time.sleep(0.2)
        wait_for(lambda: watcher.get(ALERT_STATE) == b"ON", 10, what="alert ON")
        attrs = orjson.loads(watcher.get("hub/alerts/buggy/rc_cell_voltage_critical/attributes") or b"{}")  # fmt: skip
        assert attrs["value"] == 3.1 and attrs["threshold"] == 3.3 and attrs["since"]
        alert_id = attrs["alert_id"]

        # CLI ack while the hub runs: applied by the hub's engine.
        done = subprocess.run(
            [*HUB_ALERTS, "ack", str(alert_id), "--by", "tester",
             "-c", str(hub.config_path)],
            capture_output=True, text=True, timeout=30, cwd=REPO,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "ok" in done.stdout
        wait_for(lambda: b"tester" in (watcher.get("hub/alerts/buggy/rc_cell_voltage_critical/attributes") or b""), 10)  # fmt: skip

        # Restart: still firing, same alert.
        hub.stop()
        hub.start()
        time.sleep(1.0)
        rows = hub.query("SELECT id, state, acknowledged_by FROM alerts WHERE rule='rc_cell_voltage_critical'")  # fmt: skip
        assert rows == [(alert_id, "firing", "tester")], hub.query("SELECT * FROM alerts")
        listed = subprocess.run(
            [*HUB_ALERTS, "list", "--json", "-c", str(hub.config_path)],
            capture_output=True, text=True, timeout=30, cwd=REPO,
        )  # fmt: skip
        firing = {a["rule"]: a["id"] for a in orjson.loads(listed.stdout)}
        assert firing == {"rc_cell_voltage_critical": alert_id, "rc_cell_voltage_low": alert_id - 1}
        _send(pub, "buggy", {"cell_voltage_avg": 3.7})
        wait_for(lambda: watcher.get(ALERT_STATE) == b"OFF", 10, what="alert OFF")
        wait_for(lambda: hub.status().get("alerts", {}).get("firing") == 0, 10, what="none firing")
    finally:
        pub.close()
        watcher.close()
        if hub.proc is not None:
            hub.stop()


def test_sensor_states_are_throttled_to_the_state_interval(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A series read 20 times a second reaches Home Assistant about once per `state_interval`
    (not once per alert tick), and its last value is not held back."""
    hub = HubProcess(
        tmp_path,
        mosquitto.url,
        {"alerts": {"tick": "0.1s"}, "homeassistant": {"discovery": {"state_interval": "1s"}}},
    )
    watcher = Watcher(mosquitto)
    pub = Publisher(mosquitto.host, mosquitto.port)
    topic = "hub/state/rig/current"
    try:
        hub.start()
        started = time.monotonic()
        value = 0
        while time.monotonic() - started < 3.0:
            value += 1
            pub.publish("hub/readings/rig", orjson.dumps({"values": {"current": value}}))
            time.sleep(0.05)
        pub.flush()
        wait_for(lambda: watcher.get(topic) == str(value).encode(), 5, what="the last value")
        time.sleep(1.5)
        with watcher.lock:
            count = watcher.counts.get(topic, 0)
        # 3 s at one state a second, plus the trailing value; once per 0.1 s tick would be ~30
        assert 3 <= count <= 6, count
    finally:
        pub.close()
        watcher.close()
        hub.stop()
