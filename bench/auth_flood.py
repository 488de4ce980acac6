"""Wrong-token flood against a real `hub run`: the hub's RSS and /api/health latency.

    .venv/bin/python bench/auth_flood.py                  # this checkout's hub
    .venv/bin/python bench/auth_flood.py --repo ../hub-before  # another checkout's hub (a "before")
    .venv/bin/python bench/auth_flood.py --no-limit         # no 429: every wrong token checked

1,000 requests with wrong tokens in 10 s from 50 connections, at the routes that need the
token, while /api/health is probed every 50 ms from another connection. Targets (issue #14):
RSS grows by less than 30 MB, health p99 under 100 ms, 429 once the failure limit is reached.
Needs mosquitto.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.flood import flood
from tests.support.mosquitto import Mosquitto, free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--no-limit", action="store_true",
        help="web.auth_failures 10000: every wrong token is checked (the check's own cost)",
    )  # fmt: skip
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hub-flood-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "broker")
        broker.start()
        port = free_port()
        config = {
            "data_dir": str(work / "data"),
            "broker": {"url": broker.url, "client_id": "hub-flood"},
            "web": {"host": "127.0.0.1", "port": port},
        }
        if args.no_limit:
            config["web"]["auth_failures"] = 10_000  # type: ignore[index]
        (work / "hub.yaml").write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        env["PYTHONPATH"] = str(args.repo.resolve())
        with (work / "hub.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hub", "run", "-c", str(work / "hub.yaml")],
                cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            else:
                raise SystemExit(
                    "the hub's web API did not come up:\n" + (work / "hub.log").read_text()
                )
            time.sleep(2)  # let start-up allocations settle before the baseline RSS
            result = flood(
                base, proc.pid, total=args.requests, seconds=args.seconds,
                connections=args.connections,
            )  # fmt: skip
            print(f"hub code: {args.repo}")
            print(result.summary())
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            broker.stop()


if __name__ == "__main__":
    main()
