"""`hub run --worker`: one of several hub processes on one stream and one PostgreSQL store.

Each worker joins the MQTT 5 shared-subscription group (broker.shared_group, "hub" unless
set) with its own client id and persistent session, so the broker hands every live message
to one member and keeps a dead member's unacknowledged messages for it (or gives them to
the others, as the broker decides). Every worker runs the same ingest core as `hub run`: it
acks a batch only after its PostgreSQL commit, and a redelivery lands on the same sample key
(ON CONFLICT DO NOTHING). One worker, the holder of an advisory lock (hub.leader), also runs
the singletons: rollups, retention and the partitions of the next days, the InfluxDB
forwarder (hub.store.influx_leader), and the leader's components (hub.leader_components: the
PostgreSQL change feed, the derivations, the alert engine with Home Assistant discovery),
built when it takes the lead and stopped when it loses it. Derivations run there, not in
each worker's ingest: they keep per-device state, and the shared group splits a device's
stream between workers.

Every worker also serves the web dashboard and REST API over the shared store
(hub.worker_web), each on its own port (web.port, or --web-port per worker).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import orjson
import psycopg

from hub.bus.mqtt import MqttConnection, default_client_id
from hub.bus.router import Router
from hub.config import HubConfig
from hub.ingest import IngestCore
from hub.leader import Leader
from hub.leader_components import LeaderComponents
from hub.ports import CommittedFeed, Ports, StoreReader
from hub.runtime import Supervisor
from hub.store.postgres import PostgresStore, PostgresWriter, is_postgres_url, redact
from hub.store.sqlite import DeadLetterLimits, StoreError
from hub.worker_web import WorkerWeb

log = logging.getLogger(__name__)

DEFAULT_GROUP = "hub"


class Worker:
    def __init__(self, config: HubConfig, worker_id: str, *, leader_poll: float = 1.0) -> None:
        url = config.store.url
        if not is_postgres_url(url):
            raise StoreError(
                "hub run --worker needs store.url: postgresql://... (workers share one "
                "PostgreSQL store; the SQLite file belongs to one process)"
            )
        assert url is not None
        broker = config.broker
        if not broker.shared_group:
            broker = broker.model_copy(update={"shared_group": DEFAULT_GROUP})
        if broker.protocol == "3.1.1":
            raise StoreError(
                "hub run --worker needs MQTT 5 (shared subscriptions): broker.protocol"
            )
        self.config = config.model_copy(update={"broker": broker})
        self.url = url
        self.client_id = f"{broker.client_id or default_client_id()}-{worker_id}"[:64]
        self.leader_poll = leader_poll
        self.supervisor = Supervisor(self._fatal)
        self.stop_requested = asyncio.Event()
        self.store: PostgresStore | None = None
        self.writer: PostgresWriter | None = None
        self.connection: MqttConnection | None = None
        self.ingest: IngestCore | None = None
        self.leader: Leader | None = None
        self.rollup_rounds = 0
        self.router: Router | None = None
        self.lead = LeaderComponents(self._leader_ports)
        self._lead_changed = asyncio.Event()
        self._leader_tasks: set[str] = set()
        self.web: WorkerWeb | None = None  # pg-read: the web API (hub/worker_web.py)

    def _fatal(self, reason: str) -> None:
        log.error("Stopping the worker: %s", reason)
        self.stop_requested.set()

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        limits = config.store.dead_letters
        self.store = await asyncio.to_thread(
            PostgresStore,
            self.url,
            client=self.client_id,
            dead_letters=DeadLetterLimits(
                int(limits.max_payload), int(limits.max_bytes), limits.retention
            ),
        )
        await asyncio.to_thread(self.store.create_partitions_ahead, int(time.time() * 1000))
        self.writer = PostgresWriter(self.store)
        router = self.router = Router(config)
        self.connection = MqttConnection(
            config.broker,
            router.subscriptions(),
            client_id=self.client_id,
            availability_topic=f"{config.broker.topic_prefix}/workers/{self.client_id}/status",
        )
        self.ingest = IngestCore(
            self.connection,
            self.writer,
            router,
            batch_max=config.ingest.batch_max,
            batch_wait=config.ingest.batch_wait,
            batch_size=config.ingest.batch_size,
            feed=CommittedFeed(),
            seq_base=await asyncio.to_thread(self.store.seq_base),
            shared_store=True,
        )
        self.ingest.load_state()
        self.connection.start(asyncio.get_running_loop())
        if not await self.connection.wait_connected(10):
            log.error("MQTT broker not reachable yet; retrying in the background")
        self.supervisor.spawn("ingest", self.ingest.run)
        # >>> leader-only components (branch pg-influx): the InfluxDB forwarder starts when
        # this worker becomes leader and stops when it is no longer one (its own hook; the
        # others are hub.leader_components, started by the task "lead").
        from hub.store.influx_leader import LeaderForwarder

        self.influx = LeaderForwarder(
            config, self.url, self.client_id, self.store.keep_dead_letter, self.ingest.feed
        )
        self.supervisor.spawn("leader-influx", self.influx.run, restart=True)
        # <<< leader-only components
        self.leader = Leader(
            self.url, self.client_id, poll=self.leader_poll, on_change=self._leader_changed
        )
        self.supervisor.spawn("leader", self.leader.run, restart=True)
        self.supervisor.spawn("lead", self._lead, restart=True)
        self.supervisor.spawn("singletons", self._singletons, restart=True)
        self.supervisor.spawn("status", self._status_loop, restart=True)
        # -- pg-read: the web API and dashboard on every worker, over the shared store. ------
        self.web = WorkerWeb(self)
        self.supervisor.spawn("web", self.web.run, restart=True)
        # -- end pg-read ----------------------------------------------------------------------
        log.info(
            "Worker %s is up: shared group %s, store %s",
            self.client_id, config.broker.shared_group, redact(self.url),
        )  # fmt: skip

    async def _singletons(self) -> None:
        """Rollups every store.rollup_interval and retention every maintenance_interval,
        while this worker is the leader."""
        assert self.writer is not None and self.leader is not None
        store, writer, leader = self.writer.store, self.writer, self.leader
        config = self.config.store
        last_retention = 0.0
        while True:
            await asyncio.sleep(min(config.rollup_interval, self.leader_poll))
            if not leader.is_leader:
                continue
            now_ms = int(time.time() * 1000)
            retention = config.retention
            raw_cutoff = now_ms - int(retention.raw * 1000) if retention.raw else 0
            try:
                while leader.is_leader:
                    done: int = await writer.call(store.rollup, raw_cutoff, 64)
                    if not done:
                        break
                self.rollup_rounds += 1
                if time.monotonic() - last_retention >= config.maintenance_interval:
                    last_retention = time.monotonic()
                    await writer.call(store.create_partitions_ahead, now_ms)
                    deleted = await writer.call(
                        store.apply_retention,
                        now_ms,
                        retention.raw,
                        retention.minute,
                        retention.hour,
                    )
                    if any(deleted.values()):
                        log.info("Retention removed %s", deleted)
            except psycopg.Error as exc:
                log.warning("Singletons skipped a round: %s", exc)
            await asyncio.sleep(max(0.0, config.rollup_interval - self.leader_poll))

    def _leader_changed(self, leader: bool) -> None:
        """hub.leader.Leader's callback: the leader components and the InfluxDB forwarder."""
        self._lead_changed.set()
        influx = getattr(self, "influx", None)
        if influx is not None:
            influx.on_change(leader)

    def _leader_ports(self, lead: LeaderComponents) -> Ports:
        """The leader components' ports: their `committed` feed is every worker's batches,
        fed from the PostgreSQL change feed (not this worker's own share of the stream)."""
        assert self.connection and self.writer and self.router
        return Ports(
            config=self.config,
            publisher=self.connection,
            committed=CommittedFeed(),
            writer=self.writer,  # type: ignore[arg-type]  # the PostgreSQL writer's call()
            reader=StoreReader(self.config.store_path),
            decoder=self.router,
            status=self.status,
            spawn=self._leader_spawn,
            find=lead.find,
        )

    async def _lead(self) -> None:
        """Start the leader components on taking the lead, stop them on losing it."""
        assert self.leader is not None
        while True:  # cancelled by stop(), which then stops what runs
            await self._lead_changed.wait()
            self._lead_changed.clear()
            if self.leader.is_leader and not self.lead.running:
                try:
                    await self.lead.start()
                except Exception:  # logged by start(); try again while still leader
                    await self._forget_leader_tasks()
                    await asyncio.sleep(self.leader_poll)
                    self._lead_changed.set()
            elif not self.leader.is_leader and self.lead.running:
                await self._stop_lead()

    def _leader_spawn(self, name: str, factory: Any, **options: Any) -> asyncio.Task[None]:
        """The leader components' supervised tasks, remembered: they end with the lead."""
        self._leader_tasks.add(name)
        task: asyncio.Task[None] = self.supervisor.spawn(name, factory, **options)
        return task

    async def _forget_leader_tasks(self) -> None:
        """Their components stopped (cancelled) them on purpose: out of the supervisor's
        list, or health would report them as stopped tasks."""
        for name in sorted(self._leader_tasks):
            await self.supervisor.cancel(name)
        self._leader_tasks.clear()

    async def _stop_lead(self) -> None:
        await self.lead.stop()
        await self._forget_leader_tasks()

    def status(self) -> dict[str, Any]:
        ingest = self.ingest
        return {
            "client_id": self.client_id,
            "leader": bool(self.leader and self.leader.is_leader),
            "leader_terms": self.leader.terms if self.leader else 0,
            "rollup_rounds": self.rollup_rounds,
            "leader_components": self.lead.status(),
            "messages": ingest.stats.messages if ingest else 0,
            "readings_stored": ingest.stats.readings_stored if ingest else 0,
            "health": ingest.health() if ingest else {},
            "ingest": ingest.stats.as_dict() if ingest else {},
            # pg-read: for `hub status` (alive? where is its dashboard?)
            "pid": os.getpid(),
            "updated_at": time.time(),
            "web": self.web.info() if self.web else {},
            # leader-only components (branch pg-influx), see start()
            **({"influx": self.influx.status()} if getattr(self, "influx", None) else {}),
        }

    async def _status_loop(self) -> None:
        path = self.config.data_dir / f"worker-{self.client_id}.json"
        while True:
            try:
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(orjson.dumps(self.status()))
                tmp.replace(path)
            except OSError as exc:
                log.warning("Cannot write %s: %s", path, exc)
            await asyncio.sleep(self.config.status.interval)

    async def stop(self) -> None:
        self.supervisor.begin_stop()
        # Before the lock goes (with the leader task): the next leader starts its components
        # only after these stopped.
        await self.supervisor.cancel("lead")
        if self.lead.running:
            await self._stop_lead()
        if self.ingest is not None:
            try:
                await self.ingest.stop()
            except Exception:
                log.exception("Stopping ingest failed")
        await self.supervisor.stop()
        if self.connection is not None:
            self.connection.stop(offline=True)
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)
        log.info("Worker %s stopped", self.client_id)


async def run_worker(config: HubConfig, stop: asyncio.Event, worker_id: str) -> int:
    worker = Worker(config, worker_id)
    worker.stop_requested = stop
    try:
        await worker.start()
        await stop.wait()
    finally:
        await worker.stop()
    return 1 if worker.supervisor.failure else 0
