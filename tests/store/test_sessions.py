"""Session persistence in a real SQLite file, the readings export, and `hub sessions`."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub.cli.sessions import sessions
from hub.derive.session import Session
from hub.model import Reading
from hub.store.sessions import SessionStore, export_readings

T0 = 1_732_262_400_000

RUN = Session(
    id="eb48-20241122T080010Z",
    vehicle="eb48",
    device="esc0",
    start_ms=T0 + 10_000,
    end_ms=T0 + 130_000,
    max_speed_kmh=89.0,
    max_current_a=49.5,
    min_cell_voltage_load=3.66,
    peak_esc_temperature=75.0,
    peak_motor_temperature=66.0,
    consumed_mah=1200.0,
    energy_wh=12.0,
)
SHORT = Session("eb48-20241122T090000Z", "eb48", "esc0", T0 + 3_600_000, T0 + 3_660_000)
OTHER = Session("dt8-20241122T083000Z", "dt8", "esc1", T0 + 1_800_000, T0 + 1_900_000)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "hub.db"
    conn = sqlite3.connect(path)
    store = SessionStore(conn)
    for s in (RUN, SHORT, OTHER):
        store.save(s)
    conn.close()
    return path


def test_save_get_list_round_trip(db: Path) -> None:
    conn = sqlite3.connect(db)
    store = SessionStore(conn)  # a second open finds the table in place
    assert store.get(RUN.id) == RUN
    assert store.get("nope") is None
    assert [s.id for s in store.list()] == [SHORT.id, OTHER.id, RUN.id]  # newest first
    assert store.list(vehicle="eb48", limit=1) == [SHORT]
    # Saving again replaces (a tracker re-saving its growing session).
    grown = Session(RUN.id, RUN.vehicle, RUN.device, RUN.start_ms, RUN.end_ms + 5000)
    store.save(grown)
    assert store.get(RUN.id) == grown
    assert len(store.list()) == 3


READINGS = [
    Reading("esc0", "pack_voltage", 16.8, T0 + 10_000, "V", source="serial"),
    Reading("esc0", "current", 12.34, T0 + 10_000, "A", {"vehicle": "eb48"}, "serial"),
    Reading("esc0", "cell_count", 4.0, T0 + 10_000, None, source="derived"),
]


def test_export_csv() -> None:
    out = io.StringIO()
    assert export_readings(READINGS, out, "csv") == 3
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["timestamp_ms", "device", "metric", "value", "unit", "source", "tags"]
    assert rows[1] == [str(T0 + 10_000), "esc0", "pack_voltage", "16.8", "V", "serial", ""]
    assert rows[2][-1] == "vehicle=eb48"
    assert rows[3][4] == ""  # no unit


def test_export_json_lines() -> None:
    out = io.StringIO()
    assert export_readings(READINGS, out, "json") == 3
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[1] == {
        "timestamp_ms": T0 + 10_000,
        "device": "esc0",
        "metric": "current",
        "value": 12.34,
        "unit": "A",
        "source": "serial",
        "tags": {"vehicle": "eb48"},
    }
    with pytest.raises(ValueError, match="unknown export format"):
        export_readings(READINGS, out, "xml")  # type: ignore[arg-type]


# -- the CLI ---------------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(sessions, list(args))
    return result.exit_code, result.output


def test_cli_list_and_show(db: Path) -> None:
    code, out = run("--db", str(db), "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:7] == ["ID", "START", "(UTC)", "TIME", "km", "Wh", "mAh"]
    assert [line.split()[0] for line in lines[1:]] == [SHORT.id, OTHER.id, RUN.id]
    assert "2:00" in lines[3] and "89.0" in lines[3] and "1200" in lines[3]
    code, out = run("--db", str(db), "list", "--vehicle", "dt8")
    assert code == 0 and OTHER.id in out and RUN.id not in out
    code, out = run("--db", str(db), "show", RUN.id)
    assert code == 0
    assert "start     2024-11-22 08:00:10 UTC" in out
    assert "duration  120.0 s" in out
    assert "min cell V under load   3.660 V" in out
    assert "peak pack temperature   -" in out


def test_cli_errors_are_sentences(db: Path, tmp_path: Path) -> None:
    code, out = run("--db", str(tmp_path / "missing.db"), "list")
    assert code == 1 and "no database at" in out
    code, out = run("--db", str(db), "show", "nope")
    assert code == 1 and "no session 'nope'" in out
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    code, out = run("--db", str(garbage), "list")
    assert code == 1 and "is not a hub database" in out
    code, out = run("--db", str(db), "export", RUN.id)
    assert code == 1 and "holds no samples" in out


def test_cli_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    code, out = run("--db", str(path), "list")
    assert code == 0 and out.strip() == "No sessions recorded yet."


def test_cli_export_from_the_core_store(db: Path, tmp_path: Path) -> None:
    from hub.store.sqlite import Store

    store = Store(db)
    conn = store.conn
    with store.transaction():
        conn.execute(
            "INSERT INTO series (id, device, metric, tags, unit, source) VALUES "
            "(1, 'esc0', 'pack_voltage', '', 'V', 'serial'),"
            "(2, 'esc0', 'current', '{\"vehicle\":\"eb48\"}', 'A', 'serial'),"
            "(3, 'esc1', 'current', '', 'A', 'serial')"
        )
        conn.executemany(
            "INSERT INTO samples (series_id, ts, value) VALUES (?, ?, ?)",
            [
                (1, T0 + 5_000, 16.9),  # before the session
                (1, T0 + 10_000, 16.8),
                (2, T0 + 10_000, 12.34),
                (3, T0 + 20_000, 1.0),  # another device
                (1, T0 + 130_000, 15.1),
                (1, T0 + 131_000, 15.6),  # after it
            ],
        )
    store.close()
    code, out = run("--db", str(db), "export", RUN.id, "--format", "json")
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["metric"], x["timestamp_ms"], x["value"]) for x in lines] == [
        ("current", T0 + 10_000, 12.34),
        ("pack_voltage", T0 + 10_000, 16.8),
        ("pack_voltage", T0 + 130_000, 15.1),
    ]
    assert lines[0]["tags"] == {"vehicle": "eb48"}
    target = tmp_path / "run.csv"
    code, out = run("--db", str(db), "export", RUN.id, "--format", "csv", "-o", str(target))
    assert code == 0 and f"Wrote 3 readings of {RUN.id}" in out
    assert target.read_text().splitlines()[0].startswith("timestamp_ms,device,metric")
