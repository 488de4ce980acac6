"""The whole hub reading real ESPHome firmware over the native API.

firmware/host/hub-test-node.yaml built for `host` serves the native API on a loopback port;
a real `hub run` (tests/support/hubproc.py) with `esphome_api.devices` pointing at it connects,
lists the entities, publishes the states as hub JSON on a real Mosquitto and stores them. Then
the firmware crashes (SIGKILL) and comes back on the same port: the bridge marks the node
offline, reconnects, marks it online and new states are stored again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.esphome_host import ESPHOME_VERSION, HostNode
from tests.support.hubproc import HubProcess, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.esphome, pytest.mark.mosquitto, pytest.mark.slow]

NODE = "hub-test-node"
AVAILABILITY = f"hub/devices/{NODE}/availability"
# Deadlines for things that normally take 1-5 s, not timing assertions.
DEADLINE_S = 30.0

# object id -> (metric, unit, lowest, highest), from the YAML's lambdas and the bridge's
# device-class mapping (hub.bus.esphome.metric_for).
SENSORS = {
    "temperature": ("temperature", "°C", 21.0, 22.9),
    "humidity": ("humidity", "%", 40.0, 44.5),
    "co2": ("co2", "ppm", 600.0, 890.0),
    "pm2_5": ("pm2_5", "µg/m³", 5.0, 11.0),
}

SERIES_SQL = (
    "SELECT s.metric, s.unit, s.tags, s.source, count(x.ts), min(x.value), max(x.value) "
    "FROM series s JOIN samples x ON x.series_id = s.id WHERE s.device = ? "
    "GROUP BY s.id"
)
COUNT_SQL = (
    "SELECT count(*) FROM samples x JOIN series s ON s.id = x.series_id "
    "WHERE s.device = ? AND s.source = 'esphome_api'"
)
COUNT_SINCE_SQL = COUNT_SQL + " AND x.ts >= ?"


class AvailabilityWatcher:
    """Every payload the bridge publishes on the node's retained availability topic."""

    def __init__(self, broker: Mosquitto) -> None:
        self.values: list[str] = []
        self._lock = threading.Lock()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="availability-watch")
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        client.subscribe(AVAILABILITY, qos=1)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.values.append(message.payload.decode())

    def seen(self) -> list[str]:
        with self._lock:
            return list(self.values)

    def last(self) -> str | None:
        values = self.seen()
        return values[-1] if values else None

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def online_in_store(hub: HubProcess) -> int | None:
    rows = hub.query("SELECT online FROM devices WHERE name = ?", (NODE,))
    return rows[0][0] if rows else None


@pytest.fixture
def watcher(mosquitto: Mosquitto) -> Iterator[AvailabilityWatcher]:
    watch = AvailabilityWatcher(mosquitto)
    yield watch
    watch.close()


def node_status(hub: HubProcess) -> dict[str, Any]:
    hub._check_alive()
    devices = hub.status().get("esphome_api", {}).get("devices", {})
    return dict(devices.get(NODE, {}))


def stored_count(hub: HubProcess, since_ms: int | None = None) -> int:
    if since_ms is None:
        rows = hub.query(COUNT_SQL, (NODE,))
    else:
        rows = hub.query(COUNT_SINCE_SQL, (NODE, since_ms))
    return int(rows[0][0]) if rows else 0


