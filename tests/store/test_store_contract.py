"""The store contract, run against both backends: the embedded SQLite store and PostgreSQL
(a private cluster, tests/support/postgres.py). What ingest relies on: a batch lands whole,
a redelivery lands on its own row again, series are keyed by device, metric and tags, the
last value is the newest, rollups and retention agree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.model import Event, Reading
from hub.store.postgres import PostgresStore
from hub.store.postgres_schema import DAY_MS
from hub.store.sqlite import MINUTE_MS, Batch, DeadLetter, Store

T0 = 1_763_769_600_000  # 2025-11-22T00:00:00Z, a whole day

AnyStore = Store | PostgresStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyStore]:
    s: AnyStore
    if request.param == "sqlite":
        s = Store(tmp_path / "hub.db", "normal")
    else:
        s = PostgresStore(request.getfixturevalue("pg_url"))
    yield s
    s.close()


def reopen(store: AnyStore, tmp_path: Path) -> AnyStore:
    store.close()
    if isinstance(store, PostgresStore):
        return PostgresStore(store.url)
    return Store(tmp_path / "hub.db", "normal")


def rows(store: AnyStore, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in store.conn.execute(sql).fetchall()]


def r(ts: int, value: float, device: str = "n1", metric: str = "co2", **tags: str) -> Reading:
    return Reading(device, metric, value, ts, "ppm", tags)


def test_redelivery_is_not_stored_twice(store: AnyStore) -> None:
    batch = Batch(readings=[r(T0, 1), r(T0 + 1000, 2)])
    first = store.commit(batch)
    again = store.commit(batch)
    assert (first.stored, first.duplicates) == (2, 0)
    assert (again.stored, again.duplicates) == (0, 2)
    assert store.counts()["samples"] == 2


def test_series_are_keyed_by_device_metric_and_tags(store: AnyStore, tmp_path: Path) -> None:
    store.commit(
        Batch(readings=[r(T0, 1, sensor="scd41"), r(T0, 2, sensor="bme280"), r(T0, 3, device="n2")])
    )
    assert [(s.device, dict(s.tags), s.last_value) for s in store.series("co2")] == [
        ("n1", {"sensor": "bme280"}, 2.0), ("n1", {"sensor": "scd41"}, 1.0), ("n2", {}, 3.0)
    ]  # fmt: skip
    again = reopen(store, tmp_path)  # a restart finds the same series ids
    again.commit(Batch(readings=[r(T0 + 1, 4, sensor="scd41")]))
    assert again.counts()["series"] == 3 and again.counts()["samples"] == 4
    again.close()


def test_last_value_is_the_newest_even_when_late_data_arrives(store: AnyStore) -> None:
    store.commit(Batch(readings=[r(T0 + 5000, 5)]))
    store.commit(Batch(readings=[r(T0, 1)]))
    assert store.series("co2")[0].last_value == 5.0
    assert store.last_value(r(T0, 0)) == 5.0


def test_same_millisecond_readings_stay_apart_by_seq(store: AnyStore) -> None:
    first = r(T0, 1)
    second = Reading("n1", "co2", 2.0, T0, "ppm", seq=1)
    assert store.commit(Batch(readings=[first, second])).stored == 2
    assert store.commit(Batch(readings=[second])).stored == 0
    assert store.last_value(first) == 2.0


def test_fresh_names_what_a_commit_would_insert(store: AnyStore) -> None:
    store.commit(Batch(readings=[r(T0, 1), r(T0 + 1000, 2)]))
    again, new, also_new = r(T0 + 1000, 2), r(T0 + 2000, 3), r(T0 + 2000, 3, device="n2")
    batch = [again, new, new, also_new]
    fresh = store.fresh(batch)
    assert fresh == [new, also_new]
    assert store.commit(Batch(readings=batch)).stored == len(fresh)


def test_events_devices_availability_dead_letters(store: AnyStore) -> None:
    result = store.commit(
        Batch(
            readings=[r(T0, 1)],
            events=[Event("n1", "motion", "ON", T0), Event("n1", "motion", "ON", T0)],
            availability=[("n1", False, T0 + 1)],
            dead_letters=[
                DeadLetter(T0, "mqtt", "n1/sensor/x/state", "not_a_number", "state 'nan'", b"nan")
            ],
        )
    )
    assert (result.events, result.dead_letters) == (1, 1)
    assert store.counts()["events"] == 1
    device = store.devices()[0]
    assert device["name"] == "n1" and device["online"] == 0 and device["last_seen"] == T0
    assert store.dead_letter_counts() == {"not_a_number": 1}


def test_retained_dead_letter_is_kept_once(store: AnyStore) -> None:
    letter = DeadLetter(T0, "mqtt", "n1/x", "bad_json", "not JSON", b"{", retained=True)
    store.commit(Batch(dead_letters=[letter]))
    store.commit(Batch(dead_letters=[letter]))
    assert store.dead_letter_counts() == {"bad_json": 1}


def test_receipts_give_a_redelivered_message_its_first_key(store: AnyStore) -> None:
    store.commit(Batch(readings=[r(T0, 1)], receipts=[(7, 1234, T0, 0), (8, 99, T0 + 1, 2)]))
    assert store.receipt(7, 1234) == (T0, 0)
    assert store.receipt(8, 99) == (T0 + 1, 2)
    assert store.receipt(7, 999) is None  # same packet id, another message
    store.commit(Batch(receipts=[(7, 555, T0 + 5, 0)]))  # the packet id is reused
    assert store.receipt(7, 555) == (T0 + 5, 0) and store.receipt(7, 1234) is None


def test_rollups_min_max_mean_count(store: AnyStore) -> None:
    store.commit(Batch(readings=[r(T0 + i * 1000, float(i)) for i in range(180)]))
    assert store.rollup() == 1
    assert rows(store, "SELECT bucket, min, max, sum, count FROM rollup_1m ORDER BY bucket") == [
        (T0, 0, 59, sum(range(60)), 60),
        (T0 + MINUTE_MS, 60, 119, sum(range(60, 120)), 60),
        (T0 + 2 * MINUTE_MS, 120, 179, sum(range(120, 180)), 60),
    ]
    assert rows(store, "SELECT bucket, min, max, count FROM rollup_1h") == [(T0, 0, 179, 180)]
    store.commit(Batch(readings=[r(T0 + 30_500, 1000.0)]))  # late data
    assert store.rollup() == 1
    assert rows(store, "SELECT max, count FROM rollup_1h") == [(1000.0, 181)]
    assert store.rollup() == 0  # nothing dirty left


def test_retention(store: AnyStore) -> None:
    store.commit(Batch(readings=[r(T0, 1), r(T0 + 10 * DAY_MS, 2)]))
    store.rollup()
    deleted = store.apply_retention(T0 + 10 * DAY_MS, raw_s=86_400, minute_s=0, hour_s=0)
    assert deleted == {"samples": 1}
    assert store.counts()["samples"] == 1 and store.counts()["rollup_1m"] == 2


def test_a_batch_is_one_transaction(store: AnyStore) -> None:
    """A batch that fails half-way stores nothing, and the series it created are forgotten
    (a later commit must not use the id of a series that was rolled back)."""
    broken = DeadLetter(T0, None, "x", "bad_json", "", b"{")  # type: ignore[arg-type]
    bad = Batch(readings=[r(T0, 1, device="new")], dead_letters=[broken])
    with pytest.raises(Exception):  # noqa: B017 (each backend has its own NOT NULL error)
        store.commit(bad)
    assert store.counts()["samples"] == 0
    assert store.commit(Batch(readings=[r(T0, 1, device="new")])).stored == 1
    assert store.counts()["series"] == 1


@pytest.mark.postgres
def test_postgres_samples_are_partitioned_by_day_and_retention_drops_partitions(
    pg_url: str,
) -> None:
    store = PostgresStore(pg_url)
    store.commit(Batch(readings=[r(T0 + d * DAY_MS + 5, float(d)) for d in range(4)]))
    assert store.partitions() == [f"samples_d{T0 // DAY_MS + d}" for d in range(4)]
    deleted = store.apply_retention(T0 + 3 * DAY_MS + 10, raw_s=86_400, minute_s=0, hour_s=0)
    assert deleted == {"samples": 3}  # days 0 and 1 dropped whole, day 2's row deleted
    assert store.partitions() == [f"samples_d{T0 // DAY_MS + d}" for d in (2, 3)]
    assert store.counts()["samples"] == 1
    store.close()


@pytest.mark.postgres
def test_postgres_schema_is_versioned_and_a_newer_one_is_refused(pg_url: str) -> None:
    from hub.store.postgres_schema import MIGRATIONS, SCHEMA_VERSION
    from hub.store.sqlite import StoreError

    store = PostgresStore(pg_url)
    assert store.schema_version == SCHEMA_VERSION == max(MIGRATIONS)
    store.conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    store.close()
    with pytest.raises(StoreError, match="newer hub"):
        PostgresStore(pg_url)


@pytest.mark.postgres
def test_postgres_unreachable_is_a_clear_store_error() -> None:
    from hub.store.sqlite import StoreError
    from tests.support.mosquitto import free_port

    with pytest.raises(StoreError, match="cannot connect"):
        PostgresStore(f"postgresql://hub:secret@127.0.0.1:{free_port()}/hub", connect_timeout=2)


@pytest.mark.postgres
def test_postgres_workers_get_their_own_seq_range_kept_across_restarts(pg_url: str) -> None:
    from hub.store.postgres_schema import SLOT_BITS

    one, two = PostgresStore(pg_url, client="w-1"), PostgresStore(pg_url, client="w-2")
    bases = (one.seq_base(), two.seq_base())
    assert bases[0] != bases[1] and all(b and b % (1 << SLOT_BITS) == 0 for b in bases)
    one.close()
    again = PostgresStore(pg_url, client="w-1")
    assert again.seq_base() == bases[0]
    again.close()
    two.close()


def test_a_large_batch_and_its_redelivery(store: AnyStore) -> None:
    """Large batches take another path in PostgreSQL (COPY); the contract is the same."""
    batch = Batch(readings=[r(T0 + i, float(i), device=f"n{i % 7}") for i in range(5000)])
    assert store.commit(batch).stored == 5000
    half = Batch(readings=[*batch.readings[2500:], r(T0 + 10_000, 1.0)])
    result = store.commit(half)
    assert (result.stored, result.duplicates) == (1, 2500)
    assert store.counts()["samples"] == 5001
