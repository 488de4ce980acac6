"""The InfluxDB outbox in PostgreSQL: the functions of hub.store.outbox for a store that
several workers write at once, and PostgresOutbox, the forwarder's access to it.

The semantics are those of the SQLite outbox (read hub.store.outbox first): a reading is
queued in the transaction that stores it and only when it is new (a statement trigger on
`samples`, hub.store.postgres_outbox_schema), the bound refuses and counts readings and records
them as per-series ranges per epoch for `hub influx backfill`, delivered rows leave, refused
points become dead letters with their points kept for a requeue.

What is different, because several transactions write at once:
- Every function here that writes the outbox takes the transaction advisory lock LOCK_OUTBOX
  first (so does the trigger). Ids are therefore handed out in commit order, the bound is
  checked against a backlog nobody else is changing, and an epoch moves on only after the
  refusals of a transaction in flight are counted (SQLite gets all of this from its one writer).
- Delivered rows are deleted by their ids, not by an id range.
- One forwarder at a time: PostgresOutbox holds the session advisory lock LOCK_FORWARDER on
  its write connection. A second forwarder (an old leader that has not noticed yet) waits
  instead of sending the same batches and writing the same dead letters.

Functions take a connection inside the caller's transaction (psycopg, `with
conn.transaction()` or PostgresStore.transaction()) and never commit on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from hub.store.outbox import DEAD_LETTER_SOURCE, Gap, Marks, OutboxRow, OutboxState
from hub.store.postgres import redact
from hub.store.postgres_outbox_schema import LOCK_FORWARDER, LOCK_OUTBOX
from hub.store.sqlite import DeadLetter

log = logging.getLogger(__name__)
T = TypeVar("T")
Conn = psycopg.Connection[Any]

# PostgresStore.keep_dead_letter: a dead letter within the store's bounds, in the transaction
KeepDeadLetter = Callable[[Conn, DeadLetter], "int | None"]

# What one queued row costs: heap tuple (24 B header + 32 B) and its line pointer, the primary
# key's index entry, page slack. Measured 83 B/row on a 1,000,000-row outbox
# (bench/pg_outbox.py), rounded up.
BYTES_PER_ROW = 88


def max_rows_for(max_bytes: int) -> int:
    return max(1, max_bytes // BYTES_PER_ROW)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def lock(conn: Conn) -> None:
    """The outbox writers' lock, until the transaction ends (see the module docstring)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_OUTBOX,))


def configure(conn: Conn, enabled: bool, max_rows: int, now_ms: int | None = None) -> None:
    """As outbox.configure: switch queueing on or off and set the bound."""
    lock(conn)
    conn.execute(
        "INSERT INTO outbox_control (id, enabled, max_rows) VALUES (1, %s, %s) ON CONFLICT (id) "
        "DO UPDATE SET enabled = excluded.enabled, max_rows = excluded.max_rows",
        (enabled, max_rows),
    )
    conn.execute("INSERT INTO outbox_marks (id) VALUES (1) ON CONFLICT (id) DO NOTHING")
    now = now_ms if now_ms is not None else _now_ms()
    if not enabled:
        conn.execute(
            "UPDATE outbox_marks SET disabled_at = coalesce(disabled_at, %s) WHERE id = 1", (now,)
        )
        return
    conn.execute(
        "UPDATE outbox_marks SET queued_since = %s WHERE id = 1 AND queued_since IS NULL", (now,)
    )
    row = conn.execute("SELECT disabled_at FROM outbox_marks WHERE id = 1").fetchone()
    off = row[0] if row else None
    if off is not None:
        # Stored while forwarding was off, never queued: ranges for `hub influx backfill`.
        for (series_id,) in conn.execute(
            "SELECT id FROM series WHERE last_ts >= %s ORDER BY id", (off,)
        ).fetchall():
            _add_range(conn, series_id, off, now)
        conn.execute("UPDATE outbox_marks SET disabled_at = NULL WHERE id = 1")
    _next_epoch(conn)


def _next_epoch(conn: Conn) -> None:
    """Room may open from here on: refusals after this point belong to a new range."""
    conn.execute(
        "UPDATE outbox_marks SET epoch = epoch + 1, "
        "refused_seen = (SELECT refused FROM outbox_control WHERE id = 1) "
        "WHERE id = 1 AND refused_seen < (SELECT refused FROM outbox_control WHERE id = 1)"
    )


