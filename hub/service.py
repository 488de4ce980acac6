"""`hub run`: wires the broker, the ingest core, the store, the simulator and the status
reporting onto one asyncio loop, and takes them down in order on SIGINT/SIGTERM.

Objects are built here and passed in explicitly (no module state), so a test can wire a
smaller hub from the same parts.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import sqlite3
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
from hub.ports import CommittedFeed, Ports, StoreReader
from hub.runtime import Supervisor, tick_after, until_tick
from hub.sources.simulate import Simulation, SimulatorPublisher, run_live, simulated_vehicle
from hub.status_parts import MessageRate, connection_fields, ingest_fields
from hub.store.sqlite import DeadLetterLimits, Store
from hub.store.writer import StoreWriter

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"


class Hub:
    def __init__(self, config: HubConfig, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.broker: ManagedBroker | None = None
        self.store: Store | None = None
        self.writer: StoreWriter | None = None
        self.connection: MqttConnection | None = None
        self.ingest: IngestCore | None = None
        self.ports: Ports | None = None
        self.started_at = time.time()
        self.stop_requested = asyncio.Event()
        self.supervisor = Supervisor(self._fatal)
        self._sim_thread: threading.Thread | None = None
        self._sim_stop = threading.Event()
        self.message_rate = MessageRate()
        self.ready = asyncio.Event()
        self.components: list[Component] = []
        self._status_error: str | None = None
        self._published_health: bytes | None = None

    @property
    def status_path(self) -> Path:
        return self.config.data_dir / STATUS_FILE

    def _fatal(self, reason: str) -> None:
        """A task the hub cannot run without has failed: stop, and exit non-zero."""
        log.error("Stopping the hub: %s", reason)
        self.stop_requested.set()

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        if config.broker.is_managed:
            self.broker = ManagedBroker(config.broker.managed, config.data_dir)
            await self.broker.start()
        store_config = config.store
        self.store = await asyncio.to_thread(
            Store,
            config.store_path,
            store_config.synchronous,
            check_seconds=store_config.check_timeout,
            busy_timeout=store_config.busy_timeout,
            dead_letters=DeadLetterLimits(
                int(store_config.dead_letters.max_payload),
                int(store_config.dead_letters.max_bytes),
                store_config.dead_letters.retention,
            ),
        )
        self.writer = StoreWriter(self.store)
        router = Router(config)
        self.connection = MqttConnection(config.broker, router.subscriptions())
        self.derivations = Derivations(self._derive_config())
        feed = CommittedFeed()
        self.ingest = IngestCore(
            self.connection,
            self.writer,
            router,
            batch_max=config.ingest.batch_max,
            batch_wait=config.ingest.batch_wait,
            batch_size=config.ingest.batch_size,
            derivers=[self.derivations],
            min_free_bytes=int(store_config.min_free),
            feed=feed,
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
        self.supervisor.spawn("ingest", self.ingest.run)  # not restartable: its batch is in hand
        self.ports = Ports(
            config=config,
            publisher=self.connection,
            committed=feed,
            writer=self.writer,
            reader=StoreReader(config.store_path),
            decoder=router,
            status=self.status,
            spawn=self.supervisor.spawn,
            find=self.component,
        )
        self.components = build_all(self.ports)
        for component in self.components:
            await component.start()
        self.supervisor.spawn("status", self._status_loop, restart=True)
        self.supervisor.spawn("maintenance", self._maintenance_loop, restart=True)
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

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

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
            broker=broker,
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
        """Ordered shutdown that always completes: simulator, components, ingest (commit + ack
        the batch in hand), offline, store, broker. A step that fails is logged and skipped."""
        self.supervisor.begin_stop()
        self._sim_stop.set()
        for component in reversed(self.components):
            try:
                await asyncio.wait_for(component.stop(), 30)
            except Exception:
                log.exception("Stopping %s failed", component.name)
        if self._sim_thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._sim_thread.join, 10)
        await self.supervisor.cancel("status")
        await self.supervisor.cancel("maintenance")
        if self.ingest is not None:
            await self.ingest.close_open_sessions()
            try:
                await self.ingest.stop()
            except Exception:
                log.exception("Stopping ingest failed")
        await self.supervisor.stop()
        if self.connection is not None:
            try:
                self.connection.stop(offline=True)
            except Exception:
                log.exception("Closing the MQTT connection failed")
        self.write_status("stopped")
        if self.writer is not None:
            try:
                await asyncio.to_thread(self.writer.close)
            except Exception:
                log.exception("Closing the store failed")
        elif self.store is not None:
            self.store.close()
        if self.broker is not None:
            try:
                await self.broker.stop()
            except Exception:
                log.exception("Stopping the managed broker failed")
        if self.supervisor.failure:
            log.error("Hub stopped after a failure: %s", self.supervisor.failure)
        else:
            log.info("Hub stopped")

    def health(self, status: dict[str, Any]) -> dict[str, Any]:
        """Each part's health and the whole: degraded as soon as one part is."""
        parts: dict[str, dict[str, str]] = {}
        connection = self.connection
        if connection is not None:
            if connection.connected:
                parts["broker"] = {"status": "ok", "reason": ""}
            else:
                why = connection.stats.last_error or connection.state.value
                parts["broker"] = {
                    "status": "degraded",
                    "reason": f"MQTT broker not connected: {why}",
                }
        if self.ingest is not None:
            parts["store"] = self.ingest.health()
        if self._status_error:
            parts["status_file"] = {"status": "degraded", "reason": self._status_error}
        for name, section in status.items():
            if isinstance(section, dict) and isinstance(section.get("health"), dict):
                parts[name] = section["health"]
        failed_tasks = [
            f"task {name} {'stopped' if not s['running'] else 'restarted'} after "
            f"{s['restarts']} restarts (last error: {s['last_error'] or 'none'})"
            for name, s in self.supervisor.status().items()
            if not self.supervisor.stopping
            and (not s["running"] or (s["restarts"] and s["last_error"]))
        ]
        if failed_tasks:
            parts["tasks"] = {"status": "degraded", "reason": "; ".join(failed_tasks)}
        reasons = [f"{name}: {p['reason']}" for name, p in parts.items() if p.get("status") != "ok"]
        return {"status": "degraded" if reasons else "ok", "reasons": reasons, "parts": parts}

    @functools.cached_property
    def _fixed_status(self) -> tuple[str | None, str, str, str]:
        """What status() shows that never changes while the hub runs: worked out once, not
        at every refresh (resolving a path is a system call per level)."""
        host, port, tls = self.config.broker.host_port_tls
        return (
            str(self.config_path.resolve()) if self.config_path else None,
            str(self.config.data_dir.resolve()),
            f"{'mqtts' if tls else 'mqtt'}://{host}:{port}",
            str(self.config.store_path),
        )

    def status(self, state: str = "running") -> dict[str, Any]:
        connection, ingest = self.connection, self.ingest
        config_path, data_dir, broker_url, store_path = self._fixed_status
        store = self.store
        data: dict[str, Any] = {
            "version": __version__,
            "state": state,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": time.time(),
            "config_path": config_path,
            "data_dir": data_dir,
            "broker": {
                "url": broker_url,
                "managed": self.config.broker.is_managed,
                "managed_restarts": self.broker.restarts if self.broker else 0,
                "client_id": connection.client_id if connection else None,
                **connection_fields(connection),
            },
            "ingest": ingest_fields(ingest, connection, self.message_rate),
            "store": {
                "path": store_path,
                "size_bytes": store.size_bytes() if store else 0,
                "dead_letters": store.dead_letter_totals() if store else {},
            },
            "tasks": self.supervisor.status(),
            **{c.name: c.status() for c in self.components},
        }
        data["health"] = self.health(data)
        return data

    def write_status(self, state: str = "running") -> dict[str, Any] | None:
        try:
            status = self.status(state)
        except Exception:
            log.exception("Building the status failed")
            return None
        try:
            tmp = self.status_path.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(status, option=orjson.OPT_INDENT_2))
            tmp.replace(self.status_path)
            if self._status_error is not None:
                log.warning("%s is written again", self.status_path)
                self._status_error = None
        except OSError as exc:
            if self._status_error is None:  # once per episode, not every 2 s
                log.warning("Cannot write %s: %s", self.status_path, exc)
            self._status_error = f"cannot write {self.status_path.name}: {exc.strerror or exc}"
        return status

    async def _status_loop(self) -> None:
        prefix = self.config.broker.topic_prefix
        while True:
            status = self.write_status()
            connection = self.connection
            if status is not None and connection is not None and connection.connected:
                health = status["health"]
                payload = orjson.dumps({"status": health["status"], "reasons": health["reasons"]})
                if payload != self._published_health:
                    # Retained: a dashboard or automation that subscribes later sees it at once.
                    connection.publish(f"{prefix}/health", payload, qos=1, retain=True)
                    self._published_health = payload
                if self.config.status.publish_stats:
                    connection.publish(f"{prefix}/stats", orjson.dumps(status), qos=0, retain=False)
            await asyncio.sleep(until_tick(self.config.status.interval))

    async def _maintenance_loop(self) -> None:
        retention = self.config.store.retention
        last_retention = 0.0
        assert self.ingest is not None and self.store is not None and self.writer is not None
        store, writer, ingest = self.store, self.writer, self.ingest
        failing = False
        while True:
            interval = self.config.store.rollup_interval
            # A whole interval after the last round (or the start), on the tick
            await asyncio.sleep(tick_after(interval, min(1.0, interval)))
            now_ms = int(time.time() * 1000)
            raw_cutoff = now_ms - int(retention.raw * 1000) if retention.raw else 0
            try:
                # Same thread as the ingest commits: the writer connection stays single-threaded.
                ingest.notify(await writer.call(ingest.tick, now_ms))
                # A few series per call: ingest batches commit in between, so a rollup never
                # holds the store thread (and every reading's latency) for long.
                for _ in range(256):  # at most 1,024 series a round; the rest waits for the next
                    if not await writer.call(store.rollup, raw_cutoff, 4):
                        break
                await writer.call(store.checkpoint)
                if time.monotonic() - last_retention >= self.config.store.maintenance_interval:
                    last_retention = time.monotonic()
                    deleted = await writer.call(
                        store.apply_retention,
                        now_ms,
                        retention.raw,
                        retention.minute,
                        retention.hour,
                    )
                    deleted["dead_letters"] = await writer.call(store.expire_dead_letters, now_ms)
                    if any(deleted.values()):
                        log.info("Retention removed %s", deleted)
                if failing:
                    log.info("Store maintenance works again")
                    failing = False
            except (sqlite3.Error, OSError) as exc:
                # The ingest side reports a failing store; maintenance waits for the next round.
                if not failing:
                    log.warning("Store maintenance skipped: %s; trying again next round", exc)
                failing = True


async def run_hub(config: HubConfig, stop: asyncio.Event, config_path: Path | None = None) -> int:
    """Run until `stop` is set or a vital task fails; the exit code (0, or 1 after a failure)."""
    hub = Hub(config, config_path)
    hub.stop_requested = stop
    try:
        await hub.start()
        await stop.wait()
    finally:
        await hub.stop()
    return 1 if hub.supervisor.failure else 0
