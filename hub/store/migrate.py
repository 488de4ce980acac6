"""`hub store migrate-to postgresql://...`: copy a SQLite store into PostgreSQL.

Copied: the series catalog (ids kept, so every sample, rollup and alert keeps its series),
samples, both rollups, events, devices, dead letters, ESPHome entities, drive sessions and
the alert history. Resumable: each table is copied in chunks ordered by its key, and the
last key copied is written to the target's meta table in the same transaction as the chunk,
so a copy interrupted anywhere goes on from its last committed chunk, and rows are inserted
with ON CONFLICT DO NOTHING. At the end every table's count is compared.

The SQLite store is opened read-only: stop the hub first or copy a backup (hub store backup),
else rows written after a table was copied are missing from it (the count check says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from hub.store.postgres import PostgresStore
from hub.store.postgres_schema import DAY_MS
from hub.store.sqlite import StoreError, connect

log = logging.getLogger(__name__)

# table -> (key columns, in order; the columns copied). Parents before children.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "series": (("id",), ("id", "device", "metric", "tags", "unit", "source", "first_ts", "last_ts", "last_value")),
    "samples": (("series_id", "ts", "seq"), ("series_id", "ts", "seq", "value")),
    "rollup_1m": (("series_id", "bucket"), ("series_id", "bucket", "min", "max", "sum", "count")),
    "rollup_1h": (("series_id", "bucket"), ("series_id", "bucket", "min", "max", "sum", "count")),
    "events": (("id",), ("id", "device", "name", "text", "ts", "source", "seq")),
    "devices": (("name",), ("name", "source", "kind", "manufacturer", "model", "sw_version", "identifiers", "first_seen", "last_seen", "online", "availability_ts")),
    "dead_letters": (("id",), ("id", "received_ts", "source", "topic", "reason", "detail", "payload", "replayed_ts", "payload_bytes", "payload_sha256")),
    "esphome_entities": (("state_topic",), ("state_topic", "config_topic", "entity")),
    "rc_sessions": (("id",), ("id", "vehicle", "device", "start_ms", "end_ms", "max_speed_kmh", "max_current_a", "min_cell_voltage_load", "peak_esc_temperature", "peak_motor_temperature", "peak_pack_temperature", "consumed_mah", "energy_wh", "distance_km")),
    "alerts": (("id",), ("id", "rule", "device", "metric", "severity", "state", "value", "threshold", "unit", "message", "device_class", "started_ms", "updated_ms", "resolved_ms", "acknowledged_by", "acknowledged_ms", "silenced_until_ms", "count")),
    "alert_events": (("id",), ("id", "alert_id", "ts", "kind", "value", "detail")),
    "alert_silences": (("rule", "device"), ("rule", "device", "until_ms", "by")),
}  # fmt: skip
# BIGSERIAL columns whose sequence must continue after the copied ids.
SEQUENCES = ("series", "events", "dead_letters", "alerts", "alert_events")
CHUNK = 20_000


@dataclass
class MigrationReport:
    copied: dict[str, int] = field(default_factory=dict)  # rows inserted by this run
    source: dict[str, int] = field(default_factory=dict)
    target: dict[str, int] = field(default_factory=dict)

    @property
    def mismatches(self) -> dict[str, tuple[int, int]]:
        return {
            t: (n, self.target.get(t, 0)) for t, n in self.source.items() if self.target.get(t) != n
        }


def migrate_to(
    sqlite_path: Path, url: str, *, chunk: int = CHUNK,
    progress: Callable[[str, int], None] | None = None, stop_after: int | None = None,
) -> MigrationReport:  # fmt: skip
    """Copy the store at `sqlite_path` into the PostgreSQL store at `url` (see the module).
    `stop_after` (tests) stops after that many chunks, as an interrupted run would."""
    if not sqlite_path.exists():
        raise StoreError(f"{sqlite_path} does not exist: nothing to migrate")
    src = connect(sqlite_path, readonly=True)
    target = PostgresStore(url)
    report = MigrationReport()
    chunks = 0
    try:
        source_tables = {
            r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        marker = target.conn.execute("SELECT value FROM meta WHERE key='migrated_from'").fetchone()
        if marker is None and target.counts()["series"]:
            raise StoreError(
                f"the PostgreSQL store already holds series and was not filled by migrate-to: "
                f"refusing to mix {sqlite_path} into it (use an empty database)"
            )
        if marker is None:
            target.conn.execute(
                "INSERT INTO meta VALUES ('migrated_from', %s)", (str(sqlite_path.resolve()),)
            )
        for table, (key, columns) in TABLES.items():
            if table not in source_tables:
                continue
            copied = 0
            resume = target.conn.execute(
                "SELECT value FROM meta WHERE key=%s", (f"migrate:{table}",)
            ).fetchone()
            last: tuple[Any, ...] | None = tuple(_decode(resume[0])) if resume else None
            if last == ("done",):
                report.copied[table] = 0
                continue
            cols = ", ".join(columns)
            keys = ", ".join(key)
            while True:
                where, args = "", ()
                if last is not None:
                    where = f"WHERE ({keys}) > ({', '.join('?' * len(key))})"
                    args = last
                rows = src.execute(
                    f"SELECT {cols} FROM {table} {where} ORDER BY {keys} LIMIT {int(chunk)}", args
                ).fetchall()
                if not rows:
                    break
                last = tuple(rows[-1][columns.index(k)] for k in key)
                with target.transaction() as conn:
                    if table == "samples":
                        target.ensure_partitions(conn, {r[1] // DAY_MS * DAY_MS for r in rows})
                    with conn.cursor() as cur:
                        marks = ", ".join(["%s"] * len(columns))
                        cur.executemany(
                            f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING",
                            rows,
                        )
                        copied += max(cur.rowcount, 0)
                    conn.execute(
                        "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (f"migrate:{table}", _encode(last)),
                    )
                if progress is not None:
                    progress(table, copied)
                chunks += 1
                if stop_after is not None and chunks >= stop_after:
                    raise InterruptedError(f"stopped after {chunks} chunks (stop_after)")
            target.conn.execute(
                "INSERT INTO meta VALUES (%s, 'done') ON CONFLICT (key) DO UPDATE SET value = 'done'",
                (f"migrate:{table}",),
            )
            report.copied[table] = copied
        for table in SEQUENCES:
            target.conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
            )
        for table in TABLES:
            if table in source_tables:
                report.source[table] = int(
                    src.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                )
                report.target[table] = int(
                    target.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
                )
        return report
    finally:
        src.close()
        target.close()


def _encode(key: tuple[Any, ...]) -> str:
    return orjson.dumps(list(key)).decode()


def _decode(text: str) -> list[Any]:
    if text == "done":
        return ["done"]
    return list(orjson.loads(text))
