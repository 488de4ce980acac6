"""Several `hub run --worker` processes on one stream (an MQTT 5 shared subscription on a
real Mosquitto) and one store (a real PostgreSQL): a worker SIGKILLed mid-stream and started
again loses nothing and stores nothing twice, and the singletons (rollups, the alert engine
and Home Assistant discovery, fed by the PostgreSQL change feed) move to the survivor within
seconds and back, without a duplicate alert or a gap in the rollups."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub.leader import leader_name
from tests.support.hubproc import REPO, HubProcess, Publisher, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres, pytest.mark.slow]

# Scaled by HUB_TEST_WORKER_MESSAGES; 100,000 is the figure (about a minute here).
TOTAL = int(os.environ.get("HUB_TEST_WORKER_MESSAGES", "100000"))
DEVICES = 20
# The alert rule watches four rigs; their `current` alternates between low
# and high phases of PHASE messages (high values are offset by HIGH, so every value stays
# distinct), so alerts fire and resolve all through the stream, before and after the kill.
ALERT_RIGS = ["rig0", "rig1", "rig2", "rig5"]  # rigs with i % 4 == 3 get no hub JSON
PHASE = max(TOTAL // 10, 4 * DEVICES)
HIGH = 10_000_000
RULE = "current_high"
ALERT_RULES = {
    "packs": {"air": False, "rc": False},
    "tick": "0.2s",
    "rules": [
        {
            "id": RULE,
            "metric": ["current"],
            "device": ALERT_RIGS,
            "threshold": HIGH / 2,
        }
    ],
}


class WorkerProcess(HubProcess):
    def __init__(
        self, workdir: Path, broker_url: str, store_url: str, worker_id: str,
        extra: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            workdir, broker_url,
            {
                "store": {"url": store_url, "rollup_interval": "1s"},
                "broker": {"shared_group": "hub-test"},
                "ingest": {"batch_max": 2000},
                "alerts": ALERT_RULES,
                **(extra or {}),
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

    def leading(self) -> list[str]:
        """The leader components running in this worker (from its status file)."""
        return list(self.status().get("leader_components", {}).get("running", []))


class AlertWatcher:
    """Every message on the alert topics and hub/status (or `topics`), in arrival order."""

    def __init__(self, mosquitto: Mosquitto, topics: list[str] | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="alert-watcher")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        wanted = [(t, 1) for t in topics or ["hub/alerts/#", "hub/status"]]
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(wanted)
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
        return int(row[0]) if row and row[0] is not None else 0


def current(i: int) -> int:
    return i + HIGH if (i // PHASE) % 2 else i


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
                orjson.dumps({"ts_ms": t0 + i // DEVICES, "values": {"current": current(i)}}),
            )


def episodes(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, device, state, started_ms, resolved_ms FROM alerts WHERE rule=%s "
            "ORDER BY device, started_ms, id",
            (RULE,),
        ).fetchall()
    keys = ("id", "device", "state", "started_ms", "resolved_ms")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def check_alerts(url: str, messages: list[tuple[str, bytes]], kill_ms: int) -> None:
    """One row per episode, and Home Assistant told of each episode once: the state topic
    goes to ON once per stored episode (a new leader repeating ON for an alert already
    firing is no new alert), every announced alert id is a stored one with one start."""
    rows = episodes(url)
    assert rows, "no alert fired"
    by_device: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_device.setdefault(row["device"], []).append(row)
    for device, mine in by_device.items():
        assert sum(r["state"] == "firing" for r in mine) <= 1, device
        for before, after in itertools.pairwise(mine):
            assert before["resolved_ms"] is not None, (device, before)
            assert before["resolved_ms"] <= after["started_ms"], (device, before, after)
    ids = {r["id"]: r for r in rows}
    rises: dict[str, int] = {}
    last_state: dict[str, bytes] = {}
    started: dict[int, set[float]] = {}
    for topic, payload in messages:
        parts = topic.split("/")
        if len(parts) != 5 or parts[3] != RULE:
            continue
        device = parts[2]
        if parts[4] == "state":
            if payload == b"ON" and last_state.get(device) != b"ON":
                rises[device] = rises.get(device, 0) + 1
            last_state[device] = payload
        elif parts[4] == "attributes" and payload:
            attributes = orjson.loads(payload)
            if attributes.get("alert_id") is not None:
                started.setdefault(attributes["alert_id"], set()).add(attributes["since"])
    assert set(started) <= set(ids), set(started) - set(ids)  # nothing announced unstored
    for alert_id, since in started.items():
        assert since == {ids[alert_id]["started_ms"] / 1000}, (alert_id, since)  # never re-fired
    # A stored episode not announced at all is one the killed leader committed and ended
    # without its messages leaving its socket: only around the kill.
    for alert_id in set(ids) - set(started):
        assert abs(ids[alert_id]["started_ms"] - kill_ms) < 5_000, ids[alert_id]
    for device, mine in by_device.items():
        announced = sum(r["id"] in started for r in mine)
        assert rises.get(device, 0) == announced, (device, rises, mine)


def test_two_workers_one_killed_mid_stream_store_every_reading_once(
    mosquitto: Mosquitto, pg_url: str, tmp_path: Path
) -> None:
    watcher = AlertWatcher(mosquitto)
    workers = [WorkerProcess(tmp_path / f"w{n}", mosquitto.url, pg_url, str(n)) for n in (1, 2)]
    for worker in workers:
        worker.start()
    try:
        leader = wait_for(lambda: leader_name(pg_url), 20, what="a leader")
        assert leader in ("hubw-1", "hubw-2")
        victim = next(w for w in workers if w.client_id == leader)
        survivor = next(w for w in workers if w is not victim)
        wait_for(lambda: "alerts" in victim.leading(), 20, what="the leader runs the alerts")
        assert survivor.leading() == []
        publisher = Publisher(mosquitto.host, mosquitto.port)
        t0 = int(time.time() * 1000) - 3_600_000  # an hour ago: inside raw retention
        sender = threading.Thread(target=stream, args=(publisher, t0))
        sender.start()
        samples = "SELECT count(*) FROM samples"
        wait_for(
            lambda: count(pg_url, samples) > TOTAL // 5, 120, interval=0.01, what="some samples"
        )
        wait_for(lambda: episodes(pg_url), 30, interval=0.01, what="an alert before the kill")
        victim_messages = wait_for(
            lambda: victim.status().get("messages"), 10, what="victim took part"
        )
        kill_ms = int(time.time() * 1000)
        victim.kill()  # the leader, mid-stream: its unacked messages stay in its session
        killed_at = count(pg_url, samples)
        # The survivor takes the singletons over within seconds (poll 1 s): the lock, and
        # the feed with the alert engine and discovery.
        wait_for(lambda: leader_name(pg_url) == survivor.client_id, 15, what="takeover")
        wait_for(lambda: "alerts" in survivor.leading(), 15, what="alerts on the survivor")
        took_over_ms = int(time.time() * 1000)
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
        # The survivor's feed read every batch: the alerts end as the stream ended (the last
        # phase of every alerting rig is high exactly when the number of phases is even).
        last_high = bool(((TOTAL - 1) // PHASE) % 2)
        wait_for(
            lambda: {r["device"] for r in episodes(pg_url) if r["state"] == "firing"}
            == (set(ALERT_RIGS) if last_high else set()),
            30, what="alerts settled",
        )  # fmt: skip
        fired = [r["started_ms"] for r in episodes(pg_url)]
        assert min(fired) < kill_ms and max(fired) > took_over_ms  # before and after the kill
        # The singletons move back: the survivor stops, the restarted worker takes over.
        assert victim.leading() == []
        assert survivor.stop() == 0
        wait_for(lambda: leader_name(pg_url) == victim.client_id, 15, what="move back")
        wait_for(lambda: "alerts" in victim.leading(), 15, what="alerts moved back")
        moved_back_ms = int(time.time() * 1000)
        # ...and runs them: with the survivor back as a plain member (Mosquitto queues a
        # share of the group's messages for an offline member's session), rig0 goes high,
        # low, high: one more episode, fired on the moved-back leader.
        survivor.start()
        ts = t0 + TOTAL
        for n, value in enumerate((HIGH + TOTAL + 1.0, TOTAL + 2.0, HIGH + TOTAL + 3.0)):
            publisher.publish(
                "hub/readings/rig0", orjson.dumps({"ts_ms": ts + n, "values": {"current": value}})
            )
            assert publisher.flush(30)
            time.sleep(0.5)
        wait_for(
            lambda: any(
                r["device"] == "rig0" and r["state"] == "firing" and r["started_ms"] > moved_back_ms
                for r in episodes(pg_url)
            ),
            20, what="an alert fired by the moved-back leader",
        )  # fmt: skip
        assert victim.leading() == ["feed", "derive", "alerts"] and survivor.leading() == []
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        shown = subprocess.run(
            [sys.executable, "-m", "hub", "status", "-c", str(victim.config_path)],
            capture_output=True, text=True, timeout=60, cwd=victim.workdir,
            env={**env, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert "engine on hubw-" in shown.stdout and "yes (feed, derive, alerts)" in shown.stdout
        time.sleep(1.0)  # the last announcements reach the watcher
        check_alerts(pg_url, watcher.snapshot(), kill_ms)
        assert watcher.snapshot()[-1] != ("hub/status", b"offline")
        publisher.close()
    finally:
        watcher.close()
        for worker in workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.stop()
    assert "Traceback" not in "".join(w.log() for w in workers)


def test_the_leader_derives_from_every_workers_batches_once_across_a_takeover(
    mosquitto: Mosquitto, pg_url: str, tmp_path: Path
) -> None:
    """Dew point and absolute humidity of one node whose messages the two workers share: the
    leader derives every one from the feed, once, also when it is killed halfway and the
    other worker takes over; the derived values reach Home Assistant's state topics."""
    from hub.derive.comfort import dew_point

    watcher = AlertWatcher(mosquitto, ["hub/state/airq1/dew_point"])
    every_pair = {"derive": {"air": {"defaults": {"instant_interval": "0s"}}}}  # one per message
    workers = [
        WorkerProcess(tmp_path / f"w{n}", mosquitto.url, pg_url, str(n), every_pair) for n in (1, 2)
    ]
    for worker in workers:
        worker.start()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    derived = "SELECT count(*) FROM samples s JOIN series x ON x.id = s.series_id WHERE x.metric=%s"
    try:
        leader = wait_for(lambda: leader_name(pg_url), 20, what="a leader")
        victim = next(w for w in workers if w.client_id == leader)
        survivor = next(w for w in workers if w is not victim)
        wait_for(lambda: "derive" in victim.leading(), 20, what="derivations on the leader")
        n = 40
        for k in range(n):
            if k == n // 2:
                victim.kill()
                wait_for(lambda: "derive" in survivor.leading(), 15, what="takeover")
                victim.start()
            temperature, humidity = 20.0 + k / 10, 40.0 + k / 2
            publisher.publish(
                "hub/readings/airq1",
                orjson.dumps({"ts_ms": int(time.time() * 1000),  # live: the filters' clock
                              "values": {"temperature": temperature, "humidity": humidity}}),
            )  # fmt: skip
            assert publisher.flush(30)
            wait_for(
                lambda k=k: count(pg_url, derived.replace("%s", "'dew_point'")) == k + 1,
                20, what=f"dew point {k}",
            )  # fmt: skip
        time.sleep(1.0)
        assert count(pg_url, derived.replace("%s", "'dew_point'")) == n
        assert count(pg_url, derived.replace("%s", "'absolute_humidity'")) == n
        with psycopg.connect(pg_url) as conn:
            last = conn.execute(
                "SELECT value FROM samples s JOIN series x ON x.id = s.series_id "
                "WHERE x.metric='dew_point' ORDER BY ts DESC LIMIT 1"
            ).fetchone()
        assert last is not None
        # From the last temperature and the humidity before or with it (a message's two
        # readings each complete a pair; the first one takes the key).
        t, rh = 20.0 + (n - 1) / 10, 40.0 + (n - 1) / 2
        assert last[0] in (round(dew_point(t, rh - 0.5), 2), round(dew_point(t, rh), 2))
        wait_for(
            lambda: ("hub/state/airq1/dew_point", str(last[0]).encode()) in watcher.snapshot(),
            20, what="the dew point in Home Assistant's state topic",
        )  # fmt: skip
        publisher.close()
    finally:
        watcher.close()
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
