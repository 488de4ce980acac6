"""RC drive sessions in SQLite, and the export of a session's readings.

`SessionStore` takes an open `sqlite3.Connection` (the core store's, or its own in the CLI)
and keeps one table, `rc_sessions`. Saving a session twice replaces it, so a tracker that
re-saves the open session as it grows is harmless. The readings themselves live in the core
store's `samples` table: `session_readings` reads a session's back and `export_readings`
writes them, for `hub sessions export` and the dashboard's download alike.
"""

from __future__ import annotations

import builtins
import csv
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any, Literal, TextIO

import orjson

from hub.derive.session import Session
from hub.model import Reading

ExportFormat = Literal["csv", "json"]

_COLUMNS = (
    "id",
    "vehicle",
    "device",
    "start_ms",
    "end_ms",
    "max_speed_kmh",
    "max_current_a",
    "min_cell_voltage_load",
    "peak_esc_temperature",
    "peak_motor_temperature",
    "peak_pack_temperature",
    "consumed_mah",
    "energy_wh",
    "distance_km",
)

# What a session shows of each alert of its device (the web API's SessionAlertOut).
SESSION_ALERT_FIELDS = ("id", "rule", "severity", "state", "message", "started_ms", "resolved_ms")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rc_sessions (
    id TEXT PRIMARY KEY,
    vehicle TEXT NOT NULL,
    device TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    max_speed_kmh REAL,
    max_current_a REAL,
    min_cell_voltage_load REAL,
    peak_esc_temperature REAL,
    peak_motor_temperature REAL,
    peak_pack_temperature REAL,
    consumed_mah REAL,
    energy_wh REAL,
    distance_km REAL
);
CREATE INDEX IF NOT EXISTS rc_sessions_vehicle_start ON rc_sessions (vehicle, start_ms);
"""


SCHEMA = _SCHEMA


def write_session(conn: sqlite3.Connection, session: Session) -> None:
    """Insert or update a session inside the caller's transaction (the ingest commit)."""
    values = tuple(getattr(session, name) for name in _COLUMNS)
    marks = ", ".join("?" for _ in _COLUMNS)
    conn.execute(
        f"INSERT OR REPLACE INTO rc_sessions ({', '.join(_COLUMNS)}) VALUES ({marks})",
        values,
    )


class SessionStore:
    """Save, list and fetch drive sessions. Creates its table on first use."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        with conn:
            conn.executescript(_SCHEMA)

    def save(self, session: Session) -> None:
        with self.conn:
            write_session(self.conn, session)

    def get(self, session_id: str) -> Session | None:
        row = self.conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM rc_sessions WHERE id = ?", (session_id,)
        ).fetchone()
        return None if row is None else Session(*row)

    def list(self, vehicle: str | None = None, limit: int = 50) -> list[Session]:
        """Newest first."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM rc_sessions"
        args: tuple[object, ...] = ()
        if vehicle is not None:
            sql += " WHERE vehicle = ?"
            args = (vehicle,)
        sql += " ORDER BY start_ms DESC, id LIMIT ?"
        return [Session(*row) for row in self.conn.execute(sql, (*args, limit))]

    def alerts(self, session: Session) -> builtins.list[dict[str, Any]]:
        """Alerts of the session's device whose firing time overlaps the session."""
        try:
            rows = self.conn.execute(
                f"SELECT {', '.join(SESSION_ALERT_FIELDS)} FROM alerts WHERE device = ? "
                "AND started_ms <= ? AND (resolved_ms IS NULL OR resolved_ms >= ?) "
                "ORDER BY started_ms, id",
                (session.device, session.end_ms, session.start_ms),
            ).fetchall()
        except sqlite3.OperationalError:  # no alert engine has run on this database
            return []
        return [dict(zip(SESSION_ALERT_FIELDS, row, strict=True)) for row in rows]

    def readings(self, session: Session) -> Iterator[Reading]:
        """The session's readings from the core store's tables (NoSamples: none stored)."""
        return session_readings(self.conn, session)


class NoSamples(LookupError):
    """The database has no samples tables (the hub has not stored any readings)."""


def session_readings(conn: sqlite3.Connection, session: Session) -> Iterator[Reading]:
    """The session's device's raw samples from start to end, from the core store's tables."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not {"samples", "series"} <= tables:
        raise NoSamples("this database holds no samples (the hub has not stored any)")
    rows = conn.execute(
        "SELECT s.ts, r.device, r.metric, s.value, r.unit, r.source, r.tags"
        " FROM samples s JOIN series r ON r.id = s.series_id"
        " WHERE r.device = ? AND s.ts BETWEEN ? AND ? ORDER BY s.ts, r.metric",
        (session.device, session.start_ms, session.end_ms),
    )
    for ts, device, metric, value, unit, source, tags in rows:
        tag_map = orjson.loads(tags) if tags else {}
        yield Reading(device, metric, value, ts, unit, tag_map, source or "mqtt")


_EXPORT_FIELDS = ("timestamp_ms", "device", "metric", "value", "unit", "source", "tags")


def export_readings(readings: Iterable[Reading], out: TextIO, fmt: ExportFormat) -> int:
    """Write readings as CSV (header, one row each) or JSON Lines; returns how many."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(_EXPORT_FIELDS)
        for r in readings:
            tags = ";".join(f"{k}={v}" for k, v in sorted(r.tags.items()))
            unit = "" if r.unit is None else r.unit
            writer.writerow(
                (r.timestamp_ms, r.device, r.metric, repr(r.value), unit, r.source, tags)
            )
            count += 1
    elif fmt == "json":
        for r in readings:
            row = {
                "timestamp_ms": r.timestamp_ms,
                "device": r.device,
                "metric": r.metric,
                "value": r.value,
                "unit": r.unit,
                "source": r.source,
                "tags": dict(r.tags),
            }
            out.write(orjson.dumps(row).decode() + "\n")
            count += 1
    else:
        raise ValueError(f"unknown export format {fmt!r}: use csv or json")
    return count
