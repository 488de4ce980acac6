"""Ingest throughput, latency and CPU of the hub against a bare paho consumer, in the same run.

    .venv/bin/python bench/ingest.py [--messages 200000] [--rate 5000] [--seconds 10]
        [--steady-rates 200,2000] [--steady-seconds 20] [--idle-seconds 10]
        [--batch-wait 30ms] [--hub-src DIR ...] [--sections drain,steady,nodered]
        [--store postgresql://user@host:port/db] [--worker-alerts on|off]

A private Mosquitto (the managed broker's own config) serves both sides.

drain: the broker queues the messages for a persistent session; half are ESPHome state topics
with plain numbers, half hub JSON with three fields.
(a) a bare paho subscriber that only decodes each payload drains its queue: the ceiling;
(b) `hub run` drains the same queue, from its first message to the last reading committed, and
    the hub's CPU per message over that time;
(c) b/a; (d) publish-to-commit latency at a steady offered load (--rate); (e) peak RSS.

steady (a home's load: a trickle, not a backlog): a fresh `hub run` with its default settings
(--batch-wait overrides ingest.batch_wait) is first left idle (--idle-seconds: % of a core), then
fed at each of --steady-rates by a publisher in its own process: hub JSON from 20 air nodes,
one reading each, with a distinct timestamp per series (no sample is a duplicate).
(f) hub CPU per message over the publishing time, from /proc/<pid>/task/*/schedstat, per thread
    (the event loop, paho's thread `hub-mqtt`, the store thread `hub-store`, the rest), beside
    the publisher's own CPU per message; publish-to-commit p50/p99 and commits per second.
CPU time is counted by the kernel per thread, so it is far less disturbed than a wall-clock rate
by other work on a shared machine. --hub-src runs another checkout's hub, and given more than
once, each in turn in the same run (before and after a change: `git worktree add --detach
/tmp/before HEAD~3`, then `--hub-src /tmp/before --hub-src .`). Figures are printed, not
asserted.

With --store, after the drain the same queue is drained by 1 and by 2 `hub run --worker`
processes (one MQTT 5 shared group, one PostgreSQL store; its tables are emptied before each
run): (w1) msgs/s and the ratio to (a), (w2) publish-to-commit at --rate, (w3) each worker's peak
RSS, (w4) two workers against one.

--sections drain,steady,nodered adds, after the hub's figures, the Node-RED peer of
bench/nodered_peer.py on the same broker (its own session and client id): a Node-RED 4.1 flow
mqtt in -> function -> join -> influxdb batch -> VictoriaMetrics. (n1) its drain of the same n
messages, first message -> last point in VictoriaMetrics, and its CPU per message; (n2) its idle
CPU and CPU per message at each of --steady-rates; (n3) that it acks QoS 1 on receipt. It needs
Node.js and npm (Node-RED is installed from bench/nodered/package-lock.json into a cache dir
outside the repository) and is skipped with a message without them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def windowed_publisher(port: int, prefix: str) -> tuple[paho.Client, threading.BoundedSemaphore]:
    """A connected MQTT 5 publisher and its window: acquire before each QoS 1 publish, so at
    most 1000 are unacknowledged."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{prefix}-{time.time_ns()}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    window = threading.BoundedSemaphore(1000)
    client.on_publish = lambda *a: window.release()
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client, window


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def publish_all(
    port: int, items: list[tuple[str, bytes]], rate: float | None = None, stamp: bool = False
) -> float:
    """Publish with QoS 1 and at most 1000 unacknowledged; returns seconds taken."""
    client, window = windowed_publisher(port, "bench-pub")
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


def raw_session(port: int, client_id: str, clean: bool, expiry: int = 3600) -> paho.Client:
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry
    props.ReceiveMaximum = 10000
    client.connect("127.0.0.1", port, clean_start=clean, properties=props)
    return client


