"""No secret in the log, private files on disk (issue #14), with a real `hub run --simulate`.

The hub runs at DEBUG with JSON log lines and the access log on, against a broker that wants
a password, with an InfluxDB and a Home Assistant token configured, while the API is used with
the token (header and ?token=), a cookie and wrong tokens. Every JSON line is a log record;
the one other line that may name the token is its single announcement on the terminal.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from hub.provision.mosquitto_auth import hash_password
from tests.support.hubproc import REPO, HubProcess, wait_for
from tests.support.mosquitto import Mosquitto, free_port

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

BROKER_PASSWORD = "broker-secret-5f0c1e7a"
INFLUX_TOKEN = "influx-secret-9a8b7c6d"
HA_TOKEN = "ha-secret-1b2c3d4e5f"
COOKIE = "cookie-secret-77aa11bb"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_no_secret_in_a_debug_log_and_private_file_modes(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text(f"hub:{hash_password(BROKER_PASSWORD)}\n")
    with Mosquitto(
        tmp_path / "broker", extra_config=f"password_file {passwd}\nallow_anonymous false"
    ) as broker:
        port = free_port()
        hub = HubProcess(
            tmp_path,
            broker.url,
            {
                "broker": {"username": "hub", "password": BROKER_PASSWORD},
                "log": {"level": "debug", "json": True},
                "simulate": {"enabled": True, "airq_nodes": 1, "buggies": 1, "interval": "0.5s"},
                "web": {"host": "127.0.0.1", "port": port, "access_log": True},
                "influx": {
                    "enabled": True,
                    "url": f"http://127.0.0.1:{free_port()}",
                    "token": INFLUX_TOKEN,
                    "org": "lab",
                },
                "homeassistant": {
                    "rest": {
                        "enabled": True,
                        "url": f"http://127.0.0.1:{free_port()}/api",
                        "token": HA_TOKEN,
                    }
                },
            },
        ).start()
        try:
            base = f"http://127.0.0.1:{port}"
            line = wait_for(
                lambda: next(
                    (x for x in hub.log().splitlines() if x.startswith("New web API token")), None
                ),
                20,
                what="the token on the terminal",
            )
            token = line.rsplit(" ", 1)[1]
            wait_for(lambda: hub.sample_count() > 20, 30, what="simulated readings")
            auth = {"Authorization": f"Bearer {token}", "Cookie": f"session={COOKIE}"}
            with httpx.Client(base_url=base, timeout=10) as http:
                assert http.get("/api/devices", headers=auth).status_code == 200
                assert http.get("/api/config", headers=auth).status_code == 200
                assert (
                    http.get("/api/devices", headers={"Cookie": f"s={COOKIE}"}).status_code == 401
                )
                for i in range(3):
                    http.get("/api/devices", headers={"Authorization": f"Bearer wrong{i}"})
            from websockets.sync.client import connect

            # uvicorn's websockets logs every request header at DEBUG.
            with connect(
                f"ws://127.0.0.1:{port}/api/live?token={token}",
                additional_headers={
                    "Cookie": f"session={COOKIE}",
                    "Authorization": f"Bearer {token}",
                },
            ) as ws:
                ws.send('{"subscribe": {"metrics": null, "devices": null, "alerts": true}}')
                ws.recv(timeout=10)
            # The store and its WAL while the hub runs (a clean stop folds the WAL back).
            data = hub.data_dir
            assert mode(data) == 0o700
            for name in ("hub.db", "hub.db-wal", "hub.db-shm", "web_token.json"):
                assert mode(data / name) == 0o600, name
            # hub status reads the same files a user would
            subprocess.run(
                [sys.executable, "-m", "hub", "status", "-c", str(hub.config_path)],
                cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                capture_output=True, timeout=60, check=True,
            )  # fmt: skip
        finally:
            assert hub.stop() == 0

        log = hub.log()
        records, terminal = [], []
        for text in log.splitlines():
            try:
                records.append(orjson.loads(text))
            except ValueError:
                terminal.append(text)
        assert len(records) > 20 and any(r["level"] == "debug" for r in records)
        # The access log and websockets saw the ?token= URL: masked.
        assert any("token=***" in r["message"] for r in records), "the live feed was not logged"
        assert any("cookie: ***" in r["message"] for r in records), "no header was logged"
        assert [t for t in terminal if token in t] == [line]
        for secret in (token, BROKER_PASSWORD, INFLUX_TOKEN, HA_TOKEN, COOKIE):
            leaked = [r["message"] for r in records if secret in orjson.dumps(r).decode()]
            assert not leaked, f"{secret[:8]}... logged: {leaked[:3]}"
        assert (tmp_path / "data" / "status.json").read_text().count(BROKER_PASSWORD) == 0
        assert mode(hub.data_dir) == 0o700 and mode(hub.db_path) == 0o600
