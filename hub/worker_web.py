"""The web dashboard and REST API on a worker (`hub run --worker`).

Every worker serves them, reading the shared PostgreSQL store, so any worker answers what
any other stored. The web component is the one `hub run` starts (hub.web.component), built
from the worker's own parts as Ports:

- reader: the PostgreSQL store (a read-only psycopg connection per API thread);
- writer: the worker's store thread (dead-letter replay and purge commit there);
- committed: this worker's committed batches. The live feed of a worker therefore carries
  the share of the stream that the broker hands this worker, not the whole stream;
- status: this worker's status in the shape `hub run` gives /api/health and /metrics
  (broker, ingest, store, tasks, health), plus a `worker` section (leader or not);
- find("alerts"): the alert engine runs on the leader, not (necessarily) in this process,
  so the API reads active alerts and their history from the store, and sends acknowledge
  and silence to the leader's engine as `hub alerts` does (alert_commands), waiting for
  its answer.

PostgreSQL itself is probed every status interval through a reader of its own: a stopped
server makes /api/health answer "degraded" with the reason while ingest is idle too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any, cast

import psycopg
from fastapi import HTTPException

from hub import __version__
from hub.alerts.pg_store import PgAlertStore, open_cli_store
from hub.ports import Ports, StoreReader
from hub.status_parts import MessageRate, connection_fields, ingest_fields
from hub.store.postgres import redact
from hub.store.postgres_read import PostgresReadStore
from hub.store.reader import StoreUnavailable
from hub.web.component import WebComponent, build

if TYPE_CHECKING:
    from hub.store.writer import StoreWriter
    from hub.worker import Worker

SIZE_EVERY = 30.0  # seconds between pg_database_size() calls (it walks the data directory)


class StoreAlerts:
    """Alerts as the store has them, for an API whose process runs no alert engine.

    Acknowledge and silence go to the engine as `hub alerts` sends them: a row in
    alert_commands, which the leader's engine applies on its next tick. The answer waits for
    that (at most `wait` seconds); without a leader to apply it, it says so (503) and the
    command stays queued for the next leader."""

    name = "alerts"

    def __init__(
        self, reader: PostgresReadStore, client_id: str, url: str, wait: float = 5.0
    ) -> None:
        self.reader = reader
        self.client_id = client_id
        self.url = url
        self.wait = wait
        self._commands: PgAlertStore | None = None

    async def active(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.reader.alert_rows, True, 1000)

    async def history(self, limit: int = 100, device: str | None = None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.reader.alert_rows, False, limit, device)

    def _command(self, command: str, target: str, by: str | None, until_ms: int | None) -> str:
        """Thread: queue a command for the leader's engine and wait for its result."""
        if self._commands is None:
            self._commands = open_cli_store(self.url)
        store = self._commands
        try:
            command_id = store.add_command(int(time.time() * 1000), command, target, by, until_ms)
            deadline = time.monotonic() + self.wait
            while time.monotonic() < deadline:
                applied, result = store.command_result(command_id)
                if applied:
                    break
                time.sleep(0.1)
            else:
                raise HTTPException(
                    503,
                    f"queued as alert command {command_id}, but no alert engine applied it "
                    f"within {self.wait:.0f} s: the leader worker runs the engine (is one "
                    "running? 'hub status'); the next leader applies it",
                )
        except (psycopg.Error, StoreUnavailable) as exc:
            self._commands.close()
            self._commands = None
            raise HTTPException(503, f"store unreachable: {' '.join(str(exc).split())}") from exc
        if result and result.startswith("error"):
            raise KeyError(result.removeprefix("error: "))
        return result or "ok"

    async def acknowledge(self, alert_id: int, by: str) -> Any:
        await asyncio.to_thread(self._command, "ack", str(alert_id), by, None)
        return await asyncio.to_thread(self.reader.alert_row, alert_id)

    async def silence(self, target: int | str, until_ms: int, by: str) -> Any:
        await asyncio.to_thread(self._command, "silence", str(target), by, until_ms)
        firing = await asyncio.to_thread(self.reader.alert_rows, True, 1000)
        if isinstance(target, str):
            return [a for a in firing if a["rule"] == target]
        alert = await asyncio.to_thread(self.reader.alert_row, target)
        key = (alert["rule"], alert["device"]) if alert else None
        return [a for a in firing if (a["rule"], a["device"]) == key]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def close(self) -> None:
        self.reader.close()
        if self._commands is not None:
            self._commands.close()
            self._commands = None

    def status(self) -> dict[str, Any]:
        return {}


