"""`hub serial log` against a broker with authentication on (real Mosquitto, a pty, the CLI).

The bench logger's unit, the compose `bench` profile and the add-on all run it beside a broker
that wants a login: it takes the login and TLS from hub.yaml's broker section, and a wrong one
is said clearly while the readings wait in the spool.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from hub.bus.hub_json import decode
from hub.provision.mosquitto_auth import hash_password
from tests.serial.test_serial_logger_pty import Pty, v5_frame, voltage
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.mosquitto

REPO = Path(__file__).resolve().parents[2]
FRAMES = 30


class Reader:
    """A logged-in subscriber collecting the kart's pack voltages."""

    def __init__(self, broker: Mosquitto) -> None:
        self.payloads: queue.Queue[bytes] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="reader")
        self.client.username_pw_set("reader", "reader-secret")
        subscribed = queue.Queue[bool]()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("hub/readings/#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rc, p: subscribed.put(True)
        self.client.on_message = lambda c, u, m: self.payloads.put(m.payload)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        subscribed.get(timeout=5)
        self.volts: list[float] = []

    def collect(self) -> list[float]:
        while not self.payloads.empty():
            now = int(time.time() * 1000)
            readings, _ = decode("kart", self.payloads.get(), now, now)
            self.volts += [r.value for r in readings if r.metric == "pack_voltage"]
        return list(dict.fromkeys(self.volts))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    passwd = tmp_path / "passwd"
    passwd.write_text(
        f"logger:{hash_password('logger-secret')}\nreader:{hash_password('reader-secret')}\n"
    )
    with Mosquitto(
        tmp_path / "broker", extra_config=f"password_file {passwd}\nallow_anonymous false"
    ) as broker:
        yield broker


def run_logger(
    tmp_path: Path, broker: Mosquitto, password: str, pty: Pty, name: str
) -> tuple[int, str]:
    config = tmp_path / f"hub-{name}.yaml"
    config.write_text(
        yaml.safe_dump({"broker": {"url": broker.url, "username": "logger", "password": password}})
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub", "serial", "log", "--port", pty.name,
         "--protocol", "hobbywing-v5", "--vehicle", "kart", "--broker", broker.url, "--no-tui",
         "--duration", "6", "--capture-dir", str(tmp_path / f"cap-{name}"),
         "--spool", str(tmp_path / f"spool-{name}.jsonl"), "-c", str(config)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    time.sleep(2.0)  # the port opened and the first connection attempt made
    pty.play([v5_frame(i) for i in range(FRAMES)])
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out


def test_logger_logs_in_with_the_config_broker_credentials(
    tmp_path: Path, broker: Mosquitto
) -> None:
    reader = Reader(broker)
    pty = Pty()
    try:
        rc, out = run_logger(tmp_path, broker, "logger-secret", pty, "right")
        expected = [voltage(i) for i in range(FRAMES)]
        deadline = time.monotonic() + 10
        while reader.collect() != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reader.collect() == expected, out[-2000:]
        assert rc == 0, out[-2000:]
        assert "logger-secret" not in out
    finally:
        reader.close()
        pty.close()


def test_a_wrong_login_is_said_and_the_readings_wait_in_the_spool(
    tmp_path: Path, broker: Mosquitto
) -> None:
    reader = Reader(broker)
    pty = Pty()
    try:
        rc, out = run_logger(tmp_path, broker, "wrong-secret", pty, "wrong")
        assert rc == 0, out[-2000:]
        assert "Not authorized" in out, out[-2000:]
        assert "wrong-secret" not in out
        assert reader.collect() == []
        spool = tmp_path / "spool-wrong.jsonl"
        assert spool.exists() and spool.stat().st_size > 0, out[-2000:]
    finally:
        reader.close()
        pty.close()
