"""Ingest throughput and latency of the hub against a bare paho consumer, in the same run.

    .venv/bin/python bench/ingest.py [--messages 200000] [--rate 5000] [--seconds 10]
                                     [--store postgresql://user@host:port/db]

A private Mosquitto (the managed broker's own config) queues the messages for a persistent
session; half are ESPHome state topics with plain numbers, half hub JSON with three fields.
(a) a bare paho subscriber that only decodes each payload drains its queue: the ceiling;
(b) `hub run` drains the same queue, from its first message to the last reading committed;
(c) b/a; (d) publish-to-commit latency at a steady offered load; (e) the hub's peak RSS.
With --store, the same queue is then drained by 1 and by 2 `hub run --worker` processes
(one MQTT 5 shared group, one PostgreSQL store; its tables are emptied before each run):
(f) msgs/s and the ratio to (a), (g) publish-to-commit at the offered load, (h) each
worker's peak RSS. Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hub.bus.broker import find_mosquitto, render_config  # noqa: E402
from hub.config import ManagedBrokerConfig  # noqa: E402
from tests.support.mosquitto import free_port  # noqa: E402

FILTERS = ["+/sensor/+/state", "hub/readings/#"]


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(render_config(ManagedBrokerConfig(port=port), workdir))
    binary = find_mosquitto("mosquitto")
    assert binary, "mosquitto is not installed"
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(0.3)
    return proc, port


def messages(n: int, base_ms: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append((f"node{i % 50}/sensor/co2/state", str(400 + i % 1000).encode()))
        else:
            values = {
                "pack_voltage": 11.1 + (i % 100) / 100,
                "current": float(i % 80),
                "rpm": float(i % 30000),
            }
            out.append(
                (
                    f"hub/readings/rig{i % 10}",
                    orjson.dumps({"ts_ms": base_ms + i, "values": values}),
                )
            )
    return out


def publish_all(
    port: int, items: list[tuple[str, bytes]], rate: float | None = None, stamp: bool = False
) -> float:
    """Publish with QoS 1 and at most 1000 unacknowledged; returns seconds taken."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-pub-{time.time_ns()}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    window = threading.BoundedSemaphore(1000)
    client.on_publish = lambda *a: window.release()
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.perf_counter()
    for i, (topic, payload) in enumerate(items):
        if rate:
            target = started + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        if stamp:
            payload = orjson.dumps(
                {"ts_ms": time.time_ns() // 1_000_000, "values": {"current": float(i)}}
            )
        window.acquire()
        client.publish(topic, payload, qos=1)
    for _ in range(1000):
        window.acquire()
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def raw_session(port: int, client_id: str, clean: bool) -> paho.Client:
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 10000
    client.connect("127.0.0.1", port, clean_start=clean, properties=props)
    return client


def create_raw_session(port: int) -> None:
    client = raw_session(port, "bench-raw", True)
    client.loop_start()
    client.subscribe([(f, 1) for f in FILTERS])
    time.sleep(0.3)
    client.disconnect()
    client.loop_stop()


def bench_raw(port: int, count: int) -> float:
    """The ceiling: a bare paho subscriber in its own process (as clean as the hub's)."""
    out = subprocess.run(
        [sys.executable, __file__, "--raw-consumer", str(port), str(count)],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def raw_consumer(port: int, count: int) -> None:
    done = threading.Event()
    state = {"count": 0, "first": 0.0, "last": 0.0}

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        if state["count"] == 0:
            state["first"] = time.perf_counter()
        payload = m.payload
        if m.topic.startswith("hub/"):
            orjson.loads(payload)
        else:
            float(payload)
        state["count"] += 1
        if state["count"] == count:
            state["last"] = time.perf_counter()
            done.set()

    client = raw_session(port, "bench-raw", False)
    client.on_message = on_message
    client.loop_start()
    done.wait(300)
    client.disconnect()
    client.loop_stop()
    print(count / (state["last"] - state["first"]))


class Hub:
    def __init__(self, workdir: Path, port: int, synchronous: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "hub.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(workdir / "data"),
                    "broker": {"url": f"mqtt://127.0.0.1:{port}", "client_id": "bench-hub"},
                    "store": {"synchronous": synchronous},
                    "status": {"interval": "0.25s", "publish_stats": False},
                    "derive": {"rc_auto": False},
                    "log": {"level": "warning"},
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def status(self) -> dict:
        try:
            return orjson.loads((self.workdir / "data" / "status.json").read_bytes())
        except (OSError, ValueError):
            return {}

    def start(self) -> None:
        status = self.workdir / "data" / "status.json"
        if status.exists():
            status.unlink()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "run", "-c", str(self.config)], env=env
        )

    def wait(self, predicate, timeout: float = 300) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.status()):
                return time.perf_counter()
            time.sleep(0.01)
        raise TimeoutError("hub did not get there")

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(30)


