"""Alert state and history in PostgreSQL, for the alert engine on the leader worker.

The same tables and guarantee as the SQLite AlertStore (hub.store.postgres_schema versions 2
and 5): `alerts` with at most one `firing` row per (rule, device) (a partial unique index),
`alert_events`, `alert_silences`, `alert_commands`. Writes go through the leader's
connection (hub.store.postgres_feed.LeaderDb): fenced, so a leader that lost the lock writes
nothing, and a write made while a feed slice is handled commits with that slice's cursor.
`when_committed` lets the alerts component publish a transition only once its row is stored:
a takeover never announces an alert the store does not know.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from hub.alerts.store import _COLUMNS, _FIELD_NAMES, Alert, AlertStore
from hub.store.postgres_feed import LeaderDb

log = logging.getLogger(__name__)
T = TypeVar("T")

_PLACEHOLDERS = ", ".join("%s" for _ in _FIELD_NAMES)
_UPDATES = ", ".join(f"{name}=excluded.{name}" for name in _FIELD_NAMES if name != "id")

Conn = psycopg.Connection[Any]


class PgAlertStore(AlertStore):
    """AlertStore's interface on PostgreSQL (the engine and `hub alerts` use either)."""

    def __init__(self, db: LeaderDb, *, owns_db: bool = False) -> None:
        # Not AlertStore.__init__: no SQLite file is opened.
        self.path = Path(db.url)
        self.db = db
        self._owns_db = owns_db
        self._last: Future[Any] | None = None
        self._commands: Future[list[tuple[int, str, str, str | None, int | None]]] | None = None
        self.write_errors = 0

    # -- plumbing ------------------------------------------------------------------------------

    def _write(self, job: Callable[[Conn], T]) -> Future[T]:
        future: Future[T] = self.db.submit(job)
        future.add_done_callback(self._log_failure)
        self._last = future
        return future

    def _read(self, job: Callable[[Conn], T]) -> T:
        result: T = self.db.call(job)
        return result

    def _log_failure(self, future: Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self.write_errors += 1
            log.error("Alert store write failed: %r", exc)

    def when_committed(self, callback: Callable[[bool], None]) -> None:
        """Call `callback(committed)` once the last write so far is done (in the leader's
        store thread, or at once): whether the row of the transition being published was
        stored. False also when this leader was fenced or stopped before its slice committed."""
        last = self._last
        if last is None:
            callback(True)
            return
        last.add_done_callback(lambda f: callback(not f.cancelled() and f.exception() is None))

    def flush(self) -> None:
        self.db.flush()

    def close(self) -> None:
        if self._owns_db:
            self.db.close()
        else:
            self.flush()

    # -- writes --------------------------------------------------------------------------------

    def save(self, alert: Alert, event: str | None = None, detail: str | None = None) -> None:
        row = tuple(getattr(alert, name) for name in _FIELD_NAMES)

        def run(conn: Conn) -> None:
            conn.execute(
                f"INSERT INTO alerts ({_COLUMNS}) VALUES ({_PLACEHOLDERS}) "
                f"ON CONFLICT (id) DO UPDATE SET {_UPDATES}",
                row,
            )
            if event is not None:
                conn.execute(
                    "INSERT INTO alert_events (alert_id, ts, kind, value, detail) "
                    "VALUES (%s,%s,%s,%s,%s)",
                    (alert.id, alert.updated_ms, event, alert.value, detail),
                )

        self._write(run)

    def save_silence(self, rule: str, device: str, until_ms: int | None, by: str | None) -> None:
        def run(conn: Conn) -> None:
            if until_ms is None:
                conn.execute(
                    "DELETE FROM alert_silences WHERE rule=%s AND device=%s", (rule, device)
                )
            else:
                conn.execute(
                    "INSERT INTO alert_silences (rule, device, until_ms, by) VALUES (%s,%s,%s,%s) "
                    "ON CONFLICT (rule, device) DO UPDATE SET until_ms=excluded.until_ms, "
                    "by=excluded.by",
                    (rule, device, until_ms, by),
                )

        self._write(run)

    def purge(self, before_ms: int) -> int:
        def run(conn: Conn) -> int:
            old = "SELECT id FROM alerts WHERE state='resolved' AND resolved_ms < %s"
            conn.execute(f"DELETE FROM alert_events WHERE alert_id IN ({old})", (before_ms,))
            cur = conn.execute(
                "DELETE FROM alerts WHERE state='resolved' AND resolved_ms < %s", (before_ms,)
            )
            conn.execute(
                "DELETE FROM alert_commands WHERE applied_ms IS NOT NULL AND applied_ms < %s",
                (before_ms,),
            )
            return max(cur.rowcount, 0)

        return self._write(run).result()

    # -- commands from `hub alerts` ------------------------------------------------------------

    def add_command(
        self, now_ms: int, command: str, target: str, by: str | None, until_ms: int | None
    ) -> int:
        def run(conn: Conn) -> int:
            row = conn.execute(
                "INSERT INTO alert_commands (created_ms, command, target, by, until_ms) "
                "VALUES (%s,%s,%s,%s,%s) RETURNING id",
                (now_ms, command, target, by, until_ms),
            ).fetchone()
            return int(row[0]) if row else 0

        return self._write(run).result()

    def pending_commands(self) -> list[tuple[int, str, str, str | None, int | None]]:
        """The engine asks at every tick, on the event loop: it gets what the previous ask
        read (a tick later), so a slow or dead server never blocks the loop. The CLI's
        store (owns_db) reads at once."""

        def run(conn: Conn) -> list[tuple[int, str, str, str | None, int | None]]:
            return [
                (int(i), str(c), str(t), b, u)
                for i, c, t, b, u in conn.execute(
                    "SELECT id, command, target, by, until_ms FROM alert_commands "
                    "WHERE applied_ms IS NULL ORDER BY id"
                )
            ]

        if self._owns_db:
            return self._read(run)
        asked, found = self._commands, []
        if asked is not None and not asked.done():
            return []
        if asked is not None and asked.exception() is None:
            found = asked.result()
        self._commands = self.db.read(run)
        return found

    def mark_command(self, command_id: int, now_ms: int, result: str) -> None:
        self._write(
            lambda conn: conn.execute(
                "UPDATE alert_commands SET applied_ms=%s, result=%s WHERE id=%s",
                (now_ms, result, command_id),
            )
        )

    def command_result(self, command_id: int) -> tuple[int | None, str | None]:
        row = self._read(
            lambda conn: conn.execute(
                "SELECT applied_ms, result FROM alert_commands WHERE id=%s", (command_id,)
            ).fetchone()
        )
        return (row[0], row[1]) if row else (None, None)

    # -- reads ---------------------------------------------------------------------------------

    def load_silences(self) -> dict[tuple[str, str], int]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT rule, device, until_ms FROM alert_silences"
            ).fetchall()
        )
        return {(rule, device): int(until) for rule, device, until in rows}

    def max_id(self) -> int:
        row = self._read(lambda conn: conn.execute("SELECT max(id) FROM alerts").fetchone())
        return int(row[0] or 0) if row else 0

    def get(self, alert_id: int) -> Alert | None:
        found = self._select("WHERE id=%s", (alert_id,))
        return found[0] if found else None

    def history(self, limit: int = 100, device: str | None = None) -> list[Alert]:
        if device is None:
            return self._select("ORDER BY started_ms DESC, id DESC LIMIT %s", (limit,))
        return self._select(
            "WHERE device=%s ORDER BY started_ms DESC, id DESC LIMIT %s", (device, limit)
        )

    def events(self, alert_id: int) -> list[tuple[int, str, float | None, str | None]]:
        return self._read(
            lambda conn: [
                (int(ts), str(kind), value, detail)
                for ts, kind, value, detail in conn.execute(
                    "SELECT ts, kind, value, detail FROM alert_events WHERE alert_id=%s "
                    "ORDER BY id",
                    (alert_id,),
                )
            ]
        )

    def _select(self, where: str, args: tuple[Any, ...]) -> list[Alert]:
        def run(conn: Conn) -> list[Alert]:
            return [
                Alert(*row) for row in conn.execute(f"SELECT {_COLUMNS} FROM alerts {where}", args)
            ]

        try:
            return self._read(run)
        except psycopg.Error as exc:
            log.error("Reading alerts failed: %s", exc)
            return []

    # -- what the alerts component reads at start ----------------------------------------------

    def read_known(self) -> tuple[list[tuple[str, str, int]], list[tuple[Any, ...]]]:
        """(device, metric, last_ts) of every series, and the devices' identities (the rows
        hub.store.reader.ReadStore.device_identities gives for SQLite)."""

        def run(conn: Conn) -> tuple[list[tuple[str, str, int]], list[tuple[Any, ...]]]:
            series = [
                (str(d), str(m), int(ts or 0))
                for d, m, ts in conn.execute(
                    "SELECT device, metric, max(last_ts) FROM series GROUP BY device, metric"
                )
            ]
            devices = [
                (name, manufacturer, model, sw, tuple(i for i in (ids or "").split(",") if i), kind)
                for name, manufacturer, model, sw, ids, kind in conn.execute(
                    "SELECT name, manufacturer, model, sw_version, identifiers, kind FROM devices "
                    "ORDER BY name"
                )
            ]
            return series, devices

        result: tuple[list[tuple[str, str, int]], list[tuple[Any, ...]]] = self._read(run)
        return result


def open_cli_store(url: str) -> PgAlertStore:
    """For `hub alerts` (a process of its own): unfenced writes on a connection of its own."""
    return PgAlertStore(LeaderDb(url, "hub-alerts-cli"), owns_db=True)