class WorkerWeb:
    """The web component of one worker, run as the worker's supervised task "web"."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.component: WebComponent | None = None
        self.probe = PostgresReadStore(
            worker.url, connect_timeout=3, name=f"{worker.client_id}-health"
        )
        self.alerts = StoreAlerts(
            PostgresReadStore(worker.url, name=f"{worker.client_id}-alerts"),
            worker.client_id,
            worker.url,
            wait=max(5.0, worker.config.alerts.tick * 5),
        )
        self.store_problem: str | None = None
        self.size_bytes = 0
        self.started_at = time.time()
        self.message_rate = MessageRate()

    def ports(self) -> Ports:
        worker = self.worker
        assert worker.connection is not None and worker.ingest is not None
        return Ports(
            config=worker.config,
            publisher=worker.connection,
            committed=worker.ingest.feed,
            # PostgresWriter has what the web component uses of a writer: call() and store.
            writer=cast("StoreWriter", worker.writer),
            reader=StoreReader(worker.config.store_path, url=worker.url),
            decoder=worker.ingest.router,
            status=self.status,
            spawn=worker.supervisor.spawn,
            find=lambda name: self.alerts if name == "alerts" else None,
        )

    async def run(self) -> None:
        """Serve until cancelled (the worker stops), probing the store meanwhile."""
        component = build(self.ports())
        if component is None:  # web.enabled: false
            await asyncio.Event().wait()
        assert component is not None
        self.component = component
        try:
            await component.start()
            last_size = 0.0
            while True:
                await self._probe(time.monotonic() - last_size >= SIZE_EVERY)
                if self.store_problem is None and time.monotonic() - last_size >= SIZE_EVERY:
                    last_size = time.monotonic()
                await asyncio.sleep(self.worker.config.status.interval)
        finally:
            with contextlib.suppress(Exception):
                await component.stop()
            self.component = None
            await asyncio.to_thread(self.probe.close)
            await asyncio.to_thread(self.alerts.close)

    async def _probe(self, size: bool) -> None:
        try:
            await asyncio.to_thread(self.probe.ping)
            if size:
                self.size_bytes = await asyncio.to_thread(self.probe.size_bytes)
            self.store_problem = None
        except StoreUnavailable as exc:
            self.store_problem = str(exc)

    def info(self) -> dict[str, Any]:
        """What the worker's status file says of its web API (`hub status` shows it)."""
        component = self.component
        if component is None:
            return {}
        status = component.status()
        return {k: status.get(k) for k in ("url", "port", "host", "error")}

    def status(self) -> dict[str, Any]:
        """The worker's status in the shape of Hub.status (for /api/health and /metrics)."""
        worker = self.worker
        connection, ingest = worker.connection, worker.ingest
        host, port, tls = worker.config.broker.host_port_tls
        data: dict[str, Any] = {
            "version": __version__,
            "state": "running",
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": time.time(),
            "data_dir": str(worker.config.data_dir.resolve()),
            "worker": {
                "client_id": worker.client_id,
                "leader": bool(worker.leader and worker.leader.is_leader),
                "leader_terms": worker.leader.terms if worker.leader else 0,
                "rollup_rounds": worker.rollup_rounds,
            },
            "broker": {
                "url": f"{'mqtts' if tls else 'mqtt'}://{host}:{port}",
                "managed": False,
                "client_id": worker.client_id,
                **connection_fields(connection),
            },
            "ingest": ingest_fields(ingest, connection, self.message_rate),
            "store": {"url": redact(worker.url), "size_bytes": self.size_bytes},
            "tasks": worker.supervisor.status(),
            "web": self.component.status() if self.component else {},
        }
        data["health"] = self.health(data)
        return data

    def health(self, status: dict[str, Any]) -> dict[str, Any]:
        """Each part's health and the whole, as Hub.health: degraded as soon as one part is."""
        worker = self.worker
        parts: dict[str, dict[str, str]] = {}
        connection = worker.connection
        if connection is not None:
            why = connection.stats.last_error or connection.state.value
            parts["broker"] = (
                {"status": "ok", "reason": ""}
                if connection.connected
                else {"status": "degraded", "reason": f"MQTT broker not connected: {why}"}
            )
        if worker.ingest is not None:
            parts["store"] = worker.ingest.health()
        if self.store_problem is not None and parts.get("store", {}).get("status") == "ok":
            parts["store"] = {"status": "degraded", "reason": self.store_problem}
        web = status.get("web") or {}
        if isinstance(web.get("health"), dict):
            parts["web"] = web["health"]
        supervisor = worker.supervisor
        failed = [
            f"task {name} {'stopped' if not s['running'] else 'restarted'} after "
            f"{s['restarts']} restarts (last error: {s['last_error'] or 'none'})"
            for name, s in supervisor.status().items()
            if not supervisor.stopping and (not s["running"] or (s["restarts"] and s["last_error"]))
        ]
        if failed:
            parts["tasks"] = {"status": "degraded", "reason": "; ".join(failed)}
        reasons = [f"{name}: {p['reason']}" for name, p in parts.items() if p.get("status") != "ok"]
        return {"status": "degraded" if reasons else "ok", "reasons": reasons, "parts": parts}