def test_hub_ingests_host_node_and_reconnects_after_crash(
    mosquitto: Mosquitto,
    hub_test_node: HostNode,
    watcher: AvailabilityWatcher,
    tmp_path: Path,
) -> None:
    hub = HubProcess(
        tmp_path,
        mosquitto.url,
        {
            "esphome_api": {
                "devices": [{"name": NODE, "host": hub_test_node.host, "port": hub_test_node.port}],
                # The bridge nudges aioesphomeapi's reconnect at least this often.
                "reconnect_max_backoff": "1s",
            }
        },
    )
    hub.start()
    try:
        # Connected, with the firmware's device info and all six entities mapped.
        status = wait_for(
            lambda: (st := node_status(hub)).get("connected") and st,
            DEADLINE_S,
            what="bridge connected to the host node",
        )
        assert status["connects"] == 1
        assert status["entities"] == 6
        assert status["model"] == "host"
        assert status["esphome_version"] == ESPHOME_VERSION
        assert status["encrypted"] is False
        wait_for(lambda: watcher.last() == "online", DEADLINE_S, what="availability online")

        # States of every sensor stored, under the node's name, with metric and unit.
        def series() -> dict[str, tuple[Any, ...]]:
            rows = hub.query(SERIES_SQL, (NODE,))
            by_metric = {row[0]: row[1:] for row in rows}
            if all(by_metric.get(m, (0, 0, 0, 0))[3] >= 2 for m, *_ in SENSORS.values()):
                return by_metric
            return {}

        by_metric = wait_for(series, DEADLINE_S, what="two samples of every sensor")
        for object_id, (metric, unit, low, high) in SENSORS.items():
            stored_unit, tags, source, _count, lowest, highest = by_metric[metric]
            assert stored_unit == unit, metric
            assert source == "esphome_api"
            assert f'"sensor":"{object_id}"' in tags.replace(" ", "")
            assert low <= lowest <= highest <= high, (metric, lowest, highest)
        # The binary sensor as a 0/1 reading, the text sensor as events.
        assert "window_open" in by_metric
        wait_for(
            lambda: (
                hub.query(
                    "SELECT count(*) FROM events WHERE device = ? AND name = 'status' "
                    "AND text LIKE 'tick %'",
                    (NODE,),
                )[0][0]
                >= 1
            ),
            DEADLINE_S,
            what="status text stored as an event",
        )

        # Crash the firmware: the bridge notices, marks the node offline.
        hub_test_node.kill()
        wait_for(
            lambda: not node_status(hub).get("connected"), DEADLINE_S, what="bridge disconnected"
        )
        wait_for(lambda: watcher.last() == "offline", DEADLINE_S, what="availability offline")
        wait_for(lambda: online_in_store(hub) == 0, DEADLINE_S, what="the store records offline")
        time.sleep(0.5)  # states published before the crash have been committed
        before_restart = stored_count(hub)
        restarted_ms = int(time.time() * 1000)

        # Back on the same port: reconnected without help, states stored again.
        hub_test_node.start()
        status = wait_for(
            lambda: (st := node_status(hub)).get("connected") and st,
            DEADLINE_S,
            what="bridge reconnected to the restarted node",
        )
        assert status["connects"] == 2
        assert status["entities"] == 6
        wait_for(lambda: watcher.last() == "online", DEADLINE_S, what="availability online again")
        wait_for(lambda: online_in_store(hub) == 1, DEADLINE_S, what="the store records online")
        wait_for(
            lambda: stored_count(hub, restarted_ms) >= 2 * len(SENSORS),
            DEADLINE_S,
            what="states stored after the restart",
        )
        assert stored_count(hub) > before_restart
        seen = watcher.seen()
        # Retained "online" on subscribe or live, then offline, then online again.
        assert seen[-3:] == ["online", "offline", "online"], seen
        # Every sensor has samples from the restarted firmware.
        fresh_sql = (
            "SELECT DISTINCT s.metric FROM samples x JOIN series s ON s.id = x.series_id "
            "WHERE s.device = ? AND x.ts >= ?"
        )
        wait_for(
            lambda: (
                {m for (m,) in hub.query(fresh_sql, (NODE, restarted_ms))}
                >= {metric for metric, *_ in SENSORS.values()}
            ),
            DEADLINE_S,
            what="samples of every sensor after the restart",
        )
        assert hub.query("SELECT name, online FROM devices WHERE name = ?", (NODE,)) == [(NODE, 1)]
        assert hub.stop() == 0
    finally:
        if hub.proc is not None and hub.proc.poll() is None:
            hub.kill()
