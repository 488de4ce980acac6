"""The embedded time-series store: SQLite in WAL mode, no set-up.

Tables: `series` (catalog: device, metric, tags, unit, last value), `samples` keyed by
(series, timestamp) so a redelivered message lands on its own row again instead of beside
it, `rollup_1m` and `rollup_1h` (min/max/sum/count) for long ranges, `events` for text states,
`devices`, `dead_letters` (what was refused, with the reason and the raw payload),
`esphome_entities` (what discovery taught us; it must survive restarts because queued
states arrive before the retained discovery is re-sent), `mqtt_receipts` (receive times of
the last messages per packet id, so a message redelivered after a crash gets the same
timestamp and deduplicates even when its payload carries none), and the InfluxDB outbox
(hub.store.outbox: a trigger queues every new sample in the transaction that stores it).

All writes of one batch go in one transaction (`commit`). One connection, used from one
thread at a time (the ingest core's store thread); readers open their own connections.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from hub.model import DeviceInfo, Event, Reading
from hub.store import outbox, sessions

if TYPE_CHECKING:
    from hub.bus.router import Decoded

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
# What each schema version added, applied in order to an older store (the version is in meta).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        # Bounded dead letters: the payload is kept up to a size, with its full length and hash.
        "ALTER TABLE dead_letters ADD COLUMN payload_bytes INTEGER",
        "ALTER TABLE dead_letters ADD COLUMN payload_sha256 TEXT",
        "UPDATE dead_letters SET payload_bytes = length(payload) WHERE payload IS NOT NULL",
    ),
    3: (
        # `seq`, the order of a series' readings within one millisecond, joins the sample and
        # event keys (docs/mqtt.md, "Timestamps"): both tables are rebuilt with seq 0. The
        # outbox trigger goes with the old samples table; _migrate creates it again.
        """CREATE TABLE samples_seq (
            series_id INTEGER NOT NULL, ts INTEGER NOT NULL,
            seq INTEGER NOT NULL DEFAULT 0, value REAL NOT NULL,
            PRIMARY KEY (series_id, ts, seq)
        ) WITHOUT ROWID""",
        "INSERT INTO samples_seq (series_id, ts, seq, value) SELECT series_id, ts, 0, value FROM samples",
        "DROP TABLE samples",
        "ALTER TABLE samples_seq RENAME TO samples",
        """CREATE TABLE events_seq (
            id INTEGER PRIMARY KEY,
            device TEXT NOT NULL, name TEXT NOT NULL, text TEXT NOT NULL,
            ts INTEGER NOT NULL, source TEXT, seq INTEGER NOT NULL DEFAULT 0,
            UNIQUE (device, name, ts, seq)
        )""",
        "INSERT INTO events_seq (id, device, name, text, ts, source, seq) "
        "SELECT id, device, name, text, ts, source, 0 FROM events",
        "DROP TABLE events",
        "ALTER TABLE events_seq RENAME TO events",
        "ALTER TABLE mqtt_receipts ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
    ),
}
MINUTE_MS = 60_000
HOUR_MS = 3_600_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '',
    unit TEXT,
    source TEXT,
    first_ts INTEGER,
    last_ts INTEGER,
    last_value REAL,
    UNIQUE (device, metric, tags)
);
CREATE INDEX IF NOT EXISTS series_metric ON series (metric, device);
CREATE TABLE IF NOT EXISTS samples (
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    value REAL NOT NULL,
    PRIMARY KEY (series_id, ts, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1m (
    series_id INTEGER NOT NULL, bucket INTEGER NOT NULL,
    min REAL NOT NULL, max REAL NOT NULL, sum REAL NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1h (
    series_id INTEGER NOT NULL, bucket INTEGER NOT NULL,
    min REAL NOT NULL, max REAL NOT NULL, sum REAL NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_dirty (series_id INTEGER PRIMARY KEY, from_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL, name TEXT NOT NULL, text TEXT NOT NULL,
    ts INTEGER NOT NULL, source TEXT, seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device, name, ts, seq)
);
CREATE TABLE IF NOT EXISTS devices (
    name TEXT PRIMARY KEY,
    source TEXT, kind TEXT,
    manufacturer TEXT, model TEXT, sw_version TEXT, identifiers TEXT,
    first_seen INTEGER, last_seen INTEGER,
    online INTEGER, availability_ts INTEGER
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    received_ts INTEGER NOT NULL,
    source TEXT NOT NULL,
    topic TEXT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB,
    replayed_ts INTEGER,
    payload_bytes INTEGER,
    payload_sha256 TEXT
);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (reason, id);
CREATE TABLE IF NOT EXISTS esphome_entities (
    state_topic TEXT PRIMARY KEY,
    config_topic TEXT NOT NULL,
    entity TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mqtt_receipts (
    mid INTEGER PRIMARY KEY,
    digest INTEGER NOT NULL,
    received_ts INTEGER NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0
);
"""


