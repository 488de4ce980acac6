"""`hub run`: wires the broker, the ingest core, the store, the simulator and the status
reporting onto one asyncio loop, and takes them down in order on SIGINT/SIGTERM.

Objects are built here and passed in explicitly (no module state), so a test can wire a
smaller hub from the same parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from hub import __version__
from hub.bus.broker import ManagedBroker
from hub.bus.mqtt import MqttConnection
from hub.bus.router import Router
from hub.components import Component, build_all
from hub.config import HubConfig
from hub.derive.pipeline import Derivations, DeriveConfig
from hub.ingest import IngestCore
from hub.sources.simulate import Simulation, SimulatorPublisher, run_live, simulated_vehicle
from hub.store.sqlite import Store

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"


class Hub:
    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.broker: ManagedBroker | None = None
        self.store: Store | None = None
        self.connection: MqttConnection | None = None
        self.ingest: IngestCore | None = None
        self.started_at = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._sim_thread: threading.Thread | None = None
        self._sim_stop = threading.Event()
        self._last_rate_sample: tuple[float, int] = (time.monotonic(), 0)
        self.message_rate = 0.0
        self.ready = asyncio.Event()
        self.components: list[Component] = []

    @property
    def status_path(self) -> Path:
        return self.config.data_dir / STATUS_FILE

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        if config.broker.is_managed:
            self.broker = ManagedBroker(config.broker.managed, config.data_dir)
            await self.broker.start()
        self.store = Store(config.store_path, config.store.synchronous)
        router = Router(config)
        self.connection = MqttConnection(config.broker, router.subscriptions())
        self.derivations = Derivations(self._derive_config())
        self.ingest = IngestCore(
            self.connection,
            self.store,
            router,
            batch_max=config.ingest.batch_max,
            derivers=[self.derivations],
        )
        self.ingest.load_state()
        self.connection.start(asyncio.get_running_loop())
        host, port, tls = config.broker.host_port_tls
        if not await self.connection.wait_connected(10):
            reason = await asyncio.to_thread(self.connection.probe)
            self.connection.stats.last_error = reason
            log.error(
                "MQTT broker %s:%s not reachable: %s. Retrying in the background",
                host,
                port,
                reason,
            )
        self.ingest.start()
        self.components = build_all(self)
        for component in self.components:
            await component.start()
        self._tasks.append(asyncio.create_task(self._status_loop(), name="hub-status"))
        self._tasks.append(asyncio.create_task(self._maintenance_loop(), name="hub-maintenance"))
        if config.simulate.enabled:
            self._start_simulator(host, port)
        self.ready.set()
        # Everything built so far lives as long as the hub: keep the collector from walking it.
        gc.freeze()
        log.info(
            "Hub is up: broker %s://%s:%s%s, store %s. Look with 'hub status', "
            "'hub query pm2_5 --since 10m', 'hub query pack_voltage --device buggy --since 5m'.",
            "mqtts" if tls else "mqtt", host, port, " (managed)" if self.broker else "", config.store_path,
        )  # fmt: skip

    def _derive_config(self) -> DeriveConfig:
        """The demo's buggies are known vehicles: give them the simulator's pack and gearing
        (unless hub.yaml describes them), so the dashboard shows cells, speed and sessions."""
        derive = self.config.derive
        sim = self.config.simulate
        if not sim.enabled or not sim.buggies:
            return derive
        rc = dict(derive.rc)
        for name in Simulation(0, sim.buggies, None).buggy_names():
            rc.setdefault(name, simulated_vehicle(name, sim.session_gap))
        return derive.model_copy(update={"rc": rc})

    def _start_simulator(self, host: str, port: int) -> None:
        sim_config = self.config.simulate
        sim = Simulation(
            sim_config.airq_nodes,
            sim_config.buggies,
            sim_config.seed,
            self.config.broker.topic_prefix,
            drive_time=sim_config.drive_time,
            pit_stop=sim_config.pit_stop,
        )
        broker = self.config.broker
        publisher = SimulatorPublisher(
            host, port, client_id=f"{self.connection.client_id if self.connection else 'hub'}-sim",
            username=broker.username, password=broker.password.get_secret_value() if broker.password else None,
        )  # fmt: skip

        def run() -> None:
            try:
                publisher.connect()
                run_live(sim, publisher, sim_config.interval, sim_config.buggy_rate, self._sim_stop)
            except Exception:
                log.exception("Simulator stopped")
            finally:
                publisher.close()

        self._sim_thread = threading.Thread(target=run, name="hub-simulator", daemon=True)
        self._sim_thread.start()
        log.info("Simulating %s", sim.describe())

    async def stop(self) -> None:
        """Ordered shutdown: simulator, ingest (commit + ack the batch in hand), offline, broker."""
        self._sim_stop.set()
        for component in reversed(self.components):
            try:
                await component.stop()
            except Exception:
                log.exception("Stopping %s failed", component.name)
        if self._sim_thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._sim_thread.join, 10)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.ingest is not None:
            await self.ingest.close_open_sessions()
            await self.ingest.stop()
        if self.connection is not None:
            self.connection.stop(offline=True)
        self.write_status("stopped")
        if self.store is not None:
            self.store.close()
        if self.broker is not None:
            await self.broker.stop()
        log.info("Hub stopped")

    def status(self, state: str = "running") -> dict[str, Any]:
        connection, ingest = self.connection, self.ingest
        now = time.monotonic()
        received = connection.stats.received if connection else 0
        last_t, last_n = self._last_rate_sample
        if now - last_t >= 0.5:
            self.message_rate = (received - last_n) / (now - last_t)
            self._last_rate_sample = (now, received)
        host, port, tls = self.config.broker.host_port_tls
        return {
            "version": __version__,
            "state": state,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": time.time(),
            "broker": {
                "url": f"{'mqtts' if tls else 'mqtt'}://{host}:{port}",
                "managed": self.config.broker.is_managed,
                "managed_restarts": self.broker.restarts if self.broker else 0,
                "state": connection.state.value if connection else "stopped",
                "client_id": connection.client_id if connection else None,
                **(
                    {k: v for k, v in vars(connection.stats).items() if k != "history"}
                    if connection
                    else {}
                ),
                "pending": connection.pending() if connection else 0,
            },
            "ingest": {
                **(ingest.stats.as_dict() if ingest else {}),
                "messages_per_s": round(self.message_rate, 1),
            },
            "store": {
                "path": str(self.config.store_path),
                "size_bytes": self.store.size_bytes() if self.store else 0,
            },
            **{c.name: c.status() for c in self.components},
        }

    def write_status(self, state: str = "running") -> None:
        try:
            tmp = self.status_path.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(self.status(state), option=orjson.OPT_INDENT_2))
            tmp.replace(self.status_path)
        except OSError as exc:
            log.warning("Cannot write %s: %s", self.status_path, exc)

    async def _status_loop(self) -> None:
        prefix = self.config.broker.topic_prefix
        while True:
            try:
                self.write_status()
                if (
                    self.config.status.publish_stats
                    and self.connection
                    and self.connection.connected
                ):
                    self.connection.publish(
                        f"{prefix}/stats", orjson.dumps(self.status()), qos=0, retain=False
                    )
            except Exception:  # reporting must never stop; the next round tries again
                log.exception("Status report failed")
            await asyncio.sleep(self.config.status.interval)

    async def _maintenance_loop(self) -> None:
        retention = self.config.store.retention
        last_retention = 0.0
        assert self.ingest is not None and self.store is not None
        store = self.store
        while True:
            await asyncio.sleep(self.config.store.rollup_interval)
            now_ms = int(time.time() * 1000)
            raw_cutoff = now_ms - int(retention.raw * 1000) if retention.raw else 0
            # Same thread as the ingest commits: the writer connection stays single-threaded.
            self.ingest.notify(await self.ingest.call(self.ingest.tick, now_ms))
            # A few series per call: ingest batches commit in between, so a rollup never
            # holds the store thread (and every reading's latency) for long.
            for _ in range(256):  # at most 1,024 series a round; the rest waits for the next
                if not await self.ingest.call(store.rollup, raw_cutoff, 4):
                    break
            if time.monotonic() - last_retention >= self.config.store.maintenance_interval:
                last_retention = time.monotonic()
                deleted = await self.ingest.call(
                    store.apply_retention, now_ms, retention.raw, retention.minute, retention.hour
                )
                if any(deleted.values()):
                    log.info("Retention removed %s", deleted)


async def run_hub(config: HubConfig, stop: asyncio.Event) -> None:
    hub = Hub(config)
    try:
        await hub.start()
        await stop.wait()
    finally:
        await hub.stop()
