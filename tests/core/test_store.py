from __future__ import annotations

from pathlib import Path

import pytest

from hub.model import Event, Reading
from hub.store.sqlite import HOUR_MS, MINUTE_MS, Batch, DeadLetter, Store

T0 = 1_763_769_600_000  # 2025-11-22T00:00:00Z, a whole hour


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "hub.db", "normal")
    yield s
    s.close()


def r(ts: int, value: float, device: str = "n1", metric: str = "co2", **tags: str) -> Reading:
    return Reading(device, metric, value, ts, "ppm", tags)


def test_wal_and_schema(store: Store) -> None:
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.counts()["samples"] == 0


def test_redelivery_is_not_stored_twice(store: Store) -> None:
    batch = Batch(readings=[r(T0, 1), r(T0 + 1000, 2)])
    first = store.commit(batch)
    again = store.commit(batch)
    assert (first.stored, first.duplicates) == (2, 0)
    assert (again.stored, again.duplicates) == (0, 2)
    assert store.counts()["samples"] == 2


def test_series_are_keyed_by_device_metric_and_tags(store: Store) -> None:
    store.commit(
        Batch(readings=[r(T0, 1, sensor="scd41"), r(T0, 2, sensor="bme280"), r(T0, 3, device="n2")])
    )
    series = store.series("co2")
    assert [(s.device, dict(s.tags), s.last_value) for s in series] == [
        ("n1", {"sensor": "bme280"}, 2.0), ("n1", {"sensor": "scd41"}, 1.0), ("n2", {}, 3.0)
    ]  # fmt: skip
    # a new Store instance (restart) finds the same series ids
    path = store.path
    store.close()
    again = Store(path)
    again.commit(Batch(readings=[r(T0 + 1, 4, sensor="scd41")]))
    assert again.counts()["series"] == 3
    again.close()


def test_last_value_is_the_newest_even_when_late_data_arrives(store: Store) -> None:
    store.commit(Batch(readings=[r(T0 + 5000, 5)]))
    store.commit(Batch(readings=[r(T0, 1)]))
    assert store.series("co2")[0].last_value == 5.0


def test_events_devices_availability_dead_letters(store: Store) -> None:
    store.commit(
        Batch(
            readings=[r(T0, 1)],
            events=[Event("n1", "motion", "ON", T0), Event("n1", "motion", "ON", T0)],
            availability=[("n1", False, T0 + 1)],
            dead_letters=[
                DeadLetter(T0, "mqtt", "n1/sensor/x/state", "not_a_number", "state 'nan'", b"nan")
            ],
        )
    )
    assert store.counts()["events"] == 1
    device = store.devices()[0]
    assert device["name"] == "n1" and device["online"] == 0 and device["last_seen"] == T0
    letters = store.dead_letters()
    assert letters[0]["reason"] == "not_a_number" and letters[0]["payload_bytes"] == 3
    info, payload = store.dead_letter(letters[0]["id"])  # type: ignore[misc]
    assert payload == b"nan" and info["topic"] == "n1/sensor/x/state"
    assert store.dead_letter_counts() == {"not_a_number": 1}
    assert store.purge_dead_letters(reason="not_a_number") == 1


def test_rollups_min_max_mean_count(store: Store) -> None:
    readings = [r(T0 + i * 1000, float(i)) for i in range(180)]  # 3 minutes at 1 Hz
    store.commit(Batch(readings=readings))
    assert store.rollup() == 1
    rows = store.conn.execute(
        "SELECT bucket, min, max, sum, count FROM rollup_1m ORDER BY bucket"
    ).fetchall()
    assert rows == [
        (T0, 0, 59, sum(range(60)), 60),
        (T0 + MINUTE_MS, 60, 119, sum(range(60, 120)), 60),
        (T0 + 2 * MINUTE_MS, 120, 179, sum(range(120, 180)), 60),
    ]
    hour = store.conn.execute("SELECT bucket, min, max, count FROM rollup_1h").fetchall()
    assert hour == [(T0, 0, 179, 180)]
    # late data recomputes only what it touched, and idempotently
    store.commit(Batch(readings=[r(T0 + 30_500, 1000.0)]))
    store.rollup()
    assert store.conn.execute(
        "SELECT max, count FROM rollup_1m WHERE bucket=?", (T0,)
    ).fetchone() == (1000.0, 61)
    assert store.conn.execute("SELECT max, count FROM rollup_1h").fetchone() == (1000.0, 181)


def test_query_raw_when_it_fits(store: Store) -> None:
    store.commit(Batch(readings=[r(T0 + i * 1000, float(i)) for i in range(10)]))
    [result] = store.query("co2", "n1", T0, T0 + 60_000, 100)
    assert result.resolution == "raw" and [p.mean for p in result.points] == [
        float(i) for i in range(10)
    ]


