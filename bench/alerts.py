"""Alert figures, printed.

1. Rule evaluation cost per reading with 500 rules loaded (target < 20 µs):
       .venv/bin/python bench/alerts.py eval
2. Alert latency with a REAL Home Assistant, Mosquitto and `hub run` (tools/homeassistant.sh):
   reading published -> alert binary_sensor ON in HA's state machine (seen over HA's WebSocket
   `state_changed` events), p50/p99 over >= 200 transitions, with 2,000 readings/s of
   background load (target p99 < 500 ms); and the hub's own share, publish -> alert state
   published on MQTT (target p99 < 50 ms):
       .venv/bin/python bench/alerts.py latency [--transitions 200] [--load 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.alerts.engine import AlertEngine
from hub.alerts.packs import effective_rules
from hub.alerts.rules import AlertsConfig, RuleConfig
from hub.model import CATALOG, Reading


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def bench_eval(n_readings: int = 300_000) -> None:
    rng = random.Random(1)
    metrics = sorted(CATALOG)
    rules = list(effective_rules(AlertsConfig()))
    while len(rules) < 500:
        i = len(rules)
        metric = rng.choice(metrics) if i % 10 else rng.choice(metrics)[:4] + "*"
        rules.append(RuleConfig.model_validate({
            "id": f"bench_{i}", "metric": metric, "device": rng.choice(["*", "airq-*", "buggy*", "dev-1?"]),
            "comparison": rng.choice([">", "<"]), "threshold": rng.uniform(0, 100),
            "for": rng.choice([0, 5, 30]),
        }))  # fmt: skip
    engine = AlertEngine(rules)
    devices = [f"airq-{i}" for i in range(20)] + [f"buggy{i}" for i in range(5)]
    now = 1_750_000_000_000
    # Each series wanders around its own level: thresholds are crossed now and then, as in life.
    level = {(d, m): rng.uniform(0, 120) for d in devices for m in metrics}
    readings = []
    for i in range(n_readings):
        key = (rng.choice(devices), rng.choice(metrics))
        level[key] += rng.gauss(0, 1.0)
        readings.append(Reading(key[0], key[1], level[key], now + i, None))
    engine.on_readings(readings[:10_000])  # warm the metric/device caches
    started = time.perf_counter()
    engine.on_readings(readings)
    elapsed = time.perf_counter() - started
    print(f"rules loaded: {len(engine.rules)}; readings: {n_readings}; "
          f"rule evaluations: {engine.evaluations} ({engine.evaluations / engine.readings_seen:.1f}/reading); "
          f"transitions: {engine.transitions}")  # fmt: skip
    print(f"evaluation cost: {elapsed / n_readings * 1e6:.2f} µs per reading (target < 20 µs)")


def _background_load(host: str, port: int, load: int, stop: Any) -> None:
    """`load` readings/s in messages of 10 readings from 20 devices, in its own process, so
    producing it does not delay the probe publisher or the watchers of this process."""
    import orjson

    from tests.support.hubproc import Publisher

    pub = Publisher(host, port, "bench-load")
    interval = 10 / load
    i = 0
    next_at = time.monotonic()
    while not stop.is_set():
        values = {"co2": 600 + i % 50, "temperature": 21.5, "humidity": 45, "pm2_5": 4,
                  "voc_index": 100, "pressure": 1013, "pm10": 6, "pm1": 2, "nox_index": 1,
                  "dew_point": 9.0}  # fmt: skip
        pub.publish(f"hub/readings/load-{i % 20}", orjson.dumps({"values": values}))
        i += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    pub.close()


def bench_latency(transitions: int, load: int) -> None:
    import orjson
    import paho.mqtt.client as paho
    import websockets
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.homeassistant.harness import HomeAssistant, ensure_hass
    from tests.support.hubproc import HubProcess, Publisher
    from tests.support.mosquitto import Mosquitto

    hass = ensure_hass()
    work = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    entity = "binary_sensor.bench_bench_sag"
    state_topic = "hub/alerts/bench/bench_sag/state"
    with Mosquitto(work / "broker", persistence=False) as broker:
        ha = HomeAssistant(hass, work, broker.port)
        ha.start()
        (work / "hub").mkdir()
        hub = HubProcess(work / "hub", broker.url, {
            "alerts": {"tick": "0.2s", "rules": [{"id": "bench_sag", "metric": "cell_voltage_avg",
                       "device": "bench", "comparison": "<", "threshold": 3.3, "clear": 3.4}]},
            "log": {"level": "warning"},
        })  # fmt: skip
        hub.start()
        stop = threading.Event()
        published: dict[int, float] = {}
        hub_seen: dict[int, float] = {}
        ha_seen: dict[int, float] = {}
        current = {"n": -1}

        watcher = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-watch")

        def on_message(client: object, userdata: object, message: paho.MQTTMessage) -> None:
            if message.payload == b"ON" and current["n"] >= 0:
                hub_seen.setdefault(current["n"], time.perf_counter())

        watcher.on_message = on_message
        watcher.connect(broker.host, broker.port)
        watcher.subscribe(state_topic)
        watcher.loop_start()

        async def ha_listener(ready: threading.Event) -> None:
            async with websockets.connect(f"ws://127.0.0.1:{ha.port}/api/websocket") as ws:
                await ws.recv()
                await ws.send(json.dumps({"type": "auth", "access_token": ha.token}))
                await ws.recv()
                await ws.send(json.dumps({"id": 1, "type": "subscribe_events", "event_type": "state_changed"}))  # fmt: skip
                await ws.recv()
                ready.set()
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.5)
                    except TimeoutError:
                        continue
                    msg = json.loads(raw)
                    data = msg.get("event", {}).get("data", {})
                    if data.get("entity_id") == entity and (data.get("new_state") or {}).get("state") == "on":  # fmt: skip
                        ha_seen.setdefault(current["n"], time.perf_counter())

        ready = threading.Event()
        ws_thread = threading.Thread(target=lambda: asyncio.run(ha_listener(ready)), daemon=True)
        ws_thread.start()
        ready.wait(10)
        import multiprocessing

        load_stop = multiprocessing.get_context("spawn").Event()
        load_proc = multiprocessing.get_context("spawn").Process(
            target=_background_load, args=(broker.host, broker.port, load, load_stop), daemon=True
        )
        load_proc.start()
        pub = Publisher(broker.host, broker.port, "bench-probe")
        try:
            pub.publish("hub/readings/bench", orjson.dumps({"values": {"cell_voltage_avg": 3.8}}))
            ha.wait_state(entity, "off", 30)
            time.sleep(1.0)
            for n in range(transitions):
                current["n"] = n
                published[n] = time.perf_counter()
                # stamped, so the hub's own publish -> commit age covers exactly these probes
                probe = {"ts_ms": time.time_ns() // 1_000_000, "values": {"cell_voltage_avg": 3.2}}
                pub.publish("hub/readings/bench", orjson.dumps(probe))
                deadline = time.monotonic() + 5
                # both watchers must have seen it: resetting `current` after HA alone would drop
                # exactly the slow MQTT deliveries from the hub's figure
                while (n not in ha_seen or n not in hub_seen) and time.monotonic() < deadline:
                    time.sleep(0.002)
                current["n"] = -1
                pub.publish("hub/readings/bench", orjson.dumps({"values": {"cell_voltage_avg": 3.8}}))  # fmt: skip
                ha.wait_state(entity, "off", 10)
            stats = hub.status()
        finally:
            stop.set()
            load_stop.set()
            load_proc.join(10)
            pub.close()
            watcher.loop_stop()
            hub.stop()
            ha.stop()
    hub_ms = [(hub_seen[n] - published[n]) * 1000 for n in published if n in hub_seen]
    ha_ms = [(ha_seen[n] - published[n]) * 1000 for n in published if n in ha_seen]
    rate = stats.get("ingest", {}).get("messages_per_s", 0)
    print(f"transitions: {transitions}; background load: {load} readings/s "
          f"(hub saw {rate} messages/s of 10 readings)")  # fmt: skip
    if hub_ms:
        print(f"publish -> alert state on MQTT (hub's share): p50 {pct(hub_ms, 0.5):.1f} ms, "
              f"p99 {pct(hub_ms, 0.99):.1f} ms, n={len(hub_ms)} (target p99 < 50 ms)")  # fmt: skip
    ages = stats.get("ingest", {}).get("age_at_commit_ms")
    if ages:
        print(f"  of which publish -> committed in the hub (its own clock): p50 {ages['p50']} ms, "
              f"p99 {ages['p99']} ms, max {ages['max']} ms, n={ages['window']}")  # fmt: skip
    if ha_ms:
        print(f"publish -> binary_sensor ON in HA: p50 {pct(ha_ms, 0.5):.1f} ms, "
              f"p99 {pct(ha_ms, 0.99):.1f} ms, n={len(ha_ms)} (target p99 < 500 ms)")  # fmt: skip
    for where, seen in (("on MQTT", hub_ms), ("in HA", ha_ms)):
        if transitions - len(seen):
            print(f"transitions not seen {where} within 5 s: {transitions - len(seen)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("what", choices=["eval", "latency", "all"])
    parser.add_argument("--transitions", type=int, default=200)
    parser.add_argument("--load", type=int, default=2000, help="background readings per second")
    args = parser.parse_args()
    if args.what in ("eval", "all"):
        bench_eval()
    if args.what in ("latency", "all"):
        bench_latency(args.transitions, args.load)


if __name__ == "__main__":
    main()