def state(conn: Conn) -> OutboxState:
    control = conn.execute(
        "SELECT enabled, max_rows, refused, last_refused_ts FROM outbox_control WHERE id = 1"
    ).fetchone() or (False, 0, 0, None)
    # One statement, one snapshot: the oldest row and the newest id agree.
    ends = conn.execute(
        "SELECT (SELECT id FROM outbox ORDER BY id LIMIT 1), "
        "(SELECT ts FROM outbox ORDER BY id LIMIT 1), (SELECT max(id) FROM outbox)"
    ).fetchone()
    first = (int(ends[0]), int(ends[1])) if ends and ends[0] is not None else None
    backlog = int(ends[2]) - first[0] + 1 if ends and first else 0
    gaps = conn.execute(
        "SELECT coalesce(sum(greatest(points - queued, 0)) FILTER (WHERE epoch >= 0), 0), "
        "count(DISTINCT series_id) FILTER (WHERE epoch >= 0), "
        "coalesce(sum(greatest(points - queued, 0)) FILTER (WHERE epoch < 0), 0) FROM outbox_gaps"
    ).fetchone()
    assert gaps is not None
    return OutboxState(
        bool(control[0]),
        int(control[1]),
        backlog,
        int(first[1]) if first else None,
        int(first[0]) if first else None,
        int(control[2]),
        control[3],
        int(gaps[0]),
        int(gaps[1]),
        int(gaps[2]),
    )


def read_batch(conn: Conn, after_id: int, limit: int) -> list[OutboxRow]:
    """The next `limit` queued rows after `after_id`, oldest first. Ids are committed in order
    (LOCK_OUTBOX), so a row below the last one read never appears later."""
    return [
        OutboxRow(int(r[0]), int(r[1]), int(r[2]), float(r[3]))
        for r in conn.execute(
            "SELECT id, series_id, ts, value FROM outbox WHERE id > %s ORDER BY id LIMIT %s",
            (after_id, limit),
        )
    ]


def delivered(conn: Conn, ids: Sequence[int]) -> int:
    """Forget the rows the server acknowledged (by id: never a row that was not sent)."""
    lock(conn)
    cur = conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", (list(ids),))
    count = max(cur.rowcount, 0)
    conn.execute(
        "UPDATE outbox_marks SET last_delivery_ts = %s, delivered = delivered + %s WHERE id = 1",
        (_now_ms(), count),
    )
    _next_epoch(conn)
    return count


def marks(conn: Conn) -> Marks:
    row = conn.execute(
        "SELECT queued_since, last_delivery_ts, delivered FROM outbox_marks WHERE id = 1"
    ).fetchone()
    return Marks(row[0], row[1], int(row[2])) if row else Marks(None, None, 0)


def dead_letter_counts(conn: Conn) -> dict[str, int]:
    """Pending InfluxDB dead letters by reason."""
    return {
        str(reason): int(n)
        for reason, n in conn.execute(
            "SELECT reason, count(*) FROM dead_letters WHERE source = %s AND replayed_ts IS NULL "
            "GROUP BY reason ORDER BY reason",
            (DEAD_LETTER_SOURCE,),
        )
    }


def dead_letter(
    conn: Conn,
    rows: Sequence[OutboxRow],
    keep: KeepDeadLetter,
    received_ms: int,
    target: str,
    reason: str,
    detail: str,
    payload: bytes,
) -> int | None:
    """As outbox.dead_letter: refused rows leave the outbox into one dead letter (within the
    dead letters' bounds) and their points are kept whole for a requeue; its id or None."""
    lock(conn)
    letter_id = keep(
        conn, DeadLetter(received_ms, DEAD_LETTER_SOURCE, target, reason, detail, payload)
    )
    if letter_id is not None:
        conn.execute(
            "INSERT INTO outbox_dead_points (dead_letter_id, series_id, ts, value) "
            "SELECT %s, * FROM unnest(%s::bigint[], %s::bigint[], %s::float8[])",
            (letter_id, [r.series_id for r in rows], [r.ts for r in rows], [r.value for r in rows]),
        )
    conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", ([r.id for r in rows],))
    _next_epoch(conn)
    return letter_id


def requeue(conn: Conn, dead_letter_id: int) -> int:
    """Queue a dead letter's points again, past the bound on purpose; returns how many."""
    lock(conn)
    cur = conn.execute(
        "INSERT INTO outbox (series_id, ts, value) SELECT series_id, ts, value "
        "FROM outbox_dead_points WHERE dead_letter_id = %s ORDER BY series_id, ts",
        (dead_letter_id,),
    )
    return max(cur.rowcount, 0)


