"""A real `hub run` forwarding to a real VictoriaMetrics through an outage and a hub restart."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.bus import hub_json
from hub.model import CATALOG, Reading
from tests.influx.victoria import VictoriaMetrics, export_when
from tests.support.hubproc import HubProcess, Publisher, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.influx, pytest.mark.mosquitto, pytest.mark.slow]

DEVICES = ("airq-1", "airq-2", "buggy")


def influx_config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "influx": {
            "enabled": True,
            "url": url,
            "org": "home",
            "bucket": "hub",
            "token": "t0ken",
            "linger": "100ms",
            "retry_min": "100ms",
            "retry_max": "500ms",
            "min_free_disk": 0,
            **extra,
        }
    }


def stream(
    mosquitto: Mosquitto,
    messages: int,
    rate: float,
    stop: threading.Event,
    start_ms: int | None = None,
) -> None:
    """`messages` hub JSON messages over three devices (four series), 10 ms apart in time."""
    publisher = Publisher(mosquitto.host, mosquitto.port, client_id="influx-stream")
    if start_ms is None:
        start_ms = int(time.time() * 1000) - messages * 10
    try:
        for i in range(messages):
            if stop.is_set():
                break
            device = DEVICES[i % len(DEVICES)]
            ts = start_ms + i * 10
            if device == "buggy":
                items = [
                    Reading(device, "pack_voltage", round(16.8 - i * 1e-4, 4), ts),
                    Reading(device, "rpm", float(i), ts),
                ]
            else:
                items = [Reading(device, "co2", float(400 + i % 500), ts)]
            publisher.publish(f"hub/readings/{device}", hub_json.encode(items, source="simulator"))
            time.sleep(1 / rate)
        publisher.flush(60)
    finally:
        publisher.close()


def stored_points(hub: HubProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[Any]]:
    rows = hub.query(
        "SELECT s.device, s.metric, s.tags, s.source, x.ts, x.value "
        "FROM samples x JOIN series s ON s.id = x.series_id ORDER BY x.ts"
    )
    out: dict[tuple[str, tuple[tuple[str, str], ...]], list[Any]] = defaultdict(list)
    for device, metric, tags, source, ts, value in rows:
        labels = {"device": device, **(orjson.loads(tags) if tags else {})}
        if source:
            labels["source"] = source
        family = CATALOG[metric].family if metric in CATALOG else "other"
        out[(f"{family}_{metric}", tuple(sorted(labels.items())))].append([ts, value])
    return out


def test_outage_and_restart_lose_nothing_and_duplicate_nothing(
    mosquitto: Mosquitto, victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    hub = HubProcess(tmp_path, mosquitto.url, influx_config(victoria.url)).start()
    stop = threading.Event()
    publisher = threading.Thread(target=stream, args=(mosquitto, 1500, 250.0, stop))
    publisher.start()
    try:
        wait_for(lambda: hub.status().get("influx", {}).get("delivered", 0) > 50, 20, what="flow")
        victoria.stop()  # the server goes away while readings are flowing
        wait_for(
            lambda: hub.status().get("influx", {}).get("state") == "retrying", 20, what="retrying"
        )
        time.sleep(1.0)
        assert hub.stop() == 0  # and the hub restarts during the outage
        hub.start()
        publisher.join(60)
        assert not publisher.is_alive()
        wait_for(lambda: hub.sample_count() >= 1500 * 4 // 3, 30, what="all readings stored")
        influx = wait_for(
            lambda: (s := hub.status().get("influx", {})).get("backlog", 0) > 0 and s, 10
        )
        assert influx["state"] in ("retrying", "forwarding") and influx["lag_s"] > 0
        victoria.start()  # same port, same storage
        wait_for(
            lambda: hub.status().get("influx", {}).get("backlog") == 0, 60, what="outbox drained"
        )
        expected = stored_points(hub)
        total = sum(len(v) for v in expected.values())
        assert total == hub.sample_count() >= 2000
        got = {}
        for series in export_when(victoria, total):
            labels = dict(series["metric"])
            name = labels.pop("__name__")
            got[(name, tuple(sorted(labels.items())))] = [
                list(p) for p in zip(series["timestamps"], series["values"], strict=True)
            ]
        assert got.keys() == expected.keys()
        for key, points in expected.items():
            assert got[key] == points, key  # exactly once each: no gap, no duplicate
        assert hub.query("SELECT count(*) FROM dead_letters WHERE source='influx'") == [(0,)]
    finally:
        stop.set()
        publisher.join(30)
        hub.stop()
