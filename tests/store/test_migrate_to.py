"""`hub store migrate-to`: a SQLite store holding a simulated week is copied into a real
PostgreSQL, interrupted half-way and resumed: every table's count and a sample of values
are equal, and the copy is usable by a worker's store (ids continue after the copied ones)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub.cli import cli
from hub.model import Event, Reading
from hub.store.migrate import migrate_to
from hub.store.postgres import PostgresStore
from hub.store.sqlite import Batch, DeadLetter, Store

pytestmark = pytest.mark.postgres

T0 = 1_763_769_600_000
WEEK_MINUTES = 7 * 24 * 60


def simulated_week(path: Path) -> Store:
    store = Store(path, "normal")
    rng = random.Random(17)
    for device in ("air1", "air2", "buggy"):
        for metric in ("co2", "pm2_5"):
            store.commit(
                Batch(
                    readings=[
                        Reading(
                            device, metric, round(rng.uniform(0, 1000), 3), T0 + m * 60_000, "u"
                        )
                        for m in range(WEEK_MINUTES)
                    ]
                )
            )
    store.commit(
        Batch(
            events=[Event("air1", "motion", "ON" if i % 2 else "OFF", T0 + i * 1000) for i in range(50)],
            dead_letters=[DeadLetter(T0 + i, "mqtt", f"x/{i}", "bad_json", "not JSON", b"{" * i) for i in range(30)],
            availability=[("buggy", True, T0)],
        )
    )  # fmt: skip
    store.rollup()
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO rc_sessions (id, vehicle, device, start_ms, end_ms, max_speed_kmh) "
            "VALUES ('s1', 'buggy', 'buggy', ?, ?, 42.5)",
            (T0, T0 + 600_000),
        )
        conn.execute(
            "INSERT INTO alerts (rule, device, metric, severity, state, value, message, device_class, "
            "started_ms, updated_ms, count) VALUES ('co2_high', 'air1', 'co2', 'warning', 'resolved', "
            "1500, 'CO2 high', 'air', ?, ?, 3)",
            (T0, T0 + 1000),
        )
    return store


def test_migrate_to_copies_a_week_resumably_with_equal_counts_and_values(
    tmp_path: Path, pg_url: str
) -> None:
    source = simulated_week(tmp_path / "hub.db")
    with pytest.raises(InterruptedError):  # as if killed after three chunks
        migrate_to(source.path, pg_url, chunk=10_000, stop_after=3)
    result = CliRunner().invoke(cli, ["store", "migrate-to", pg_url, "--from", str(source.path)])
    assert result.exit_code == 0, result.output
    assert "ok: every count matches" in result.output
    report = migrate_to(source.path, pg_url)  # once more: nothing left to copy, still equal
    assert not report.mismatches and sum(report.copied.values()) == 0
    assert report.source["samples"] == 6 * WEEK_MINUTES
    for table in (
        "series",
        "rollup_1m",
        "rollup_1h",
        "events",
        "devices",
        "dead_letters",
        "rc_sessions",
        "alerts",
    ):
        assert report.source[table] > 0 and report.source[table] == report.target[table], table
    target = PostgresStore(pg_url)
    rng = random.Random(5)
    keys = source.conn.execute("SELECT series_id, ts, seq, value FROM samples").fetchall()
    for series_id, ts, seq, value in rng.sample(keys, 300):
        row = target.conn.execute(
            "SELECT value FROM samples WHERE series_id=%s AND ts=%s AND seq=%s",
            (series_id, ts, seq),
        ).fetchone()
        assert row is not None and row[0] == value
    assert target.conn.execute("SELECT sum(count), max(max) FROM rollup_1h").fetchone() == tuple(
        source.conn.execute("SELECT sum(count), max(max) FROM rollup_1h").fetchone()
    )
    letter = target.conn.execute("SELECT payload FROM dead_letters WHERE topic='x/7'").fetchone()
    assert letter is not None and bytes(letter[0]) == b"{" * 7
    # The copy goes on as a live store: a new series gets an id after the copied ones.
    target.commit(Batch(readings=[Reading("air3", "co2", 1.0, T0, "ppm")]))
    assert target.counts()["series"] == 7
    target.close()
    source.close()


def test_migrate_to_refuses_a_database_that_holds_other_data(tmp_path: Path, pg_url: str) -> None:
    other = PostgresStore(pg_url)
    other.commit(Batch(readings=[Reading("x", "co2", 1.0, T0, "ppm")]))
    other.close()
    Store(tmp_path / "hub.db").close()
    result = CliRunner().invoke(
        cli, ["store", "migrate-to", pg_url, "--from", str(tmp_path / "hub.db")]
    )
    assert result.exit_code == 4 and "already holds series" in result.output
