"""End to end on the RC bench: a frame written to a pseudo-terminal -> `hub serial log` ->
Mosquitto -> `hub run` -> reading committed in SQLite. Prints the latency p50/p99 (target
p99 < 100 ms) and the frame rate carried, beside the line's own pacing (KISS at 115200 baud).

    .venv/bin/python bench/serial_e2e.py [--seconds 20] [--rate 100]

The logger stamps each reading with the time its frame arrived on the port; the hub's
`age_at_commit` is the commit time minus that stamp (same machine, same clock).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hub.sources.serial.kiss import encode_kiss  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--rate", type=float, default=100.0, help="KISS frames per second (ESCs send 10-100)"
    )
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with (
        tempfile.TemporaryDirectory(prefix="hub-serial-bench-") as tmp,
        Mosquitto(Path(tmp) / "broker") as broker,
    ):
        work = Path(tmp)
        config = work / "hub.yaml"
        config.write_text(yaml.safe_dump({
            "data_dir": str(work / "data"),
            "broker": {"url": broker.url, "client_id": "bench-serial-hub"},
            "status": {"interval": "0.2s"},
            "web": {"enabled": False},
            "log": {"level": "warning"},
        }))  # fmt: skip
        hub = subprocess.Popen([sys.executable, "-m", "hub", "run", "-c", str(config)], env=env)
        status_file = work / "data" / "status.json"
        while not status_file.exists():
            time.sleep(0.05)
        master, slave = os.openpty()
        port = os.ttyname(slave)
        logger = subprocess.Popen(
            [sys.executable, "-m", "hub", "serial", "log", "--port", port, "--protocol", "kiss",
             "--vehicle", "bench-buggy", "--broker", broker.url, "--no-tui",
             "--capture-dir", str(work / "captures"), "--spool", str(work / "spool.jsonl"),
             "--duration", str(args.seconds + 3)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(2.0)  # port open, broker connected
        frames = 0
        started = time.perf_counter()
        while time.perf_counter() - started < args.seconds:
            frame = encode_kiss(
                40 + frames % 20,
                1600 - frames % 200,
                2000 + frames % 500,
                frames // 10 % 65536,
                500 + frames % 400,
            )
            os.write(master, frame)
            frames += 1
            delay = started + frames / args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        logger.wait(30)
        time.sleep(1.0)
        status = orjson.loads(status_file.read_bytes())
        ages = status["ingest"].get("age_at_commit_ms", {})
        hub.terminate()
        hub.wait(30)
        os.close(master)
        os.close(slave)
        line_rate = 115200 / 10 / 10  # KISS frames per second the wire could carry
        print(
            f"frames written: {frames} at {frames / args.seconds:,.0f}/s (the 115200-baud line carries at most {line_rate:,.0f}/s)"
        )
        print(
            f"hub messages committed: {status['ingest']['messages']}, readings stored: {status['ingest']['readings_stored']}"
        )
        print(
            f"frame on the pty -> reading committed: p50 {ages.get('p50')} ms, p99 {ages.get('p99')} ms, max {ages.get('max')} ms over {ages.get('window')} messages (target p99 < 100 ms)"
        )


if __name__ == "__main__":
    main()
