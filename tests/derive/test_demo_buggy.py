"""The demo's buggy drives runs with pit stops, and each run is a drive session (issue #15).

Pure: the simulator's model and the derivations are fed with made-up time, no broker."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from hub.config.runtime import SimulateConfig
from hub.derive.pipeline import Derivations, DeriveConfig
from hub.derive.session import Session
from hub.sources.simulate import Buggy, Simulation, simulated_vehicle

START = 1_796_000_000.0  # seconds
RATE = 10.0  # frames per second, as the demo's buggy_rate


def drive(derivations: Derivations, buggy: Buggy, seconds: float) -> list[object]:
    """Feed `seconds` of the buggy's frames; the session records written on the way."""
    writes: list[object] = []
    for i in range(int(seconds * RATE)):
        frame = buggy.step(START + i / RATE, 1 / RATE)
        writes.extend(derivations.derive(frame).writes)
    return writes


def sessions_of(writes: list[object]) -> list[Session]:
    return [w.keywords["session"] for w in writes]  # type: ignore[attr-defined]


def test_each_run_is_a_session_and_close_stores_the_open_one() -> None:
    buggy = Buggy("buggy", random.Random(5), drive_time=20.0, pit_stop=12.0)
    derivations = Derivations(DeriveConfig(rc={"buggy": simulated_vehicle("buggy", 6.0)}))
    # Table 3 s, run 3-23 s, pit 23-35 s (closes at 29 s), run 35-55 s, pit 55-67 s (closes
    # at 61 s), run from 67 s: stopped at 80 s, in the middle of the third run.
    closed = sessions_of(drive(derivations, buggy, 80.0))
    assert len(closed) == 2
    for session, start in zip(closed, (3, 35), strict=True):
        assert session.start_ms / 1000 - START == pytest.approx(start, abs=1.0)
        assert 18 <= session.duration_s <= 23  # the motor runs down a moment after the run
        assert session.distance_km and session.energy_wh and session.consumed_mah
    assert derivations.vehicles["buggy"].sessions.active
    last = sessions_of(derivations.close().writes)
    assert len(last) == 1 and last[0].start_ms / 1000 - START == pytest.approx(67, abs=1.0)
    assert last[0].distance_km and last[0].energy_wh and last[0].consumed_mah
    assert not derivations.vehicles["buggy"].sessions.active
    assert derivations.close().writes == []  # nothing open any more


def test_lifts_within_a_run_never_end_its_session() -> None:
    """Over many runs and seeds, a run is exactly one session: the throttle's lifts are
    short next to the shortest gap the demo allows (2 s)."""
    for seed in range(8):
        buggy = Buggy("buggy", random.Random(seed), drive_time=30.0, pit_stop=5.0)
        derivations = Derivations(DeriveConfig(rc={"buggy": simulated_vehicle("buggy", 2.0)}))
        closed = sessions_of(drive(derivations, buggy, 3 + 4 * 35.0))
        assert len(closed) == 4, (seed, [s.duration_s for s in closed])


def test_without_pit_stops_the_buggy_never_stops() -> None:
    buggy = Buggy("buggy", random.Random(1), pit_stop=0.0)
    derivations = Derivations(DeriveConfig(rc={"buggy": simulated_vehicle("buggy", 2.0)}))
    assert sessions_of(drive(derivations, buggy, 120.0)) == []
    assert len(sessions_of(derivations.close().writes)) == 1


def test_a_pit_stop_must_outlast_the_session_gap() -> None:
    with pytest.raises(ValidationError, match=r"pit_stop .* must be longer than .*session_gap"):
        SimulateConfig(pit_stop="10s", session_gap="15s")
    assert SimulateConfig(pit_stop=0, session_gap="15s").pit_stop == 0
    defaults = SimulateConfig()
    assert (defaults.drive_time, defaults.pit_stop, defaults.session_gap) == (45, 30, 15)


def test_the_start_log_counts_in_words() -> None:
    assert Simulation(3, 1).describe() == (
        "3 air-quality nodes and 1 buggy (runs of 45 s, pit stops of 30 s)"
    )
    assert Simulation(1, 2, pit_stop=0).describe() == (
        "1 air-quality node and 2 buggies (driving without a stop)"
    )
    assert Simulation(2, 0).describe() == "2 air-quality nodes"
