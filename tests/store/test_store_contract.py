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
from hub.store.sqlite import MINUTE_MS, Batch, DeadLetter, DeadLetterLimits, Store

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


# -- the query side (hub.store.postgres_read): the same answers from both backends ---------------


def sessions_of(store: AnyStore) -> Any:
    """The drive-session store of either backend (SQLite keeps it beside the core store)."""
    if isinstance(store, PostgresStore):
        return store.sessions
    from hub.store.sessions import SessionStore

    return SessionStore(store.conn)


def execute(store: AnyStore, sql: str, args: tuple[Any, ...] = ()) -> None:
    """One statement in the backend's own placeholder style (written with ?)."""
    if isinstance(store, PostgresStore):
        store.conn.execute(sql.replace("?", "%s"), args)
    else:
        with store.transaction() as conn:
            conn.execute(sql, args)


def test_every_store_method_exists_on_both_backends() -> None:
    """Method by method: what the SQLite store offers, PostgreSQL offers too (the WAL
    checkpoint is SQLite's own), and the read-only stores answer the same reads."""
    from hub.store.postgres_read import PostgresReadStore
    from hub.store.reader import ReadStore

    def public(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")}

    assert public(Store) - public(PostgresStore) == {"checkpoint"}
    writes = {"apply_retention", "checkpoint", "commit", "transaction", "rollup", "fresh"}
    writes |= {"delete_dead_letters", "expire_dead_letters", "keep_dead_letter"}
    writes |= {"mark_replayed", "purge_dead_letters", "receipt", "last_value"}
    writes |= {"last_event_text", "load_entities"}  # the ingest path's own reads
    assert public(ReadStore) - public(PostgresReadStore) == writes


def test_query_raw_points_and_time_buckets(store: AnyStore) -> None:
    store.commit(Batch(readings=[r(T0 + i * 1000, float(i)) for i in range(100)]))
    (raw,) = store.query("co2", start_ms=T0, end_ms=T0 + 99_000, max_points=1000)
    assert raw.resolution == "raw" and len(raw.points) == 100
    assert (raw.points[0].ts, raw.points[0].mean, raw.points[-1].mean) == (T0, 0.0, 99.0)
    (coarse,) = store.query("co2", start_ms=T0, end_ms=T0 + 99_999, max_points=10)
    assert coarse.resolution == "raw" and len(coarse.points) == 10
    first = coarse.points[0]
    assert (first.ts, first.mean, first.min, first.max, first.count) == (T0, 4.5, 0.0, 9.0, 10)
    assert sum(p.count for p in coarse.points) == 100
    assert store.query("co2", start_ms=T0 + 200_000, end_ms=T0 + 300_000)[0].points == []
    assert store.query("pm2_5", start_ms=T0, end_ms=T0 + 1) == []


def test_query_reads_the_rollups_and_the_raw_samples_not_rolled_up_yet(store: AnyStore) -> None:
    """Three hours at one sample a minute: the first two rolled up, the third still dirty.
    A query over them reads 1-minute buckets (rollup + raw tail) and, over a day, 1-hour
    buckets; every sample is counted once either way."""
    two_hours = [r(T0 + i * MINUTE_MS, float(i)) for i in range(120)]
    store.commit(Batch(readings=two_hours))
    assert store.rollup() == 1
    store.commit(Batch(readings=[r(T0 + i * MINUTE_MS, float(i)) for i in range(120, 180)]))
    end = T0 + 180 * MINUTE_MS - 1
    (minutes,) = store.query("co2", start_ms=T0, end_ms=end, max_points=90)
    assert minutes.resolution == "1m"
    assert len(minutes.points) == 90 and all(p.count == 2 for p in minutes.points)
    assert (minutes.points[0].mean, minutes.points[-1].max) == (0.5, 179.0)
    (hours,) = store.query("co2", start_ms=T0, end_ms=T0 + DAY_MS - 1, max_points=24)
    assert hours.resolution == "1h"
    assert [p.count for p in hours.points] == [60, 60, 60]
    assert (hours.points[2].ts, hours.points[2].min, hours.points[2].max) == (T0 + 7_200_000, 120.0, 179.0)  # fmt: skip
    (wide,) = store.query("co2", start_ms=T0, end_ms=T0 + 2 * DAY_MS, max_points=24)
    assert [p.count for p in wide.points] == [180]  # 3-hour buckets: never over max_points
    store.rollup()
    (again,) = store.query("co2", start_ms=T0, end_ms=T0 + DAY_MS - 1, max_points=24)
    assert again.points == hours.points


def test_query_by_device_and_tags_and_the_latest_values(store: AnyStore) -> None:
    from hub.web.reader import latest

    store.commit(
        Batch(
            readings=[
                r(T0, 1, sensor="scd41"), r(T0 + 1000, 2, sensor="scd41"),
                r(T0, 5, sensor="bme280"), r(T0, 7, device="n2"),
            ]
        )
    )  # fmt: skip
    found = store.query("co2", start_ms=T0, end_ms=T0 + 5000, tags={"sensor": "scd41"})
    assert [(s.series.device, [p.mean for p in s.points]) for s in found] == [("n1", [1.0, 2.0])]
    assert [s.series.device for s in store.query("co2", "n2", T0, T0 + 5000)] == ["n2"]
    rows = latest(store, metric="co2")  # type: ignore[arg-type]
    assert [(x["device"], x["tags"], x["value"], x["ts"]) for x in rows] == [
        ("n1", {"sensor": "bme280"}, 5.0, T0),
        ("n1", {"sensor": "scd41"}, 2.0, T0 + 1000),
        ("n2", {}, 7.0, T0),
    ]


def test_devices_identities_known_series_and_events(store: AnyStore) -> None:
    from hub.model import DeviceInfo

    info = DeviceInfo("n1", "esphome", "Espressif", "ESP32", "2025.1", ("mac:aa", "x"), "airq")
    store.commit(
        Batch(
            readings=[r(T0, 1), r(T0 + 5, 2, metric="pm2_5"), r(T0 + 9, 3, device="n2")],
            events=[Event("n1", "motion", "ON", T0 + 1), Event("n1", "motion", "OFF", T0 + 2)],
            devices=[info],
            availability=[("n1", True, T0 + 3)],
        )
    )
    rows = {d["name"]: d for d in store.device_rows()}
    assert rows["n1"]["online"] is True and rows["n2"]["online"] is None
    assert rows["n1"]["metrics"] == ["co2", "pm2_5"] and rows["n1"]["model"] == "ESP32"
    assert (rows["n1"]["last_seen"], rows["n1"]["availability_ts"]) == (T0 + 5, T0 + 3)
    assert [d["name"] for d in store.device_rows("n2")] == ["n2"]
    assert store.device_rows("nobody") == []
    identities = sorted(store.device_identities())
    assert identities[0] == ("n1", "Espressif", "ESP32", "2025.1", ("mac:aa", "x"), "airq")
    assert identities[1][0] == "n2"
    assert sorted(store.known_series()) == [("n1", "co2", T0), ("n1", "pm2_5", T0 + 5), ("n2", "co2", T0 + 9)]  # fmt: skip
    events = store.events("n1")
    assert [(e["name"], e["text"], e["ts"]) for e in events] == [
        ("motion", "OFF", T0 + 2), ("motion", "ON", T0 + 1)
    ]  # fmt: skip
    assert store.events(limit=1)[0]["text"] == "OFF" and store.events("n2") == []


def dead(i: int, reason: str = "bad_json", payload: bytes | None = b"{", source: str = "mqtt") -> DeadLetter:  # fmt: skip
    return DeadLetter(T0 + i, source, f"n1/t{i}", reason, f"detail {i}", payload)


def test_dead_letters_list_show_find_and_summarise(store: AnyStore) -> None:
    store.dead_letter_limits = DeadLetterLimits(max_payload=4)
    store.commit(
        Batch(
            dead_letters=[
                dead(0), dead(1, "not_a_number", b"nan"), dead(2, payload=b"0123456789"),
                dead(3, "refused", None, source="influx"),
            ]
        )
    )  # fmt: skip
    listed = store.dead_letters()
    assert [d["topic"] for d in listed] == ["n1/t3", "n1/t2", "n1/t1", "n1/t0"]  # newest first
    ids = [d["id"] for d in reversed(listed)]
    assert listed[1]["payload_bytes"] == 10 and listed[1]["payload_truncated"] is True
    assert listed[2]["payload_truncated"] is False and listed[0]["payload_bytes"] is None
    assert [d["id"] for d in store.dead_letters(reason="bad_json")] == [ids[2], ids[0]]
    assert [d["id"] for d in store.dead_letters(after_id=ids[1])] == [ids[3], ids[2]]
    assert len(store.dead_letters(limit=1)) == 1
    found = store.dead_letter(ids[2])
    assert found is not None
    info, payload = found
    assert payload == b"0123" and info["payload_bytes"] == 10 and info["payload_truncated"]
    assert info["reason"] == "bad_json" and info["payload_sha256"] is not None
    assert store.dead_letter(ids[3] + 100) is None
    everything = store.find_dead_letters()
    assert [d["id"] for d in everything] == ids  # oldest first
    assert set(everything[0]) == {
        "id", "received_ts", "source", "topic", "reason", "detail", "payload_bytes", "replayed_ts"
    }  # fmt: skip
    assert [d["id"] for d in store.find_dead_letters(ids=[ids[1], ids[3]])] == [ids[1], ids[3]]
    assert [d["id"] for d in store.find_dead_letters(source="influx")] == [ids[3]]
    assert [d["id"] for d in store.find_dead_letters(reason="bad_json", limit=1)] == [ids[2]]
    assert [d["id"] for d in store.find_dead_letters(before_ms=T0 + 2)] == ids[:2]
    store.mark_replayed([ids[0]], T0 + 50)
    assert store.find_dead_letters(ids=[ids[0]])[0]["replayed_ts"] == T0 + 50
    assert [d["id"] for d in store.find_dead_letters(include_replayed=False)] == ids[1:]
    assert store.dead_letter_summary() == [
        ("influx", "refused", 1, 1), ("mqtt", "bad_json", 2, 1), ("mqtt", "not_a_number", 1, 1)
    ]  # fmt: skip
    totals = store.dead_letter_totals()
    assert totals["stored_bytes"] == 1 + 3 + 4
    assert {"dropped_for_size", "retained_repeats"} <= set(totals)


def test_dead_letters_delete_purge_keep_and_expire(store: AnyStore) -> None:
    store.dead_letter_limits = DeadLetterLimits(retention_s=10.0)
    store.commit(Batch(dead_letters=[dead(i, "bad_json" if i % 2 else "too_big") for i in range(6)]))  # fmt: skip
    ids = [d["id"] for d in store.find_dead_letters()]
    assert store.delete_dead_letters(ids[:2]) == 2
    assert store.purge_dead_letters(reason="bad_json", before_ms=T0 + 4) == 1  # id 3 only
    assert [d["topic"] for d in store.find_dead_letters()] == ["n1/t2", "n1/t4", "n1/t5"]
    with store.transaction() as conn:
        kept = store.keep_dead_letter(conn, dead(20_000, "refused", b"line"))  # type: ignore[arg-type]
    assert kept is not None and store.dead_letter(kept) is not None
    assert store.dead_letter(kept)[0]["topic"] == "n1/t20000"  # type: ignore[index]
    # 10 s retention at T0 + 20 s: those received before T0 + 10 s go.
    assert store.expire_dead_letters(T0 + 20_000) == 3
    assert [d["id"] for d in store.find_dead_letters()] == [kept]
    assert store.purge_dead_letters() == 1 and store.dead_letter_counts() == {}


def test_dead_letter_replay_stores_readings_and_marks_them_once(store: AnyStore) -> None:
    """The web API's replay (hub.web.replay) on either backend: what decodes now is stored
    and marked replayed in one transaction; a replay again stores nothing twice."""
    from hub.bus.router import Router
    from hub.config import HubConfig
    from hub.web.replay import replay

    payload = b'{"ts_ms": %d, "values": {"co2": 612}}' % T0
    store.commit(Batch(dead_letters=[DeadLetter(T0, "mqtt", "hub/readings/n9", "x", "", payload)]))
    (letter,) = store.find_dead_letters()
    outcome, committed = replay(store, Router(HubConfig()), [letter["id"]], None, 10, T0 + 7)
    assert outcome == {"replayed": 1, "readings": 1, "failed": []} and committed is not None
    assert store.find_dead_letters()[0]["replayed_ts"] == T0 + 7
    assert store.series("co2", "n9")[0].last_value == 612.0
    replay(store, Router(HubConfig()), [letter["id"]], None, 10, T0 + 8)
    assert store.counts()["samples"] == 1


def test_size_is_what_the_store_takes(store: AnyStore) -> None:
    assert store.size_bytes() > 0


def test_drive_sessions_save_list_alerts_and_readings(store: AnyStore) -> None:
    from hub.derive.session import Session

    sessions = sessions_of(store)
    one = Session("b-1", "buggy", "buggy", T0, T0 + 60_000, max_speed_kmh=41.5)
    two = Session("b-2", "buggy", "buggy", T0 + 120_000, T0 + 180_000)
    other = Session("c-1", "crawler", "crawler", T0 + 1, T0 + 2)
    for s in (one, two, other):
        sessions.save(s)
    sessions.save(Session("b-1", "buggy", "buggy", T0, T0 + 61_000, max_speed_kmh=42.0))
    assert [s.id for s in sessions.list()] == ["b-2", "c-1", "b-1"]  # newest first
    assert [s.id for s in sessions.list("buggy", limit=1)] == ["b-2"]
    got = sessions.get("b-1")
    assert got is not None and (got.end_ms, got.max_speed_kmh) == (T0 + 61_000, 42.0)
    assert sessions.get("nope") is None
    execute(
        store,
        "INSERT INTO alerts (rule, device, severity, state, message, device_class, started_ms, "
        "updated_ms, resolved_ms, count) VALUES (?,?,?,?,?,?,?,?,?,?)",
        ("cell_low", "buggy", "critical", "resolved", "cell low", "voltage", T0 + 30_000,
         T0 + 40_000, T0 + 40_000, 1),
    )  # fmt: skip
    assert [(a["rule"], a["resolved_ms"]) for a in sessions.alerts(got)] == [
        ("cell_low", T0 + 40_000)
    ]
    assert sessions.alerts(two) == []
    store.commit(
        Batch(
            readings=[
                Reading("buggy", "speed", 10.0, T0 + 1000, "km/h", {}, "serial"),
                Reading("buggy", "speed", 12.0, T0 + 2000, "km/h", {}, "serial"),
                Reading("buggy", "speed", 99.0, T0 + 100_000, "km/h", {}, "serial"),
            ]
        )
    )
    readings = list(sessions.readings(got))
    assert [(x.metric, x.value, x.timestamp_ms, x.source) for x in readings] == [
        ("speed", 10.0, T0 + 1000, "serial"), ("speed", 12.0, T0 + 2000, "serial")
    ]  # fmt: skip


@pytest.mark.postgres
def test_postgres_read_store_answers_the_same_and_never_writes(pg_url: str) -> None:
    import psycopg

    from hub.store.postgres_read import PostgresReadStore

    store = PostgresStore(pg_url)
    store.commit(Batch(readings=[r(T0 + i * 1000, float(i)) for i in range(50)]))
    store.commit(Batch(dead_letters=[dead(1)], events=[Event("n1", "door", "open", T0)]))
    reader = PostgresReadStore(pg_url)
    assert reader.query("co2", None, T0, T0 + 60_000, 5) == store.query("co2", None, T0, T0 + 60_000, 5)  # fmt: skip
    assert reader.device_rows() == store.device_rows()
    assert reader.dead_letters() == store.dead_letters()
    assert reader.events() == store.events() and reader.counts() == store.counts()
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        reader.conn.execute("DELETE FROM samples")
    assert store.counts()["samples"] == 50
    reader.close()
    store.close()


@pytest.mark.postgres
def test_postgres_read_store_says_unreachable_and_reconnects(pg_url: str) -> None:
    """A reader whose connection the server ended (a restart, a failover) says so clearly
    once, then connects again by itself; a server that is not there is unreachable."""
    from hub.store.postgres_read import PostgresReadStore
    from hub.store.reader import StoreUnavailable
    from tests.support.mosquitto import free_port

    store = PostgresStore(pg_url)
    store.commit(Batch(readings=[r(T0, 1)]))
    reader = PostgresReadStore(pg_url)
    assert reader.counts()["samples"] == 1
    pid = reader.conn.info.backend_pid
    store.conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StoreUnavailable, match="PostgreSQL store unreachable"):
        reader.counts()
    assert reader.counts()["samples"] == 1  # opened again
    assert reader.conn.info.backend_pid != pid
    gone = PostgresReadStore(f"postgresql://hub:pw@127.0.0.1:{free_port()}/hub")
    with pytest.raises(StoreUnavailable, match=r"unreachable at postgresql://hub@127\.0\.0\.1"):
        gone.series()
    gone.close()
    reader.close()
    store.close()


