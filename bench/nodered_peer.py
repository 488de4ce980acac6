"""The Node-RED peer of bench/ingest.py (issue #22): how home-lab users glue Mosquitto to a
time-series database today, measured in the same run and on the same broker as the hub.

bench/nodered/flow.json: mqtt in (QoS 1, persistent MQTT 5 session, fixed client id) on
`hub/readings/#` and `+/sensor/+/state` -> function (one InfluxDB point per message) -> join
(5,000 messages or 1 s) -> influxdb batch (node-red-contrib-influxdb, v1 /write) ->
VictoriaMetrics. Node-RED and the node come from bench/nodered/package-lock.json, installed
once with `npm ci --ignore-scripts` into /var/cache/hub-bench/node-red (HUB_BENCH_NODERED_CACHE
moves it); nothing lands in the repository.

(n1) drain: the same queue of QoS 1 messages the hub drains, held by Mosquitto for the flow's
     persistent session; from the first message the function node sees (it stamps it into a
     file) to the last point counted by VictoriaMetrics (vm_rows_inserted_total{type="influx"}:
     one row per field, counted when the write arrives, exact and cheap to poll; the stored
     samples are checked afterwards with a count_over_time query after /internal/force_flush);
     Node-RED's CPU per message over that time, from /proc/<pid>/task/*/schedstat.
(n2) steady: Node-RED idle (% of a core), then its CPU per message while run_steady_publisher
     offers each of --steady-rates for --steady-seconds, up to the last point in VictoriaMetrics.
(n3) when the flow acks: Node-RED's mqtt in (MQTT.js) acks a QoS 1 message on receipt, before
     the flow has written it anywhere. Shown, not fixed: a queue is taken, Node-RED is killed
     while the points wait in the join, and what reaches VictoriaMetrics after a restart counted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
from ingest import (
    METRICS,
    STEADY_NODES,
    peak_rss_mb,
    publish_all,
    run_steady_publisher,
    threads_cpu,
)

from tests.influx.victoria import VictoriaMetrics, victoria_binary

HERE = Path(__file__).resolve().parent / "nodered"
SETTINGS = HERE / "settings.js"
FLOW = HERE / "flow.json"
DEFAULT_CACHE = Path("/var/cache/hub-bench/node-red")
DB = "bench"  # the influxdb node's database: VictoriaMetrics stores it as the label db="bench"


def cache_dir() -> Path:
    given = os.environ.get("HUB_BENCH_NODERED_CACHE")
    if given:
        return Path(given)
    if os.access(DEFAULT_CACHE.parent if DEFAULT_CACHE.parent.exists() else "/var/cache", os.W_OK):
        return DEFAULT_CACHE
    return Path.home() / ".cache" / "hub-bench" / "node-red"


def unavailable() -> str | None:
    """Why the peer cannot run here, or None."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Node.js >= 18.5 and npm are needed)"
    if victoria_binary() is None:
        return "victoria-metrics is not installed (tools/victoria-metrics.sh installs it)"
    return None