class Workers:
    """`hub run --worker` processes on one shared group and one PostgreSQL store."""

    def __init__(self, workdir: Path, port: int, url: str, count: int) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "hub.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(workdir / "data"),
                    "broker": {
                        "url": f"mqtt://127.0.0.1:{port}",
                        "client_id": "bench-w",
                        "shared_group": "bench",
                    },
                    "store": {"url": url},
                    "status": {"interval": "0.25s", "publish_stats": False},
                    "log": {"level": "warning"},
                }
            )
        )
        self.ids = [str(k + 1) for k in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def statuses(self) -> list[dict]:
        out = []
        for worker_id in self.ids:
            try:
                path = self.workdir / "data" / f"worker-bench-w-{worker_id}.json"
                out.append(orjson.loads(path.read_bytes()))
            except (OSError, ValueError):
                out.append({})
        return out

    def messages(self) -> int:
        return sum(int(s.get("messages", 0)) for s in self.statuses())

    def start(self) -> None:
        for path in (self.workdir / "data").glob("worker-*.json"):
            path.unlink()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hub",
                    "run",
                    "-c",
                    str(self.config),
                    "--worker",
                    "--worker-id",
                    worker_id,
                ],
                env=env,
            )
            for worker_id in self.ids
        ]
        self.wait(lambda: all(self.statuses()), 30)

    def wait(self, predicate, timeout: float = 300) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return time.perf_counter()
            time.sleep(0.01)
        raise TimeoutError("workers did not get there")

    def peak_rss_mb(self) -> list[float]:
        out = []
        for proc in self.procs:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out.append(int(line.split()[1]) / 1024)
        return out

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(30)


def empty_store(url: str) -> None:
    import psycopg

    from hub.store.postgres import PostgresStore

    PostgresStore(url).close()  # the schema, when the database is new
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE samples, series, rollup_dirty, rollup_1m, rollup_1h, mqtt_receipts, "
            "events, devices, dead_letters"
        )