@pytest.mark.postgres
def test_postgres_rollups_by_two_workers_at_once_while_ingest_goes_on(pg_url: str) -> None:
    """Two workers roll up at the same instant while a third keeps committing into the same
    series: every claimed series is rolled up by exactly one of them (SKIP LOCKED), nothing
    a commit marks dirty during a rollup is lost, and in the end the 1-minute buckets add up
    to every sample."""
    import threading

    writer = PostgresStore(pg_url, client="w-ingest")
    rollers = [PostgresStore(pg_url, client=f"w-{i}") for i in range(2)]
    series = 40
    # Every series dirty before the race starts.
    writer.commit(
        Batch(
            readings=[r(T0 + k, float(k), device=f"n{s}") for s in range(series) for k in range(3)]
        )
    )
    start = threading.Barrier(3)
    stop = threading.Event()
    claimed: list[list[int]] = [[], []]
    errors: list[BaseException] = []

    def roll(index: int) -> None:
        try:
            start.wait(10)
            while not stop.is_set():
                claimed[index].append(rollers[index].rollup(0, 3))
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=roll, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    start.wait(10)
    written = series * 3
    for round_ in range(60):  # late and new samples into series being rolled up right now
        ts = T0 + 10_000 + round_ * 997
        writer.commit(Batch(readings=[r(ts, 1.0, device=f"n{s}") for s in range(series)]))
        written += series
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sum(claimed[0]) and sum(claimed[1]), "both workers must have rolled up some series"
    while rollers[0].rollup(0, 64):  # what the race left dirty, as the next round would
        pass
    assert rows(rollers[0], "SELECT count(*) FROM rollup_dirty") == [(0,)]
    per_series = rows(
        rollers[0],
        "SELECT s.device, sum(m.count), (SELECT count(*) FROM samples x WHERE x.series_id = s.id) "
        "FROM rollup_1m m JOIN series s ON s.id = m.series_id GROUP BY s.device, s.id",
    )
    assert len(per_series) == series
    assert all(int(rolled) == int(stored) for _, rolled, stored in per_series), per_series
    assert sum(int(stored) for _, _, stored in per_series) == written
    hours = rows(rollers[0], "SELECT sum(count) FROM rollup_1h")
    assert int(hours[0][0]) == written
    for s in (writer, *rollers):
        s.close()


@pytest.mark.postgres
def test_postgres_workers_creating_the_same_new_series_in_any_order_never_deadlock(
    pg_url: str,
) -> None:
    """Four workers commit batches that create the same new series, each in its own order,
    at the same instant. Each INSERT of a new series waits for another transaction's entry of
    the same key; in opposite orders two of them waited for each other (DeadlockDetected,
    and a batch retried). The store creates a batch's new series in one order instead."""
    import random
    import threading

    stores = [PostgresStore(pg_url, client=f"w-{i}") for i in range(4)]
    rounds, width = 15, 12
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def work(index: int) -> None:
        rng = random.Random(index)
        try:
            for round_ in range(rounds):
                names = [f"r{round_}-n{k}" for k in range(width)]
                rng.shuffle(names)
                batch = Batch(readings=[r(T0 + index, 1.0, device=name) for name in names])
                barrier.wait(10)
                stores[index].commit(batch)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    counts = stores[0].counts()
    assert counts["series"] == rounds * width
    assert counts["samples"] == rounds * width * len(stores)
    for s in stores:
        s.close()
