"""End to end against a real Mosquitto and the real `hub run` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub.sources.simulate import Simulation
from tests.support.hubproc import REPO, HubProcess, Publisher, wait_for
from tests.support.mosquitto import Mosquitto, free_port

pytestmark = pytest.mark.mosquitto

START = 1_763_800_000.0


def run_simulate(broker: Mosquitto, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "hub", "simulate", "--broker", broker.url, *args],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return out.stdout


def test_simulator_to_store_exact_counts_and_values(mosquitto: Mosquitto, tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, mosquitto.url).start()
    try:
        output = run_simulate(
            mosquitto,
            "--nodes",
            "2",
            "--buggies",
            "1",
            "--rounds",
            "20",
            "--seed",
            "7",
            "--start",
            str(START),
        )
        assert "published 300 messages" in output  # 2 nodes x 7 sensors x 20 + 20 buggy frames
        expected = 2 * 7 * 20 + 20 * 8
        wait_for(lambda: raw_count(hub) >= expected, 30, what=f"{expected} samples")
        time.sleep(0.5)
        assert raw_count(hub) == expected
        # The same seed through the same models gives exactly what must be stored.
        sim = Simulation(2, 1, seed=7)
        air: Counter[tuple[str, str, float]] = Counter()
        buggy = set()
        for i in range(20):
            for topic, payload, _ in sim.air_messages(START + i * 5.0, 5.0):
                node, _, object_id, _ = topic.split("/")
                air[(node, object_id, float(payload))] += 1
            for reading in sim.buggies[0].step(START + i / 10.0, 0.1):
                buggy.add((reading.metric, reading.timestamp_ms, reading.value))
        rows = hub.query(
            "SELECT s.device, s.metric, s.tags, s.unit, x.ts, x.value FROM samples x JOIN series s ON s.id = x.series_id WHERE s.source != 'derived'"
        )
        stored_air: Counter[tuple[str, str, float]] = Counter()
        stored_buggy = set()
        for device, metric, tags, unit, ts, value in rows:
            if device == "buggy":
                stored_buggy.add((metric, ts, value))
            else:
                stored_air[(device, orjson.loads(tags)["sensor"], value)] += 1
                if metric == "pm2_5":
                    assert unit == "µg/m³"  # learnt from the retained discovery config
        assert stored_air == air
        assert stored_buggy == buggy
        devices = {
            row[0]: row for row in hub.query("SELECT name, manufacturer, model FROM devices")
        }
        assert devices["airq-1"][1:] == ("Espressif", "esp32dev")
        status = hub.status()
        assert status["ingest"]["rejected_total"] == 0
        assert status["broker"]["protocol"] == "5"
    finally:
        assert hub.stop() == 0


def raw_count(hub: HubProcess) -> int:
    rows = hub.query(
        "SELECT count(*) FROM samples x JOIN series s ON s.id = x.series_id WHERE s.source != 'derived'"
    )
    return int(rows[0][0]) if rows else 0


def availability(broker: Mosquitto, topic: str = "hub/status") -> bytes | None:
    got: list[bytes] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.time_ns()}")
    client.on_message = lambda c, u, m: got.append(m.payload)
    client.connect(broker.host, broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    deadline = time.monotonic() + 2
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    client.loop_stop()
    client.disconnect()
    return got[0] if got else None


def test_availability_online_offline_and_clean_stop(mosquitto: Mosquitto, tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, mosquitto.url).start()
    assert availability(mosquitto) == b"online"
    assert hub.stop() == 0
    assert availability(mosquitto) == b"offline"
    assert hub.status()["state"] == "stopped"
    assert "Hub stopped" in hub.log()
    # a killed hub is marked offline by its last will
    hub.start()
    assert availability(mosquitto) == b"online"
    hub.kill()
    wait_for(lambda: availability(mosquitto) == b"offline", 60, what="last will")


def stream(publisher: Publisher, count: int, start_value: int = 0) -> None:
    """Hub JSON with its own timestamps, ESPHome states and hub JSON without timestamps (both
    stamped on receipt, so a redelivery must be recognised by its receipt)."""
    for i in range(start_value, start_value + count):
        if i % 3 == 1:
            publisher.publish("stream/sensor/co2/state", str(i))
        elif i % 3 == 2:
            publisher.publish(
                "hub/readings/rig-unstamped", orjson.dumps({"values": {"current": i}})
            )
        else:
            publisher.publish(
                "hub/readings/rig",
                orjson.dumps({"ts_ms": 1_763_800_000_000 + i, "values": {"current": i}}),
            )


def stored_values(hub: HubProcess) -> list[float]:
    return [row[0] for row in hub.query("SELECT value FROM samples")]


def test_sigkill_mid_stream_loses_nothing_and_stores_once(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    total = 6000
    hub = HubProcess(tmp_path, mosquitto.url, {"store": {"synchronous": "normal"}}).start()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    sender = threading.Thread(target=stream, args=(publisher, total))
    sender.start()
    wait_for(lambda: hub.sample_count() > 500, 30, interval=0.005, what="some samples")
    hub.kill()  # SIGKILL mid-stream: commits in flight and unacked messages stay with the broker
    killed_at = hub.sample_count()
    sender.join()
    assert publisher.flush(60)
    hub.start()
    wait_for(lambda: hub.sample_count() >= total, 60, what="all samples after restart")
    time.sleep(1.0)
    values = stored_values(hub)
    assert killed_at < total
    assert len(values) == total, f"{len(values)} stored, {total} published"
    assert sorted(values) == [float(i) for i in range(total)]  # each exactly once
    publisher.close()
    hub.stop()


def test_broker_restart_mid_stream(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    (tmp_path / "hub").mkdir()
    hub = HubProcess(tmp_path / "hub", broker.url).start()
    try:
        publisher = Publisher(broker.host, broker.port)
        stream(publisher, 1000)
        assert publisher.flush(30)
        wait_for(lambda: hub.sample_count() >= 1000, 30, what="first half")
        publisher.close()
        broker.stop()
        time.sleep(0.5)
        broker.start()
        wait_for(
            lambda: hub.status().get("broker", {}).get("connects", 0) >= 2,
            30,
            what="hub reconnected",
        )
        publisher = Publisher(broker.host, broker.port, client_id="test-publisher-2")
        stream(publisher, 1000, start_value=1000)
        assert publisher.flush(30)
        wait_for(lambda: hub.sample_count() >= 2000, 30, what="second half")
        time.sleep(0.5)
        assert sorted(stored_values(hub)) == [float(i) for i in range(2000)]
        publisher.close()
    finally:
        hub.stop()
        broker.stop()


def test_messages_queued_while_the_hub_is_down_arrive(mosquitto: Mosquitto, tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, mosquitto.url).start()
    hub.stop()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    stream(publisher, 500)
    assert publisher.flush(30)
    publisher.close()
    hub.start()
    wait_for(
        lambda: hub.sample_count() >= 500, 30, what="queued messages from the persistent session"
    )
    assert sorted(stored_values(hub)) == [float(i) for i in range(500)]
    hub.stop()


def test_mqtt_311(mosquitto: Mosquitto, tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, mosquitto.url, {"broker": {"protocol": "3.1.1"}}).start()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    stream(publisher, 200)
    publisher.flush()
    publisher.close()
    wait_for(lambda: hub.sample_count() >= 200, 30, what="samples over MQTT 3.1.1")
    assert hub.status()["broker"]["protocol"] == "3.1.1"
    hub.stop()


def test_shared_subscription_splits_the_stream(mosquitto: Mosquitto, tmp_path: Path) -> None:
    hubs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        hubs.append(
            HubProcess(
                tmp_path / name,
                mosquitto.url,
                {"broker": {"shared_group": "hubs"}},
                client_id=f"hub-{name}",
            ).start()
        )
    publisher = Publisher(mosquitto.host, mosquitto.port)
    for i in range(1000):
        publisher.publish(
            "hub/readings/rig",
            orjson.dumps({"ts_ms": 1_763_800_000_000 + i, "values": {"current": i}}),
        )
    publisher.flush()
    publisher.close()
    wait_for(lambda: sum(h.sample_count() for h in hubs) >= 1000, 30, what="both hubs together")
    counts = [h.sample_count() for h in hubs]
    assert sum(counts) == 1000 and all(c > 0 for c in counts), counts
    for h in hubs:
        h.stop()


def test_managed_broker_is_started_supervised_and_stopped(tmp_path: Path) -> None:
    port = free_port()
    hub = HubProcess(
        tmp_path, None, {"broker": {"managed": {"port": port, "restart_delay": "0.2s"}}}
    ).start()
    try:
        status = hub.status()
        assert status["broker"]["managed"] and status["broker"]["url"] == f"mqtt://127.0.0.1:{port}"
        pid_file = hub.data_dir / "mosquitto" / "mosquitto.pid"
        first_pid = int(pid_file.read_text())
        os.kill(first_pid, signal.SIGKILL)  # the broker dies: the hub restarts it and reconnects
        wait_for(
            lambda: pid_file.exists() and int(pid_file.read_text()) != first_pid,
            20,
            what="broker restarted",
        )
        wait_for(
            lambda: (
                hub.status()["broker"]["connects"] >= 2
                and hub.status()["broker"]["state"] == "connected"
            ),
            30,
            what="reconnected",
        )
        publisher = Publisher("127.0.0.1", port)
        stream(publisher, 100)
        publisher.flush()
        publisher.close()
        wait_for(lambda: hub.sample_count() >= 100, 20, what="samples through the managed broker")
        second_pid = int(pid_file.read_text())
    finally:
        assert hub.stop() == 0
    assert (
        not Path(f"/proc/{second_pid}").exists()
        or b"zombie" in Path(f"/proc/{second_pid}/status").read_bytes().lower()
    )
