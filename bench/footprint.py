"""The hub's footprint for sizing a Raspberry Pi: CPU and RSS at a home lab's load, and the
store's bytes per sample.

    .venv/bin/python bench/footprint.py [--seconds 60] [--hours 2]

1. `hub run` against a private Mosquitto while `hub simulate` publishes 3 air-quality nodes
   at 1 Hz (7 sensors each) and one buggy at 20 Hz, live. After a 20 s warm-up it reads the
   hub's CPU time and RSS from /proc over --seconds.
2. `hub simulate --rounds` publishes --hours of the same devices' history as fast as the hub
   takes it (air nodes for the whole span, the buggy for span/20: a drive session, not a
   week of driving), then prints the store's size per stored sample (rollups, indexes and the
   outbox included) and what a week of air nodes takes at that density.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.mosquitto import Mosquitto, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def start_hub(work: Path, broker: Mosquitto) -> subprocess.Popen[bytes]:
    config = work / "hub.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(work / "data"),
                "broker": {"url": broker.url, "client_id": "hub-footprint"},
                "web": {"host": "127.0.0.1", "port": free_port()},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [sys.executable, "-m", "hub", "run", "-c", str(config)],
        cwd=work, env=env, stdout=(work / "hub.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def simulate(broker: Mosquitto, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "hub", "simulate", "--broker", broker.url, "--nodes", "3",
         "--buggies", "1", "--interval", "1", "--rate", "20", "--seed", "1", *args],
        env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def samples(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hours", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with Mosquitto(root / "broker") as broker:
            (root / "live").mkdir()
            hub = start_hub(root / "live", broker)
            sim = simulate(broker, "--duration", str(args.seconds + 30))
            time.sleep(20)
            c0, t0 = cpu_seconds(hub.pid), time.monotonic()
            time.sleep(args.seconds)
            c1, t1 = cpu_seconds(hub.pid), time.monotonic()
            rss, hwm = rss_mb(hub.pid)
            stored = samples(root / "live" / "data" / "hub.db")
            print(
                f"live: 3 air nodes at 1 Hz + 1 buggy at 20 Hz for {args.seconds:.0f} s: "
                f"hub CPU {100 * (c1 - c0) / (t1 - t0):.1f} % of one core, RSS {rss:.0f} MB "
                f"(peak {hwm:.0f} MB), {stored:,} samples stored"
            )
            sim.terminate()
            sim.wait()
            hub.terminate()
            hub.wait(30)

            (root / "history").mkdir()
            hub = start_hub(root / "history", broker)
            time.sleep(5)
            rounds = int(args.hours * 3600)
            started = time.monotonic()
            sim = simulate(broker, "--rounds", str(rounds), "--start", str(time.time() - rounds))
            sim.wait()
            db = root / "history" / "data" / "hub.db"
            # Wait for the hub to drain the broker's queue.
            last = -1
            while (count := samples(db)) != last:
                last = count
                time.sleep(5)
            hub.terminate()
            hub.wait(60)
            size = sum(p.stat().st_size for p in db.parent.glob("hub.db*"))
            per = size / count
            week_air = 3 * 7 * 7 * 86400  # samples of 3 nodes x 7 sensors at 1 Hz for a week
            print(
                f"history: {args.hours:.1f} h simulated ({count:,} samples) in "
                f"{time.monotonic() - started:.0f} s: store {size / 1e6:.1f} MB, "
                f"{per:.1f} bytes per sample; a week of the 3 air nodes at 1 Hz "
                f"(~{week_air / 1e6:.1f} M samples, raw kept 30 days) ~ {week_air * per / 1e9:.2f} GB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
