"""Drive sessions: start on the first turn, end after the idle timeout, figures of the run."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.derive.session import Session, SessionConfig, SessionTracker, session_id
from hub.model import Reading

T0 = 1_732_262_400_000  # 2024-11-22T08:00:00Z


def frame(ts: int, **values: float) -> list[Reading]:
    return [Reading("esc0", metric, value, ts, source="serial") for metric, value in values.items()]


def drive(tracker: SessionTracker) -> list[Session]:
    """Idle 10 s, drive 120 s, stop; readings keep coming at 1 Hz until 300 s."""
    closed: list[Session] = []
    for s in range(0, 301):
        ts = T0 + 1000 * s
        moving = 10 <= s <= 130
        values = {
            "erpm": 60_000.0 if moving else 0.0,
            "current": (20.0 + s % 30) if moving else 0.5,
            "esc_temperature": 30.0 + min(s, 180) / 4,  # heat soak: peaks 50 s after stopping
            "motor_temperature": 40.0 + (s if s <= 130 else 130) / 5,
            "consumed_mah": 100.0 + 10.0 * max(0, min(s, 130) - 10),
            "energy_wh": 1.0 + 0.1 * max(0, min(s, 130) - 10),
            "cell_voltage_min": 3.9 if not moving else 3.9 - 0.002 * (s - 10),
        }
        if moving:
            values["speed"] = 40.0 + (s % 50)
        closed += tracker.feed(frame(ts, **values))
    return closed


def test_one_drive_session() -> None:
    tracker = SessionTracker("eb48", "esc0", SessionConfig(idle_timeout=60.0))
    closed = drive(tracker)
    assert len(closed) == 1
    s = closed[0]
    assert s.id == "eb48-20241122T080010Z" == session_id("eb48", T0 + 10_000)
    assert (s.vehicle, s.device) == ("eb48", "esc0")
    assert s.start_ms == T0 + 10_000 and s.end_ms == T0 + 130_000
    assert s.duration_s == 120.0
    assert s.max_speed_kmh == 89.0
    assert s.max_current_a == 49.0
    assert s.min_cell_voltage_load == 3.9 - 0.002 * 120
    assert s.peak_esc_temperature == 30.0 + 180 / 4  # read after the stop, before the close
    assert s.peak_motor_temperature == 40.0 + 130 / 5
    assert s.consumed_mah == 1200.0
    assert s.energy_wh == 12.0
    assert s.distance_km is None  # nobody reported distance
    assert not tracker.active


def test_session_closes_on_tick_when_readings_stop() -> None:
    tracker = SessionTracker("eb48", "esc0", SessionConfig(idle_timeout=30.0))
    for s in range(20):
        tracker.feed(frame(T0 + 1000 * s, rpm=5000.0))
    assert tracker.active and tracker.current is not None
    assert tracker.current.duration_s == 19.0
    assert tracker.tick(T0 + 19_000 + 29_999) == []
    closed = tracker.tick(T0 + 19_000 + 30_000)
    assert [c.duration_s for c in closed] == [19.0]
    assert tracker.tick(T0 + 100_000) == []


def test_thresholds_decide_motion() -> None:
    cfg = SessionConfig(start_rpm=300, start_erpm=1000, start_current_a=3)
    tracker = SessionTracker("eb48", "esc0", cfg)
    tracker.feed(frame(T0, rpm=299.0, erpm=999.0, current=2.9))
    assert not tracker.active
    tracker.feed(frame(T0 + 1, current=3.0))
    assert tracker.active


def test_short_blips_are_discarded() -> None:
    tracker = SessionTracker("eb48", "esc0", SessionConfig(idle_timeout=10.0, min_duration=3.0))
    tracker.feed(frame(T0, erpm=5000.0))
    tracker.feed(frame(T0 + 2000, erpm=5000.0))
    assert tracker.feed(frame(T0 + 20_000, erpm=0.0)) == []
    assert tracker.discarded == 1


def test_two_sessions_and_counter_reset_between_packs() -> None:
    tracker = SessionTracker("eb48", "esc0", SessionConfig(idle_timeout=10.0, min_duration=0))
    closed: list[Session] = []
    closed += tracker.feed(frame(T0, consumed_mah=500.0, erpm=0.0))
    closed += tracker.feed(frame(T0 + 1000, consumed_mah=520.0, erpm=9000.0))
    closed += tracker.feed(frame(T0 + 5000, consumed_mah=900.0, erpm=9000.0))
    # New pack: the ESC restarted its counter.
    closed += tracker.feed(frame(T0 + 60_000, consumed_mah=3.0, erpm=0.0))
    closed += tracker.feed(frame(T0 + 61_000, consumed_mah=10.0, erpm=9000.0))
    closed += tracker.feed(frame(T0 + 64_000, consumed_mah=250.0, erpm=9000.0))
    closed += tracker.close()
    assert [c.consumed_mah for c in closed] == [400.0, 247.0]
    assert closed[0].end_ms == T0 + 5000


def test_no_current_sensor_uses_motion_as_load() -> None:
    tracker = SessionTracker("eb48", "esc0", SessionConfig(min_duration=0))
    tracker.feed(frame(T0, erpm=0.0, cell_voltage_min=3.6))  # at rest: not "under load"
    tracker.feed(frame(T0 + 1000, erpm=9000.0, cell_voltage_min=3.7))
    tracker.feed(frame(T0 + 2000, erpm=9000.0, cell_voltage_min=3.65))
    (s,) = tracker.close()
    assert s.min_cell_voltage_load == 3.65


def test_nan_is_ignored() -> None:
    tracker = SessionTracker("eb48", "esc0")
    tracker.feed(frame(T0, erpm=float("nan")))
    assert not tracker.active


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 90_000), st.booleans()), max_size=60))
def test_sessions_never_overlap_and_are_ordered(steps: list[tuple[int, bool]]) -> None:
    tracker = SessionTracker("eb48", "esc0", SessionConfig(idle_timeout=30.0, min_duration=0))
    t = T0
    closed: list[Session] = []
    expected, last_motion = 0, None
    for dt, moving in steps:
        t += dt
        closed += tracker.feed(frame(t, erpm=9000.0 if moving else 0.0))
        if moving:
            # A new session starts when the last motion is 30 s or more behind.
            expected += last_motion is None or t - last_motion >= 30_000
            last_motion = t
    closed += tracker.close()
    assert len(closed) == expected
    for a, b in itertools.pairwise(closed):
        assert a.end_ms < b.start_ms
    for s in closed:
        assert s.start_ms <= s.end_ms


def test_config_takes_human_durations() -> None:
    cfg = SessionConfig.model_validate({"idle_timeout": "2m", "min_duration": "500ms"})
    assert (cfg.idle_timeout, cfg.min_duration) == (120.0, 0.5)
