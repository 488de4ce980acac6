"""The query side of the PostgreSQL store: what hub.store.sqlite.Store answers to the CLI, the
web API and the dead-letter tools, over PostgreSQL.

`PostgresQueries` (reads) and `PostgresDeadLetterWrites` (purge, delete, mark, keep, expire)
are mixins of hub.store.postgres.PostgresStore; `PostgresReadStore` is the read-only view
the web API keeps one of per thread (hub.web.reader.PostgresReaders) and `hub query` opens:
its own connection, read-only transactions, opened again when the server dropped it.

Every read runs in one transaction (REPEATABLE READ on the read-only store), so a query that
reads the rollups and the raw samples after them sees one snapshot even while a leader's
rollup commits in between. A server that cannot be reached is a `StoreUnavailable` with the
reason (the web API answers 503 with it), never a bare driver error.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg

from hub.derive.session import Session
from hub.model import Reading
from hub.store.reader import StoreUnavailable
from hub.store.sessions import SESSION_ALERT_FIELDS
from hub.store.sqlite import (
    DEAD_LETTER_COLUMNS,
    HOUR_MS,
    MINUTE_MS,
    Batch,
    CommitResult,
    DeadLetter,
    DeadLetterLimits,
    Point,
    SeriesInfo,
    SeriesPoints,
)

log = logging.getLogger(__name__)

_SESSION_COLUMNS = (
    "id", "vehicle", "device", "start_ms", "end_ms", "max_speed_kmh", "max_current_a",
    "min_cell_voltage_load", "peak_esc_temperature", "peak_motor_temperature",
    "peak_pack_temperature", "consumed_mah", "energy_wh", "distance_km",
)  # fmt: skip
_DEVICE_KEYS = (
    "name", "source", "kind", "manufacturer", "model", "sw_version", "first_seen", "last_seen",
    "online", "availability_ts",
)  # fmt: skip
ALERT_FIELDS = (
    "id", "rule", "device", "metric", "severity", "state", "value", "threshold", "unit",
    "message", "device_class", "started_ms", "updated_ms", "resolved_ms", "acknowledged_by",
    "acknowledged_ms", "silenced_until_ms", "count",
)  # fmt: skip
_FOUND_KEYS = (
    "id", "received_ts", "source", "topic", "reason", "detail", "payload_bytes", "replayed_ts",
)  # fmt: skip


def _redact(url: str) -> str:
    from hub.store.postgres import redact  # postgres imports this module: late, no cycle

    return redact(url)


def _unavailable(url: str, exc: Exception) -> StoreUnavailable:
    # libpq's messages run over several lines (with tabs): one line for health and logs.
    why = " ".join(str(exc).split()) or type(exc).__name__
    return StoreUnavailable(f"PostgreSQL store unreachable at {_redact(url)}: {why}")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _merge(points: dict[int, list[float]], b: int, mn: float, mx: float, sm: float, n: int) -> None:
    acc = points.get(b)
    if acc is None:
        points[b] = [mn, mx, sm, n]
    else:
        acc[0] = min(acc[0], mn)
        acc[1] = max(acc[1], mx)
        acc[2] += sm
        acc[3] += n


class PostgresQueries:
    """Reads, for any class with a `url` and a `_usable()` connection under `_lock`."""

    url: str
    _lock: Any  # threading.RLock: one statement at a time on a shared connection
    dead_letter_limits: DeadLetterLimits
    dead_letters_dropped: int
    dead_letters_repeated: int

    def _usable(self) -> psycopg.Connection[Any]:
        raise NotImplementedError

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection, inside one transaction, with a lost server turned into
        StoreUnavailable (the connection is opened again by the next call)."""
        with self._lock:
            try:
                conn = self._usable()
                with conn.transaction():
                    yield conn
            except psycopg.OperationalError as exc:
                raise _unavailable(self.url, exc) from exc

    @property
    def sessions(self) -> PostgresSessions:
        return PostgresSessions(self)

    # -- series and samples ---------------------------------------------------------------------

    def series(self, metric: str | None = None, device: str | None = None) -> list[SeriesInfo]:
        sql = "SELECT id, device, metric, tags, unit, source, first_ts, last_ts, last_value FROM series"
        where, args = [], []
        if metric:
            where.append("metric = %s")
            args.append(metric)
        if device:
            where.append("device = %s")
            args.append(device)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY device, metric, tags"
        with self._reading() as conn:
            return [
                SeriesInfo(r[0], r[1], r[2], orjson.loads(r[3]) if r[3] else {}, *r[4:])
                for r in conn.execute(sql, args)
            ]

    def query(
        self,
        metric: str,
        device: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        max_points: int = 1000,
        tags: Mapping[str, str] | None = None,
    ) -> list[SeriesPoints]:
        """As Store.query: samples of `metric` per series in [start, end], at most
        `max_points` per series, as time buckets (mean, min, max) when there are more."""
        end_ms = end_ms if end_ms is not None else int(time.time() * 1000)
        start_ms = start_ms if start_ms is not None else end_ms - HOUR_MS
        max_points = max(1, max_points)
        result = []
        with self._reading() as conn:
            for info in self.series(metric, device):
                if tags and any(info.tags.get(k) != v for k, v in tags.items()):
                    continue
                result.append(self._query_series(conn, info, start_ms, end_ms, max_points))
        return result

    def _query_series(
        self, conn: psycopg.Connection[Any], info: SeriesInfo, start: int, end: int,
        max_points: int,
    ) -> SeriesPoints:  # fmt: skip
        span = max(1, end - start + 1)
        bucket = _ceil_div(span, max_points)
        where = {"s": info.id, "a": start, "e": end}
        if bucket <= 1 or (
            bucket < MINUTE_MS
            and _first(
                conn,
                "SELECT count(*) FROM samples WHERE series_id=%(s)s AND ts BETWEEN %(a)s AND %(e)s",
                where,
            )
            <= max_points
        ):
            rows = conn.execute(
                "SELECT ts, value FROM samples WHERE series_id=%(s)s AND ts BETWEEN %(a)s AND %(e)s "
                "ORDER BY ts, seq",
                where,
            ).fetchall()
            if len(rows) <= max_points:
                return SeriesPoints(info, "raw", [Point(t, v, v, v, 1) for t, v in rows])
        if bucket < MINUTE_MS:
            rows = conn.execute(
                "SELECT (ts - %(a)s::bigint) / %(b)s::bigint AS b, min(ts), avg(value), min(value), "
                "max(value), count(*) FROM samples WHERE series_id = %(s)s AND ts BETWEEN %(a)s "
                "AND %(e)s GROUP BY b ORDER BY b",
                {**where, "b": bucket},
            ).fetchall()
            return SeriesPoints(
                info, "raw", [Point(r[1], r[2], r[3], r[4], int(r[5])) for r in rows]
            )
        table, width = ("rollup_1h", HOUR_MS) if bucket >= HOUR_MS else ("rollup_1m", MINUTE_MS)
        # Buckets align to the rollup width; round up so there are never more than max_points.
        aligned_span = end - start // width * width + 1
        bucket = max(width, _ceil_div(_ceil_div(aligned_span, max_points), width) * width)
        base = start // width * width
        # The newest buckets may not be rolled up yet: read those from the raw samples.
        row = conn.execute(
            f"SELECT max(bucket) FROM {table} WHERE series_id=%s", (info.id,)
        ).fetchone()
        rolled_until = row[0] + width if row is not None and row[0] is not None else start
        rolled_until = min(max(rolled_until, start), end + 1)
        pending = conn.execute(
            "SELECT from_ts FROM rollup_dirty WHERE series_id=%s", (info.id,)
        ).fetchone()
        if pending is not None:
            rolled_until = min(rolled_until, max(start, pending[0] // width * width))
        points: dict[int, list[float]] = {}
        args = {"s": info.id, "base": base, "b": bucket, "u": rolled_until, "e": end}
        for b, mn, mx, sm, n in conn.execute(
            f"SELECT (bucket - %(base)s::bigint) / %(b)s::bigint, min, max, sum, count FROM {table} "
            "WHERE series_id=%(s)s AND bucket >= %(base)s AND bucket < %(u)s",
            args,
        ):
            _merge(points, int(b), mn, mx, sm, int(n))
        if rolled_until <= end:
            for b, mn, mx, sm, n in conn.execute(
                "SELECT (ts - %(base)s::bigint) / %(b)s::bigint, min(value), max(value), sum(value), "
                "count(*) FROM samples WHERE series_id=%(s)s AND ts >= %(u)s AND ts <= %(e)s "
                "GROUP BY 1",
                args,
            ):
                _merge(points, int(b), mn, mx, sm, int(n))
        out = [
            Point(base + b * bucket, v[2] / v[3], v[0], v[1], int(v[3]))
            for b, v in sorted(points.items())
            if v[3]
        ]
        return SeriesPoints(info, "1h" if width == HOUR_MS else "1m", out)

    def known_series(self) -> list[tuple[str, str, int]]:
        """(device, metric, newest timestamp) of every series."""
        with self._reading() as conn:
            return [
                (str(d), str(m), int(ts or 0))
                for d, m, ts in conn.execute(
                    "SELECT device, metric, max(last_ts) FROM series GROUP BY device, metric"
                )
            ]

    def events(self, device: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, args = "SELECT device, name, text, ts, source FROM events", list[Any]()
        if device:
            sql += " WHERE device=%s"
            args.append(device)
        sql += " ORDER BY ts DESC, seq DESC LIMIT %s"
        args.append(limit)
        keys = ("device", "name", "text", "ts", "source")
        with self._reading() as conn:
            return [dict(zip(keys, row, strict=True)) for row in conn.execute(sql, args)]

    def alert_row(self, alert_id: int) -> dict[str, Any] | None:
        """One alert as the alert engine stored it, or None."""
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {', '.join(ALERT_FIELDS)} FROM alerts WHERE id = %s", (alert_id,)
            ).fetchone()
            return dict(zip(ALERT_FIELDS, row, strict=True)) if row else None

    def alert_rows(
        self, firing_only: bool = False, limit: int = 100, device: str | None = None
    ) -> list[dict[str, Any]]:
        """Alerts as the alert engine stored them (hub.alerts.store.Alert's fields), newest
        first: what a web API without the engine in its own process shows."""
        sql = f"SELECT {', '.join(ALERT_FIELDS)} FROM alerts WHERE true"
        args: list[Any] = []
        if firing_only:
            sql += " AND state = 'firing'"
        if device:
            sql += " AND device = %s"
            args.append(device)
        sql += " ORDER BY started_ms DESC, id DESC LIMIT %s"
        args.append(limit)
        with self._reading() as conn:
            return [dict(zip(ALERT_FIELDS, row, strict=True)) for row in conn.execute(sql, args)]

    # -- devices --------------------------------------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        keys = _DEVICE_KEYS[:-1]
        with self._reading() as conn:
            rows = conn.execute(f"SELECT {', '.join(keys)} FROM devices ORDER BY name")
            return [dict(zip(keys, row, strict=True)) for row in rows]

    def device_rows(self, name: str | None = None) -> list[dict[str, Any]]:
        """Devices with availability and the metrics they reported."""
        sql = f"SELECT {', '.join(_DEVICE_KEYS)} FROM devices"
        args: tuple[object, ...] = ()
        if name is not None:
            sql += " WHERE name = %s"
            args = (name,)
        with self._reading() as conn:
            metrics: dict[str, list[str]] = {}
            for device, metric in conn.execute(
                "SELECT DISTINCT device, metric FROM series ORDER BY device, metric"
            ):
                metrics.setdefault(device, []).append(metric)
            out = []
            for row in conn.execute(sql + " ORDER BY name", args):
                item = dict(zip(_DEVICE_KEYS, row, strict=True))
                item["online"] = None if item["online"] is None else bool(item["online"])
                item["metrics"] = metrics.get(str(item["name"]), [])
                out.append(item)
            return out

    def device_identities(
        self,
    ) -> list[tuple[str, str | None, str | None, str | None, tuple[str, ...], str | None]]:
        """(name, manufacturer, model, sw_version, identifiers, kind) of every device."""
        with self._reading() as conn:
            return [
                (name, maker, model, sw, tuple(i for i in (ids or "").split(",") if i), kind)
                for name, maker, model, sw, ids, kind in conn.execute(
                    "SELECT name, manufacturer, model, sw_version, identifiers, kind FROM devices"
                )
            ]

    # -- counts and size ------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        tables = (
            "series",
            "samples",
            "events",
            "dead_letters",
            "devices",
            "rollup_1m",
            "rollup_1h",
        )
        with self._reading() as conn:
            return {t: _first(conn, f"SELECT count(*) FROM {t}") for t in tables}

    def size_bytes(self) -> int:
        """The whole database's size on the server (pg_database_size)."""
        with self._reading() as conn:
            return _first(conn, "SELECT pg_database_size(current_database())")

    # -- dead letters ---------------------------------------------------------------------------

    def dead_letter_counts(self) -> dict[str, int]:
        with self._reading() as conn:
            return {
                str(reason): int(n)
                for reason, n in conn.execute(
                    "SELECT reason, count(*) FROM dead_letters GROUP BY reason"
                )
            }

    def dead_letters(
        self, limit: int = 100, reason: str | None = None, after_id: int = 0
    ) -> list[dict[str, Any]]:
        """Newest first, with payload sizes (not payloads), as Store.dead_letters."""
        columns = ", ".join(DEAD_LETTER_COLUMNS).replace(
            "payload", "coalesce(payload_bytes, length(payload)), length(payload)"
        )
        sql = f"SELECT {columns} FROM dead_letters WHERE id > %s"
        args: list[Any] = [after_id]
        if reason:
            sql += " AND reason = %s"
            args.append(reason)
        sql += " ORDER BY id DESC LIMIT %s"
        args.append(limit)
        keys = [k for k in DEAD_LETTER_COLUMNS if k != "payload"]
        at = DEAD_LETTER_COLUMNS.index("payload")
        keys[at:at] = ["payload_bytes", "payload_kept"]
        out = []
        with self._reading() as conn:
            for row in conn.execute(sql, args):
                info = dict(zip(keys, row, strict=True))
                kept = info.pop("payload_kept")
                info["payload_truncated"] = kept is not None and kept < (info["payload_bytes"] or 0)
                out.append(info)
        return out

    def dead_letter(self, dead_letter_id: int) -> tuple[dict[str, Any], bytes | None] | None:
        """One dead letter's details and its kept payload (None: no such id)."""
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {', '.join(DEAD_LETTER_COLUMNS)}, payload_bytes, payload_sha256 "
                "FROM dead_letters WHERE id=%s",
                (dead_letter_id,),
            ).fetchone()
        if row is None:
            return None
        info = dict(zip((*DEAD_LETTER_COLUMNS, "size", "payload_sha256"), row, strict=True))
        payload = info.pop("payload")
        payload = bytes(payload) if payload is not None else None
        size = info.pop("size")
        info["payload_bytes"] = (
            size if size is not None else (len(payload) if payload is not None else 0)
        )
        info["payload_truncated"] = payload is not None and len(payload) < info["payload_bytes"]
        return info, payload

    def find_dead_letters(
        self,
        ids: Sequence[int] = (),
        source: str | None = None,
        reason: str | None = None,
        include_replayed: bool = True,
        before_ms: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Dead letters that match, oldest first (payload sizes, not payloads)."""
        where: list[str] = ["true"]
        args: list[Any] = []
        if ids:
            where.append("id = ANY(%s)")
            args.append(list(ids))
        if source:
            where.append("source = %s")
            args.append(source)
        if reason:
            where.append("reason = %s")
            args.append(reason)
        if not include_replayed:
            where.append("replayed_ts IS NULL")
        if before_ms is not None:
            where.append("received_ts < %s")
            args.append(before_ms)
        columns = (
            "id, received_ts, source, topic, reason, detail, "
            "coalesce(payload_bytes, length(payload)), replayed_ts"
        )
        sql = f"SELECT {columns} FROM dead_letters WHERE {' AND '.join(where)} ORDER BY id"
        if limit is not None:
            sql = f"SELECT * FROM ({sql} DESC LIMIT {int(limit)}) newest ORDER BY id"
        with self._reading() as conn:
            return [dict(zip(_FOUND_KEYS, row, strict=True)) for row in conn.execute(sql, args)]

    def dead_letter_summary(self) -> list[tuple[str, str, int, int]]:
        """(source, reason, count, pending) per source and reason."""
        with self._reading() as conn:
            return [
                (str(s), str(r), int(n), int(p))
                for s, r, n, p in conn.execute(
                    "SELECT source, reason, count(*), count(*) FILTER (WHERE replayed_ts IS NULL) "
                    "FROM dead_letters GROUP BY 1, 2 ORDER BY 1, 2"
                )
            ]

    def dead_letter_totals(self) -> dict[str, int]:
        """What the kept payloads take (all workers together) and what this process's bounds
        did (for status and the CLI)."""
        with self._reading() as conn:
            stored = _first(conn, "SELECT coalesce(sum(length(payload)), 0) FROM dead_letters")
        return {
            "stored_bytes": stored,
            "dropped_for_size": self.dead_letters_dropped,
            "retained_repeats": self.dead_letters_repeated,
        }


class PostgresDeadLetterWrites:
    """Dead-letter writes of the writer store (PostgresStore): purge, delete, mark as
    replayed, keep one from outside ingest, and expire by age."""

    dead_letter_limits: DeadLetterLimits

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        raise NotImplementedError
        yield  # pragma: no cover

    def _write_dead_letters(
        self, conn: psycopg.Connection[Any], letters: Sequence[DeadLetter]
    ) -> int:
        raise NotImplementedError

    def _write(self, conn: psycopg.Connection[Any], batch: Batch) -> CommitResult:
        raise NotImplementedError

    def commit_replayed(self, batch: Batch, ids: Sequence[int], now_ms: int) -> CommitResult:
        """A replay's readings and the replayed mark of its dead letters in one transaction
        (SQLite does this with batch.writes, which hold SQLite statements)."""
        with self.transaction() as conn:
            result = self._write(conn, batch)
            mark_replayed(conn, ids, now_ms)
            return result

    def purge_dead_letters(self, reason: str | None = None, before_ms: int | None = None) -> int:
        sql, args = "DELETE FROM dead_letters WHERE true", list[Any]()
        if reason:
            sql += " AND reason = %s"
            args.append(reason)
        if before_ms is not None:
            sql += " AND received_ts < %s"
            args.append(before_ms)
        with self.transaction() as conn:
            return max(conn.execute(sql, args).rowcount, 0)

    def delete_dead_letters(self, ids: Iterable[int]) -> int:
        """Delete the given dead letters (replayed or purged by id)."""
        with self.transaction() as conn:
            cur = conn.execute("DELETE FROM dead_letters WHERE id = ANY(%s)", (list(ids),))
            return max(cur.rowcount, 0)

    def mark_replayed(self, ids: Iterable[int], now_ms: int) -> None:
        with self.transaction() as conn:
            mark_replayed(conn, ids, now_ms)

    def keep_dead_letter(self, conn: psycopg.Connection[Any], letter: DeadLetter) -> int | None:
        """One dead letter inside the caller's transaction, within the same bounds as a
        batch's; its id, or None when the bounds kept it out (as Store.keep_dead_letter)."""
        if not self._write_dead_letters(conn, [letter]):
            return None
        # currval is this session's own last id: exact even while other workers insert.
        row = conn.execute(
            "SELECT id FROM dead_letters WHERE id = currval(pg_get_serial_sequence('dead_letters', 'id'))"
        ).fetchone()
        return int(row[0]) if row else None

    def expire_dead_letters(self, now_ms: int) -> int:
        """Retention of dead letters by age (store.dead_letters.retention; 0 keeps them)."""
        keep = self.dead_letter_limits.retention_s
        if keep <= 0:
            return 0
        with self.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM dead_letters WHERE received_ts < %s", (now_ms - int(keep * 1000),)
            )
            return max(cur.rowcount, 0)


