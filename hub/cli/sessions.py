"""`hub sessions`: the RC drive sessions the hub recorded.

    hub sessions --db hub.db list [--vehicle buggy] [--limit 20]
    hub sessions --db hub.db show buggy-20241122T101530Z
    hub sessions --db hub.db export buggy-20241122T101530Z --format csv -o run.csv

Database access sits in the three `_` functions below, so they can move onto the core
store's API without touching the commands.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import click

from hub.cli.common import config_option, load_or_exit
from hub.derive.session import Session
from hub.model import Reading
from hub.store.sessions import (
    ExportFormat,
    NoSamples,
    SessionStore,
    export_readings,
    session_readings,
)

# -- database access (rewire these to the core store) ------------------------------------


def _open(db: Path) -> sqlite3.Connection:
    if not db.is_file():
        raise click.ClickException(f"no database at {db} (give the hub's file with --db PATH)")
    try:
        conn = sqlite3.connect(db, isolation_level=None, timeout=10)
        conn.execute("PRAGMA busy_timeout=10000")
        SessionStore(conn)  # creates rc_sessions if the hub has not yet
    except sqlite3.DatabaseError as exc:
        raise click.ClickException(f"{db} is not a hub database: {exc}") from exc
    return conn


def _sessions(conn: sqlite3.Connection, vehicle: str | None, limit: int) -> list[Session]:
    return SessionStore(conn).list(vehicle=vehicle, limit=limit)


def _session(conn: sqlite3.Connection, session_id: str) -> Session:
    session = SessionStore(conn).get(session_id)
    if session is None:
        raise click.ClickException(
            f"no session {session_id!r}; `hub sessions list` shows the recorded ones"
        )
    return session


def _session_readings(conn: sqlite3.Connection, session: Session) -> Iterator[Reading]:
    """The session's readings (the same query serves the dashboard's download)."""
    try:
        yield from session_readings(conn, session)
    except NoSamples as exc:
        raise click.ClickException(str(exc)) from None


# -- presentation ------------------------------------------------------------------------


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


_DETAILS: tuple[tuple[str, str, str], ...] = (
    ("max speed", "max_speed_kmh", ".1f km/h"),
    ("max current", "max_current_a", ".1f A"),
    ("min cell V under load", "min_cell_voltage_load", ".3f V"),
    ("peak ESC temperature", "peak_esc_temperature", ".0f °C"),
    ("peak motor temperature", "peak_motor_temperature", ".0f °C"),
    ("peak pack temperature", "peak_pack_temperature", ".0f °C"),
    ("used", "consumed_mah", ".0f mAh"),
    ("energy", "energy_wh", ".2f Wh"),
    ("distance", "distance_km", ".2f km"),
)


@click.group("sessions")
@config_option
@click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="HUB_DB",
    help="The hub's SQLite file (default: the store of the hub's config, hub-data/hub.db).",
)
@click.pass_context
def sessions(ctx: click.Context, config_path: Path | None, db: Path | None) -> None:
    """RC drive sessions: list, show, export."""
    ctx.obj = db if db is not None else load_or_exit(config_path).store_path


@sessions.command("list")
@click.option("--vehicle", help="Only this vehicle's sessions.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.pass_obj
def list_sessions(db: Path, vehicle: str | None, limit: int) -> None:
    """Recorded sessions, newest first."""
    conn = _open(db)
    try:
        found = _sessions(conn, vehicle, limit)
    finally:
        conn.close()
    if not found:
        click.echo("No sessions recorded yet.")
        return
    # What a run cost and gave first (distance, energy, pack use), then its peaks; fits 80
    # columns with a vehicle name of up to 7 letters.
    width = max(len(s.id) for s in found)
    click.echo(
        f"{'ID':<{width}} {'START (UTC)':<16} {'TIME':>5} {'km':>5} {'Wh':>5} {'mAh':>5}"
        f" {'max km/h':>8} {'max A':>5}"
    )
    for s in found:
        minutes, seconds = divmod(round(s.duration_s), 60)
        start = datetime.fromtimestamp(s.start_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
        click.echo(
            f"{s.id:<{width}} {start:<16} {f'{minutes}:{seconds:02d}':>5} "
            f"{_num(s.distance_km, '.2f'):>5} {_num(s.energy_wh, '.1f'):>5} "
            f"{_num(s.consumed_mah, '.0f'):>5} {_num(s.max_speed_kmh, '.1f'):>8} "
            f"{_num(s.max_current_a, '.1f'):>5}"
        )


@sessions.command("show")
@click.argument("session_id")
@click.pass_obj
def show_session(db: Path, session_id: str) -> None:
    """One session's figures."""
    conn = _open(db)
    try:
        s = _session(conn, session_id)
    finally:
        conn.close()
    click.echo(f"session   {s.id}")
    click.echo(f"vehicle   {s.vehicle} (device {s.device})")
    click.echo(f"start     {_when(s.start_ms)}")
    click.echo(f"end       {_when(s.end_ms)}")
    click.echo(f"duration  {s.duration_s:.1f} s")
    for label, name, fmt in _DETAILS:
        value = getattr(s, name)
        number_fmt, _, unit = fmt.partition(" ")
        text = "-" if value is None else f"{format(value, number_fmt)} {unit}"
        click.echo(f"{label:<24}{text}")


@sessions.command("export")
@click.argument("session_id")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True,
    help="csv (one row per reading) or json (JSON Lines).",
)  # fmt: skip
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File (default stdout)."
)
@click.pass_obj
def export_session(db: Path, session_id: str, fmt: ExportFormat, output: Path | None) -> None:
    """The session's readings, as CSV or JSON Lines."""
    conn = _open(db)
    try:
        session = _session(conn, session_id)
        readings = _session_readings(conn, session)
        if output is None:
            export_readings(readings, sys.stdout, fmt)
        else:
            with output.open("w", encoding="utf-8", newline="") as out:
                count = export_readings(readings, out, fmt)
            click.echo(f"Wrote {count} readings of {session.id} to {output}.", err=True)
    finally:
        conn.close()
