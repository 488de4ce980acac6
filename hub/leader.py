"""Leader election between hub workers: whoever holds one PostgreSQL advisory lock runs the
singletons (rollups, retention, partitions ahead).

The lock is a session lock on a connection of its own: when the leader's process dies, its
socket closes, PostgreSQL ends the session and frees the lock, and the next worker's poll
(every `poll` seconds) takes it. A leader whose connection breaks stops its singletons at
once: it can no longer know that it still holds the lock. Each worker sets its client id
as application_name, so `leader_name` shows who leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from hub.store.postgres import redact

log = logging.getLogger(__name__)

LOCK_LEADER = 0x6875_6210


class Leader:
    def __init__(
        self, url: str, name: str, *, poll: float = 1.0, key: int = LOCK_LEADER,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:  # fmt: skip
        self.url = url
        self.name = name
        self.poll = poll
        self.key = key
        self.on_change = on_change
        self.is_leader = False
        self.terms = 0  # how often this worker became leader
        self._conn: psycopg.Connection[Any] | None = None

    def _try(self) -> bool:
        """One round (in a thread): keep or take the lock. False when not the leader."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = self._conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=5, application_name=self.name,
                keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2,
            )  # fmt: skip
        if self.is_leader:
            conn.execute("SELECT 1")  # raises when the session (and so the lock) is gone
            return True
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        return bool(row and row[0])

    def _set(self, leader: bool) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        if leader:
            self.terms += 1
            log.info("Leader: %s runs the singletons (rollups, retention)", self.name)
        else:
            log.warning("%s is no longer the leader: singletons stopped here", self.name)
        if self.on_change is not None:
            self.on_change(leader)

    async def run(self) -> None:
        """Poll until cancelled; never raises on a failing database (it retries)."""
        failing = False
        try:
            while True:
                try:
                    self._set(await asyncio.to_thread(self._try))
                    failing = False
                except psycopg.Error as exc:
                    if not failing:
                        log.warning(
                            "Leader election: store %s unreachable (%s)", redact(self.url), exc
                        )
                    failing = True
                    self._set(False)
                    self._drop()
                await asyncio.sleep(self.poll)
        finally:
            if self.is_leader:  # stopping: the lock goes with the connection, quietly
                log.info("%s hands the singletons over (stopping)", self.name)
                self.is_leader = False
                if self.on_change is not None:
                    self.on_change(False)
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def leader_name(url: str, key: int = LOCK_LEADER) -> str | None:
    """The application_name (worker client id) of the session holding the leader lock."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = %s",
            (key,),
        ).fetchone()
    return str(row[0]) if row else None