DEAD_LETTER_COLUMNS = (
    "id",
    "received_ts",
    "source",
    "topic",
    "reason",
    "detail",
    "payload",
    "replayed_ts",
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_ms: int
    source: str
    topic: str | None
    reason: str
    detail: str
    payload: bytes | None
    # A retained message comes back at every (re)subscribe: kept once, not once per restart.
    retained: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetterLimits:
    """How much the dead letters may hold (store.dead_letters in hub.yaml)."""

    max_payload: int = 65536  # larger payloads keep their first bytes, length and SHA-256
    max_bytes: int = 64 * 1024 * 1024  # all payloads together; the oldest go first
    retention_s: float = 30 * 86400.0  # 0 keeps them until the size cap needs room


@dataclass(slots=True)
class Batch:
    """Everything one transaction writes."""

    readings: list[Reading] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    devices: list[DeviceInfo] = field(default_factory=list)
    availability: list[tuple[str, bool, int]] = field(default_factory=list)
    entities: list[tuple[str, str, str | None]] = field(
        default_factory=list
    )  # state, config, json|None
    receipts: list[tuple[int, int, int, int]] = field(default_factory=list)  # mid, digest, ts, seq
    # Records a deriver persists atomically with the readings (closed RC sessions, ...).
    writes: list[Callable[[sqlite3.Connection], None]] = field(default_factory=list)

    def add(self, decoded: Decoded) -> None:
        """Everything one decoded message carries: the one place a message becomes rows
        (ingest, the API's replay and `hub deadletters replay` all use it)."""
        if decoded.readings:
            self.readings.extend(decoded.readings)
        if decoded.events:
            self.events.extend(decoded.events)
        if decoded.availability:
            self.availability.extend(decoded.availability)
        if decoded.devices:
            self.devices.extend(decoded.devices)
        for found in decoded.discoveries:
            if found.entity is not None:
                entity_json = orjson.dumps(dataclasses.asdict(found.entity)).decode()
                self.entities.append((found.entity.state_topic, found.config_topic, entity_json))
            else:
                self.entities.append(("", found.config_topic, None))


@dataclass(frozen=True, slots=True)
class CommitResult:
    stored: int
    duplicates: int
    events: int
    dead_letters: int


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    id: int
    device: str
    metric: str
    tags: Mapping[str, str]
    unit: str | None
    source: str | None
    first_ts: int | None
    last_ts: int | None
    last_value: float | None


@dataclass(frozen=True, slots=True)
class Point:
    """One bucket of a query: time (ms), mean, min, max and how many samples it holds."""

    ts: int
    mean: float
    min: float
    max: float
    count: int


@dataclass(frozen=True, slots=True)
class SeriesPoints:
    series: SeriesInfo
    resolution: str  # raw, 1m, 1h
    points: list[Point]


NO_SAMPLE = -(2**63)
PARAMETERS_PER_STATEMENT = 900  # under SQLite's 999 limit of old builds


def insert_rows(
    conn: sqlite3.Connection, head: str, rows: Sequence[tuple[Any, ...]], width: int
) -> int:
    """INSERT many rows with multi-row VALUES statements; returns rows changed.

    executemany steps once per row, and the sqlite3 module releases the GIL at every step:
    with paho's thread busy on the other side, each hand-back waits its turn, and a batch of
    10,000 rows took a second. A few hundred rows per statement keeps it to a few hand-offs.
    """
    total = 0
    per_statement = PARAMETERS_PER_STATEMENT // width
    one = "(" + ",".join("?" * width) + ")"
    full_sql = f"{head} VALUES {','.join([one] * per_statement)}"
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        sql = (
            full_sql
            if len(chunk) == per_statement
            else f"{head} VALUES {','.join([one] * len(chunk))}"
        )
        params = [value for row in chunk for value in row]
        total += max(conn.execute(sql, params).rowcount, 0)
    return total


def message_digest(topic: str, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(topic.encode())) ^ (len(payload) << 32)


def tags_key(tags: Mapping[str, str]) -> str:
    if not tags:
        return ""
    return orjson.dumps(dict(sorted(tags.items()))).decode()


def private_files(path: Path) -> None:
    """The store's folder 0700, the store 0600 (made so before SQLite opens it).

    The store holds raw payloads (dead letters) and everything the devices said; SQLite would
    make it 0644. Its -wal and -shm files take the store's mode, and existing ones (from an
    earlier version) are tightened too.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = path.parent.resolve()
    # A data_dir of "." or ~ is the user's own folder, not the hub's: left as it is.
    if folder not in (Path.cwd().resolve(), Path.home().resolve()):
        with contextlib.suppress(OSError):  # not ours to change (a shared mount)
            if folder.stat().st_mode & 0o077:
                folder.chmod(0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(OSError):
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)


def connect(
    path: Path, synchronous: str = "full", readonly: bool = False, busy_timeout: float = 10.0
) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=10
        )
    else:
        private_files(path)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        # After a checkpoint the WAL is cut back to 4 MiB: a burst (a backlog, a dead-letter
        # flood) must not leave a WAL the size of the burst on disk for good.
        conn.execute("PRAGMA journal_size_limit=4194304")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-8000")  # 8 MB: the hot pages are the newest
    return conn


# Tables that only a hub store has: a file holding none of them belongs to something else.
HUB_TABLES = frozenset(
    {
        "meta",
        "series",
        "samples",
        "dead_letters",
        "rc_sessions",
        "alerts",
        "mqtt_receipts",
        "devices",
    }
)


class StoreError(Exception):
    """The store cannot be used as it is (damaged, foreign, newer); the message says what to do."""


class StoreFull(sqlite3.OperationalError):
    """The low-disk guard refused a commit: less free space than `store.min_free`."""


# How the user gets out of a damaged store; part of every damage message.
RECOVERY_HINT = (
    "Stop the hub, run 'hub store check' to see what is damaged, then 'hub store recover' "
    "to copy everything intact into a new file (the damaged one is kept beside it)."
)


def open_checked(
    path: Path, synchronous: str = "full", check_seconds: float = 10.0, busy_timeout: float = 10.0
) -> sqlite3.Connection:
    """Open the writer connection and refuse a damaged or foreign file with a clear StoreError.

    A quick_check bounded in time runs first: on a big file it stops after `check_seconds`
    (the start is not held up for minutes) and says so; `hub store check` does the full one.
    """
    existed = path.exists() and path.stat().st_size > 0
    try:
        conn = connect(path, synchronous, busy_timeout=busy_timeout)
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"{path} is not a readable SQLite database ({exc}). {RECOVERY_HINT}"
        ) from exc
    if not existed:
        return conn
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and not tables & HUB_TABLES:
            conn.close()
            raise StoreError(
                f"{path} is a SQLite database, but not a hub store (none of the hub's tables; it holds "
                f"{', '.join(sorted(tables)[:5])}). Point store.path at the hub's own file, or "
                "move this one away."
            )
        problems = quick_check(conn, check_seconds)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path} is damaged ({exc}). {RECOVERY_HINT}") from exc
    if problems is None:
        log.warning(
            "Quick integrity check of %s stopped after %.0f s (a large store); "
            "run 'hub store check' for the full check", path, check_seconds,
        )  # fmt: skip
    elif problems:
        conn.close()
        shown = "; ".join(problems[:3]) + (
            f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        )
        raise StoreError(f"{path} is damaged: {shown}. {RECOVERY_HINT}")
    return conn


def quick_check(
    conn: sqlite3.Connection, seconds: float | None, full: bool = False
) -> list[str] | None:
    """Problems found by PRAGMA quick_check (or integrity_check), [] when sound.

    None when `seconds` ran out first (the check is interrupted through the progress handler).
    """
    deadline = time.monotonic() + seconds if seconds else None
    if deadline is not None:
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        rows = conn.execute("PRAGMA integrity_check" if full else "PRAGMA quick_check").fetchall()
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            return None
        raise
    finally:
        conn.set_progress_handler(None, 0)
    found = [line for r in rows for line in str(r[0]).splitlines() if line.strip()]
    found = [line for line in found if not line.startswith("***")]
    return [] if found == ["ok"] else found


class Store:
    """The hub's SQLite store. Writes through `commit`; queries for the CLI and the API."""

    def __init__(
        self, path: Path, synchronous: str = "full", *, check_seconds: float = 10.0,
        dead_letters: DeadLetterLimits | None = None, busy_timeout: float = 10.0,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        self.conn = open_checked(self.path, synchronous, check_seconds, busy_timeout)
        self._lock = threading.RLock()
        self.dead_letter_limits = dead_letters or DeadLetterLimits()
        # transaction() keeps these in step, and _migrate runs in transactions: they must
        # exist before it (an upgrade from schema 1 failed with AttributeError without this).
        self._series: dict[tuple[str, str, str], int] = {}
        self._new_series: list[tuple[str, str, str]] = []
        self._last: dict[int, tuple[int, float]] = {}
        # Series id -> a time no stored sample of it is newer than (read once per series,
        # then raised by every write; a rollback or a deletion leaves it high, which is safe).
        # fresh() skips its range read when a batch starts after it: a live stream's case.
        self._newest: dict[int, int] = {}
        try:
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StoreError(f"{self.path} is damaged ({exc}). {RECOVERY_HINT}") from exc
        except StoreError:
            self.conn.close()
            raise
        # _series: (device, metric, tags) -> id. _new_series: series created by the open
        # transaction, forgotten again if it rolls back, or the cache would hand out ids of
        # rows that were never stored. Both are set up before _migrate, above.
        self._tag_keys: dict[tuple[tuple[str, str], ...], str] = {}
        for row in self.conn.execute("SELECT id, device, metric, tags FROM series"):
            self._series[(row[1], row[2], row[3])] = row[0]
        self.dead_letter_bytes = stored_dead_letter_bytes(self.conn)
        self.dead_letters_dropped = 0
        self.dead_letters_repeated = 0

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def _migrate(self) -> None:
        from hub.alerts.store import SCHEMA as ALERTS_SCHEMA  # one owner for every table

        with self._lock:
            row = None
            if self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
            ).fetchone():
                row = self.conn.execute(
                    "SELECT value FROM meta WHERE key='schema_version'"
                ).fetchone()
            version = int(row[0]) if row is not None else None
            if version is not None and version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer hub (schema {version}, this hub knows "
                    f"{SCHEMA_VERSION}). Upgrade the hub, or point store.path at another file."
                )
            self.conn.executescript(_SCHEMA)
            self.conn.executescript(sessions.SCHEMA)
            # The InfluxDB outbox: filled by a trigger on samples, in the same transaction.
            self.conn.executescript(outbox.SCHEMA)
            self.conn.executescript(ALERTS_SCHEMA)
            if version is None:
                self.conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            else:
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    with self.transaction() as conn:
                        for statement in MIGRATIONS.get(target, ()):
                            conn.execute(statement)
                        conn.execute(
                            "UPDATE meta SET value=? WHERE key='schema_version'", (str(target),)
                        )
                    log.info("Store %s upgraded to schema %d", self.path, target)
                self.conn.executescript(outbox.SCHEMA)  # triggers of rebuilt tables
            self.conn.execute(
                "CREATE INDEX IF NOT EXISTS dead_letters_digest ON dead_letters (payload_sha256)"
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (SQLITE_FULL, I/O errors): then a second
                # ROLLBACK would raise and hide the real error.
                if self.conn.in_transaction:
                    with suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                for key in self._new_series:
                    self._series.pop(key, None)
                self._last.clear()
                raise
            finally:
                self._new_series.clear()

    # -- writes -------------------------------------------------------------------------------

    def _tags_key(self, tags: Mapping[str, str]) -> str:
        items = tuple(tags.items())
        key = self._tag_keys.get(items)
        if key is None:
            key = tags_key(tags)
            if len(self._tag_keys) < 100_000:
                self._tag_keys[items] = key
        return key

    def _series_id(self, conn: sqlite3.Connection, r: Reading) -> int:
        key = (r.device, r.metric, tags_key(r.tags))
        series_id = self._series.get(key)
        if series_id is None:
            conn.execute(
                "INSERT OR IGNORE INTO series (device, metric, tags, unit, source, first_ts) VALUES (?,?,?,?,?,?)",
                (*key, r.unit, r.source, r.timestamp_ms),
            )
            series_id = conn.execute(
                "SELECT id FROM series WHERE device=? AND metric=? AND tags=?", key
            ).fetchone()[0]
            self._series[key] = series_id
            self._new_series.append(key)
        return series_id

    def commit(self, batch: Batch) -> CommitResult:
        """Write a whole batch in one transaction; returns what was new."""
        with self.transaction() as conn:
            return self._write(conn, batch)

    def _write(self, conn: sqlite3.Connection, batch: Batch) -> CommitResult:
        rows = []
        dirty: dict[int, int] = {}
        touched_devices: dict[str, int] = {}
        last = self._last
        newest = self._newest
        series_cache = self._series
        for r in batch.readings:
            key = (r.device, r.metric, self._tags_key(r.tags) if r.tags else "")
            series_id = series_cache.get(key)
            if series_id is None:
                series_id = self._series_id(conn, r)
            ts = r.timestamp_ms
            rows.append((series_id, ts, r.seq, r.value))
            if ts < dirty.get(series_id, ts + 1):
                dirty[series_id] = ts
            previous = last.get(series_id)
            if previous is None or ts >= previous[0]:
                last[series_id] = (ts, r.value)
            if ts > newest.get(series_id, ts):
                newest[series_id] = ts
            if ts > touched_devices.get(r.device, 0):
                touched_devices[r.device] = ts
        # rowcount, not total_changes: the outbox trigger's own inserts must not count.
        stored = insert_rows(
            conn, "INSERT OR IGNORE INTO samples (series_id, ts, seq, value)", rows, 4
        )
        if dirty:
            conn.executemany(
                "INSERT INTO rollup_dirty (series_id, from_ts) VALUES (?,?) "
                "ON CONFLICT (series_id) DO UPDATE SET from_ts=min(from_ts, excluded.from_ts)",
                dirty.items(),
            )
            conn.executemany(
                "UPDATE series SET last_ts=?, last_value=? WHERE id=? AND (last_ts IS NULL OR last_ts<=?)",
                [(last[s][0], last[s][1], s, last[s][0]) for s in dirty],
            )
        events = 0
        if batch.events:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO events (device, name, text, ts, source, seq) VALUES (?,?,?,?,?,?)",
                [(e.device, e.name, e.text, e.timestamp_ms, e.source, e.seq) for e in batch.events],
            )
            events = conn.total_changes - before
            for e in batch.events:
                if e.timestamp_ms > touched_devices.get(e.device, 0):
                    touched_devices[e.device] = e.timestamp_ms
        for device in batch.devices:
            conn.execute(
                "INSERT INTO devices (name, source, kind, manufacturer, model, sw_version, identifiers) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT (name) DO UPDATE SET source=excluded.source, "
                "kind=excluded.kind, manufacturer=coalesce(excluded.manufacturer, manufacturer), "
                "model=coalesce(excluded.model, model), sw_version=coalesce(excluded.sw_version, sw_version), "
                "identifiers=excluded.identifiers",
                (device.name, device.source, device.kind, device.manufacturer, device.model,
                 device.sw_version, ",".join(device.identifiers)),
            )  # fmt: skip
        if touched_devices:
            conn.executemany(
                "INSERT INTO devices (name, first_seen, last_seen) VALUES (?1,?2,?2) "
                "ON CONFLICT (name) DO UPDATE SET last_seen=max(coalesce(last_seen, 0), excluded.last_seen), "
                "first_seen=coalesce(first_seen, excluded.first_seen)",
                touched_devices.items(),
            )
        for name, online, ts in batch.availability:
            conn.execute(
                "INSERT INTO devices (name, online, availability_ts) VALUES (?,?,?) "
                "ON CONFLICT (name) DO UPDATE SET online=excluded.online, availability_ts=excluded.availability_ts",
                (name, int(online), ts),
            )
        for state_topic, config_topic, entity_json in batch.entities:
            if entity_json is None:
                conn.execute("DELETE FROM esphome_entities WHERE config_topic=?", (config_topic,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO esphome_entities VALUES (?,?,?)",
                    (state_topic, config_topic, entity_json),
                )
        if batch.receipts:
            insert_rows(
                conn,
                "INSERT OR REPLACE INTO mqtt_receipts (mid, digest, received_ts, seq)",
                batch.receipts,
                4,
            )
        for write in batch.writes:
            write(conn)
        kept = self._write_dead_letters(conn, batch.dead_letters) if batch.dead_letters else 0
        return CommitResult(stored, len(rows) - stored, events, kept)

    def keep_dead_letter(self, conn: sqlite3.Connection, letter: DeadLetter) -> int | None:
        """One dead letter, inside the caller's transaction, within the same bounds as a
        batch's (cut payload, size cap, oldest out first); its id, or None when the bounds
        kept it out. For writers other than ingest (the InfluxDB outbox's refusals)."""
        if not self._write_dead_letters(conn, [letter]):
            return None
        return int(conn.execute("SELECT max(id) FROM dead_letters").fetchone()[0])

    def _write_dead_letters(self, conn: sqlite3.Connection, letters: Sequence[DeadLetter]) -> int:
        """Keep dead letters within their bounds: payloads cut to `max_payload` (length and
        SHA-256 kept), a retained message already kept is not kept again, and the oldest go
        when the payloads together would pass `max_bytes`: room is made before the insert, so
        the file never holds more than the bound. Returns how many were kept."""
        limits = self.dead_letter_limits
        rows = []
        for d in letters:
            payload = d.payload
            digest = hashlib.sha256(payload).hexdigest() if payload is not None else None
            if (
                d.retained
                and digest is not None
                and conn.execute(
                    "SELECT 1 FROM dead_letters WHERE payload_sha256=? AND topic IS ? AND reason=?",
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
        # Of a batch larger than the bound itself, only the newest that fit are kept.
        incoming = 0
        keep_from = len(rows)
        while keep_from > 0:
            payload = rows[keep_from - 1][5]
            size = len(payload) if payload is not None else 0
            if incoming + size > limits.max_bytes:
                break
            incoming += size
            keep_from -= 1
        if keep_from:
            self.dead_letters_dropped += keep_from
            rows = rows[keep_from:]
        if self.dead_letter_bytes + incoming > limits.max_bytes:
            self._trim_dead_letters(conn, limits.max_bytes - incoming)
        if rows:
            conn.executemany(
                "INSERT INTO dead_letters (received_ts, source, topic, reason, detail, payload, "
                "payload_bytes, payload_sha256) VALUES (?,?,?,?,?,?,?,?)",
                rows,
            )
        self.dead_letter_bytes += incoming
        return len(rows)

    def _trim_dead_letters(self, conn: sqlite3.Connection, max_bytes: int) -> int:
        """Delete the oldest dead letters until their payloads fit in `max_bytes`."""
        excess = self.dead_letter_bytes - max_bytes
        dropped = 0
        freed = 0
        cursor = conn.execute(
            "SELECT id, coalesce(length(payload), 0) FROM dead_letters ORDER BY id"
        )
        doomed = []
        for letter_id, size in cursor:
            if freed >= excess:
                break
            doomed.append((letter_id,))
            freed += size
        cursor.close()
        if doomed:
            conn.executemany("DELETE FROM dead_letters WHERE id=?", doomed)
            dropped = len(doomed)
            self.dead_letter_bytes -= freed
            self.dead_letters_dropped += dropped
            log.warning(
                "Dead letters passed store.dead_letters.max_bytes (%d bytes): dropped the %d oldest",
                max_bytes, dropped,
            )  # fmt: skip
        return dropped

    def checkpoint(self, wal_limit: int = 4 * 1024 * 1024) -> bool:
        """Store thread, in the maintenance round: cut back a WAL a burst left large.

        Tried with a short busy timeout: a reader in the middle of a query makes it wait for
        the next round instead of holding up the commits behind it."""
        wal = Path(str(self.path) + "-wal")
        try:
            if wal.stat().st_size <= wal_limit:
                return False
        except OSError:
            return False
        timeout = self.conn.execute("PRAGMA busy_timeout").fetchone()[0]
        self.conn.execute("PRAGMA busy_timeout=200")
        try:
            busy = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            self.conn.execute(f"PRAGMA busy_timeout={int(timeout)}")
        return not busy

    def expire_dead_letters(self, now_ms: int) -> int:
        """Retention of dead letters by age (store thread, in the maintenance round)."""
        keep = self.dead_letter_limits.retention_s
        if keep <= 0:
            return 0
        with self.transaction() as conn:
            cutoff = now_ms - int(keep * 1000)
            freed = conn.execute(
                "SELECT coalesce(sum(length(payload)), 0), count(*) FROM dead_letters WHERE received_ts < ?",
                (cutoff,),
            ).fetchone()
            if freed[1]:
                conn.execute("DELETE FROM dead_letters WHERE received_ts < ?", (cutoff,))
                self.dead_letter_bytes -= int(freed[0])
            return int(freed[1])

    def receipt(self, mid: int, digest: int) -> tuple[int, int] | None:
        """The key (receive time, seq) a redelivered message got when we committed it before."""
        row = self.conn.execute(
            "SELECT received_ts, seq FROM mqtt_receipts WHERE mid=? AND digest=?", (mid, digest)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def fresh(
        self, readings: Sequence[Reading], claimed: set[tuple[object, int, int]] | None = None
    ) -> list[Reading]:
        """The readings a commit would insert: those whose sample key is not stored yet, and
        of equal keys the first (as INSERT OR IGNORE keeps it). `claimed` holds the keys
        already taken in this batch and is extended.

        Asked before the commit, so derivations and listeners see only new readings, and
        only once even when the commit is retried. Exact because the store thread is the only
        writer. One range read per series, and none for a series whose batch starts after its
        newest stored sample (a live stream).
        """
        taken: set[tuple[object, int, int]] = set() if claimed is None else claimed
        series_cache = self._series
        keys: list[tuple[str, str, str]] = []
        spans: dict[int, list[int]] = {}
        key_of: dict[int, tuple[str, str, str]] = {}
        for r in readings:
            key = (r.device, r.metric, self._tags_key(r.tags) if r.tags else "")
            keys.append(key)
            series_id = series_cache.get(key)
            if series_id is not None:
                span = spans.get(series_id)
                ts = r.timestamp_ms
                if span is None:
                    spans[series_id] = [ts, ts]
                    key_of[series_id] = key
                elif ts < span[0]:
                    span[0] = ts
                elif ts > span[1]:
                    span[1] = ts
        stored: set[tuple[object, int, int]] = set()
        newest = self._newest
        for series_id, (low, high) in spans.items():
            after = newest.get(series_id)
            if after is None:
                (after,) = self.conn.execute(
                    "SELECT max(ts) FROM samples WHERE series_id=?", (series_id,)
                ).fetchone()
                after = newest[series_id] = NO_SAMPLE if after is None else int(after)
                if len(newest) > 200_000:  # bounded like the caches: forget, read again
                    newest.clear()
            if low > after:
                continue
            found = self.conn.execute(
                "SELECT ts, seq FROM samples WHERE series_id=? AND ts BETWEEN ? AND ?",
                (series_id, low, high),
            ).fetchall()
            if found:
                series_key = key_of[series_id]
                stored.update((series_key, ts, seq) for ts, seq in found)
        out = []
        for r, key in zip(readings, keys, strict=True):
            sample_key = (key, r.timestamp_ms, r.seq)
            if sample_key in stored or sample_key in taken:
                continue
            taken.add(sample_key)
            out.append(r)
        return out

    def last_value(self, reading: Reading) -> float | None:
        """The value of the newest stored sample of `reading`'s series (None: no sample)."""
        key = (reading.device, reading.metric, tags_key(reading.tags))
        series_id = self._series.get(key)
        if series_id is None:
            return None
        row = self.conn.execute(
            "SELECT value FROM samples WHERE series_id=? ORDER BY ts DESC, seq DESC LIMIT 1",
            (series_id,),
        ).fetchone()
        return float(row[0]) if row else None

    def last_event_text(self, device: str, name: str) -> str | None:
        """The text of the newest stored event `name` of `device` (None: none stored)."""
        row = self.conn.execute(
            "SELECT text FROM events WHERE device=? AND name=? ORDER BY ts DESC, seq DESC LIMIT 1",
            (device, name),
        ).fetchone()
        return str(row[0]) if row else None

    def load_entities(self) -> list[tuple[str, str, str]]:
        return list(
            self.conn.execute("SELECT state_topic, config_topic, entity FROM esphome_entities")
        )

    # -- rollups and retention ------------------------------------------------------------------

    def rollup(self, raw_cutoff_ms: int = 0, max_series: int | None = None) -> int:
        """Recompute the 1-minute and 1-hour buckets that new samples touched.

        Idempotent (INSERT OR REPLACE from the raw samples), so late data (a spooled session
        forwarded hours later) simply recomputes its buckets. Buckets older than the raw
        retention are left alone: their raw samples are gone. `max_series` bounds one call, so
        the caller can interleave ingest commits between calls; returns how many were done.
        """
        with self.transaction() as conn:
            sql = "SELECT series_id, from_ts FROM rollup_dirty ORDER BY series_id"
            dirty = conn.execute(
                sql + (f" LIMIT {int(max_series)}" if max_series else "")
            ).fetchall()
            conn.executemany("DELETE FROM rollup_dirty WHERE series_id = ? AND from_ts = ?", dirty)
            for series_id, from_ts in dirty:
                start = max(from_ts, raw_cutoff_ms) // MINUTE_MS * MINUTE_MS
                conn.execute(
                    "INSERT OR REPLACE INTO rollup_1m SELECT series_id, ts / ?1 * ?1, min(value), max(value), "
                    "sum(value), count(*) FROM samples WHERE series_id = ?2 AND ts >= ?3 GROUP BY 2",
                    (MINUTE_MS, series_id, start),
                )
                hour_start = start // HOUR_MS * HOUR_MS
                conn.execute(
                    "INSERT OR REPLACE INTO rollup_1h SELECT series_id, bucket / ?1 * ?1, min(min), max(max), "
                    "sum(sum), sum(count) FROM rollup_1m WHERE series_id = ?2 AND bucket >= ?3 GROUP BY 2",
                    (HOUR_MS, series_id, hour_start),
                )
            return len(dirty)

    def apply_retention(
        self, now_ms: int, raw_s: float, minute_s: float, hour_s: float
    ) -> dict[str, int]:
        deleted: dict[str, int] = {}
        with self.transaction() as conn:
            for table, column, keep in (
                ("samples", "ts", raw_s),
                ("rollup_1m", "bucket", minute_s),
                ("rollup_1h", "bucket", hour_s),
            ):
                if keep <= 0:
                    continue
                cutoff = now_ms - int(keep * 1000)
                before = conn.total_changes
                conn.execute(f"DELETE FROM {table} WHERE {column} < ?", (cutoff,))
                deleted[table] = conn.total_changes - before
        return deleted

    # -- queries ----------------------------------------------------------------------------------

    def series(self, metric: str | None = None, device: str | None = None) -> list[SeriesInfo]:
        sql = "SELECT id, device, metric, tags, unit, source, first_ts, last_ts, last_value FROM series"
        where, args = [], []
        if metric:
            where.append("metric = ?")
            args.append(metric)
        if device:
            where.append("device = ?")
            args.append(device)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY device, metric, tags"
        return [
            SeriesInfo(
                r[0], r[1], r[2], orjson.loads(r[3]) if r[3] else {}, r[4], r[5], r[6], r[7], r[8]
            )
            for r in self.conn.execute(sql, args)
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
        """Samples of `metric` (per series) in [start, end], at most `max_points` per series.

        When there are more samples than points, each point is a time bucket with its mean,
        min and max, so peaks survive downsampling. Long ranges read the rollups.
        """
        end_ms = end_ms if end_ms is not None else int(time.time() * 1000)
        start_ms = start_ms if start_ms is not None else end_ms - HOUR_MS
        max_points = max(1, max_points)
        result = []
        for info in self.series(metric, device):
            if tags and any(info.tags.get(k) != v for k, v in tags.items()):
                continue
            result.append(self._query_series(info, start_ms, end_ms, max_points))
        return result

    def _query_series(
        self, info: SeriesInfo, start: int, end: int, max_points: int
    ) -> SeriesPoints:
        span = max(1, end - start + 1)
        bucket = _ceil_div(span, max_points)
        conn = self.conn
        if bucket <= 1 or (
            bucket < MINUTE_MS
            and conn.execute(
                "SELECT count(*) FROM samples WHERE series_id=? AND ts BETWEEN ? AND ?",
                (info.id, start, end),
            ).fetchone()[0]
            <= max_points
        ):
            rows = conn.execute(
                "SELECT ts, value FROM samples WHERE series_id=? AND ts BETWEEN ? AND ? ORDER BY ts",
                (info.id, start, end),
            ).fetchall()
            if len(rows) <= max_points:
                return SeriesPoints(info, "raw", [Point(t, v, v, v, 1) for t, v in rows])
        if bucket < MINUTE_MS:
            rows = conn.execute(
                "SELECT (ts - ?2) / ?3 AS b, min(ts), avg(value), min(value), max(value), count(*) "
                "FROM samples WHERE series_id = ?1 AND ts BETWEEN ?2 AND ?4 GROUP BY b ORDER BY b",
                (info.id, start, bucket, end),
            ).fetchall()
            return SeriesPoints(info, "raw", [Point(r[1], r[2], r[3], r[4], r[5]) for r in rows])
        table, width = ("rollup_1h", HOUR_MS) if bucket >= HOUR_MS else ("rollup_1m", MINUTE_MS)
        # Buckets align to the rollup width; round up so there are never more than max_points.
        aligned_span = end - start // width * width + 1
        bucket = max(width, _ceil_div(_ceil_div(aligned_span, max_points), width) * width)
        # The newest buckets may not be rolled up yet: read those from the raw samples.
        watermark_row = conn.execute(
            f"SELECT max(bucket) FROM {table} WHERE series_id=?", (info.id,)
        ).fetchone()
        rolled_until = (watermark_row[0] + width) if watermark_row[0] is not None else start
        rolled_until = min(max(rolled_until, start), end + 1)
        pending = conn.execute(
            "SELECT from_ts FROM rollup_dirty WHERE series_id=?", (info.id,)
        ).fetchone()
        if pending is not None:
            rolled_until = min(rolled_until, max(start, pending[0] // width * width))
        points: dict[int, list[float]] = {}
        for b, mn, mx, sm, cnt in conn.execute(
            f"SELECT (bucket - ?2) / ?3, min, max, sum, count FROM {table} "
            "WHERE series_id=?1 AND bucket >= ?2 AND bucket < ?4",
            (info.id, start // width * width, bucket, rolled_until),
        ):
            _merge(points, b, mn, mx, sm, cnt)
        if rolled_until <= end:
            for b, mn, mx, sm, cnt in conn.execute(
                "SELECT (ts - ?2) / ?3, min(value), max(value), sum(value), count(*) FROM samples "
                "WHERE series_id=?1 AND ts >= ?4 AND ts <= ?5 GROUP BY 1",
                (info.id, start // width * width, bucket, rolled_until, end),
            ):
                _merge(points, b, mn, mx, sm, cnt)
        base = start // width * width
        out = [
            Point(base + int(b) * bucket, v[2] / v[3], v[0], v[1], int(v[3]))
            for b, v in sorted(points.items())
            if v[3]
        ]
        return SeriesPoints(info, "1h" if width == HOUR_MS else "1m", out)

    # -- dead letters, devices, stats -----------------------------------------------------------

    def dead_letters(
        self, limit: int = 100, reason: str | None = None, after_id: int = 0
    ) -> list[dict[str, Any]]:
        columns = ", ".join(DEAD_LETTER_COLUMNS).replace(
            "payload", "coalesce(payload_bytes, length(payload)), length(payload)"
        )
        sql = f"SELECT {columns} FROM dead_letters WHERE id > ?"
        args: list[Any] = [after_id]
        if reason:
            sql += " AND reason = ?"
            args.append(reason)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        keys = [k for k in DEAD_LETTER_COLUMNS if k != "payload"]
        at = DEAD_LETTER_COLUMNS.index("payload")
        keys[at:at] = ["payload_bytes", "payload_kept"]
        out = []
        for row in self.conn.execute(sql, args):
            info = dict(zip(keys, row, strict=True))
            kept = info.pop("payload_kept")
            info["payload_truncated"] = kept is not None and kept < (info["payload_bytes"] or 0)
            out.append(info)
        return out

    def dead_letter(self, dead_letter_id: int) -> tuple[dict[str, Any], bytes | None] | None:
        row = self.conn.execute(
            f"SELECT {', '.join(DEAD_LETTER_COLUMNS)}, payload_bytes, payload_sha256 "
            "FROM dead_letters WHERE id=?",
            (dead_letter_id,),
        ).fetchone()
        if row is None:
            return None
        info = dict(zip((*DEAD_LETTER_COLUMNS, "size", "payload_sha256"), row, strict=True))
        payload = info.pop("payload")
        size = info.pop("size")
        info["payload_bytes"] = (
            size if size is not None else (len(payload) if payload is not None else 0)
        )
        info["payload_truncated"] = payload is not None and len(payload) < info["payload_bytes"]
        return info, payload

    def purge_dead_letters(self, reason: str | None = None, before_ms: int | None = None) -> int:
        sql, args = "DELETE FROM dead_letters WHERE 1=1", list[Any]()
        if reason:
            sql += " AND reason = ?"
            args.append(reason)
        if before_ms is not None:
            sql += " AND received_ts < ?"
            args.append(before_ms)
        with self.transaction() as conn:
            before = conn.total_changes
            conn.execute(sql, args)
            deleted = conn.total_changes - before
            self.dead_letter_bytes = stored_dead_letter_bytes(conn)
            return deleted

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
        where: list[str] = ["1=1"]
        args: list[Any] = []
        if ids:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args += list(ids)
        if source:
            where.append("source = ?")
            args.append(source)
        if reason:
            where.append("reason = ?")
            args.append(reason)
        if not include_replayed:
            where.append("replayed_ts IS NULL")
        if before_ms is not None:
            where.append("received_ts < ?")
            args.append(before_ms)
        columns = (
            "id, received_ts, source, topic, reason, detail, "
            "coalesce(payload_bytes, length(payload)), replayed_ts"
        )
        sql = f"SELECT {columns} FROM dead_letters WHERE {' AND '.join(where)} ORDER BY id"
        if limit is not None:
            sql = f"SELECT * FROM ({sql} DESC LIMIT {int(limit)}) ORDER BY id"
        keys = (
            "id",
            "received_ts",
            "source",
            "topic",
            "reason",
            "detail",
            "payload_bytes",
            "replayed_ts",
        )
        return [dict(zip(keys, row, strict=True)) for row in self.conn.execute(sql, args)]

    def dead_letter_summary(self) -> list[tuple[str, str, int, int]]:
        """(source, reason, count, pending) per source and reason."""
        return self.conn.execute(
            "SELECT source, reason, count(*), sum(replayed_ts IS NULL) FROM dead_letters "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()

    def dead_letter_totals(self) -> dict[str, int]:
        """Counts per reason plus what the bounds did (for status and the CLI)."""
        return {
            "stored_bytes": self.dead_letter_bytes,
            "dropped_for_size": self.dead_letters_dropped,
            "retained_repeats": self.dead_letters_repeated,
        }

    def delete_dead_letters(self, ids: Iterable[int]) -> int:
        """Delete the given dead letters (replayed or purged by id)."""
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany("DELETE FROM dead_letters WHERE id=?", [(i,) for i in ids])
            deleted = conn.total_changes - before
            self.dead_letter_bytes = stored_dead_letter_bytes(conn)
            return deleted

    def mark_replayed(self, ids: Iterable[int], now_ms: int) -> None:
        with self.transaction() as conn:
            mark_replayed(conn, ids, now_ms)

    def devices(self) -> list[dict[str, Any]]:
        keys = (
            "name",
            "source",
            "kind",
            "manufacturer",
            "model",
            "sw_version",
            "first_seen",
            "last_seen",
            "online",
        )
        rows = self.conn.execute(
            "SELECT name, source, kind, manufacturer, model, sw_version, first_seen, last_seen, online FROM devices ORDER BY name"
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def device_rows(self, name: str | None = None) -> list[dict[str, Any]]:
        """Devices with availability and the metrics they reported (one pass over two tables)."""
        metrics: dict[str, list[str]] = {}
        for device, metric in self.conn.execute(
            "SELECT DISTINCT device, metric FROM series ORDER BY device, metric"
        ):
            metrics.setdefault(device, []).append(metric)
        sql = (
            "SELECT name, source, kind, manufacturer, model, sw_version, first_seen, last_seen, "
            "online, availability_ts FROM devices"
        )
        args: tuple[object, ...] = ()
        if name is not None:
            sql += " WHERE name = ?"
            args = (name,)
        keys = (
            "name", "source", "kind", "manufacturer", "model", "sw_version", "first_seen",
            "last_seen", "online", "availability_ts",
        )  # fmt: skip
        out = []
        for row in self.conn.execute(sql + " ORDER BY name", args):
            item = dict(zip(keys, row, strict=True))
            item["online"] = None if item["online"] is None else bool(item["online"])
            item["metrics"] = metrics.get(str(item["name"]), [])
            out.append(item)
        return out

    def known_series(self) -> list[tuple[str, str, int]]:
        """(device, metric, newest timestamp) of every series."""
        return [
            (d, m, int(ts or 0))
            for d, m, ts in self.conn.execute(
                "SELECT device, metric, max(last_ts) FROM series GROUP BY device, metric"
            )
        ]

    def device_identities(
        self,
    ) -> list[tuple[str, str | None, str | None, str | None, tuple[str, ...], str | None]]:
        """(name, manufacturer, model, sw_version, identifiers, kind) of every device."""
        return [
            (name, manufacturer, model, sw, tuple(i for i in (ids or "").split(",") if i), kind)
            for name, manufacturer, model, sw, ids, kind in self.conn.execute(
                "SELECT name, manufacturer, model, sw_version, identifiers, kind FROM devices"
            )
        ]

    def events(self, device: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, args = "SELECT device, name, text, ts, source FROM events", list[Any]()
        if device:
            sql += " WHERE device=?"
            args.append(device)
        sql += " ORDER BY ts DESC LIMIT ?"
        args.append(limit)
        keys = ("device", "name", "text", "ts", "source")
        return [dict(zip(keys, row, strict=True)) for row in self.conn.execute(sql, args)]

    def counts(self) -> dict[str, int]:
        out = {}
        for table in (
            "series",
            "samples",
            "events",
            "dead_letters",
            "devices",
            "rollup_1m",
            "rollup_1h",
        ):
            out[table] = self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return out

    def dead_letter_counts(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason"))

    def size_bytes(self) -> int:
        total = 0
        path = str(self.path)
        for suffix in ("", "-wal", "-shm"):
            with suppress(OSError):  # the -wal and -shm files come and go
                total += os.stat(path + suffix).st_size
        return total


def stored_dead_letter_bytes(conn: sqlite3.Connection) -> int:
    """What the kept dead-letter payloads take, the figure store.dead_letters.max_bytes bounds."""
    return int(
        conn.execute("SELECT coalesce(sum(length(payload)), 0) FROM dead_letters").fetchone()[0]
    )


def mark_replayed(conn: sqlite3.Connection, ids: Iterable[int], now_ms: int) -> None:
    """Inside a transaction: these dead letters were replayed (kept, marked)."""
    conn.executemany("UPDATE dead_letters SET replayed_ts=? WHERE id=?", [(now_ms, i) for i in ids])


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _merge(
    points: dict[int, list[float]], b: int, mn: float, mx: float, sm: float, cnt: int
) -> None:
    acc = points.get(b)
    if acc is None:
        points[b] = [mn, mx, sm, cnt]
    else:
        acc[0] = min(acc[0], mn)
        acc[1] = max(acc[1], mx)
        acc[2] += sm
        acc[3] += cnt


def readings_of(
    store: Store, series_ids: Sequence[int], start_ms: int, end_ms: int
) -> Iterator[tuple[int, int, float]]:
    """Raw samples of several series, for exports."""
    for series_id in series_ids:
        yield from store.conn.execute(
            "SELECT series_id, ts, value FROM samples WHERE series_id=? AND ts BETWEEN ? AND ? ORDER BY ts",
            (series_id, start_ms, end_ms),
        )