def forget_session(port: int, client_id: str) -> None:
    """Discard a persistent session the bench is done with. Left behind, it makes the broker
    queue every later message for it and write them all into its persistence file at each
    autosave (every 30 s): later rounds then run against a busier broker than earlier ones,
    with stalls of up to a second at 2,000 msgs/s."""
    # A clean start drops the session; expiry 0 ends the new, empty one at the disconnect.
    client = raw_session(port, client_id, True, expiry=0)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()


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
    def __init__(
        self,
        workdir: Path,
        port: int,
        synchronous: str,
        *,
        src: Path = REPO,
        batch_wait: str | None = None,
        status_interval: str | None = "0.25s",
        client_id: str = "bench-hub",
    ) -> None:
        self.workdir = workdir
        self.src = src
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "hub.yaml"
        config: dict = {
            "data_dir": str(workdir / "data"),
            "broker": {"url": f"mqtt://127.0.0.1:{port}", "client_id": client_id},
            "store": {"synchronous": synchronous},
            "derive": {"rc_auto": False},
            "log": {"level": "warning"},
            "web": {"host": "127.0.0.1", "port": 0},  # never the default 8090 of a running hub
        }
        if status_interval is not None:  # the drain times its end by the status file
            config["status"] = {"interval": status_interval, "publish_stats": False}
        # (a checkout from before group commit does not know the option)
        if batch_wait is not None and "batch_wait" in (src / "hub/config/ingest.py").read_text():
            config["ingest"] = {"batch_wait": batch_wait}
        self.config.write_text(yaml.safe_dump(config))
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
        env = {**os.environ, "PYTHONPATH": str(self.src)}
        env = {k: v for k, v in env.items() if not k.startswith("HUB_")}
        # cwd too: `python -m` puts it first on sys.path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "run", "-c", str(self.config)], env=env, cwd=self.src
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
        return peak_rss_mb(self.proc.pid)

    def threads_cpu(self) -> dict[str, float]:
        """CPU seconds so far per thread role: loop (the main thread), hub-mqtt, hub-store,
        other. schedstat counts nanoseconds; stat's utime/stime only 10 ms ticks."""
        assert self.proc is not None
        return threads_cpu(self.proc.pid)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(30)


