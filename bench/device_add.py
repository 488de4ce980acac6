"""Figure: `hub device add` to a device able to log in to a running Mosquitto (target < 2 s).

Starts a private Mosquitto that reads the hub-managed password and ACL files, then for each
new device runs the real command in a fresh process (`python -m hub.cli.device add NAME
--mosquitto-pid-file ...`, so interpreter start-up and imports count) and polls until the
new login gets a CONNACK success. Prints the command's own time and the time to first
successful login.

    .venv/bin/python bench/device_add.py [--devices 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402

from hub.provision.devices import DeviceRegistry, Paths  # noqa: E402
from hub.provision.secrets import SecretsFile  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402

TARGET_S = 2.0


def can_login(host: str, port: int, user: str, password: str) -> bool:
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-{user}",
        protocol=MQTTProtocolVersion.MQTTv311,
        reconnect_on_failure=False,
    )
    client.username_pw_set(user, password)
    result: list[bool] = []
    client.on_connect = lambda c, u, f, reason, p: result.append(not reason.is_failure)
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return False
    deadline = time.monotonic() + 5
    while not result and time.monotonic() < deadline:
        client.loop(0.02)
    client.disconnect()
    return bool(result and result[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = Paths.under(work / "hub-data")
        DeviceRegistry(paths).sync()  # the hub user, so the broker has files to start with
        pid_file = work / "mosquitto.pid"
        broker = Mosquitto(
            work / "broker",
            extra_config=(
                f"password_file {paths.passwd_file}\nacl_file {paths.acl_file}\n"
                f"pid_file {pid_file}\nmax_queued_messages 1000"
            ),
        )
        with broker:
            command_s, login_s = [], []
            for i in range(args.devices):
                name = f"airq-bench-{i}"
                start = time.perf_counter()
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "hub.cli.device",
                        "add",
                        name,
                        "--kind",
                        "airq",
                        "--data-dir",
                        str(paths.data_dir),
                        "--mosquitto-pid-file",
                        str(pid_file),
                    ],
                    cwd=ROOT,
                    check=True,
                    capture_output=True,
                )
                command_s.append(time.perf_counter() - start)
                found = SecretsFile(paths.secrets_file).device(name)
                assert found is not None
                while not can_login(broker.host, broker.port, name, found.mqtt_password):
                    if time.perf_counter() - start > 30:
                        raise SystemExit(f"{name} could not log in within 30 s")
                    time.sleep(0.01)
                login_s.append(time.perf_counter() - start)
    worst = max(login_s)
    print(f"hub device add, {args.devices} devices, Mosquitto reloaded by SIGHUP each time")
    print(
        f"  command (new process, imports included): median {statistics.median(command_s):.3f} s,"
        f" max {max(command_s):.3f} s"
    )
    print(
        f"  add -> device logs in: median {statistics.median(login_s):.3f} s, max {worst:.3f} s"
        f"  (target < {TARGET_S:.0f} s: {'met' if worst < TARGET_S else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