def mark_replayed(conn: psycopg.Connection[Any], ids: Iterable[int], now_ms: int) -> None:
    """Inside a transaction: these dead letters were replayed (kept, marked)."""
    conn.execute("UPDATE dead_letters SET replayed_ts=%s WHERE id = ANY(%s)", (now_ms, list(ids)))


def _first(conn: psycopg.Connection[Any], sql: str, args: Any = ()) -> int:
    row = conn.execute(sql, args).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


class PostgresSessions:
    """RC drive sessions in PostgreSQL: SessionStore's get/list/save, and a session's alerts
    and readings (what the web API and `hub sessions` show)."""

    def __init__(self, store: PostgresQueries) -> None:
        self.store = store

    def save(self, session: Session) -> None:
        values = tuple(getattr(session, name) for name in _SESSION_COLUMNS)
        updates = ", ".join(f"{c}=excluded.{c}" for c in _SESSION_COLUMNS[1:])
        with self.store._reading() as conn:
            conn.execute(
                f"INSERT INTO rc_sessions ({', '.join(_SESSION_COLUMNS)}) VALUES "
                f"({', '.join(['%s'] * len(_SESSION_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET {updates}",
                values,
            )

    def get(self, session_id: str) -> Session | None:
        with self.store._reading() as conn:
            row = conn.execute(
                f"SELECT {', '.join(_SESSION_COLUMNS)} FROM rc_sessions WHERE id = %s",
                (session_id,),
            ).fetchone()
        return None if row is None else Session(*row)

    def list(self, vehicle: str | None = None, limit: int = 50) -> list[Session]:
        """Newest first."""
        sql = f"SELECT {', '.join(_SESSION_COLUMNS)} FROM rc_sessions"
        args: list[object] = []
        if vehicle is not None:
            sql += " WHERE vehicle = %s"
            args.append(vehicle)
        sql += " ORDER BY start_ms DESC, id LIMIT %s"
        with self.store._reading() as conn:
            return [Session(*row) for row in conn.execute(sql, (*args, limit))]

    def alerts(self, session: Session) -> builtins.list[dict[str, Any]]:
        """Alerts of the session's device whose firing time overlaps the session."""
        with self.store._reading() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(SESSION_ALERT_FIELDS)} FROM alerts WHERE device = %s "
                "AND started_ms <= %s AND (resolved_ms IS NULL OR resolved_ms >= %s) "
                "ORDER BY started_ms, id",
                (session.device, session.end_ms, session.start_ms),
            ).fetchall()
        return [dict(zip(SESSION_ALERT_FIELDS, row, strict=True)) for row in rows]

    def readings(self, session: Session) -> Iterator[Reading]:
        """The session's device's raw samples from start to end."""
        with self.store._reading() as conn:
            rows = conn.execute(
                "SELECT s.ts, r.device, r.metric, s.value, r.unit, r.source, r.tags"
                " FROM samples s JOIN series r ON r.id = s.series_id"
                " WHERE r.device = %s AND s.ts BETWEEN %s AND %s ORDER BY s.ts, r.metric, s.seq",
                (session.device, session.start_ms, session.end_ms),
            ).fetchall()
        for ts, device, metric, value, unit, source, tags in rows:
            tag_map = orjson.loads(tags) if tags else {}
            yield Reading(device, metric, value, ts, unit, tag_map, source or "mqtt")


class PostgresReadStore(PostgresQueries):
    """The store's queries over a read-only connection of its own (web API threads, `hub
    query`): opened on first use, opened again after the server dropped it, never writing."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0, name: str = "hub-reader") -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.name = name
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self.dead_letter_limits = DeadLetterLimits()
        self.dead_letters_dropped = 0  # the writers count these; a reader drops nothing
        self.dead_letters_repeated = 0

    def _usable(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                log.info("Reconnecting a reader to the store at %s", _redact(self.url))
                conn.close()
            self._conn = None
            conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout)),
                application_name=self.name, options="-c default_transaction_read_only=on",
            )  # fmt: skip
            # One snapshot per read (a query reads rollups, then the raw samples after them).
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            self._conn = conn
        return conn

    @property
    def conn(self) -> psycopg.Connection[Any]:
        with self._lock:
            try:
                return self._usable()
            except psycopg.OperationalError as exc:
                raise _unavailable(self.url, exc) from exc

    def ping(self) -> None:
        """Raise StoreUnavailable unless the server answers (health checks)."""
        with self._reading() as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