def threads_cpu(pid: int) -> dict[str, float]:
    out: dict[str, float] = {"loop": 0.0, "hub-mqtt": 0.0, "hub-store": 0.0, "other": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ns = int((task / "schedstat").read_text().split()[0])
            comm = (task / "comm").read_text().strip()
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
        role = "loop" if task.name == str(pid) else comm if comm in out else "other"
        out[role] += ns / 1e9
    return out


METRICS = ("pm2_5", "co2", "temperature", "humidity")
STEADY_NODES = 20


def steady_publisher(port: int, rate: float, seconds: float) -> None:
    """Publish hub JSON at `rate` for `seconds` (own process); print what it sent and its CPU.

    One reading per message, from STEADY_NODES nodes in turn, each stamped with the publish
    time; a stamp that equals its series' last one moves up by 1 ms. (The old stream put two
    messages of one series in the same millisecond: half were stored as duplicates, and the
    latency covered the other half.)"""
    client, window = windowed_publisher(port, "bench-steady")
    count = int(rate * seconds)
    last: dict[tuple[int, str], int] = {}
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        node, metric = i % STEADY_NODES, METRICS[(i // STEADY_NODES) % len(METRICS)]
        stamp = time.time_ns() // 1_000_000
        previous = last.get((node, metric), 0)
        if stamp <= previous:
            stamp = previous + 1
        last[(node, metric)] = stamp
        value = 400.0 + i % 500 if metric == "co2" else 10.0 + i % 30
        window.acquire()
        client.publish(
            f"hub/readings/steady-air{node}",
            orjson.dumps({"ts_ms": stamp, "values": {metric: value}}),
            qos=1,
        )
    for _ in range(1000):
        window.acquire()
    elapsed = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    client.disconnect()
    client.loop_stop()
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    print(json.dumps({"sent": count, "elapsed": elapsed, "cpu_s": cpu}))


def run_steady_publisher(port: int, rate: float, seconds: float) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--steady-publisher", str(port), str(rate), str(seconds)],
        capture_output=True, text=True, check=True, timeout=seconds * 3 + 60,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def label(src: Path) -> str:
    return "this hub" if src == REPO else f"hub of {src}"


def drain(args: argparse.Namespace, workdir: Path, port: int) -> tuple[float, list]:
    n = args.messages
    items = messages(n, int(time.time() * 1000) - n)
    hubs = [
        Hub(
            workdir / f"hub-{k}",
            port,
            args.synchronous,
            src=src,
            batch_wait=args.batch_wait,
            client_id=f"bench-hub-{k}",
        )
        for k, src in enumerate(args.hub_src)
    ]
    for hub in hubs:
        hub.start()  # once, to create the persistent session and its subscriptions
        hub.wait(lambda s: s.get("broker", {}).get("state") == "connected", 30)
        hub.stop()
    create_raw_session(port)
    # Each round queues the same messages for every session, then drains the bare consumer
    # and each hub in turn, so a slow spell of this shared machine hits all of them.
    raw_rates: list[float] = []
    hub_rates: list[list[float]] = [[] for _ in hubs]
    hub_cpu: list[list[float]] = [[] for _ in hubs]
    for round_ in range(args.repeat):
        publish_all(port, items)
        raw_rates.append(bench_raw(port, n))
        for k, hub in enumerate(hubs):
            hub.start()
            t0 = hub.wait(lambda s: s.get("ingest", {}).get("messages", 0) > 0)
            cpu0 = sum(hub.threads_cpu().values())
            # messages are counted after their batch is committed (derived ones on top)
            t1 = hub.wait(lambda s: s.get("ingest", {}).get("messages", 0) >= n)
            hub_cpu[k].append((sum(hub.threads_cpu().values()) - cpu0) / n * 1e6)
            hub_rates[k].append(n / (t1 - t0))
            if round_ < args.repeat - 1 or hub is not hubs[-1]:
                hub.stop()
    raw_rate = statistics.median(raw_rates)
    runs = lambda rates: ", ".join(f"{r:,.0f}" for r in rates)  # noqa: E731
    print(
        f"(a) bare paho consumer (decode only):   {raw_rate:10,.0f} msgs/s (median of {runs(raw_rates)})"
    )
    for k, hub in enumerate(hubs):
        hub_rate = statistics.median(hub_rates[k])
        print(
            f"(b) {label(hub.src)}, first message -> last commit: {hub_rate:10,.0f} msgs/s "
            f"(median of {runs(hub_rates[k])}, synchronous={args.synchronous}); "
            f"hub CPU {statistics.median(hub_cpu[k]):.0f} us/msg (median of {runs(hub_cpu[k])})"
        )
        print(
            f"(c) ratio b/a:                           {hub_rate / raw_rate:10.2f}   (target >= 0.85)"
        )
    hub = hubs[-1]
    status = hub.status()
    print(f"    {status['ingest']['batches']} commits in the last drain of {label(hub.src)}")
    sent = run_steady_publisher(port, args.rate, args.seconds)
    hub.wait(lambda s: s.get("ingest", {}).get("messages", 0) >= n + sent["sent"], 60)
    ages = hub.status()["ingest"]["age_at_commit_ms"]
    print(
        f"(d) {label(hub.src)}, publish->commit at {sent['sent'] / sent['elapsed']:,.0f} msgs/s offered: p50 {ages['p50']} ms, "
        f"p99 {ages['p99']} ms, max {ages['max']} ms (last {ages['window']:,} messages; target p99 < 250 ms)"
    )
    print(
        f"(e) hub peak RSS:                        {hub.peak_rss_mb():10.1f} MB (target < 150 MB)"
    )
    hub.stop()
    for client_id in ["bench-raw"] + [f"bench-hub-{k}" for k in range(len(hubs))]:
        forget_session(port, client_id)
    return raw_rate, items


def steady(args: argparse.Namespace, workdir: Path, port: int) -> None:
    wait = args.batch_wait if args.batch_wait is not None else "default"
    print(f"steady load: a fresh hub per rate, its default settings, ingest.batch_wait {wait}")
    for index, rate in enumerate(args.steady_rates):
        for k, src in enumerate(args.hub_src):
            steady_one(args, workdir / f"steady-{index}-{k}", port, src, rate, idle=index == 0)


def steady_one(
    args: argparse.Namespace, workdir: Path, port: int, src: Path, rate: float, idle: bool
) -> None:
    # A fresh hub (and data dir) per rate: its latency window holds only this rate's messages.
    client_id = f"bench-steady-{workdir.name}"
    hub = Hub(
        workdir, port, args.synchronous, src=src, batch_wait=args.batch_wait,
        status_interval=None, client_id=client_id,
    )  # fmt: skip
    hub.start()
    hub.wait(lambda s: s.get("broker", {}).get("state") == "connected", 30)
    time.sleep(3)  # start-up work (discovery, first status) is not the idle cost
    name = label(src)
    if idle and args.idle_seconds > 0:
        cpu0 = sum(hub.threads_cpu().values())
        time.sleep(args.idle_seconds)
        idle_cpu = (sum(hub.threads_cpu().values()) - cpu0) / args.idle_seconds
        print(
            f"(f) {name}, idle: hub CPU {idle_cpu * 100:.2f} % of a core over {args.idle_seconds:.0f} s (target <= 0.5 %)"
        )
    # Every series once first: a home's series are known to the hub; announcing new ones to
    # Home Assistant (whose discovery configs the hub also receives) is not steady work.
    warmup = run_steady_publisher(port, STEADY_NODES * len(METRICS), 1.0)["sent"]
    hub.wait(lambda s: s.get("ingest", {}).get("messages", 0) >= warmup, 30)
    time.sleep(4)
    before = hub.status().get("ingest", {})
    cpu0 = hub.threads_cpu()
    sent = run_steady_publisher(port, rate, args.steady_seconds)
    cpu1 = hub.threads_cpu()
    count = sent["sent"]
    goal = before.get("messages", 0) + count
    hub.wait(lambda s: s.get("ingest", {}).get("messages", 0) >= goal, 60)
    after = hub.status()["ingest"]
    per_thread = {k: (cpu1[k] - cpu0[k]) / count * 1e6 for k in cpu0}
    total = sum(per_thread.values())
    ages = after["age_at_commit_ms"]
    commits = after["batches"] - before.get("batches", 0)
    offered = count / sent["elapsed"]
    target = 80 if rate >= 1000 else 150
    print(
        f"(f) {name}, steady {offered:,.0f} msgs/s for {sent['elapsed']:.0f} s: hub CPU {total:.0f} us/msg "
        f"(target <= {target}; {total * offered / 1e4:.1f} % of a core) = "
        + ", ".join(f"{k} {v:.0f}" for k, v in per_thread.items())
        + f"; publisher {sent['cpu_s'] / count * 1e6:.0f} us/msg"
    )
    print(
        f"    publish->commit p50 {ages['p50']} ms, p99 {ages['p99']} ms, max {ages['max']} ms "
        f"(last {ages['window']:,}; target p99 <= 50 ms); {commits / sent['elapsed']:,.1f} commits/s "
        f"({count / max(1, commits):,.1f} msgs/commit); duplicates {after['duplicates'] - before.get('duplicates', 0)}"
    )
    hub.stop()
    forget_session(port, client_id)


class Workers:
    """`hub run --worker` processes on one shared group and one PostgreSQL store."""

    def __init__(
        self, workdir: Path, port: int, url: str, count: int, leader_parts: bool = True,
        run: int = 0,
    ) -> None:  # fmt: skip
        self.workdir = workdir
        # A client id and group of its own per run: the persistent sessions of an earlier
        # run stay members of their group at the broker and would take a share of this one.
        self.client_id = f"bench-w{count}r{run}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "hub.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(workdir / "data"),
                    "broker": {
                        "url": f"mqtt://127.0.0.1:{port}",
                        "client_id": self.client_id,
                        "shared_group": f"bench{count}r{run}",
                    },
                    "web": {"host": "127.0.0.1", "port": 0},  # several on one machine
                    "store": {"url": url},
                    "status": {"interval": "0.25s", "publish_stats": False},
                    "log": {"level": "warning"},
                    # off: the leader runs no alert engine (nor HA discovery, which is part
                    # of it); the feed and the derivations still run
                    "alerts": {"enabled": leader_parts},
                }
            )
        )
        self.ids = [str(k + 1) for k in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def statuses(self) -> list[dict]:
        out = []
        for worker_id in self.ids:
            try:
                path = self.workdir / "data" / f"worker-{self.client_id}-{worker_id}.json"
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
        return [peak_rss_mb(proc.pid) for proc in self.procs]

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
            "events, devices, dead_letters, feed, alerts, alert_events, outbox, outbox_gaps "
            "CASCADE"  # CASCADE: the outbox's dead points refer to dead_letters
        )