def gaps(conn: Conn, series_ids: Sequence[int] | None = None) -> list[Gap]:
    rows = conn.execute(
        "SELECT series_id, epoch, first_ts, last_ts, cursor_ts, points, queued FROM outbox_gaps "
        "ORDER BY series_id, epoch"
    ).fetchall()
    wanted = set(series_ids) if series_ids is not None else None
    return [Gap(*(int(v) for v in r)) for r in rows if wanted is None or r[0] in wanted]


def add_history(conn: Conn, series_id: int, since_ms: int) -> int:
    """As outbox.add_history: the series' history from `since_ms` up to where queueing (or an
    earlier backfill) began, as a range to queue; how many readings it holds."""
    lock(conn)
    row = conn.execute(
        "SELECT coalesce((SELECT done_from FROM outbox_history WHERE series_id = %s), "
        "(SELECT queued_since FROM outbox_marks WHERE id = 1))",
        (series_id,),
    ).fetchone()
    upto = int(row[0]) if row and row[0] is not None else _now_ms()
    if since_ms >= upto:
        return 0
    conn.execute(
        "INSERT INTO outbox_history (series_id, done_from) VALUES (%s, %s) "
        "ON CONFLICT (series_id) DO UPDATE SET done_from = excluded.done_from",
        (series_id, since_ms),
    )
    return _add_range(conn, series_id, since_ms, upto)


def _add_range(conn: Conn, series_id: int, since_ms: int, upto_ms: int) -> int:
    """Stored readings [since, upto) never queued, as a range of its own epoch (< 0)."""
    row = conn.execute(
        "SELECT count(*), min(ts), max(ts) FROM samples "
        "WHERE series_id = %s AND ts >= %s AND ts < %s",
        (series_id, since_ms, upto_ms),
    ).fetchone()
    if not row or not row[0]:
        return 0
    count, first, last = int(row[0]), int(row[1]), int(row[2])
    epoch = conn.execute("SELECT least(min(epoch), 0) - 1 FROM outbox_gaps").fetchone()
    conn.execute(
        "INSERT INTO outbox_gaps (series_id, epoch, first_ts, last_ts, cursor_ts, points) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (series_id, int(epoch[0]) if epoch else -1, first, last, first, count),
    )
    return count


def fill_gap(conn: Conn, gap: Gap, limit: int) -> tuple[int, bool]:
    """As outbox.fill_gap: queue up to `limit` readings of `gap` from its cursor, oldest first;
    (queued, finished). The cursor is persisted, so an interrupted backfill resumes."""
    lock(conn)
    row = conn.execute(
        "SELECT cursor_ts, last_ts FROM outbox_gaps WHERE series_id = %s AND epoch = %s",
        (gap.series_id, gap.epoch),
    ).fetchone()
    if row is None:
        return 0, True
    cursor, last_ts = int(row[0]), int(row[1])
    done = conn.execute(
        "WITH queued AS (INSERT INTO outbox (series_id, ts, value) "
        "SELECT series_id, ts, value FROM samples WHERE series_id = %s AND ts >= %s AND ts <= %s "
        "ORDER BY ts, seq LIMIT %s RETURNING ts) SELECT count(*), max(ts) FROM queued",
        (gap.series_id, cursor, last_ts, limit),
    ).fetchone()
    assert done is not None
    count = int(done[0])
    if count < limit:
        conn.execute(
            "DELETE FROM outbox_gaps WHERE series_id = %s AND epoch = %s",
            (gap.series_id, gap.epoch),
        )
        return count, True
    # Readings of the last queued millisecond with another seq are queued once more next time:
    # harmless (the same point overwrites itself), and a cursor on ts alone stays simple.
    conn.execute(
        "UPDATE outbox_gaps SET cursor_ts = %s, queued = queued + %s "
        "WHERE series_id = %s AND epoch = %s",
        (int(done[1]) + 1, count, gap.series_id, gap.epoch),
    )
    return count, False


# -- the forwarder's access ------------------------------------------------------------------


class OutboxBusy(Exception):
    """Another forwarder holds the outbox (LOCK_FORWARDER)."""


