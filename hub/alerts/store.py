"""Alert state and history in the hub's SQLite file, through the alert engine's own connection.

Tables: `alerts` (one row per alert; at most one `firing` row per (rule, device), enforced by a
partial unique index), `alert_events` (every transition), `alert_silences` ((rule, device or
'*') -> until), `alert_commands` (ack/silence requests written by `hub alerts` while the hub
runs; the engine applies them on its tick). WAL lets this connection live beside the ingest
writer. Writes go through one background thread so a transition never waits on the ingest
commit on the event loop; reads queue behind the writes, so they see them.
"""

from __future__ import annotations

import copy
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hub.store.sqlite import connect

if TYPE_CHECKING:
    from hub.store.writer import StoreWriter

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL, device TEXT NOT NULL, metric TEXT, severity TEXT NOT NULL,
    state TEXT NOT NULL, value REAL, threshold REAL, unit TEXT, message TEXT NOT NULL,
    device_class TEXT NOT NULL,
    started_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, resolved_ms INTEGER,
    acknowledged_by TEXT, acknowledged_ms INTEGER, silenced_until_ms INTEGER,
    count INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_firing ON alerts (rule, device) WHERE state = 'firing';
CREATE INDEX IF NOT EXISTS alerts_started ON alerts (started_ms);
CREATE INDEX IF NOT EXISTS alerts_device ON alerts (device, started_ms);
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL, ts INTEGER NOT NULL, kind TEXT NOT NULL,
    value REAL, detail TEXT
);
CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events (alert_id, ts);
CREATE TABLE IF NOT EXISTS alert_silences (
    rule TEXT NOT NULL, device TEXT NOT NULL, until_ms INTEGER NOT NULL, by TEXT,
    PRIMARY KEY (rule, device)
);
CREATE TABLE IF NOT EXISTS alert_commands (
    id INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL, command TEXT NOT NULL, target TEXT NOT NULL,
    by TEXT, until_ms INTEGER, applied_ms INTEGER, result TEXT
);
"""


@dataclass(slots=True)
class Alert:
    """One alert: a rule that fired for a device, from firing to resolved."""

    id: int
    rule: str
    device: str
    metric: str | None
    severity: str
    state: str  # "firing" | "resolved"
    value: float | None
    threshold: float | None
    unit: str | None
    message: str
    device_class: str
    started_ms: int
    updated_ms: int
    resolved_ms: int | None = None
    acknowledged_by: str | None = None
    acknowledged_ms: int | None = None
    silenced_until_ms: int | None = None
    count: int = 1  # readings that confirmed it while it was firing (deduplicated into one)

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.device)

    @property
    def firing(self) -> bool:
        return self.state == "firing"

    def silenced(self, now_ms: int) -> bool:
        return self.silenced_until_ms is not None and now_ms < self.silenced_until_ms

    def copy(self) -> Alert:
        return copy.copy(self)  # every field is immutable

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_FIELD_NAMES = tuple(f.name for f in fields(Alert))
_COLUMNS = ", ".join(_FIELD_NAMES)
_PLACEHOLDERS = ", ".join("?" for _ in fields(Alert))


class AlertStore:
    """Alert rows. In `hub run` it writes through the store writer (the store's one writer
    thread and connection); the `hub alerts` CLI, a process of its own, opens the file itself."""

    def __init__(
        self, path: Path, *, background: bool = True, writer: StoreWriter | None = None
    ) -> None:
        self.path = path
        self._writer = writer
        self._executor: ThreadPoolExecutor | None = None
        # In `hub run`: a read connection of our own, only to ask whether anything was
        # committed to the file since the engine last looked for commands (pending_commands)
        self._watch: sqlite3.Connection | None = None
        self._watched_version: int | None = None
        if writer is not None:
            self._conn = writer.connection  # its tables are created by the store's migration
        else:
            self._conn = connect(path, synchronous="normal")
            self._conn.executescript(SCHEMA)
            if background:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="hub-alerts-db"
                )
        self.write_errors = 0

    # -- plumbing ------------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., T], *args: Any) -> Future[T] | T:
        if self._writer is not None:
            future = self._writer.submit(fn, *args)
        elif self._executor is None:
            return fn(*args)
        else:
            future = self._executor.submit(fn, *args)
        future.add_done_callback(self._log_failure)
        return future

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        result = self._submit(fn, *args)
        return result.result() if isinstance(result, Future) else result

    def _log_failure(self, future: Future[Any]) -> None:
        exc = future.exception()
        if exc is not None:
            self.write_errors += 1
            log.error("Alert store write failed: %r", exc)

    def flush(self) -> None:
        """Wait until every queued write is done."""
        self._call(lambda: None)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._writer is not None:
            self.flush()  # the connection is the writer's; it closes it
            return
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._conn.close()

    # -- writes (queued) -------------------------------------------------------------------

    def save(self, alert: Alert, event: str | None = None, detail: str | None = None) -> None:
        row = tuple(getattr(alert, name) for name in _FIELD_NAMES)
        self._submit(self._save, row, event, detail)

    def _save(self, row: tuple[Any, ...], event: str | None, detail: str | None) -> None:
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.execute(
                f"INSERT OR REPLACE INTO alerts ({_COLUMNS}) VALUES ({_PLACEHOLDERS})", row
            )
            if event is not None:
                alert = Alert(*row)
                self._conn.execute(
                    "INSERT INTO alert_events (alert_id, ts, kind, value, detail) VALUES (?,?,?,?,?)",
                    (alert.id, alert.updated_ms, event, alert.value, detail),
                )

    def save_silence(self, rule: str, device: str, until_ms: int | None, by: str | None) -> None:
        self._submit(self._save_silence, rule, device, until_ms, by)

    def _save_silence(self, rule: str, device: str, until_ms: int | None, by: str | None) -> None:
        if until_ms is None:
            self._conn.execute(
                "DELETE FROM alert_silences WHERE rule=? AND device=?", (rule, device)
            )
        else:
            self._conn.execute(
                "INSERT OR REPLACE INTO alert_silences (rule, device, until_ms, by) VALUES (?,?,?,?)",
                (rule, device, until_ms, by),
            )

    def purge(self, before_ms: int) -> int:
        def run() -> int:
            with self._conn:
                self._conn.execute("BEGIN")
                old = "SELECT id FROM alerts WHERE state='resolved' AND resolved_ms < ?"
                self._conn.execute(
                    f"DELETE FROM alert_events WHERE alert_id IN ({old})", (before_ms,)
                )
                cursor = self._conn.execute(
                    "DELETE FROM alerts WHERE state='resolved' AND resolved_ms < ?", (before_ms,)
                )
                self._conn.execute(
                    "DELETE FROM alert_commands WHERE applied_ms IS NOT NULL AND applied_ms < ?",
                    (before_ms,),
                )
                return cursor.rowcount

        return self._call(run)

    # -- commands from `hub alerts` ------------------------------------------------------------

    def add_command(
        self, now_ms: int, command: str, target: str, by: str | None, until_ms: int | None
    ) -> int:
        def run() -> int:
            cursor = self._conn.execute(
                "INSERT INTO alert_commands (created_ms, command, target, by, until_ms) VALUES (?,?,?,?,?)",
                (now_ms, command, target, by, until_ms),
            )
            return int(cursor.lastrowid or 0)

        return self._call(run)

    def pending_commands(self) -> list[tuple[int, str, str, str | None, int | None]]:
        """Commands `hub alerts` wrote and the engine has not applied yet.

        Asked at every tick of a running hub. Through the writer that was a store-thread job
        (and a wait for it on the loop) each second even when idle; now only when something
        was committed to the file since the last look. PRAGMA data_version of a connection
        changes when another connection commits (ours included): a few microseconds, and a
        WAL reader never waits for the writer."""
        version = self._data_version()
        if version is not None and version == self._watched_version:
            return []
        commands = self._call(
            lambda: self._conn.execute(
                "SELECT id, command, target, by, until_ms FROM alert_commands "
                "WHERE applied_ms IS NULL ORDER BY id"
            ).fetchall()
        )
        # Read before the query: a command committed meanwhile changes it again.
        self._watched_version = version
        return commands

    def _data_version(self) -> int | None:
        if self._writer is None:
            return None  # the CLI: its own connection, asked rarely
        try:
            if self._watch is None:
                self._watch = connect(self.path, readonly=True)
            return int(self._watch.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:  # cannot tell: ask the store, as before
            if self._watch is not None:
                self._watch.close()
                self._watch = None
            return None

    def mark_command(self, command_id: int, now_ms: int, result: str) -> None:
        self._submit(
            lambda: self._conn.execute(
                "UPDATE alert_commands SET applied_ms=?, result=? WHERE id=?",
                (now_ms, result, command_id),
            )
        )

    def command_result(self, command_id: int) -> tuple[int | None, str | None]:
        row = self._call(
            lambda: self._conn.execute(
                "SELECT applied_ms, result FROM alert_commands WHERE id=?", (command_id,)
            ).fetchone()
        )
        return (row[0], row[1]) if row else (None, None)

    # -- reads ---------------------------------------------------------------------------------

    def load_firing(self) -> list[Alert]:
        return self._select("WHERE state='firing' ORDER BY id", ())

    def load_silences(self) -> dict[tuple[str, str], int]:
        rows = self._call(
            lambda: self._conn.execute(
                "SELECT rule, device, until_ms FROM alert_silences"
            ).fetchall()
        )
        return {(rule, device): until for rule, device, until in rows}

    def max_id(self) -> int:
        row = self._call(lambda: self._conn.execute("SELECT max(id) FROM alerts").fetchone())
        return int(row[0] or 0)

    def get(self, alert_id: int) -> Alert | None:
        found = self._select("WHERE id=?", (alert_id,))
        return found[0] if found else None

    def history(self, limit: int = 100, device: str | None = None) -> list[Alert]:
        if device is None:
            return self._select("ORDER BY started_ms DESC, id DESC LIMIT ?", (limit,))
        return self._select(
            "WHERE device=? ORDER BY started_ms DESC, id DESC LIMIT ?", (device, limit)
        )

    def events(self, alert_id: int) -> list[tuple[int, str, float | None, str | None]]:
        return self._call(
            lambda: self._conn.execute(
                "SELECT ts, kind, value, detail FROM alert_events WHERE alert_id=? ORDER BY id",
                (alert_id,),
            ).fetchall()
        )

    def _select(self, where: str, args: tuple[Any, ...]) -> list[Alert]:
        def run() -> list[Alert]:
            try:
                rows = self._conn.execute(f"SELECT {_COLUMNS} FROM alerts {where}", args)
                return [Alert(*row) for row in rows]
            except sqlite3.Error as exc:
                log.error("Reading alerts failed: %s", exc)
                return []

        return self._call(run)