def test_query_downsamples_and_keeps_peaks(store: Store) -> None:
    values = [float(i % 100) for i in range(6 * 3600)]  # 6 h at 1 Hz
    values[12345] = 9999.0  # a spike
    store.commit(Batch(readings=[r(T0 + i * 1000, v) for i, v in enumerate(values)]))
    [result] = store.query("co2", "n1", T0, T0 + 6 * HOUR_MS - 1, 100)
    assert len(result.points) <= 100
    assert max(p.max for p in result.points) == 9999.0
    assert sum(p.count for p in result.points) == len(values)
    # the same through the rollups (after they ran) and through the raw tail (before)
    [before] = store.query("co2", "n1", T0, T0 + 6 * HOUR_MS - 1, 10)
    store.rollup()
    [after] = store.query("co2", "n1", T0, T0 + 6 * HOUR_MS - 1, 10)
    assert after.resolution == "1m" and len(after.points) <= 10
    for a, b in zip(before.points, after.points, strict=True):
        assert (a.ts, a.min, a.max, a.count) == (b.ts, b.min, b.max, b.count)
        assert a.mean == pytest.approx(b.mean)


def test_week_query_uses_hour_or_minute_rollups(store: Store) -> None:
    week = [r(T0 + i * 60_000, float(i % 7)) for i in range(7 * 24 * 60)]
    store.commit(Batch(readings=week))
    store.rollup()
    [result] = store.query("co2", "n1", T0, T0 + 7 * 24 * HOUR_MS - 1, 24)
    assert result.resolution == "1h" and len(result.points) <= 24
    assert sum(p.count for p in result.points) == len(week)


def test_retention(store: Store) -> None:
    store.commit(Batch(readings=[r(T0, 1), r(T0 + 10 * 86_400_000, 2)]))
    store.rollup()
    deleted = store.apply_retention(T0 + 10 * 86_400_000, raw_s=86_400, minute_s=0, hour_s=0)
    assert deleted == {"samples": 1}
    assert store.counts()["samples"] == 1 and store.counts()["rollup_1m"] == 2


def test_same_millisecond_readings_stay_apart_by_seq(store: Store) -> None:
    first = r(T0, 1)
    second = Reading("n1", "co2", 2.0, T0, "ppm", seq=1)
    assert store.commit(Batch(readings=[first, second])).stored == 2
    assert store.commit(Batch(readings=[second])).stored == 0  # a redelivery: its own key
    assert store.last_value(first) == 2.0


def test_fresh_names_what_a_commit_would_insert(store: Store) -> None:
    store.commit(Batch(readings=[r(T0, 1), r(T0 + 1000, 2)]))
    again, new, also_new = r(T0 + 1000, 2), r(T0 + 2000, 3), r(T0 + 2000, 3, device="n2")
    batch = [again, new, new, also_new]
    fresh = store.fresh(batch)
    assert fresh == [new, also_new]  # the stored one and the second of equal keys are not
    assert store.commit(Batch(readings=batch)).stored == len(fresh)


def test_fresh_reads_nothing_for_a_live_stream_and_stays_exact_across_a_restart(
    tmp_path: Path,
) -> None:
    """A batch newer than its series' newest stored sample needs no range read; a sample
    stored before a restart (a future stamp from a node's clock) is still found."""
    path = tmp_path / "hub.db"
    first = Store(path)
    first.commit(Batch(readings=[r(T0, 1), r(T0 + 60_000, 9)]))  # the second from the future
    first.close()
    store = Store(path)
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    early, redelivered = r(T0 + 1000, 2), r(T0 + 60_000, 9)
    assert store.fresh([early, redelivered]) == [early]
    store.commit(Batch(readings=[early]))
    statements.clear()
    for i in range(2, 6):  # a live stream past the newest sample: no read at all
        live = r(T0 + 60_000 + i * 1000, i)
        assert store.fresh([live]) == [live]
        store.commit(Batch(readings=[live]))
    assert not [s for s in statements if s.startswith("SELECT")], statements
    assert store.fresh([r(T0 + 64_000, 4)]) == []  # a repeat of a stored one: read, and found
    store.close()


def test_a_store_without_seq_is_migrated_once(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '2');
        CREATE TABLE samples (series_id INTEGER NOT NULL, ts INTEGER NOT NULL,
            value REAL NOT NULL, PRIMARY KEY (series_id, ts)) WITHOUT ROWID;
        CREATE TABLE events (id INTEGER PRIMARY KEY, device TEXT NOT NULL, name TEXT NOT NULL,
            text TEXT NOT NULL, ts INTEGER NOT NULL, source TEXT, UNIQUE (device, name, ts));
        CREATE TABLE mqtt_receipts (mid INTEGER PRIMARY KEY, digest INTEGER NOT NULL,
            received_ts INTEGER NOT NULL);
        INSERT INTO samples VALUES (1, 1000, 5.0);
        INSERT INTO events VALUES (1, 'n1', 'mode', 'eco', 1000, 'mqtt');
        INSERT INTO mqtt_receipts VALUES (7, 42, 1000);
        """
    )
    conn.close()
    store = Store(path)
    assert list(store.conn.execute("SELECT series_id, ts, seq, value FROM samples")) == [
        (1, 1000, 0, 5.0)
    ]
    assert store.last_event_text("n1", "mode") == "eco"
    assert store.receipt(7, 42) == (1000, 0)
    # the outbox trigger is back on the new table
    triggers = {
        row[0] for row in store.conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")
    }
    assert "outbox_append_v2" in triggers
    store.commit(Batch(events=[Event("n1", "mode", "boost", 1000, seq=1)]))
    assert store.last_event_text("n1", "mode") == "boost"
    store.close()