class PostgresOutbox:
    """hub.store.outbox_access.OutboxAccess on PostgreSQL.

    Reads use a connection of their own (the forwarder's database thread); writes use another,
    in a thread of their own, which holds the forwarder lock for as long as it is open. When
    that connection breaks the lock is gone with it: the next write takes it again or fails
    with OutboxBusy (the forwarder stops and its supervisor starts it again, waiting)."""

    bytes_per_row = BYTES_PER_ROW
    disk_path: Path | None = None  # the server's disk: PostgreSQL says when it is full

    def __init__(
        self, url: str, name: str, keep_dead_letter: KeepDeadLetter, *, wait: float = 1.0
    ) -> None:
        self.url = url
        self.name = name  # application_name: who holds the outbox, in pg_stat_activity
        self.keep_dead_letter = keep_dead_letter
        self.wait = wait
        self._reader: Conn | None = None
        self._writer: Conn | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="influx-outbox")
        self.target = redact(url)

    def max_rows_for(self, max_bytes: int) -> int:
        return max_rows_for(max_bytes)

    def _connect(self) -> Conn:
        return psycopg.connect(
            self.url, autocommit=True, connect_timeout=5, application_name=self.name,
            keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2,
        )  # fmt: skip

    # -- writes (in self._thread)

    def _try_claim(self) -> bool:
        conn = self._writer
        if conn is None or conn.closed or conn.broken:
            self._drop_writer()
            conn = self._writer = self._connect()
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_FORWARDER,)).fetchone()
            if not (row and row[0]):
                self._drop_writer()
                return False
        return True

    def holder(self) -> str | None:
        """The application_name of the session that holds the forwarder lock."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND ((l.classid::bigint << 32) | l.objid::bigint) = %s",
                (LOCK_FORWARDER,),
            ).fetchone()
        return str(row[0]) if row else None

    async def claim(self, stopping: asyncio.Event) -> bool:
        """Wait for the forwarder lock; False when stopping first."""
        loop = asyncio.get_running_loop()
        said = False
        while not stopping.is_set():
            try:
                if await loop.run_in_executor(self._thread, self._try_claim):
                    if said:
                        log.info("%s took the InfluxDB outbox over", self.name)
                    return True
                if not said:
                    holder = await loop.run_in_executor(self._thread, self.holder)
                    log.warning(
                        "InfluxDB outbox is held by another forwarder (%s); %s waits for it",
                        holder or "unknown", self.name,
                    )  # fmt: skip
                    said = True
            except psycopg.Error as exc:
                if not said:
                    log.warning("InfluxDB outbox: store %s unreachable (%s)", self.target, exc)
                    said = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.wait)
        return False

    def _in_transaction(self, fn: Callable[[Conn], T]) -> T:
        if not self._try_claim():
            raise OutboxBusy(
                f"the InfluxDB outbox in {self.target} is held by another forwarder "
                f"({self.holder() or 'unknown'})"
            )
        assert self._writer is not None
        try:
            with self._writer.transaction():
                return fn(self._writer)
        except psycopg.OperationalError:
            self._drop_writer()  # the lock went with the session; the next write claims again
            raise

    async def _write(self, fn: Callable[[Conn], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._in_transaction, fn
        )

    async def configure(self, enabled: bool, max_rows: int) -> None:
        await self._write(lambda conn: configure(conn, enabled, max_rows))

    async def delivered(self, rows: Sequence[OutboxRow]) -> int:
        ids = [r.id for r in rows]
        return await self._write(lambda conn: delivered(conn, ids))

    async def dead_letter(
        self, rows: Sequence[OutboxRow], received_ms: int, target: str, reason: str,
        detail: str, payload: bytes,
    ) -> int | None:  # fmt: skip
        keep = self.keep_dead_letter
        return await self._write(
            lambda conn: dead_letter(conn, rows, keep, received_ms, target, reason, detail, payload)
        )

    # -- reads (in the forwarder's database thread)

    def _read(self) -> Conn:
        if self._reader is None or self._reader.closed or self._reader.broken:
            self._reader = self._connect()
        return self._reader

    def read_state(self) -> tuple[OutboxState, int, Marks]:
        conn = self._read()
        try:
            with conn.transaction():  # one snapshot for the three figures
                st = state(conn)
                letters = sum(dead_letter_counts(conn).values())
                return st, letters, marks(conn)
        except psycopg.OperationalError:
            self._drop_reader()
            raise

    def read_batch(self, after_id: int, limit: int) -> list[OutboxRow]:
        try:
            return read_batch(self._read(), after_id, limit)
        except psycopg.OperationalError:
            self._drop_reader()
            raise

    def series_keys(
        self, series_ids: Sequence[int]
    ) -> list[tuple[int, str, str, str | None, str | None]]:
        return [
            (int(r[0]), str(r[1]), str(r[2]), r[3], r[4])
            for r in self._read().execute(
                "SELECT id, device, metric, tags, source FROM series WHERE id = ANY(%s)",
                (list(series_ids),),
            )
        ]

    def _drop_reader(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(psycopg.Error):
                self._reader.close()
            self._reader = None

    def _drop_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(psycopg.Error):
                self._writer.close()  # and with it the forwarder lock
            self._writer = None

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._thread.submit(self._drop_writer).result()
        self._thread.shutdown(wait=True)
        self._drop_reader()
