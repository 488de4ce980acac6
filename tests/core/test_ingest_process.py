"""IngestCore.process on a real store: what derivers and listeners see, and the keys given
to states stamped on receipt (the end-to-end cases are in test_exact_readings.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from hub.bus.mqtt import Message
from hub.bus.router import Router
from hub.config import HubConfig
from hub.derive.pipeline import Derived
from hub.ingest import IngestCore
from hub.model import Reading
from hub.store.sqlite import Store
from hub.store.writer import StoreWriter

NOW = 1_763_800_000_000


class Recorder:
    """A deriver that records what it is given (and fails when told to)."""

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[Reading] = []
        self.fail = fail

    def derive(self, readings: Sequence[Reading]) -> Derived:
        if self.fail:
            raise ValueError("broken filter")
        self.seen.extend(readings)
        return Derived(
            [
                Reading(r.device, "twice", r.value * 2, r.timestamp_ms, source="derived", seq=r.seq)
                for r in readings
            ]
        )

    def tick(self, now_ms: int) -> Derived:
        return Derived()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "hub.db", "normal")
    yield s
    s.close()


def core(store: Store, *derivers: Any) -> IngestCore:
    # process() runs in the calling thread: the writer's own thread is not used here
    return IngestCore(None, StoreWriter(store), Router(HubConfig()), derivers=derivers)  # type: ignore[arg-type]


def state(
    value: str, mid: int, received: int = NOW, dup: bool = False, retain: bool = False
) -> Message:
    return Message("n1/sensor/co2/state", value.encode(), 1, mid, dup, retain, received)


def test_a_redelivery_in_the_same_batch_is_derived_and_announced_once(store: Store) -> None:
    recorder = Recorder()
    ingest = core(store, recorder)
    committed = ingest.process([state("600", 1), state("601", 2), state("600", 1, dup=True)])
    assert [(r.value, r.seq) for r in recorder.seen] == [(600.0, 0), (601.0, 1)]
    assert [r.metric for r in committed.readings] == ["co2", "co2", "twice", "twice"]
    # and again in a later batch, from its receipt
    committed = ingest.process([state("601", 2, received=NOW + 5, dup=True)])
    assert committed.readings == [] and len(recorder.seen) == 2
    assert ingest.stats.duplicates == 2 and ingest.stats.readings_stored == 4


def test_same_millisecond_states_stay_apart_without_moving_ahead_of_the_clock(store: Store) -> None:
    ingest = core(store)
    ingest.process([state(str(i), i + 1) for i in range(50)])
    keys = list(store.conn.execute("SELECT ts, seq, value FROM samples ORDER BY ts, seq"))
    assert keys == [(NOW, i, float(i)) for i in range(50)]


def test_a_failing_deriver_is_counted_and_leaves_a_dead_letter(store: Store) -> None:
    ingest = core(store, Recorder(fail=True))
    committed = ingest.process([state("600", 1)])
    assert [r.value for r in committed.readings] == [600.0]  # the reading itself is stored
    status = ingest.stats.as_dict()
    assert status["deriver_failures_by"] == {"Recorder": 1} and status["deriver_failures"] == 1
    (letter,) = store.dead_letters()
    assert (letter["source"], letter["topic"], letter["reason"]) == (
        "derive",
        "Recorder",
        "deriver_failed",
    )
    assert "broken filter" in letter["detail"]


def test_a_retained_state_the_store_ends_with_is_not_a_new_reading(store: Store) -> None:
    recorder = Recorder()
    ingest = core(store, recorder)
    ingest.process([state("600", 1, retain=True)])  # first seen: the last known value
    committed = ingest.process([state("600", 2, received=NOW + 10, retain=True)])
    assert committed.readings == [] and committed.last_known == []
    assert recorder.seen == []  # never derived, never handed to alerts as new
    committed = ingest.process([state("650", 3, received=NOW + 20, retain=True)])
    assert [r.value for r in committed.last_known] == [650.0] and committed.readings == []
    assert [row[0] for row in store.conn.execute("SELECT value FROM samples ORDER BY ts")] == [
        600.0,
        650.0,
    ]
    assert ingest.stats.retained_known == 1
