"""The derivations (air-quality indices, comfort, the RC models) on the leader worker.

A shared subscription splits each device's stream between the workers, so a worker's own
ingest cannot run the stateful filters; the leader runs them on the PostgreSQL change feed,
which carries every worker's committed batches. What they derive from a feed slice is written
in the slice's own transaction (hub.store.postgres_feed.LeaderDb: with the feed's cursor), so
it is stored exactly when the slice counts as read: a takeover neither loses nor repeats it.
Those writes add feed rows of their own, so the alert engine and Home Assistant see the
derived readings too. What the clock derives (an hour closing) is written by a tick.

Closed drive sessions go to `rc_sessions` the same way (in the transaction of the slice that
closed them). Not carried over a takeover: the filters' memory (the hour being averaged,
NowCast's 12 hours, an RC session in progress) starts empty on the new leader; a session in
progress when the leader stops is closed and stored (as `hub run` does on shutdown), one in
progress when it is killed is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import psycopg

from hub.derive.pipeline import Derivations, Derived
from hub.derive.session import Session
from hub.ingest import Committed
from hub.model import Reading
from hub.store.postgres import PostgresStore
from hub.store.sessions import _COLUMNS as SESSION_COLUMNS
from hub.store.sqlite import Batch, tags_key

if TYPE_CHECKING:
    from hub.ports import Ports
    from hub.store.postgres_feed import LeaderDb

log = logging.getLogger(__name__)

DERIVED = "derived"
SAVE_SESSION = (
    f"INSERT INTO rc_sessions ({', '.join(SESSION_COLUMNS)}) VALUES "
    f"({', '.join(['%s'] * len(SESSION_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c}=excluded.{c}" for c in SESSION_COLUMNS[1:])
)


class LeaderDerivations:
    name = "derive"

    def __init__(self, ports: Ports, db: LeaderDb, url: str, tick: float = 1.0) -> None:
        self.ports = ports
        self.db = db
        self.tick_interval = tick
        self.derivations = Derivations(ports.config.derive)
        # The series and partition caches for _write; its own connection is not written on.
        self.store = PostgresStore(url, client=f"{db.name}-derive")
        self.readings_in = 0
        self.derived = 0
        self.failures = 0
        self.write_errors = 0
        self.sessions_stored = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.ports.committed.subscribe(self._on_committed)
        self._task = self.ports.spawn("derive-tick", self._tick_loop, restart=True)

    def _on_committed(self, committed: Committed) -> None:
        raw = [r for r in committed.readings if r.source != DERIVED]
        if not raw:
            return
        self.readings_in += len(raw)
        self._write(self._run(lambda: self.derivations.derive(raw)))

    def _run(self, step: Any) -> list[Reading]:
        try:
            out: Derived = step()
        except Exception:  # one bad filter must not stop the others or the feed
            self.failures += 1
            log.exception("Derivations failed; their outputs for this batch are missing")
            return []
        if out.writes:
            self._save_sessions([w.keywords["session"] for w in out.writes])  # type: ignore[attr-defined]
        return out.readings

    def _save_sessions(self, sessions: list[Session]) -> None:
        """Closed drive sessions (the pipeline's SQLite writes carry them), as
        PostgresSessions.save writes them, through the leader's connection."""

        def job(conn: psycopg.Connection[Any]) -> int:
            for session in sessions:
                conn.execute(SAVE_SESSION, tuple(getattr(session, c) for c in SESSION_COLUMNS))
            return len(sessions)

        def saved(future: Future[Any]) -> None:
            if not future.cancelled() and future.exception() is None:
                self.sessions_stored += len(sessions)
            else:
                self.write_errors += 1
                log.error("Drive sessions not stored: %r", future.exception())

        self.db.submit(job).add_done_callback(saved)

    def _write(self, readings: list[Reading]) -> Future[Any] | None:
        """Through the leader's connection: inside a feed slice's transaction when the feed
        holds one (it does while it hands batches to listeners), else a transaction alone."""
        if not readings:
            return None
        # One reading per sample key, the first (as ingest's fresh() keeps it): the store
        # keeps the first anyway, and the feed row must not carry one it did not store.
        first: dict[tuple[str, str, str, int, int], Reading] = {}
        for r in readings:
            first.setdefault((r.device, r.metric, tags_key(r.tags), r.timestamp_ms, r.seq), r)
        batch = Batch(readings=list(first.values()))
        store = self.store
        tried = False

        def job(conn: psycopg.Connection[Any]) -> int:
            nonlocal tried
            if tried:  # a retried group: what the rolled-back attempt cached is not there
                store.forget_cache()
            tried = True
            try:
                return store._write(conn, batch).stored
            except Exception:
                store.forget_cache()
                raise

        future = self.db.submit(job)
        future.add_done_callback(self._written)
        return future

    def _written(self, future: Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            self.derived += int(future.result())
        else:
            self.write_errors += 1
            log.error("Derived readings not written: %r", exc)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            now_ms = time.time_ns() // 1_000_000
            self._write(self._run(functools.partial(self.derivations.tick, now_ms)))

    async def stop(self) -> None:
        self.ports.committed.unsubscribe(self._on_committed)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._write(self._run(self.derivations.close))  # sessions in progress: stored
        await asyncio.get_running_loop().run_in_executor(None, self.db.flush)
        await asyncio.to_thread(self.store.close)

    def status(self) -> dict[str, Any]:
        return {
            "readings_in": self.readings_in,
            "derived_stored": self.derived,
            "failures": self.failures,
            "write_errors": self.write_errors,
            "sessions_stored": self.sessions_stored,
            "vehicles": len(self.derivations.vehicles),
        }


def build(ports: Ports) -> LeaderDerivations | None:
    feed = ports.find("feed")
    db = getattr(feed, "db", None)
    url = ports.config.store.url
    if db is None or not url:
        return None
    return LeaderDerivations(ports, db, url)
