"""A device cannot take over the hub's MQTT session (issue #14), on a real Mosquitto started
from the shipped deploy/mosquitto/mosquitto.conf and a real `hub run`.

Before: a device logged in with its own valid credentials but the hub's client id took the
hub's persistent session, with the messages queued for it (875 of 2,000 lost). The shipped
config now makes every device's login its client id; the hub's own connections use a
loopback listener. Where a takeover still happens (here: on that listener, by a client with
the hub's own login), the hub says so loudly, counts it and shows it in `hub status`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.bus import hub_json
from hub.model import Reading
from hub.provision.devices import DeviceRegistry, Paths
from hub.provision.secrets import SecretsFile
from hub.sources.simulate import SimulatorPublisher
from tests.support.hubproc import REPO, HubProcess, wait_for
from tests.support.mosquitto import free_port, mosquitto_binary

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

HUB_CLIENT_ID = "hub-test"
MESSAGES = 2000


def shipped_broker(tmp_path: Path, data_dir: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """deploy/mosquitto/mosquitto.conf with its paths and ports moved into the test's."""
    binary = mosquitto_binary()
    if binary is None:
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    device_port, hub_port = free_port(), free_port()
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert "listener 1883\nuse_username_as_clientid true\n" in conf
    conf = (
        conf.replace("/etc/mosquitto/hub/", f"{data_dir}/mosquitto/")
        .replace("/var/lib/mosquitto/", f"{tmp_path}/")
        .replace("/run/mosquitto/", f"{tmp_path}/")
        .replace("listener 1883", f"listener {device_port} 127.0.0.1")
        .replace("listener 1884 127.0.0.1", f"listener {hub_port} 127.0.0.1")
        .replace("log_dest syslog", "log_dest stdout")
    )
    (tmp_path / "m.conf").write_text(conf + ("user root\n" if os.geteuid() == 0 else ""))
    log = (tmp_path / "m.log").open("wb")
    proc = subprocess.Popen([binary, "-c", str(tmp_path / "m.conf")], stdout=log, stderr=log)
    log.close()
    return proc, device_port, hub_port


def connect(port: int, username: str, password: str, client_id: str) -> tuple[paho.Client, object]:
    """Log in over MQTT 5 and return the client and the CONNACK reason."""
    done = threading.Event()
    result: list[object] = []
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
    )  # fmt: skip
    client.username_pw_set(username, password)

    def on_connect(c: object, u: object, f: object, reason: object, p: object) -> None:
        result.append(reason)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, clean_start=False)
    client.loop_start()
    assert done.wait(10), "no CONNACK"
    return client, result[0]


def test_a_device_with_the_hubs_client_id_takes_nothing_and_a_takeover_is_reported(
    tmp_path: Path,
) -> None:
    paths = Paths.under(tmp_path / "hub-data")
    registry = DeviceRegistry(paths)
    registry.add("airq-a", "airq")
    registry.add("rc-b", "rc-bridge")
    hub_login = registry.hub_credentials()
    secrets = SecretsFile(paths.secrets_file)
    passwords = {name: secrets.device(name).mqtt_password for name in ("airq-a", "rc-b")}  # type: ignore[union-attr]

    broker, device_port, hub_port = shipped_broker(tmp_path, paths.data_dir)
    hub: HubProcess | None = None
    try:
        wait_for(
            lambda: broker.poll() is None and _port_open(hub_port) and _port_open(device_port),
            10,
            what="the shipped-config broker",
        )
        (tmp_path / "hubrun").mkdir()
        hub = HubProcess(
            tmp_path / "hubrun",
            f"mqtt://127.0.0.1:{hub_port}",
            {"broker": {"username": hub_login.username, "password": hub_login.password}},
            client_id=HUB_CLIENT_ID,
        ).start()

        # rc-b publishes 2,000 readings while airq-a, with its own valid login, connects ten
        # times with the hub's client id.
        publisher = SimulatorPublisher(
            "127.0.0.1", device_port, client_id="rc-b", username="rc-b",
            password=passwords["rc-b"], max_inflight=100,
        )  # fmt: skip
        publisher.connect()
        attempts: list[object] = []

        def intrude() -> None:
            for _ in range(10):
                client, reason = connect(device_port, "airq-a", passwords["airq-a"], HUB_CLIENT_ID)
                attempts.append(reason)
                time.sleep(0.2)
                client.disconnect()
                client.loop_stop()

        intruder = threading.Thread(target=intrude)
        intruder.start()
        start_ms = int(time.time() * 1000) - MESSAGES
        for i in range(MESSAGES):
            reading = Reading("rc-b", "current", float(i), start_ms + i)
            publisher.publish("hub/readings/rc-b", hub_json.encode([reading]), False, 1)
            if i % 200 == 0:
                time.sleep(0.1)  # spread over the intruder's attempts
        assert publisher.flush(60)
        publisher.close()
        intruder.join(60)
        assert len(attempts) == 10

        wait_for(lambda: hub.sample_count() >= MESSAGES, 60, what="all 2,000 readings stored")
        time.sleep(0.5)
        assert hub.sample_count() == MESSAGES
        broker_status = hub.status()["broker"]
        assert broker_status["connects"] == 1, broker_status
        assert broker_status["taken_over"] == 0 and broker_status["session_lost"] == 0
        assert "MQTT session" not in hub.log()

        # On the hub's own listener client ids are not rewritten (its connections share one
        # login): a client there with the hub's id takes the session, and the hub says so.
        # Mosquitto 2.0 closes the hub's connection without DISCONNECT 0x8E; the hub finds its
        # session gone when it reconnects (the intruder's ended with its connection).
        intruder_client, reason = connect(
            hub_port, hub_login.username, hub_login.password, HUB_CLIENT_ID
        )
        assert not reason.is_failure  # type: ignore[attr-defined]
        try:
            wait_for(
                lambda: hub.status().get("broker", {}).get("disconnects", 0) >= 1,
                15,
                what="the hub to be pushed off",
            )
            intruder_client.disconnect()
            intruder_client.loop_stop()
            wait_for(
                lambda: (
                    (
                        hub.status().get("broker", {}).get("taken_over", 0)
                        + hub.status().get("broker", {}).get("session_lost", 0)
                    )
                    >= 1
                ),
                15,
                what="the hub to count the takeover",
            )
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n{hub.log()[-3000:]}\n{(tmp_path / 'm.log').read_text()[-2000:]}"
            ) from None
        assert "MQTT session lost" in hub.log() or "MQTT session taken over" in hub.log()
        status = subprocess.run(
            [sys.executable, "-m", "hub", "status", "-c", str(hub.config_path)],
            cwd=hub.workdir, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "Session" in status.stdout and "taken over" in status.stdout, status.stdout
        # and it gets its session back
        wait_for(
            lambda: hub.status().get("broker", {}).get("state") == "connected", 30, what="reconnect"
        )
    finally:
        if hub is not None and hub.proc is not None:
            hub.stop()
        broker.terminate()
        broker.wait(10)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0
