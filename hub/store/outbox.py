"""The durable outbox: readings waiting for InfluxDB, in the same SQLite file as the samples.

A trigger on `samples` appends every NEW sample to `outbox` inside the transaction that stores
it, so a reading is either stored and queued, or neither; a redelivered MQTT message that hits
an existing sample key (INSERT OR IGNORE) queues nothing, which keeps delivery exactly-once.
The trigger is gated by the single row of `outbox_control`: no row (InfluxDB never configured)
or `enabled = 0` queues nothing.

The bound: `max_rows` (from the configured disk budget) is enforced by the same trigger, per
row, in the same transaction. When the outbox is full, the oldest undelivered rows are kept,
the new reading is still stored in `samples` but not queued, and `refused` counts it; the
forwarder reports that loudly. Row ids are AUTOINCREMENT so they only grow: a series' readings
are queued, read and delivered in id order.

Points the server refuses for good become `dead_letters` rows (source 'influx', the refused
line protocol as payload, the server's reason as detail); the (series, ts, value) behind them
are kept in `outbox_dead_points`, so a replay re-queues exactly what was refused.

Functions here take a connection and never commit on their own unless they say so: the
caller owns the transaction (the hub's store thread, the CLI, a test).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_control (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    enabled INTEGER NOT NULL DEFAULT 0,
    max_rows INTEGER NOT NULL DEFAULT 0,
    refused INTEGER NOT NULL DEFAULT 0,
    last_refused_ts INTEGER
);
CREATE TABLE IF NOT EXISTS outbox_dead_points (
    dead_letter_id INTEGER NOT NULL,
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_dead_points_letter ON outbox_dead_points (dead_letter_id);
CREATE TRIGGER IF NOT EXISTS outbox_append AFTER INSERT ON samples
WHEN (SELECT enabled FROM outbox_control WHERE id = 1)
BEGIN
    INSERT INTO outbox (series_id, ts, value)
    SELECT NEW.series_id, NEW.ts, NEW.value
    WHERE coalesce((SELECT max(id) FROM outbox) - (SELECT min(id) FROM outbox) + 1, 0)
        < (SELECT max_rows FROM outbox_control WHERE id = 1);
    UPDATE outbox_control SET refused = refused + 1, last_refused_ts = NEW.ts
    WHERE id = 1 AND changes() = 0;
END;
CREATE TRIGGER IF NOT EXISTS outbox_dead_points_purge AFTER DELETE ON dead_letters
WHEN OLD.source = 'influx'
BEGIN
    DELETE FROM outbox_dead_points WHERE dead_letter_id = OLD.id;
END;
"""

# What one queued row costs on disk: the table b-tree cell (rowid, series, ts, value ~ 30 B)
# plus page slack and the WAL; measured ~40 B/row on a 1.2 M-row outbox, rounded up.
BYTES_PER_ROW = 48

DEAD_LETTER_SOURCE = "influx"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    series_id: int
    ts: int
    value: float


@dataclass(frozen=True, slots=True)
class OutboxState:
    enabled: bool
    max_rows: int
    backlog: int
    oldest_ts: int | None
    first_id: int | None
    refused: int
    last_refused_ts: int | None

    @property
    def full(self) -> bool:
        return self.enabled and self.backlog >= self.max_rows


def max_rows_for(max_bytes: int) -> int:
    return max(1, max_bytes // BYTES_PER_ROW)


def configure(conn: sqlite3.Connection, enabled: bool, max_rows: int) -> None:
    """Switch queueing on or off and set the bound (keeps the refused counter)."""
    conn.execute(
        "INSERT INTO outbox_control (id, enabled, max_rows) VALUES (1, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET enabled=excluded.enabled, max_rows=excluded.max_rows",
        (int(enabled), max_rows),
    )


def state(conn: sqlite3.Connection) -> OutboxState:
    control = conn.execute(
        "SELECT enabled, max_rows, refused, last_refused_ts FROM outbox_control WHERE id = 1"
    ).fetchone() or (0, 0, 0, None)
    first = conn.execute("SELECT id, ts FROM outbox ORDER BY id LIMIT 1").fetchone()
    last = conn.execute("SELECT max(id) FROM outbox").fetchone()[0]
    backlog = (last - first[0] + 1) if first is not None else 0
    return OutboxState(
        bool(control[0]),
        int(control[1]),
        backlog,
        first[1] if first else None,
        first[0] if first else None,
        int(control[2]),
        control[3],
    )


def read_batch(conn: sqlite3.Connection, after_id: int, limit: int) -> list[OutboxRow]:
    """The next `limit` queued rows after `after_id`, oldest first (read connection is fine)."""
    return [
        OutboxRow(*row)
        for row in conn.execute(
            "SELECT id, series_id, ts, value FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
    ]


def delivered(conn: sqlite3.Connection, first_id: int, last_id: int) -> int:
    """Forget rows the server acknowledged (an id range: batches are contiguous)."""
    before = conn.total_changes
    conn.execute("DELETE FROM outbox WHERE id BETWEEN ? AND ?", (first_id, last_id))
    return conn.total_changes - before


def dead_letter(
    conn: sqlite3.Connection,
    rows: Sequence[OutboxRow],
    received_ms: int,
    target: str,
    reason: str,
    detail: str,
    payload: bytes,
) -> int:
    """Move refused rows out of the outbox into one dead letter; returns its id."""
    cursor = conn.execute(
        "INSERT INTO dead_letters (received_ts, source, topic, reason, detail, payload) "
        "VALUES (?,?,?,?,?,?)",
        (received_ms, DEAD_LETTER_SOURCE, target, reason, detail, payload),
    )
    letter_id = int(cursor.lastrowid or 0)
    conn.executemany(
        "INSERT INTO outbox_dead_points (dead_letter_id, series_id, ts, value) VALUES (?,?,?,?)",
        [(letter_id, r.series_id, r.ts, r.value) for r in rows],
    )
    conn.executemany("DELETE FROM outbox WHERE id = ?", [(r.id,) for r in rows])
    return letter_id


def requeue(conn: sqlite3.Connection, dead_letter_id: int) -> int:
    """Queue a dead letter's points again (at the end of the outbox); returns how many.

    Bypasses the bound on purpose: the user asked for exactly these points.
    """
    before = conn.total_changes
    conn.execute(
        "INSERT INTO outbox (series_id, ts, value) SELECT series_id, ts, value "
        "FROM outbox_dead_points WHERE dead_letter_id = ? ORDER BY series_id, ts",
        (dead_letter_id,),
    )
    return conn.total_changes - before


def backfill_chunk(
    conn: sqlite3.Connection, series_id: int, since_ms: int, until_ms: int, limit: int
) -> tuple[int, int | None]:
    """Queue stored samples of one series in [since, until], oldest first, at most `limit`.

    Returns how many were queued and the timestamp of the last one (where the next chunk
    starts after), so a long history goes in short transactions beside a running hub.
    """
    before = conn.total_changes
    conn.execute(
        "INSERT INTO outbox (series_id, ts, value) SELECT series_id, ts, value FROM samples "
        "WHERE series_id = ? AND ts BETWEEN ? AND ? ORDER BY ts LIMIT ?",
        (series_id, since_ms, until_ms, limit),
    )
    count = conn.total_changes - before
    if not count:
        return 0, None
    last = conn.execute("SELECT ts FROM outbox ORDER BY id DESC LIMIT 1").fetchone()
    return count, int(last[0])
