"""Run the real `hub run` as a subprocess against a test broker, and read its store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

from tests.support.mosquitto import free_port

REPO = Path(__file__).resolve().parents[2]


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class HubProcess:
    def __init__(
        self,
        workdir: Path,
        broker_url: str | None,
        extra: dict[str, Any] | None = None,
        client_id: str = "hub-test",
    ) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.config_path = workdir / "hub.yaml"
        config: dict[str, Any] = {
            "data_dir": str(self.data_dir),
            "broker": {
                "url": broker_url,
                "client_id": client_id,
                "reconnect_min": "1s",
                "reconnect_max": "2s",
            },
            "status": {"interval": "0.2s"},
            "log": {"level": "info"},
            "web": {"host": "127.0.0.1", "port": free_port()},  # never the default 8090
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        if broker_url is None:
            config["broker"].pop("url")
        self.config = config
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "hub.log"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "hub.db"

    def start(self, wait_connected: bool = True) -> HubProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        env = {k: v for k, v in env.items() if not k.startswith("HUB_")}
        status = self.data_dir / "status.json"
        if status.exists():
            status.unlink()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "run", "-c", str(self.config_path)],
            cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if wait_connected:
            wait_for(
                lambda: (
                    self._check_alive()
                    and self.status().get("broker", {}).get("state") == "connected"
                ),
                30,
                what="hub connected",
            )
        return self

    def _check_alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"hub exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        return True

    def status(self) -> dict[str, Any]:
        try:
            return dict(orjson.loads((self.data_dir / "status.json").read_bytes()))
        except (OSError, ValueError):
            return {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"hub did not stop on SIGTERM within {timeout} s:\n{self.log()[-3000:]}"
                ) from None
        return self.proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        return conn

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.db_path.exists():
            return []
        conn = self.db()
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def sample_count(self) -> int:
        rows = self.query("SELECT count(*) FROM samples")
        return int(rows[0][0]) if rows else 0


class Publisher:
    """A plain paho QoS 1 publisher for tests (bounded in-flight, waits for every PUBACK)."""

    def __init__(self, host: str, port: int, client_id: str = "test-publisher") -> None:
        from hub.sources.simulate import SimulatorPublisher

        self._pub = SimulatorPublisher(host, port, client_id=client_id, max_inflight=200)
        self._pub.connect()

    def publish(self, topic: str, payload: bytes | str, retain: bool = False, qos: int = 1) -> None:
        self._pub.publish(
            topic, payload.encode() if isinstance(payload, str) else payload, retain, qos
        )

    def flush(self, timeout: float = 30) -> bool:
        return self._pub.flush(timeout)

    def close(self) -> None:
        self._pub.close()
