"""The PostgreSQL store: the same write and query contract as hub.store.sqlite.Store, on a
database several hub workers share (store.url: postgresql://...).

At-least-once as in SQLite: a batch is one transaction, the caller acks only after it
commits, and a redelivered message hits ON CONFLICT DO NOTHING on its own sample key.
Samples go in with COPY into a temporary table and one INSERT ... SELECT ON CONFLICT DO
NOTHING for large batches, one INSERT ... SELECT FROM unnest(arrays) for small ones
(bench/pg_insert.py measured both and pipelined executemany). Day partitions of `samples` are created when a batch first needs
one, under a transaction advisory lock so two workers never race on the same CREATE.

Rollups can be run by any number of workers: each claims dirty series with FOR UPDATE SKIP
LOCKED, so two never recompute the same series at once and none waits for another.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

from hub.model import Reading
from hub.store.feed_codec import encode as encode_feed
from hub.store.postgres_read import PostgresDeadLetterWrites, PostgresQueries
from hub.store.postgres_schema import (
    DAY_MS,
    MAX_SLOT,
    MIGRATIONS,
    SCHEMA_VERSION,
    SLOT_BITS,
    partition_name,
)
from hub.store.sqlite import (
    HOUR_MS,
    MINUTE_MS,
    Batch,
    CommitResult,
    DeadLetter,
    DeadLetterLimits,
    StoreError,
    tags_key,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Advisory lock keys (pg_advisory_*): one number per purpose, fixed so every worker agrees.
LOCK_MIGRATE = 0x6875_6201
LOCK_PARTITIONS = 0x6875_6202
COPY_FROM = 1000  # samples per batch from which COPY is faster (bench/pg_insert.py)


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    host, port, name = info.get("host", ""), info.get("port", ""), info.get("dbname", "")
    return f"postgresql://{info.get('user', '')}@{host}{':' + str(port) if port else ''}/{name}"


class PostgresStore(PostgresQueries, PostgresDeadLetterWrites):
    """The hub's store in PostgreSQL. `client` names this worker's MQTT session (receipts).
    The queries and dead-letter tools are in hub.store.postgres_read."""

    def __init__(
        self, url: str, *, client: str = "hub", dead_letters: DeadLetterLimits | None = None,
        connect_timeout: float = 10.0,
    ) -> None:  # fmt: skip
        self.url = url
        self.client = client
        self.dead_letter_limits = dead_letters or DeadLetterLimits()
        self.dead_letters_dropped = 0
        self.dead_letters_repeated = 0
        self.connect_timeout = connect_timeout
        try:
            self.conn = self._connect()
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot connect to the store at {redact(url)}: {exc}") from exc
        self._lock = threading.RLock()
        self._series: dict[tuple[str, str, str], int] = {}
        self._new_series: list[tuple[str, str, str]] = []
        self._partitions: set[int] = set()
        self._migrate()
        for sid, device, metric, tags in self.conn.execute(
            "SELECT id, device, metric, tags FROM series"
        ):
            self._series[(device, metric, tags)] = sid

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout))
        )

    def _usable(self) -> psycopg.Connection[Any]:
        """The connection, opened again when the server dropped it (a restart, a failover):
        the call fails with psycopg.OperationalError while it cannot, and ingest retries."""
        if self.conn.closed or self.conn.broken:
            log.warning("Reconnecting to the store at %s", redact(self.url))
            self.conn = self._connect()
        return self.conn

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def forget_cache(self) -> None:
        """Forget the series ids and partitions known: after a transaction on a connection
        not this store's (the leader's, hub.derive.leader) was rolled back."""
        with self._lock:
            self._series.clear()
            self._partitions.clear()

    def _migrate(self) -> None:
        with self._lock, self.conn.transaction():
            # Several workers start at once: one migrates, the others wait and find it done.
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_MIGRATE,))
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{redact(self.url)} was written by a newer hub (schema {version}, this hub "
                    f"knows {SCHEMA_VERSION}). Upgrade the hub, or point store.url elsewhere."
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS.get(target, ()):
                    self.conn.execute(statement)
                self.conn.execute(
                    "INSERT INTO meta VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(target),),
                )
                log.info("Store %s upgraded to schema %d", redact(self.url), target)

    def seq_base(self) -> int:
        """This worker's first `seq` for readings stamped on receipt (see postgres_schema)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO workers (client) VALUES (%s) ON CONFLICT (client) DO NOTHING",
                (self.client,),
            )
            row = conn.execute(
                "SELECT slot FROM workers WHERE client=%s", (self.client,)
            ).fetchone()
        slot = int(row[0]) if row else 0
        if not 0 < slot <= MAX_SLOT:
            raise StoreError(
                f"worker slot {slot} of {self.client!r} is out of range (1..{MAX_SLOT}): more "
                "client ids have joined this store than it can tell apart; delete unused rows "
                "of the workers table"
            )
        return slot << SLOT_BITS

    @property
    def schema_version(self) -> int:
        return int(self._one("SELECT value FROM meta WHERE key='schema_version'"))

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """The first column of the one row `sql` returns."""
        row = self.conn.execute(sql, args).fetchone()
        if row is None:
            raise StoreError(f"no row from {sql!r}")
        return row[0]

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            try:
                conn = self._usable()
                with conn.transaction():
                    yield conn
            except BaseException:
                # Ids of series created by a rolled-back transaction were never stored.
                for key in self._new_series:
                    self._series.pop(key, None)
                raise
            finally:
                self._new_series.clear()

    # -- partitions -----------------------------------------------------------------------------

    def ensure_partitions(self, conn: psycopg.Connection[Any], days: set[int]) -> None:
        """Create the day partitions (day start in ms) that do not exist yet."""
        missing = days - self._partitions
        if not missing:
            return
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_PARTITIONS,))
        existing = {
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'samples'"
            )
        }
        for day in sorted(missing):
            name = partition_name(day)
            if name not in existing:
                conn.execute(
                    f"CREATE TABLE {name} PARTITION OF samples "
                    f"FOR VALUES FROM ({day}) TO ({day + DAY_MS})"
                )
        # Only remembered once committed would be exact; a rollback re-checks next time.
        self._partitions |= missing

    def create_partitions_ahead(self, now_ms: int, days_ahead: int = 2) -> None:
        """Today's and the next days' partitions, so the first batch of a day needs no DDL."""
        today = now_ms // DAY_MS * DAY_MS
        with self.transaction() as conn:
            self.ensure_partitions(conn, {today + i * DAY_MS for i in range(days_ahead + 1)})

    def partitions(self) -> list[str]:
        return sorted(
            r[0]
            for r in self.conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'samples'"
            )
        )

    # -- writes ---------------------------------------------------------------------------------

    def _series_id(
        self, conn: psycopg.Connection[Any], r: Reading, key: tuple[str, str, str]
    ) -> int:
        row = conn.execute(
            "INSERT INTO series (device, metric, tags, unit, source, first_ts) "
            "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (device, metric, tags) DO NOTHING RETURNING id",
            (*key, r.unit, r.source, r.timestamp_ms),
        ).fetchone()
        if row is None:  # another worker (or an earlier run) made it
            row = conn.execute(
                "SELECT id FROM series WHERE device=%s AND metric=%s AND tags=%s", key
            ).fetchone()
            assert row is not None
        self._series[key] = int(row[0])
        self._new_series.append(key)
        return int(row[0])

    def commit(self, batch: Batch) -> CommitResult:
        """Write a whole batch in one transaction; returns what was new."""
        if batch.writes:
            # Deriver records are SQL written for SQLite connections (RC sessions); they are
            # not translated: refusing is better than storing half a batch.
            raise StoreError(
                "derived records (batch.writes) are not supported by the PostgreSQL store yet"
            )
        for attempt in range(2):
            try:
                with self.transaction() as conn:
                    return self._write(conn, batch)
            except psycopg.errors.CheckViolation:
                # "no partition of relation samples found": a partition was dropped by
                # retention on another worker since we cached it. Forget and recreate.
                if attempt:
                    raise
                self._partitions.clear()
        raise AssertionError("unreachable")

    def _write(self, conn: psycopg.Connection[Any], batch: Batch) -> CommitResult:
        sids: list[int] = []
        tss: list[int] = []
        seqs: list[int] = []
        values: list[float] = []
        dirty: dict[int, int] = {}
        last: dict[int, tuple[int, float]] = {}
        touched: dict[str, int] = {}
        days: set[int] = set()
        series = self._series
        series_keys = [
            (r.device, r.metric, tags_key(r.tags) if r.tags else "") for r in batch.readings
        ]
        missing: dict[tuple[str, str, str], Reading] = {}
        for key, r in zip(series_keys, batch.readings, strict=True):
            if key not in series and key not in missing:
                missing[key] = r
        # New series in one order for every worker: two batches creating the same two series
        # in opposite orders would each wait for the other's unique-index entry (a deadlock).
        for key in sorted(missing):
            self._series_id(conn, missing[key], key)
        for key, r in zip(series_keys, batch.readings, strict=True):
            sid = series[key]
            ts = r.timestamp_ms
            sids.append(sid)
            tss.append(ts)
            seqs.append(r.seq)
            values.append(float(r.value))
            days.add(ts // DAY_MS * DAY_MS)
            if ts < dirty.get(sid, ts + 1):
                dirty[sid] = ts
            previous = last.get(sid)
            if previous is None or ts >= previous[0]:
                last[sid] = (ts, float(r.value))
            if ts > touched.get(r.device, 0):
                touched[r.device] = ts
        stored = 0
        if sids:
            self.ensure_partitions(conn, days)
            stored = self._insert_samples(conn, sids, tss, seqs, values)
            keys = sorted(dirty)  # one lock order for every worker: no deadlocks
            conn.execute(
                "INSERT INTO rollup_dirty (series_id, from_ts) "
                "SELECT * FROM unnest(%s::bigint[], %s::bigint[]) ON CONFLICT (series_id) "
                "DO UPDATE SET from_ts = least(rollup_dirty.from_ts, excluded.from_ts)",
                (keys, [dirty[k] for k in keys]),
            )
            conn.execute(
                "UPDATE series s SET last_ts = u.ts, last_value = u.value "
                "FROM unnest(%s::bigint[], %s::bigint[], %s::float8[]) AS u(id, ts, value) "
                "WHERE s.id = u.id AND (s.last_ts IS NULL OR s.last_ts <= u.ts)",
                (keys, [last[k][0] for k in keys], [last[k][1] for k in keys]),
            )
        events = 0
        if batch.events:
            cur = conn.execute(
                "INSERT INTO events (device, name, text, ts, source, seq) SELECT * FROM "
                "unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::int[]) "
                "ON CONFLICT DO NOTHING",
                (
                    [e.device for e in batch.events], [e.name for e in batch.events],
                    [e.text for e in batch.events], [e.timestamp_ms for e in batch.events],
                    [e.source for e in batch.events], [e.seq for e in batch.events],
                ),
            )  # fmt: skip
            events = max(cur.rowcount, 0)
            for e in batch.events:
                if e.timestamp_ms > touched.get(e.device, 0):
                    touched[e.device] = e.timestamp_ms
        for device in batch.devices:
            conn.execute(
                "INSERT INTO devices (name, source, kind, manufacturer, model, sw_version, identifiers) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (name) DO UPDATE SET source=excluded.source, "
                "kind=excluded.kind, manufacturer=coalesce(excluded.manufacturer, devices.manufacturer), "
                "model=coalesce(excluded.model, devices.model), "
                "sw_version=coalesce(excluded.sw_version, devices.sw_version), identifiers=excluded.identifiers",
                (device.name, device.source, device.kind, device.manufacturer, device.model,
                 device.sw_version, ",".join(device.identifiers)),
            )  # fmt: skip
        for name in sorted(touched):
            conn.execute(
                "INSERT INTO devices (name, first_seen, last_seen) VALUES (%s,%s,%s) "
                "ON CONFLICT (name) DO UPDATE SET last_seen=greatest(coalesce(devices.last_seen, 0), "
                "excluded.last_seen), first_seen=coalesce(devices.first_seen, excluded.first_seen)",
                (name, touched[name], touched[name]),
            )
        for name, online, ts in batch.availability:
            conn.execute(
                "INSERT INTO devices (name, online, availability_ts) VALUES (%s,%s,%s) "
                "ON CONFLICT (name) DO UPDATE SET online=excluded.online, availability_ts=excluded.availability_ts",
                (name, int(online), ts),
            )
        for state_topic, config_topic, entity_json in batch.entities:
            if entity_json is None:
                conn.execute("DELETE FROM esphome_entities WHERE config_topic=%s", (config_topic,))
            else:
                conn.execute(
                    "INSERT INTO esphome_entities VALUES (%s,%s,%s) ON CONFLICT (state_topic) "
                    "DO UPDATE SET config_topic=excluded.config_topic, entity=excluded.entity",
                    (state_topic, config_topic, entity_json),
                )
        if batch.receipts:
            latest = {mid: (digest, ts, seq) for mid, digest, ts, seq in batch.receipts}
            mids = sorted(latest)
            conn.execute(
                "INSERT INTO mqtt_receipts (client, mid, digest, received_ts, seq) "
                "SELECT %s, * FROM unnest(%s::int[], %s::bigint[], %s::bigint[], %s::int[]) "
                "ON CONFLICT (client, mid) DO UPDATE SET digest=excluded.digest, "
                "received_ts=excluded.received_ts, seq=excluded.seq",
                (self.client, mids, [latest[m][0] for m in mids], [latest[m][1] for m in mids],
                 [latest[m][2] for m in mids]),
            )  # fmt: skip
        kept = self._write_dead_letters(conn, batch.dead_letters) if batch.dead_letters else 0
        feed = encode_feed(batch)
        if feed is not None:  # for the leader's singletons: a row iff this batch commits
            conn.execute("INSERT INTO feed (payload) VALUES (%s)", (feed,))
        return CommitResult(stored, len(sids) - stored, events, kept)

    def _insert_samples(
        self, conn: psycopg.Connection[Any], sids: list[int], tss: list[int], seqs: list[int],
        values: list[float],
    ) -> int:  # fmt: skip
        """Insert samples, skipping keys already stored; returns how many were new.

        bench/pg_insert.py: from about a thousand rows COPY into a temporary table and one
        INSERT ... SELECT ON CONFLICT DO NOTHING is fastest (204,000 rows/s against 143,000
        for unnest and 114,000 for pipelined executemany, batches of 2,000); for small
        batches all three are equal, and unnest is one statement instead of three."""
        if len(sids) < COPY_FROM:
            cur = conn.execute(
                "INSERT INTO samples (series_id, ts, seq, value) "
                "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::int[], %s::float8[]) "
                "ON CONFLICT DO NOTHING",
                (sids, tss, seqs, values),
            )
            return max(cur.rowcount, 0)
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS samples_in (series_id BIGINT, ts BIGINT, seq INT, "
            "value FLOAT8) ON COMMIT DELETE ROWS"
        )
        with conn.cursor() as cur:
            with cur.copy("COPY samples_in FROM STDIN") as out:
                for row in zip(sids, tss, seqs, values, strict=True):
                    out.write_row(row)
            cur.execute("INSERT INTO samples SELECT * FROM samples_in ON CONFLICT DO NOTHING")
            return max(cur.rowcount, 0)

    def _write_dead_letters(
        self, conn: psycopg.Connection[Any], letters: Sequence[DeadLetter]
    ) -> int:
        """As in SQLite: payloads cut to max_payload (length and SHA-256 kept), a retained
        message kept once, and the oldest dropped when all payloads pass max_bytes (counted
        in the database: several workers share the bound)."""
        limits = self.dead_letter_limits
        rows = []
        for d in letters:
            payload = d.payload
            digest = hashlib.sha256(payload).hexdigest() if payload is not None else None
            if (
                d.retained
                and digest is not None
                and conn.execute(
                    "SELECT 1 FROM dead_letters WHERE payload_sha256=%s AND topic IS NOT DISTINCT FROM %s "
                    "AND reason=%s",
                    (digest, d.topic, d.reason),
                ).fetchone()
            ):
                self.dead_letters_repeated += 1
                continue
            size = len(payload) if payload is not None else None
            if payload is not None and len(payload) > limits.max_payload:
                payload = payload[: limits.max_payload]
            rows.append(
                (d.received_ms, d.source, d.topic, d.reason, d.detail, payload, size, digest)
            )
        if rows:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO dead_letters (received_ts, source, topic, reason, detail, payload, "
                    "payload_bytes, payload_sha256) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                    rows,
                )
            # Oldest first until the rest fit: a running sum from the newest down.
            cur2 = conn.execute(
                "DELETE FROM dead_letters WHERE id IN (SELECT id FROM (SELECT id, sum(coalesce("
                "length(payload), 0)) OVER (ORDER BY id DESC) AS newer FROM dead_letters) t "
                "WHERE newer > %s)",
                (limits.max_bytes,),
            )
            if cur2.rowcount > 0:
                self.dead_letters_dropped += cur2.rowcount
                log.warning(
                    "Dead letters passed store.dead_letters.max_bytes (%d bytes): dropped the %d oldest",
                    limits.max_bytes, cur2.rowcount,
                )  # fmt: skip
        return len(rows)

    # -- reads the ingest path needs ------------------------------------------------------------

    def receipt(self, mid: int, digest: int) -> tuple[int, int] | None:
        row = (
            self._usable()
            .execute(
                "SELECT received_ts, seq FROM mqtt_receipts WHERE client=%s AND mid=%s AND digest=%s",
                (self.client, mid, digest),
            )
            .fetchone()
        )
        return (int(row[0]), int(row[1])) if row else None

    def fresh(
        self, readings: Sequence[Reading], claimed: set[tuple[object, int, int]] | None = None
    ) -> list[Reading]:
        """The readings a commit would insert (see Store.fresh). With several workers it is
        exact only for one worker's own stream: a shared subscription hands each message to
        one worker, so two workers do not hold the same reading unless it is redelivered."""
        taken: set[tuple[object, int, int]] = set() if claimed is None else claimed
        keys = [(r.device, r.metric, tags_key(r.tags) if r.tags else "") for r in readings]
        spans: dict[int, list[int]] = {}
        key_of: dict[int, tuple[str, str, str]] = {}
        for r, key in zip(readings, keys, strict=True):
            sid = self._series.get(key)
            if sid is None:
                continue
            span = spans.setdefault(sid, [r.timestamp_ms, r.timestamp_ms])
            key_of[sid] = key
            span[0] = min(span[0], r.timestamp_ms)
            span[1] = max(span[1], r.timestamp_ms)
        stored: set[tuple[object, int, int]] = set()
        for sid, (low, high) in spans.items():
            for ts, seq in self._usable().execute(
                "SELECT ts, seq FROM samples WHERE series_id=%s AND ts BETWEEN %s AND %s",
                (sid, low, high),
            ):
                stored.add((key_of[sid], ts, seq))
        out = []
        for r, key in zip(readings, keys, strict=True):
            sample_key = (key, r.timestamp_ms, r.seq)
            if sample_key in stored or sample_key in taken:
                continue
            taken.add(sample_key)
            out.append(r)
        return out

    def last_value(self, reading: Reading) -> float | None:
        sid = self._series.get((reading.device, reading.metric, tags_key(reading.tags)))
        if sid is None:
            return None
        row = (
            self._usable()
            .execute(
                "SELECT value FROM samples WHERE series_id=%s ORDER BY ts DESC, seq DESC LIMIT 1",
                (sid,),
            )
            .fetchone()
        )
        return float(row[0]) if row else None

    def last_event_text(self, device: str, name: str) -> str | None:
        row = (
            self._usable()
            .execute(
                "SELECT text FROM events WHERE device=%s AND name=%s ORDER BY ts DESC, seq DESC LIMIT 1",
                (device, name),
            )
            .fetchone()
        )
        return str(row[0]) if row else None

    def load_entities(self) -> list[tuple[str, str, str]]:
        return [
            (str(a), str(b), str(c))
            for a, b, c in self._usable().execute(
                "SELECT state_topic, config_topic, entity FROM esphome_entities"
            )
        ]

    # -- rollups and retention ------------------------------------------------------------------

    def rollup(self, raw_cutoff_ms: int = 0, max_series: int | None = None) -> int:
        """Recompute the 1-minute and 1-hour buckets new samples touched (see Store.rollup).

        Dirty series are claimed with FOR UPDATE SKIP LOCKED: workers running this at once
        share the work instead of queueing on each other."""
        with self.transaction() as conn:
            dirty = conn.execute(
                "DELETE FROM rollup_dirty WHERE series_id IN (SELECT series_id FROM rollup_dirty "
                "ORDER BY series_id FOR UPDATE SKIP LOCKED LIMIT %s) RETURNING series_id, from_ts",
                (max_series,),
            ).fetchall()
            for sid, from_ts in dirty:
                start = max(from_ts, raw_cutoff_ms) // MINUTE_MS * MINUTE_MS
                conn.execute(
                    "INSERT INTO rollup_1m SELECT series_id, ts / %(m)s * %(m)s, min(value), max(value), "
                    "sum(value), count(*) FROM samples WHERE series_id = %(s)s AND ts >= %(t)s GROUP BY 1, 2 "
                    "ON CONFLICT (series_id, bucket) DO UPDATE SET min=excluded.min, max=excluded.max, "
                    "sum=excluded.sum, count=excluded.count",
                    {"m": MINUTE_MS, "s": sid, "t": start},
                )
                conn.execute(
                    "INSERT INTO rollup_1h SELECT series_id, bucket / %(h)s * %(h)s, min(min), max(max), "
                    "sum(sum), sum(count) FROM rollup_1m WHERE series_id = %(s)s AND bucket >= %(t)s "
                    "GROUP BY 1, 2 ON CONFLICT (series_id, bucket) DO UPDATE SET min=excluded.min, "
                    "max=excluded.max, sum=excluded.sum, count=excluded.count",
                    {"h": HOUR_MS, "s": sid, "t": start // HOUR_MS * HOUR_MS},
                )
            return len(dirty)

    def apply_retention(
        self, now_ms: int, raw_s: float, minute_s: float, hour_s: float
    ) -> dict[str, int]:
        """As Store.apply_retention; raw samples go by whole day partitions first (a DROP,
        not a DELETE of millions of rows), then the rows of the cut-off day before the cutoff."""
        deleted: dict[str, int] = {}
        with self.transaction() as conn:
            if raw_s > 0:
                cutoff = now_ms - int(raw_s * 1000)
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_PARTITIONS,))
                count = 0
                for name in self.partitions():
                    day = int(name.removeprefix("samples_d")) * DAY_MS
                    if day + DAY_MS <= cutoff:
                        count += int(self._one(f"SELECT count(*) FROM {name}"))
                        conn.execute(f"DROP TABLE {name}")
                        self._partitions.discard(day)
                cur = conn.execute("DELETE FROM samples WHERE ts < %s", (cutoff,))
                deleted["samples"] = count + max(cur.rowcount, 0)
            for table, keep in (("rollup_1m", minute_s), ("rollup_1h", hour_s)):
                if keep > 0:
                    cur = conn.execute(
                        f"DELETE FROM {table} WHERE bucket < %s", (now_ms - int(keep * 1000),)
                    )
                    deleted[table] = max(cur.rowcount, 0)
        return deleted

    # -- queries --------------------------------------------------------------------------------


class PostgresWriter:
    """The store thread of a worker: ingest commits and the leader's rollups and retention
    run one after another on the store's one connection (as StoreWriter does for SQLite)."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-store")
        self._closed = False

    @property
    def store(self) -> PostgresStore:
        return self._store

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """From any thread: queue `fn(*args)` behind the work already queued."""
        return self._executor.submit(fn, *args)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        self._store.close()


def wait_ready(url: str, seconds: float = 10.0) -> None:
    """Until a connection succeeds (a server just started), else the last error."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
