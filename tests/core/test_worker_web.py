"""The web API on every worker: two `hub run --worker` processes on one stream (a shared
subscription on a real Mosquitto) and one store (a real PostgreSQL). Each answers the
readings the other stored, /api/health is ok, and a stopped PostgreSQL makes health say
"degraded" with the reason (and queries 503) instead of crashing; the workers read again
once the server is back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.core.test_workers import WorkerProcess, count
from tests.support.hubproc import REPO, Publisher, wait_for
from tests.support.mosquitto import Mosquitto
from tests.support.postgres import Postgres

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres, pytest.mark.slow]

MESSAGES = 400
DEVICES = 4


class WebWorker(WorkerProcess):
    def __init__(self, workdir: Path, broker_url: str, store_url: str, worker_id: str) -> None:
        super().__init__(workdir, broker_url, store_url, worker_id)
        # The overview readable without the token; each worker already has its own port.
        self.config["web"]["public_read"] = True
        # No Home Assistant discovery from the leader: its retained configs come back to every
        # worker on the discovery topics and would count as messages beside the readings.
        self.config["homeassistant"] = {"discovery": {"enabled": False}}
        import yaml

        self.config_path.write_text(yaml.safe_dump(self.config))

    @property
    def base(self) -> str:
        port = self.status().get("web", {}).get("port")
        assert port, self.status()
        return f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.base + path, params=params, timeout=10, headers=self.auth)

    @property
    def auth(self) -> dict[str, str]:
        """The API token the worker showed once on its terminal (here: its log)."""
        found = re.search(r"New web API token \(shown once[^)]*\): (\S+)", self.log())
        return {"Authorization": f"Bearer {found.group(1)}"} if found else {}


def hub_cli(worker: WorkerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`hub ARGS -c <the worker's hub.yaml>`, as a user runs it beside the workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    return subprocess.run(
        [sys.executable, "-m", "hub", *args, "-c", str(worker.config_path)],
        cwd=worker.workdir, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def values_of(worker: WebWorker, since_ms: int) -> list[float]:
    response = worker.get("/api/query", metric="current", **{"from": since_ms}, max_points=5000)
    if response.status_code != 200:
        return []
    body = response.json()
    return sorted(v for s in body["series"] for v in s["mean"])


def test_every_worker_answers_what_the_other_stored_and_says_when_postgres_is_down(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    with Postgres(tmp_path / "pg") as server:
        workers = [WebWorker(tmp_path / f"w{n}", mosquitto.url, server.url, str(n)) for n in (1, 2)]  # fmt: skip
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                wait_for(lambda w=worker: w.status().get("web", {}).get("port"), 30, what="web up")
            publisher = Publisher(mosquitto.host, mosquitto.port)
            t0 = int(time.time() * 1000) - 60_000
            for i in range(MESSAGES):
                publisher.publish(
                    f"hub/readings/rig{i % DEVICES}",
                    orjson.dumps({"ts_ms": t0 + i, "values": {"current": i}}),
                )
            assert publisher.flush(30)
            publisher.close()
            wait_for(
                lambda: count(server.url, "SELECT count(*) FROM samples") == MESSAGES, 60,
                what="every reading stored",
            )  # fmt: skip
            shares = wait_for(
                lambda: (
                    (n := [w.status().get("messages", 0) for w in workers])
                    and sum(n) == MESSAGES
                    and n
                ),
                10,
                what="status files caught up",
            )
            # The group split the stream: each worker stored only part of it...
            assert sum(shares) == MESSAGES and all(0 < n < MESSAGES for n in shares), shares
            for worker in workers:
                # ...and each worker's API answers all of it, the other's share included.
                assert values_of(worker, t0 - 1000) == [float(i) for i in range(MESSAGES)]
                devices = worker.get("/api/devices").json()
                assert [d["name"] for d in devices] == [f"rig{i}" for i in range(DEVICES)]
                assert {x["value"] for x in worker.get("/api/latest", metric="current").json()} == {
                    float(MESSAGES - DEVICES + d) for d in range(DEVICES)
                }
                health = worker.get("/api/health")
                assert health.status_code == 200 and health.json()["status"] == "ok", health.text
                metrics = worker.get("/metrics")
                assert metrics.status_code == 200 and "hub_up 1" in metrics.text
                assert "hub_worker_leader" in metrics.text
                alerts = worker.get("/api/alerts")  # the engine is not in this process
                assert alerts.status_code == 200 and alerts.json() == []

            # Dead letters: listed by both workers, purged through the other one's store thread.
            bad = Publisher(mosquitto.host, mosquitto.port, "bad-publisher")
            bad.publish("hub/readings/rig0", b"{")
            assert bad.flush(30)
            bad.close()
            wait_for(lambda: count(server.url, "SELECT count(*) FROM dead_letters") == 1, 30)
            for worker in workers:
                (letter,) = worker.get("/api/dead-letters").json()
                assert letter["topic"] == "hub/readings/rig0" and letter["payload_bytes"] == 1
                assert (
                    worker.get(f"/api/dead-letters/{letter['id']}").json()["payload_preview"] == "{"
                )
            purged = httpx.post(
                workers[1].base + "/api/dead-letters/purge", json={}, headers=workers[1].auth
            )
            assert purged.status_code == 200 and purged.json() == {"purged": 1}, purged.text
            assert count(server.url, "SELECT count(*) FROM dead_letters") == 0

            # `hub status` and `hub query` read the workers' status files and the store.
            done = hub_cli(workers[0], "status", "--json")
            assert done.returncode == 0, done.stderr
            status = orjson.loads(done.stdout)
            assert status["running"] and status["store"]["counts"]["samples"] == MESSAGES
            assert status["store"]["leader"] in ("hubw-1", "hubw-2")
            assert [w["client_id"] for w in status["workers"]] == ["hubw-1"]
            assert status["workers"][0]["web"]["port"] == workers[0].status()["web"]["port"]
            done = hub_cli(workers[0], "status")
            assert done.returncode == 0 and "hubw-1" in done.stdout and "running" in done.stdout
            done = hub_cli(workers[1], "query", "current", "--since", "1h", "--points", "5000", "--json")  # fmt: skip
            assert done.returncode == 0, done.stderr
            lines = [orjson.loads(line) for line in done.stdout.splitlines()]
            assert sorted(x["mean"] for x in lines) == [float(i) for i in range(MESSAGES)]

            # An alert fires on the leader's engine; a worker that is not the leader lists it,
            # and its acknowledge and silence reach the engine (alert_commands) and answer
            # with what the engine did.
            hot = Publisher(mosquitto.host, mosquitto.port, "hot-publisher")
            hot.publish(
                "hub/readings/rig0",
                orjson.dumps({"ts_ms": int(time.time() * 1000), "values": {"current": 9e6}}),
            )
            assert hot.flush(30)
            hot.close()
            follower = next(w for w in workers if not w.status().get("leader"))
            (alert,) = wait_for(lambda: follower.get("/api/alerts").json(), 30, what="alert")
            assert alert["rule"] == "current_high" and alert["device"] == "rig0"
            acked = httpx.post(
                f"{follower.base}/api/alerts/{alert['id']}/ack", json={"by": "tester"},
                headers=follower.auth, timeout=30,
            )  # fmt: skip
            assert acked.status_code == 200, acked.text
            assert acked.json()["acknowledged_by"] == "tester"
            unknown = httpx.post(
                f"{follower.base}/api/alerts/987654/ack", json={}, headers=follower.auth,
                timeout=30,
            )  # fmt: skip
            assert unknown.status_code == 404 and "987654" in unknown.text, unknown.text
            silenced = httpx.post(
                f"{follower.base}/api/alerts/silence",
                json={"rule": "current_high", "duration_s": 600}, headers=follower.auth,
                timeout=30,
            )  # fmt: skip
            assert silenced.status_code == 200, silenced.text
            assert [a["id"] for a in silenced.json()["alerts"]] == [alert["id"]]
            assert count(server.url, "SELECT count(*) FROM alert_silences") == 1

            server.stop()
            done = hub_cli(workers[0], "query", "current")
            assert done.returncode == 1 and "PostgreSQL store unreachable" in done.stderr
            done = hub_cli(workers[0], "status")
            assert done.returncode == 1 and "unreachable" in done.stdout, done.stdout
            for worker in workers:
                health = wait_for(
                    lambda w=worker: (r := w.get("/api/health")).status_code == 503 and r.json(),
                    30,
                    what="health degraded",
                )
                assert health["status"] == "degraded"
                assert any("PostgreSQL store unreachable" in why for why in health["reasons"]), health  # fmt: skip
                query = worker.get("/api/query", metric="current")
                assert query.status_code == 503, query.text
                assert "store unavailable" in query.json()["error"]
                assert worker.proc is not None and worker.proc.poll() is None  # still running

            server.start()
            for worker in workers:
                wait_for(
                    lambda w=worker: w.get("/api/health").status_code == 200, 30, what="health ok"
                )
                # The API's own connections were dropped with the server: opened again.
                wait_for(lambda w=worker: len(values_of(w, t0 - 1000)) == MESSAGES + 1, 30, what="reads")  # fmt: skip
        finally:
            codes = [w.stop() for w in workers if w.proc is not None]
        assert codes == [0, 0]
        assert "Traceback" not in "".join(w.log() for w in workers)