def install() -> Path:
    """Node-RED from the committed lock, in the cache dir (`npm ci` only when the lock changed);
    returns red.js. --ignore-scripts: no package in the lock has an install script (checked when
    the lock was made), and none is needed."""
    cache = cache_dir()
    lock = (HERE / "package-lock.json").read_bytes()
    red_js = cache / "node_modules" / "node-red" / "red.js"
    installed = cache / "package-lock.json"
    if red_js.exists() and installed.exists() and installed.read_bytes() == lock:
        return red_js
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HERE / "package.json", cache / "package.json")
    shutil.copyfile(HERE / "package-lock.json", cache / "package-lock.json")
    print(f"    installing Node-RED into {cache} (npm ci --ignore-scripts)", flush=True)
    out = subprocess.run(
        ["npm", "ci", "--ignore-scripts", "--omit=dev", "--no-audit", "--no-fund"],
        cwd=cache, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if out.returncode != 0 or not red_js.exists():
        installed.unlink(missing_ok=True)  # the next run tries again
        raise RuntimeError(f"npm ci failed in {cache}: {(out.stderr or out.stdout)[-2000:]}")
    return red_js


def node_red_version(red_js: Path) -> str:
    return orjson.loads((red_js.parent / "package.json").read_bytes())["version"]


class Victoria:
    """A private VictoriaMetrics (tests/influx/victoria.py) with the bench's counters."""

    def __init__(self, workdir: Path) -> None:
        # no rollup cache: the stored-sample count is asked again and again as points arrive
        self.server = VictoriaMetrics(workdir, ["-search.disableCache"])
        self.server.start()

    @property
    def port(self) -> int:
        return self.server.port

    def _metric(self, prefix: str) -> int:
        with urllib.request.urlopen(f"{self.server.url}/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(prefix):
                    return int(float(line.rsplit(" ", 1)[1]))
        return 0

    def rows(self) -> int:
        """InfluxDB rows (one per field) accepted so far, counted as each write arrives."""
        return self._metric('vm_rows_inserted_total{type="influx"}')

    def writes(self) -> int:
        """HTTP writes so far (VictoriaMetrics counts InfluxDB's /write as /influx/write)."""
        return self._metric('vm_http_requests_total{path="/influx/write"')

    def wait_rows(self, goal: int, timeout: float) -> float:
        """Wall-clock time (time.time()) at which `goal` rows had arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.rows() >= goal:
                return time.time()
            time.sleep(0.02)
        raise TimeoutError(f"VictoriaMetrics has {self.rows():,} of {goal:,} rows")

    def cpu(self) -> float:
        assert self.server.proc is not None
        return sum(threads_cpu(self.server.proc.pid).values())

    def stored(self, expect: int | None = None, timeout: float = 20) -> int:
        """Samples searchable under db="bench" (flushed first; new series take a moment to index)."""
        deadline = time.monotonic() + timeout
        while True:
            self.server.flush()
            query = urllib.parse.urlencode(
                {
                    "query": f'sum(count_over_time({{db="{DB}"}}[1d]))',
                    "time": f"{time.time() + 60:.3f}",  # stamps bumped by 1 ms may be ahead
                }
            )
            with urllib.request.urlopen(
                f"{self.server.url}/api/v1/query?{query}", timeout=60
            ) as response:
                result = orjson.loads(response.read())["data"]["result"]
            count = int(result[0]["value"][1]) if result else 0
            if expect is None or count >= expect or time.monotonic() > deadline:
                return count
            time.sleep(0.5)

    def stop(self) -> None:
        self.server.stop()


class NodeRed:
    def __init__(self, red_js: Path, workdir: Path, mqtt_port: int, vm_port: int, client_id: str):
        self.red_js = red_js
        self.workdir = workdir
        self.userdir = workdir / "userdir"
        self.userdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FLOW, self.userdir / "flows.json")  # ${VAR}s filled from the env
        self.mark = workdir / "first-message"
        self.log = workdir / "node-red.log"
        self.env = {
            **os.environ,
            "NODERED_MQTT_PORT": str(mqtt_port),
            "NODERED_VM_PORT": str(vm_port),
            "NODERED_CLIENT_ID": client_id,
            "NODERED_MARK_FILE": str(self.mark),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.mark.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["node", str(self.red_js), "--userDir", str(self.userdir), "--settings", str(SETTINGS)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
            )  # fmt: skip

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"Node-RED exited: {self.log.read_text()[-2000:]}")

    def first_message(self, timeout: float = 120) -> float:
        """Wall-clock time of the first message the function node handled (Date.now())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                text = self.mark.read_text().strip()
            except OSError:
                text = ""
            if text:
                return int(text) / 1000
            self.check()
            time.sleep(0.01)
        raise TimeoutError("Node-RED handled no message")

    def cpu(self) -> float:
        assert self.proc is not None
        return sum(threads_cpu(self.proc.pid).values())

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        return peak_rss_mb(self.proc.pid)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def rows_of(items: list[tuple[str, bytes]]) -> int:
    """InfluxDB rows the flow writes for these messages: one per ESPHome state, one per field
    of a hub JSON reading."""
    return sum(
        len(orjson.loads(payload)["values"]) if topic.startswith("hub/") else 1
        for topic, payload in items
    )


def subscribed(port: int, node_red: NodeRed, vm: Victoria, timeout: float = 60) -> None:
    """Until a probe published now reaches VictoriaMetrics: the flow's client is connected and
    subscribed (a probe sent before the subscription exists is dropped by the broker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = vm.rows()
        probe = orjson.dumps({"ts_ms": time.time_ns() // 1_000_000, "values": {"probe": 1.0}})
        publish_all(port, [("hub/readings/nodered-probe", probe)])
        wait = time.monotonic() + 5  # the join holds it up to 1 s
        while time.monotonic() < wait:
            if vm.rows() > before:
                return
            node_red.check()
            time.sleep(0.05)
    raise TimeoutError(f"Node-RED did not subscribe: {node_red.log.read_text()[-2000:]}")


def drain_nodered(
    port: int, items: list[tuple[str, bytes]], workdir: Path, *, repeat: int = 1,
    raw_rate: float | None = None,
) -> tuple[float, float]:  # fmt: skip
    """(n1) and (n3); returns Node-RED's drain rate (msgs/s) and its CPU (us/msg)."""
    red_js = install()
    vm = Victoria(workdir / "vm-drain")
    node_red = NodeRed(red_js, workdir / "drain", port, vm.port, "bench-nodered")
    n = len(items)
    expected = rows_of(items)
    rates: list[float] = []
    cpus: list[float] = []
    try:
        node_red.start()  # once, to create the persistent session and its subscriptions
        subscribed(port, node_red, vm)
        node_red.stop()
        for _ in range(repeat):
            publish_all(port, items)
            base, writes0 = vm.rows(), vm.writes()
            node_red.start()
            t0 = node_red.first_message()
            cpu0, vm_cpu0 = node_red.cpu(), vm.cpu()
            t1 = vm.wait_rows(base + expected, 600)
            cpus.append((node_red.cpu() - cpu0) / n * 1e6)
            vm_cpu = (vm.cpu() - vm_cpu0) / n * 1e6
            rates.append(n / (t1 - t0))
            writes = vm.writes() - writes0
            rss = node_red.peak_rss_mb()
            node_red.stop()
        stored = vm.stored(expect=vm.rows())
        accepted = vm.rows()
        rate, cpu = statistics.median(rates), statistics.median(cpus)
        runs = lambda xs: ", ".join(f"{x:,.0f}" for x in xs)  # noqa: E731
        ratio = f" ({rate / raw_rate:.2f} of bare paho)" if raw_rate else ""
        print(
            f"(n1) Node-RED {node_red_version(red_js)} flow, first message -> last point in VictoriaMetrics: "
            f"{rate:10,.0f} msgs/s (median of {runs(rates)}){ratio}; "
            f"Node-RED CPU {cpu:.0f} us/msg (median of {runs(cpus)})"
        )
        print(
            f"     {expected:,} rows per drain ({n:,} messages); VictoriaMetrics accepted {accepted:,} "
            f"rows in all (probes included), stores {stored:,} samples; {writes:,} writes in the "
            f"last drain ({expected / max(1, writes):,.0f} rows/write); VictoriaMetrics CPU "
            f"{vm_cpu:.0f} us/msg besides (last drain); Node-RED peak RSS {rss:.1f} MB"
        )
        ack_on_receipt(port, node_red, vm, items[:1000])
    finally:
        if node_red.proc is not None and node_red.proc.poll() is None:
            node_red.stop()
        vm.stop()
    return rate, cpu


def ack_on_receipt(port: int, node_red: NodeRed, vm: Victoria, items: list) -> None:
    """(n3) 1,000 messages are queued for the flow's session; Node-RED takes them and is killed
    0.3 s after the first one, while the join still holds them (it flushes at 5,000 or 1 s).
    A restarted Node-RED gets again only what it had not acked; it is given 8 s (start-up,
    redelivery, the join's 1 s) and no probe, so every row counted is one of these messages."""
    expected = rows_of(items)
    publish_all(port, items)
    base = vm.rows()
    node_red.start()
    node_red.first_message()
    time.sleep(0.3)
    node_red.stop(signal.SIGKILL)
    before_restart = vm.rows() - base
    node_red.start()
    time.sleep(8)
    arrived = vm.rows() - base
    node_red.stop()
    lost = expected - arrived
    print(
        f"(n3) Node-RED acks QoS 1 on receipt (MQTT.js, before the flow runs): of {len(items):,} "
        f"queued messages ({expected:,} rows), killed 0.3 s after its first one, "
        f"{before_restart:,} rows were written before the kill and {arrived:,} in all after a "
        f"restart: {lost:,} rows lost ({lost / expected:.0%}), acked but held only in the join"
    )


def steady_nodered(
    port: int, rates: list[float], seconds: float, idle_seconds: float, workdir: Path
) -> None:
    """(n2): one Node-RED for every rate; idle first."""
    red_js = install()
    vm = Victoria(workdir / "vm-steady")
    node_red = NodeRed(red_js, workdir / "steady", port, vm.port, "bench-nodered-steady")
    try:
        node_red.start()
        subscribed(port, node_red, vm)
        time.sleep(3)  # start-up work is not the idle cost
        if idle_seconds > 0:
            cpu0 = node_red.cpu()
            time.sleep(idle_seconds)
            idle = (node_red.cpu() - cpu0) / idle_seconds
            print(
                f"(n2) Node-RED, idle: CPU {idle * 100:.2f} % of a core over {idle_seconds:.0f} s"
            )
        # every series once first, as for the hub (and V8 has compiled the flow's hot paths)
        before = vm.rows()
        warmup = run_steady_publisher(port, STEADY_NODES * len(METRICS), 1.0)["sent"]
        vm.wait_rows(before + warmup, 30)
        time.sleep(2)
        for rate in rates:
            before = vm.rows()
            writes0 = vm.writes()
            cpu0, vm_cpu0 = node_red.cpu(), vm.cpu()
            sent = run_steady_publisher(port, rate, seconds)
            count = sent["sent"]  # one field each: one row each
            t_end = time.time()
            t_last = vm.wait_rows(before + count, 60)
            # up to the last point: the join's last group (<= 1 s) is work for these messages
            cpu = (node_red.cpu() - cpu0) / count * 1e6
            vm_cpu = (vm.cpu() - vm_cpu0) / count * 1e6
            offered = count / sent["elapsed"]
            writes = vm.writes() - writes0
            print(
                f"(n2) Node-RED, steady {offered:,.0f} msgs/s for {sent['elapsed']:.0f} s: Node-RED CPU "
                f"{cpu:.0f} us/msg ({cpu * offered / 1e4:.1f} % of a core); publisher "
                f"{sent['cpu_s'] / count * 1e6:.0f} us/msg"
            )
            print(
                f"     {vm.rows() - before:,} of {count:,} points in VictoriaMetrics, the last "
                f"{t_last - t_end:.2f} s after the publisher ended; {writes / sent['elapsed']:.1f} "
                f"writes/s ({count / max(1, writes):,.0f} points/write); VictoriaMetrics CPU {vm_cpu:.0f} us/msg besides"
            )
        node_red.stop()
    finally:
        if node_red.proc is not None and node_red.proc.poll() is None:
            node_red.stop()
        vm.stop()


def run(
    args: argparse.Namespace, workdir: Path, port: int, items: list[tuple[str, bytes]],
    raw_rate: float | None,
) -> None:  # fmt: skip
    """The `nodered` section of bench/ingest.py: the drain (with --sections drain's messages,
    or the same kind of queue), then the steady rates."""
    reason = unavailable()
    if reason:
        print(f"(n) Node-RED peer skipped: {reason}")
        return
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        "Node-RED peer: mqtt in -> function -> join (5,000 or 1 s) -> influxdb batch -> VictoriaMetrics"
    )
    drain_nodered(port, items, workdir, repeat=args.repeat, raw_rate=raw_rate)
    steady_nodered(port, args.steady_rates, args.steady_seconds, args.idle_seconds, workdir)