def bench_workers(
    workdir: Path, port: int, url: str, count: int, items: list[tuple[str, bytes]], rate: float,
    seconds: float, raw_rate: float, leader_parts: bool = True, run: int = 0,
) -> float:  # fmt: skip
    n = len(items)
    empty_store(url)
    workers = Workers(workdir / f"workers{count}r{run}", port, url, count, leader_parts, run)
    workers.start()  # once, to create each member's persistent session in the group
    workers.stop()
    publish_all(port, items)
    workers.start()
    t0 = workers.wait(lambda: workers.messages() > 0)
    t1 = workers.wait(lambda: workers.messages() >= n)
    drained = n / (t1 - t0)
    print(
        f"(w1) {count} PostgreSQL worker{'s' if count > 1 else ' '}, first message -> last commit: "
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
        f"(w2) {count} worker(s), publish->commit at {steady_count / elapsed:,.0f} msgs/s offered: "
        + "; ".join(
            f"worker {i + 1}: p50 {a.get('p50')} ms, p99 {a.get('p99')} ms, max {a.get('max')} ms"
            for i, a in enumerate(ages)
        )
        + f" (messages per worker: {shares}; target p99 < 250 ms)"
    )
    print(
        f"(w3) {count} worker(s), peak RSS: "
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
        "--sections",
        default="drain,steady",
        help="which parts to run, comma-separated: drain, steady, nodered (the Node-RED peer "
        "of bench/nodered_peer.py: its drain of the same n messages and its steady rates, on "
        "the same broker; needs Node.js and npm, skipped with a message without them)",
    )
    parser.add_argument(
        "--steady-rates",
        type=lambda v: [float(r) for r in v.split(",")],
        default=[200.0, 2000.0],
        help="steady loads (msgs/s), comma-separated",
    )
    parser.add_argument("--steady-seconds", type=float, default=20.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="0: skip the idle figure")
    parser.add_argument(
        "--batch-wait",
        default=None,
        help="ingest.batch_wait for the hub, e.g. 0 or 30ms (default: the hub's)",
    )
    parser.add_argument(
        "--hub-src",
        type=Path,
        action="append",
        help="a checkout whose hub to run (default: this one); repeat it to measure several "
        "in the same run, e.g. the commit before a change and this one",
    )
    parser.add_argument(
        "--store",
        default=None,
        help="postgresql://... : after the drain, drain with 1 and 2 `hub run --worker` on this "
        "database (its tables are emptied)",
    )
    parser.add_argument(
        "--worker-alerts",
        choices=("on", "off"),
        default="on",
        help="with --store: the leader worker's alert engine (and HA discovery); off leaves "
        "the change feed and the derivations",
    )
    parser.add_argument("--raw-consumer", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steady-publisher", nargs=3, type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_consumer:
        raw_consumer(*args.raw_consumer)
        return
    if args.steady_publisher:
        port, rate, seconds = args.steady_publisher
        steady_publisher(int(port), rate, seconds)
        return
    args.hub_src = [src.resolve() for src in args.hub_src or [REPO]]
    sections = set(args.sections.split(","))
    n = args.messages
    raw_rate: float | None = None
    items: list[tuple[str, bytes]] = []
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        workdir = Path(tmp)
        broker, port = start_broker(workdir / "broker")
        try:
            if "drain" in sections:
                raw_rate, items = drain(args, workdir, port)
                if args.store:
                    parts = args.worker_alerts == "on"
                    ones, twos = [], []
                    for run in range(args.repeat):  # alternating, as the drains above
                        for count, runs in ((1, ones), (2, twos)):
                            runs.append(
                                bench_workers(
                                    workdir, port, args.store, count, items, args.rate,
                                    args.seconds, raw_rate, parts, run,
                                )
                            )  # fmt: skip
                    one, two = statistics.median(ones), statistics.median(twos)
                    print(
                        f"(w4) medians of {args.repeat}: 1 worker {one:,.0f} msgs/s "
                        f"({one / raw_rate:.2f} of bare paho), 2 workers {two:,.0f} msgs/s; "
                        f"2 workers / 1 worker: {two / one:.2f} (targets: 1 worker >= 0.5 "
                        "of bare paho; 2 workers >= 1.3x one)"
                    )
            if "steady" in sections:
                steady(args, workdir, port)
            if "nodered" in sections:
                # only here: the default run needs neither Node.js nor npm
                import nodered_peer

                if not items:  # no drain in this run: the same kind of queue
                    items = messages(n, int(time.time() * 1000) - n)
                nodered_peer.run(args, workdir / "nodered", port, items, raw_rate)
        finally:
            broker.terminate()
            broker.wait(10)


if __name__ == "__main__":
    main()
