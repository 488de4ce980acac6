"""Native-API ingest: N simulated ESPHome nodes (real aioesphomeapi protocol, Noise-encrypted)
-> the hub's bridge -> Mosquitto -> ingest -> SQLite. Prints the hub's CPU use and the
bridge-receive-to-commit latency, beside the states offered.

    .venv/bin/python bench/esphome_api.py [--devices 20] [--rate 10] [--seconds 30]
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.mosquitto import Mosquitto, free_port  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument(
        "--rate",
        type=float,
        default=10.0,
        help="updates per second per device (each sends every sensor)",
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    base = free_port()
    while any(
        free_port() == base + i for i in range(1, args.devices)
    ):  # pragma: no cover - best effort
        base = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="hub-esphome-bench-") as tmp,
        Mosquitto(Path(tmp) / "broker") as broker,
    ):
        work = Path(tmp)
        sim = subprocess.Popen(
            [sys.executable, "-m", "hub", "esphome-sim", "--devices", str(args.devices), "--port-base", str(base),
             "--rate", str(args.rate), "--noise-key", key, "--prefix", "bench"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(2.0)
        config = work / "hub.yaml"
        config.write_text(yaml.safe_dump({
            "data_dir": str(work / "data"),
            "broker": {"url": broker.url, "client_id": "bench-esphome-hub"},
            "esphome_api": {"devices": [
                {"name": f"bench-{i + 1}", "host": "127.0.0.1", "port": base + i, "encryption_key": key}
                for i in range(args.devices)
            ]},
            "status": {"interval": "0.5s"},
            "web": {"enabled": False},
            "log": {"level": "warning"},
        }))  # fmt: skip
        hub = subprocess.Popen([sys.executable, "-m", "hub", "run", "-c", str(config)], env=env)
        status_file = work / "data" / "status.json"
        time.sleep(5.0)  # connect, handshake, list entities, first states
        first = orjson.loads(status_file.read_bytes())
        cpu0, t0 = cpu_seconds(hub.pid), time.monotonic()
        time.sleep(args.seconds)
        cpu1, t1 = cpu_seconds(hub.pid), time.monotonic()
        last = orjson.loads(status_file.read_bytes())
        hub.terminate()
        hub.wait(30)
        sim.terminate()
        sim.wait(30)
        readings = last["ingest"]["readings_stored"] - first["ingest"]["readings_stored"]
        ages = last["ingest"].get("age_at_commit_ms", {})
        print(
            f"offered: {args.devices} devices x {args.rate:g} states/s = {args.devices * args.rate:,.0f} states/s (Noise-encrypted)"
        )
        print(f"stored: {readings / (t1 - t0):,.0f} readings/s (derived ones included)")
        print(f"hub CPU: {100 * (cpu1 - cpu0) / (t1 - t0):.1f} % of one core")
        print(
            f"bridge receive -> commit: p50 {ages.get('p50')} ms, p99 {ages.get('p99')} ms, max {ages.get('max')} ms over {ages.get('window')} messages"
        )


if __name__ == "__main__":
    main()