def bench_workers(
    workdir: Path, port: int, url: str, count: int, items: list[tuple[str, bytes]], rate: float,
    seconds: float, raw_rate: float,
) -> float:  # fmt: skip
    n = len(items)
    empty_store(url)
    workers = Workers(workdir / f"workers{count}", port, url, count)
    workers.start()  # once, to create each member's persistent session in the group
    workers.stop()
    publish_all(port, items)
    workers.start()
    t0 = workers.wait(lambda: workers.messages() > 0)
    t1 = workers.wait(lambda: workers.messages() >= n)
    drained = n / (t1 - t0)
    print(
        f"(f) {count} PostgreSQL worker{'s' if count > 1 else ' '}, first message -> last commit: "
        f"{drained:10,.0f} msgs/s ({drained / raw_rate:.2f} of bare paho)"
    )
    steady_count = int(rate * seconds)
    steady = [("hub/readings/steady", b"")] * steady_count
    elapsed = publish_all(port, steady, rate=rate, stamp=True)
    workers.wait(lambda: workers.messages() >= n + steady_count, 120)
    time.sleep(0.5)
    ages = [s.get("ingest", {}).get("age_at_commit_ms", {}) for s in workers.statuses()]
    shares = [int(s.get("messages", 0)) for s in workers.statuses()]
    print(
        f"(g) {count} worker(s), publish->commit at {steady_count / elapsed:,.0f} msgs/s offered: "
        + "; ".join(
            f"worker {i + 1}: p50 {a.get('p50')} ms, p99 {a.get('p99')} ms, max {a.get('max')} ms"
            for i, a in enumerate(ages)
        )
        + f" (messages per worker: {shares}; target p99 < 250 ms)"
    )
    print(
        f"(h) {count} worker(s), peak RSS: "
        + ", ".join(f"{mb:.1f} MB" for mb in workers.peak_rss_mb())
    )
    workers.stop()
    return drained


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument(
        "--rate", type=float, default=5000.0, help="offered load for the latency run (msgs/s)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument(
        "--synchronous",
        default="normal",
        choices=["full", "normal"],
        help="store.synchronous (the hub's default: normal)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="alternating drains of each (medians)"
    )
    parser.add_argument(
        "--store",
        default=None,
        help="postgresql://... : also drain with 1 and 2 `hub run --worker` on this database (its tables are emptied)",
    )
    parser.add_argument("--raw-consumer", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_consumer:
        raw_consumer(*args.raw_consumer)
        return
    n = args.messages
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        workdir = Path(tmp)
        broker, port = start_broker(workdir / "broker")
        try:
            items = messages(n, int(time.time() * 1000) - n)
            hub = Hub(workdir / "hub", port, args.synchronous)
            hub.start()  # once, to create the persistent session and its subscriptions
            hub.wait(lambda s: s.get("broker", {}).get("state") == "connected", 30)
            hub.stop()
            create_raw_session(port)
            # Each round queues the same messages for both sessions, then drains the bare
            # consumer and the hub in turn, so a slow spell of this shared machine hits both.
            raw_rates: list[float] = []
            hub_rates: list[float] = []
            for round_ in range(args.repeat):
                publish_all(port, items)
                raw_rates.append(bench_raw(port, n))
                hub.start()
                t0 = hub.wait(lambda s: s.get("ingest", {}).get("messages", 0) > 0)
                # messages are counted after their batch is committed (derived ones on top)
                t1 = hub.wait(lambda s: s.get("ingest", {}).get("messages", 0) >= n)
                hub_rates.append(n / (t1 - t0))
                if round_ < args.repeat - 1:
                    hub.stop()
            raw_rate, hub_rate = statistics.median(raw_rates), statistics.median(hub_rates)
            status = hub.status()
            runs = lambda rates: ", ".join(f"{r:,.0f}" for r in rates)  # noqa: E731
            print(
                f"(a) bare paho consumer (decode only):   {raw_rate:10,.0f} msgs/s (median of {runs(raw_rates)})"
            )
            print(
                f"(b) hub, first message -> last commit:   {hub_rate:10,.0f} msgs/s (median of {runs(hub_rates)}; "
                f"{status['ingest']['batches']} commits in the last, synchronous={args.synchronous})"
            )
            print(
                f"(c) ratio b/a:                           {hub_rate / raw_rate:10.2f}   (target >= 0.6)"
            )

            count = int(args.rate * args.seconds)
            steady = [("hub/readings/steady", b"")] * count
            elapsed = publish_all(port, steady, rate=args.rate, stamp=True)
            hub.wait(lambda s: s.get("ingest", {}).get("messages", 0) >= n + count, 60)
            ages = hub.status()["ingest"]["age_at_commit_ms"]
            print(
                f"(d) publish->commit at {count / elapsed:,.0f} msgs/s offered: p50 {ages['p50']} ms, p99 {ages['p99']} ms, max {ages['max']} ms (last {ages['window']:,} messages; target p99 < 250 ms)"
            )
            print(
                f"(e) hub peak RSS:                        {hub.peak_rss_mb():10.1f} MB (target < 150 MB)"
            )
            hub.stop()
            if args.store:
                one = bench_workers(
                    workdir, port, args.store, 1, items, args.rate, args.seconds, raw_rate
                )
                two = bench_workers(
                    workdir, port, args.store, 2, items, args.rate, args.seconds, raw_rate
                )
                print(
                    f"(i) 2 workers / 1 worker: {two / one:.2f} (targets: 1 worker >= 0.5 of bare "
                    "paho; 2 workers >= 1.3x one)"
                )
        finally:
            broker.terminate()
            broker.wait(10)


if __name__ == "__main__":
    main()
