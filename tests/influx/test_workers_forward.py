"""The InfluxDB forwarder as a singleton of `hub run --worker`: two workers on one stream (a
real Mosquitto shared subscription) and one PostgreSQL store; the leader forwards what both
stored to a real VictoriaMetrics; the leader SIGKILLed mid-stream, the survivor takes the
forwarder over and the server ends up with every reading."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from hub.leader import leader_name
from tests.core.test_worker_web import hub_cli
from tests.core.test_workers import WorkerProcess, count
from tests.influx.victoria import VictoriaMetrics
from tests.support.hubproc import Publisher, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.influx, pytest.mark.mosquitto, pytest.mark.postgres, pytest.mark.slow]

TOTAL = int(os.environ.get("HUB_TEST_WORKER_FORWARD_MESSAGES", "20000"))
DEVICES = 20


class ForwardingWorker(WorkerProcess):
    def __init__(
        self, workdir: Path, broker_url: str, store_url: str, worker_id: str, influx_url: str
    ) -> None:
        super().__init__(workdir, broker_url, store_url, worker_id)
        self.config["influx"] = {
            "enabled": True, "url": influx_url, "token": "t", "linger": "0.2s",
            "batch_size": 2000, "retry_min": "0.1s", "retry_max": "1s", "min_free_disk": 0,
        }  # fmt: skip
        self.config_path.write_text(yaml.safe_dump(self.config))


def stream(publisher: Publisher, t0: int) -> None:
    for i in range(TOTAL):
        publisher.publish(
            f"hub/readings/rig{i % DEVICES}",
            orjson.dumps({"ts_ms": t0 + i // DEVICES, "values": {"current": i}}),
        )


def exported(server: VictoriaMetrics) -> tuple[set[tuple[str, int, float]], int]:
    """(device, ts, value) of every point the server holds, and how many raw samples (a point
    sent twice is one point but two raw samples here: VictoriaMetrics keeps both)."""
    points: set[tuple[str, int, float]] = set()
    raw = 0
    for series in server.export():
        device = series["metric"]["device"]
        for ts, value in zip(series["timestamps"], series["values"], strict=True):
            points.add((device, int(ts), float(value)))
            raw += 1
    return points, raw


def influx_of(worker: WorkerProcess) -> dict[str, Any]:
    return dict(worker.status().get("influx") or {})


def test_the_leader_forwards_what_both_stored_and_the_survivor_takes_over(
    mosquitto: Mosquitto, victoria: VictoriaMetrics, pg_url: str, tmp_path: Path
) -> None:
    workers = [
        ForwardingWorker(tmp_path / f"w{n}", mosquitto.url, pg_url, str(n), victoria.url)
        for n in (1, 2)
    ]
    for worker in workers:
        worker.start()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    try:
        leader = wait_for(lambda: leader_name(pg_url), 20, what="a leader")
        victim = next(w for w in workers if w.client_id == leader)
        survivor = next(w for w in workers if w is not victim)
        wait_for(lambda: influx_of(victim).get("state") == "idle", 20, what="forwarder idle")
        assert influx_of(survivor)["state"] == "standby"
        t0 = int(time.time() * 1000) - 3_600_000
        sender = threading.Thread(target=stream, args=(publisher, t0))
        sender.start()
        # The leader forwards while both store: kill it once the server holds a good part.
        wait_for(lambda: victoria.sample_count() > TOTAL // 5, 120, interval=0.2, what="forwarding")
        victim_stored = victim.status().get("readings_stored", 0)
        victim.kill()
        wait_for(lambda: leader_name(pg_url) == survivor.client_id, 15, what="takeover")
        wait_for(lambda: influx_of(survivor).get("delivered", 0) > 0, 30, what="survivor sends")
        sender.join()
        assert publisher.flush(120)
        victim.start()  # its session hands back what it had not acknowledged
        samples = "SELECT count(*) FROM samples"
        wait_for(lambda: count(pg_url, samples) >= TOTAL, 180, interval=0.2, what="all stored")
        wait_for(
            lambda: count(pg_url, "SELECT count(*) FROM outbox") == 0, 60, interval=0.2,
            what="outbox drained",
        )  # fmt: skip
        expected = {(f"rig{i % DEVICES}", t0 + i // DEVICES, float(i)) for i in range(TOTAL)}
        points, raw = wait_for(
            lambda: (got := exported(victoria))[0] == expected and got, 30, interval=0.5,
            what="every reading in VictoriaMetrics",
        )  # fmt: skip
        assert count(pg_url, samples) == TOTAL
        # Both workers stored part of the stream; the leader forwarded the other's too.
        assert victim_stored > 0 and survivor.status()["readings_stored"] > 0
        assert count(pg_url, "SELECT delivered FROM outbox_marks") == TOTAL
        # What the takeover sent twice: at most the batch in flight when the leader died.
        resent = raw - len(points)
        assert 0 <= resent <= 2000, resent
        print(f"takeover re-sent {resent} points")
        assert influx_of(survivor)["health"]["status"] == "ok"
        # `hub status` beside the workers shows the forwarder of the leader that runs it.
        wait_for(lambda: influx_of(survivor).get("state") == "idle", 20, what="survivor idle")
        shown = hub_cli(survivor, "status")
        assert shown.returncode == 0, shown.stderr
        assert "InfluxDB" in shown.stdout and "up to date" in shown.stdout, shown.stdout
    finally:
        publisher.close()
        for worker in workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.stop()
    assert "Traceback" not in "".join(w.log() for w in workers)
