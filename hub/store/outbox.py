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

Gaps: every refused reading is also recorded, per series, in `outbox_gaps` as a time range
(first_ts..last_ts) with a count. Ranges are kept per *epoch*: the epoch moves on whenever rows
leave the outbox (delivered, dead-lettered) or the bound changes after a refusal, because only
then can a new reading be queued again. Within one epoch a series' refused readings follow each
other with nothing queued in between, so, as long as a series' readings arrive in time order,
its range holds exactly the readings that were refused, and `hub influx backfill` can queue
exactly those (a per-range cursor makes it resumable) and never a reading already delivered.
History from before forwarding began (`outbox_marks.queued_since`) is added as ranges of its
own (negative epochs) by `backfill --since`; `outbox_history` remembers per series how far back
that history was queued, so a second run queues nothing twice.

Points the server refuses for good become `dead_letters` rows (source 'influx', the refused
line protocol as payload, the server's reason as detail); the (series, ts, value) behind them
are kept in `outbox_dead_points`, so a replay re-queues exactly what was refused.

Functions here take a connection and never commit on their own unless they say so: the
caller owns the transaction (the hub's store thread, the CLI, a test).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.store.sqlite import DeadLetter

# Store.keep_dead_letter: a dead letter within the store's bounds, in the caller's transaction
KeepDeadLetter = Callable[[sqlite3.Connection, "DeadLetter"], "int | None"]

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
CREATE TABLE IF NOT EXISTS outbox_gaps (
    series_id INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    first_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    cursor_ts INTEGER NOT NULL,
    points INTEGER NOT NULL,
    queued INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (series_id, epoch)
);
CREATE TABLE IF NOT EXISTS outbox_marks (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL DEFAULT 0,
    refused_seen INTEGER NOT NULL DEFAULT 0,
    queued_since INTEGER,
    last_delivery_ts INTEGER,
    delivered INTEGER NOT NULL DEFAULT 0,
    disabled_at INTEGER
);
CREATE TABLE IF NOT EXISTS outbox_history (
    series_id INTEGER PRIMARY KEY,
    done_from INTEGER NOT NULL
);
DROP TRIGGER IF EXISTS outbox_append;
CREATE TRIGGER IF NOT EXISTS outbox_append_v2 AFTER INSERT ON samples
WHEN (SELECT enabled FROM outbox_control WHERE id = 1)
BEGIN
    INSERT INTO outbox (series_id, ts, value)
    SELECT NEW.series_id, NEW.ts, NEW.value
    WHERE coalesce((SELECT max(id) FROM outbox) - (SELECT min(id) FROM outbox) + 1, 0)
        < (SELECT max_rows FROM outbox_control WHERE id = 1);
    UPDATE outbox_control SET refused = refused + 1, last_refused_ts = NEW.ts
    WHERE id = 1 AND changes() = 0;
    -- changes() is 1 only when the UPDATE above counted a refusal.
    INSERT INTO outbox_gaps (series_id, epoch, first_ts, last_ts, cursor_ts, points)
    SELECT NEW.series_id, coalesce((SELECT epoch FROM outbox_marks WHERE id = 1), 0),
        NEW.ts, NEW.ts, NEW.ts, 1
    WHERE changes() = 1
    ON CONFLICT (series_id, epoch) DO UPDATE SET
        first_ts = min(first_ts, excluded.first_ts),
        last_ts = max(last_ts, excluded.last_ts),
        cursor_ts = min(cursor_ts, excluded.cursor_ts),
        points = points + 1;
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
    gap_points: int = 0  # refused readings no backfill has queued yet
    gap_series: int = 0
    history_points: int = 0  # history a `backfill --since` has yet to queue

    @property
    def full(self) -> bool:
        return self.enabled and self.backlog >= self.max_rows


def max_rows_for(max_bytes: int) -> int:
    return max(1, max_bytes // BYTES_PER_ROW)


def configure(
    conn: sqlite3.Connection, enabled: bool, max_rows: int, now_ms: int | None = None
) -> None:
    """Switch queueing on or off and set the bound (keeps the refused counter).

    The first time queueing is switched on, `queued_since` records when: history older than
    that was never queued and is what `backfill --since` adds.
    """
    conn.execute(
        "INSERT INTO outbox_control (id, enabled, max_rows) VALUES (1, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET enabled=excluded.enabled, max_rows=excluded.max_rows",
        (int(enabled), max_rows),
    )
    conn.execute("INSERT OR IGNORE INTO outbox_marks (id) VALUES (1)")
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    if not enabled:
        conn.execute(
            "UPDATE outbox_marks SET disabled_at = coalesce(disabled_at, ?) WHERE id = 1", (now,)
        )
        return
    conn.execute(
        "UPDATE outbox_marks SET queued_since = ? WHERE id = 1 AND queued_since IS NULL", (now,)
    )
    off = conn.execute("SELECT disabled_at FROM outbox_marks WHERE id = 1").fetchone()[0]
    if off is not None:
        # Forwarding was switched off for a while: what was stored meanwhile was never queued.
        # Keep it as ranges `hub influx backfill` sends, like readings refused when full.
        for (series_id,) in conn.execute(
            "SELECT id FROM series WHERE last_ts >= ?", (off,)
        ).fetchall():
            _add_range(conn, series_id, off, now)
        conn.execute("UPDATE outbox_marks SET disabled_at = NULL WHERE id = 1")
    _next_epoch(conn)


def _next_epoch(conn: sqlite3.Connection) -> None:
    """Room may open from here on: refusals after this point belong to a new range."""
    conn.execute(
        "UPDATE outbox_marks SET epoch = epoch + 1, "
        "refused_seen = (SELECT refused FROM outbox_control WHERE id = 1) "
        "WHERE id = 1 AND refused_seen < (SELECT refused FROM outbox_control WHERE id = 1)"
    )


def state(conn: sqlite3.Connection) -> OutboxState:
    control = conn.execute(
        "SELECT enabled, max_rows, refused, last_refused_ts FROM outbox_control WHERE id = 1"
    ).fetchone() or (0, 0, 0, None)
    first = conn.execute("SELECT id, ts FROM outbox ORDER BY id LIMIT 1").fetchone()
    last = conn.execute("SELECT max(id) FROM outbox").fetchone()[0]
    backlog = (last - first[0] + 1) if first is not None else 0
    gaps = conn.execute(
        "SELECT coalesce(sum(CASE WHEN epoch >= 0 THEN max(points - queued, 0) END), 0), "
        "count(DISTINCT CASE WHEN epoch >= 0 THEN series_id END), "
        "coalesce(sum(CASE WHEN epoch < 0 THEN max(points - queued, 0) END), 0) FROM outbox_gaps"
    ).fetchone()
    return OutboxState(
        bool(control[0]),
        int(control[1]),
        backlog,
        first[1] if first else None,
        first[0] if first else None,
        int(control[2]),
        control[3],
        int(gaps[0]),
        int(gaps[1]),
        int(gaps[2]),
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
    count = conn.total_changes - before
    conn.execute(
        "UPDATE outbox_marks SET last_delivery_ts = ?, delivered = delivered + ? WHERE id = 1",
        (time.time_ns() // 1_000_000, count),
    )
    _next_epoch(conn)
    return count


@dataclass(frozen=True, slots=True)
class Marks:
    queued_since: int | None
    last_delivery_ts: int | None
    delivered: int


def marks(conn: sqlite3.Connection) -> Marks:
    row = conn.execute(
        "SELECT queued_since, last_delivery_ts, delivered FROM outbox_marks WHERE id = 1"
    ).fetchone()
    return Marks(*row) if row else Marks(None, None, 0)


def dead_letter(
    conn: sqlite3.Connection,
    rows: Sequence[OutboxRow],
    keep: KeepDeadLetter,
    received_ms: int,
    target: str,
    reason: str,
    detail: str,
    payload: bytes,
) -> int | None:
    """Move refused rows out of the outbox into one dead letter; returns its id.

    The letter goes through `keep` (the store's `keep_dead_letter`), so the dead letters'
    bounds hold for refusals too: a refused batch's lines can be far over `max_payload`. The
    points themselves are kept whole in outbox_dead_points (requeue reads them, not the
    payload). When the bounds keep the letter out (None) the rows still leave the outbox: the
    server refused them for good, and the store has counted the drop."""
    from hub.store.sqlite import DeadLetter  # sqlite imports this module

    letter_id = keep(
        conn, DeadLetter(received_ms, DEAD_LETTER_SOURCE, target, reason, detail, payload)
    )
    if letter_id is not None:
        conn.executemany(
            "INSERT INTO outbox_dead_points (dead_letter_id, series_id, ts, value) "
            "VALUES (?,?,?,?)",
            [(letter_id, r.series_id, r.ts, r.value) for r in rows],
        )
    conn.executemany("DELETE FROM outbox WHERE id = ?", [(r.id,) for r in rows])
    _next_epoch(conn)
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


@dataclass(frozen=True, slots=True)
class Gap:
    """Readings of one series that were never queued: refused ones (epoch >= 0) or history."""

    series_id: int
    epoch: int
    first_ts: int
    last_ts: int
    cursor_ts: int
    points: int
    queued: int

    @property
    def left(self) -> int:
        return max(0, self.points - self.queued)


def gaps(conn: sqlite3.Connection, series_ids: Sequence[int] | None = None) -> list[Gap]:
    rows = conn.execute(
        "SELECT series_id, epoch, first_ts, last_ts, cursor_ts, points, queued FROM outbox_gaps "
        "ORDER BY series_id, epoch"
    ).fetchall()
    wanted = set(series_ids) if series_ids is not None else None
    return [Gap(*r) for r in rows if wanted is None or r[0] in wanted]


def add_history(conn: sqlite3.Connection, series_id: int, since_ms: int) -> int:
    """Add the series' stored history from `since_ms` up to where queueing (or an earlier
    backfill) began as a range to queue; returns how many readings it holds.

    `outbox_history.done_from` moves down to `since_ms`, so the same range is never added
    twice (the range itself remembers how far it was queued).
    """
    row = conn.execute(
        "SELECT coalesce((SELECT done_from FROM outbox_history WHERE series_id = ?), "
        "(SELECT queued_since FROM outbox_marks WHERE id = 1))",
        (series_id,),
    ).fetchone()
    upto = row[0] if row and row[0] is not None else time.time_ns() // 1_000_000
    if since_ms >= upto:
        return 0
    conn.execute(
        "INSERT INTO outbox_history (series_id, done_from) VALUES (?, ?) "
        "ON CONFLICT (series_id) DO UPDATE SET done_from = excluded.done_from",
        (series_id, since_ms),
    )
    return _add_range(conn, series_id, since_ms, upto)


def _add_range(conn: sqlite3.Connection, series_id: int, since_ms: int, upto_ms: int) -> int:
    """A range of stored readings [since, upto) never queued, as a gap of its own epoch (< 0)."""
    count, first, last = conn.execute(
        "SELECT count(*), min(ts), max(ts) FROM samples WHERE series_id = ? AND ts >= ? AND ts < ?",
        (series_id, since_ms, upto_ms),
    ).fetchone()
    if not count:
        return 0
    epoch = conn.execute("SELECT min(min(epoch), 0) - 1 FROM outbox_gaps").fetchone()[0]
    conn.execute(
        "INSERT INTO outbox_gaps (series_id, epoch, first_ts, last_ts, cursor_ts, points) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (series_id, -1 if epoch is None else epoch, first, last, first, count),
    )
    return int(count)


def fill_gap(conn: sqlite3.Connection, gap: Gap, limit: int) -> tuple[int, bool]:
    """Queue up to `limit` readings of `gap` from its cursor on, oldest first.

    Returns (queued, finished). A finished range is removed; otherwise its cursor moves past
    the last queued reading, so an interrupted backfill resumes where it stopped.
    """
    row = conn.execute(
        "SELECT cursor_ts, last_ts FROM outbox_gaps WHERE series_id = ? AND epoch = ?",
        (gap.series_id, gap.epoch),
    ).fetchone()
    if row is None:
        return 0, True
    cursor, last_ts = row
    before = conn.total_changes
    conn.execute(
        "INSERT INTO outbox (series_id, ts, value) SELECT series_id, ts, value FROM samples "
        "WHERE series_id = ? AND ts >= ? AND ts <= ? ORDER BY ts LIMIT ?",
        (gap.series_id, cursor, last_ts, limit),
    )
    count = conn.total_changes - before
    if count < limit:
        conn.execute(
            "DELETE FROM outbox_gaps WHERE series_id = ? AND epoch = ?", (gap.series_id, gap.epoch)
        )
        return count, True
    newest = conn.execute("SELECT ts FROM outbox ORDER BY id DESC LIMIT 1").fetchone()[0]
    conn.execute(
        "UPDATE outbox_gaps SET cursor_ts = ?, queued = queued + ? WHERE series_id = ? AND epoch = ?",
        (int(newest) + 1, count, gap.series_id, gap.epoch),
    )
    return count, False
