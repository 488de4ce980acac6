"""Several `hub run --worker` processes on one stream (an MQTT 5 shared subscription on a
real Mosquitto) and one store (a real PostgreSQL): a worker SIGKILLed mid-stream and started
again loses nothing and stores nothing twice, and the singletons (rollups) move to the
survivor within seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from hub.leader import leader_name
from tests.support.hubproc import REPO, HubProcess, Publisher, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres, pytest.mark.slow]

# Scaled by HUB_TEST_WORKER_MESSAGES; 100,000 is the figure (about a minute here).
TOTAL = int(os.environ.get("HUB_TEST_WORKER_MESSAGES", "100000"))
DEVICES = 20


class WorkerProcess(HubProcess):
    def __init__(self, workdir: Path, broker_url: str, store_url: str, worker_id: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            workdir, broker_url,
            {
                "store": {"url": store_url, "rollup_interval": "1s"},
                "broker": {"shared_group": "hub-test"},
                "ingest": {"batch_max": 2000},
            },
            client_id="hubw",
        )  # fmt: skip
        self.worker_id = worker_id
        self.client_id = f"hubw-{worker_id}"

    def start(self, wait_connected: bool = True) -> WorkerProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        env = {k: v for k, v in env.items() if not k.startswith("HUB_")}
        path = self.data_dir / f"worker-{self.client_id}.json"
        if path.exists():
            path.unlink()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "run", "-c", str(self.config_path), "--worker",
             "--worker-id", self.worker_id],
            cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if wait_connected:
            wait_for(lambda: self._check_alive() and self.status(), 30, what="worker up")
        return self

    def status(self) -> dict[str, Any]:
        try:
            path = self.data_dir / f"worker-{self.client_id}.json"
            return dict(orjson.loads(path.read_bytes()))
        except (OSError, ValueError):
            return {}


def count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
        return int(row[0]) if row and row[0] is not None else 0


def stream(publisher: Publisher, t0: int) -> None:
    """Hub JSON with its own timestamps, and every fourth message an ESPHome state stamped on
    receipt by whichever worker gets it: both workers stamp the same five nodes in the same
    milliseconds, and each reading must still get a key of its own."""
    for i in range(TOTAL):
        if i % 4 == 3:
            publisher.publish(f"node{i % 5}/sensor/co2/state", str(i))
        else:
            publisher.publish(
                f"hub/readings/rig{i % DEVICES}",
                orjson.dumps({"ts_ms": t0 + i // DEVICES, "values": {"current": i}}),
            )


def test_two_workers_one_killed_mid_stream_store_every_reading_once(
    mosquitto: Mosquitto, pg_url: str, tmp_path: Path
) -> None:
    workers = [WorkerProcess(tmp_path / f"w{n}", mosquitto.url, pg_url, str(n)) for n in (1, 2)]
    for worker in workers:
        worker.start()
    try:
        leader = wait_for(lambda: leader_name(pg_url), 20, what="a leader")
        assert leader in ("hubw-1", "hubw-2")
        victim = next(w for w in workers if w.client_id == leader)
        survivor = next(w for w in workers if w is not victim)
        publisher = Publisher(mosquitto.host, mosquitto.port)
        t0 = int(time.time() * 1000) - 3_600_000  # an hour ago: inside raw retention
        sender = threading.Thread(target=stream, args=(publisher, t0))
        sender.start()
        samples = "SELECT count(*) FROM samples"
        wait_for(
            lambda: count(pg_url, samples) > TOTAL // 5, 120, interval=0.01, what="some samples"
        )
        victim_messages = wait_for(
            lambda: victim.status().get("messages"), 10, what="victim took part"
        )
        victim.kill()  # the leader, mid-stream: its unacked messages stay in its session
        killed_at = count(pg_url, samples)
        # The survivor takes the singletons over within seconds (poll 1 s).
        wait_for(lambda: leader_name(pg_url) == survivor.client_id, 15, what="takeover")
        assert survivor.status().get("leader_terms", 0) >= 1 or wait_for(
            lambda: survivor.status().get("leader"), 5, what="survivor status says leader"
        )
        sender.join()
        assert publisher.flush(120)
        victim.start()  # same client id: its persistent session gets its messages again
        wait_for(lambda: count(pg_url, samples) >= TOTAL, 180, interval=0.2, what="every reading")
        time.sleep(1.0)
        assert killed_at < TOTAL
        assert count(pg_url, samples) == TOTAL
        values = count(pg_url, "SELECT count(DISTINCT value) FROM samples")
        assert values == TOTAL  # each value once: nothing lost, nothing twice
        # Both workers ingested part of the stream: the group split it.
        assert victim_messages > 0 and survivor.status()["messages"] > 0
        # No gap in the rollups: the new leader rolled up what the old one left dirty.
        rolled = "SELECT coalesce(sum(count), 0) FROM rollup_1m"
        wait_for(lambda: count(pg_url, rolled) == TOTAL, 30, interval=0.2, what="rollups complete")
        assert count(pg_url, "SELECT count(*) FROM rollup_dirty") == 0
        publisher.close()
    finally:
        for worker in workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.stop()
    assert "Traceback" not in "".join(w.log() for w in workers)


@pytest.mark.parametrize(
    ("store", "args", "message"),
    [
        (
            {"url": "postgresql://hub@127.0.0.1:1/hub"},
            [],
            "a plain 'hub run' keeps the SQLite store",
        ),
        ({}, ["--worker"], "needs store.url: postgresql://"),
    ],
)
def test_store_url_and_worker_go_together(
    tmp_path: Path, store: dict[str, str], args: list[str], message: str
) -> None:
    config = tmp_path / "hub.yaml"
    config.write_text(
        orjson.dumps(
            {
                "data_dir": str(tmp_path / "data"),
                "broker": {"url": "mqtt://127.0.0.1:1"},
                "store": store,
            }
        ).decode()
    )  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    done = subprocess.run(
        [sys.executable, "-m", "hub", "run", "-c", str(config), *args],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert message in done.stderr


def test_a_worker_waits_out_a_dead_postgres_without_acking_or_crashing(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """PostgreSQL stopped under a running worker: it says so in its health, counts the
    failures, acknowledges nothing, and stores everything once the server is back."""
    from tests.support.postgres import Postgres

    with Postgres(tmp_path / "pg") as server:
        worker = WorkerProcess(tmp_path / "w", mosquitto.url, server.url, "1").start()
        publisher = Publisher(mosquitto.host, mosquitto.port)
        t0 = int(time.time() * 1000) - 60_000
        batch = lambda start: [  # noqa: E731
            publisher.publish(
                "hub/readings/rig", orjson.dumps({"ts_ms": t0 + i, "values": {"current": i}})
            )
            for i in range(start, start + 500)
        ]
        batch(0)
        assert publisher.flush(30)
        wait_for(lambda: worker.status().get("readings_stored", 0) >= 500, 30, what="first 500")
        server.stop()
        batch(500)
        assert publisher.flush(30)
        health = wait_for(
            lambda: (
                worker.status().get("health", {}).get("status") == "degraded"
                and worker.status()["health"]
            ),
            30,
            what="degraded health",
        )
        assert "PostgreSQL store unreachable" in health["reason"], health
        assert worker.status()["ingest"]["commit_failures"] >= 1
        time.sleep(2)
        assert worker.proc is not None and worker.proc.poll() is None  # still running
        server.start()
        wait_for(lambda: count(server.url, "SELECT count(*) FROM samples") == 1000, 60, what="all")
        assert count(server.url, "SELECT count(DISTINCT value) FROM samples") == 1000
        publisher.close()
        assert worker.stop() == 0
