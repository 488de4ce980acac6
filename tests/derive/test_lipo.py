"""LiPo model: worked numbers from specs/esc-telemetry.md §6 and §8.1 (KISS vectors K1-K3)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.derive.lipo import (
    ChargeCounter,
    LipoFilter,
    PackConfig,
    ResistanceEstimator,
    guess_cell_count,
    remaining_from_rest_voltage,
    storage_check,
)
from hub.model import CATALOG, Reading

T0 = 1_732_262_400_000


def values(readings: list[Reading]) -> dict[str, float]:
    return {r.metric: r.value for r in readings}


# -- cell count ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pack_v", "chemistry", "count", "candidates", "ambiguous"),
    [
        (12.60, "lipo", 3, (3,), False),  # 3S full
        (11.10, "lipo", 3, (3,), False),  # K3: 11.10 V, 3S nominal
        (16.80, "lipo", 4, (4, 5), True),  # K1: full 4S or an almost empty 5S
        (25.20, "lipo", 6, (6, 7), True),  # K2: "6S full"
        (14.80, "lipo", 4, (4,), False),  # 4S nominal
        (9.00, "lipo", 3, (), True),  # 3S at 3.0 V/cell fits no plausible resting band
        (13.05, "lihv", 3, (3,), False),  # 3S LiHV full (4.35 V/cell)
        (13.05, "lipo", 4, (), True),  # the same pack read as LiPo: no clean answer
    ],
)
def test_guess_cell_count(
    pack_v: float, chemistry: str, count: int, candidates: tuple[int, ...], ambiguous: bool
) -> None:
    guess = guess_cell_count(pack_v, chemistry)  # type: ignore[arg-type]
    assert (guess.count, guess.candidates, guess.ambiguous) == (count, candidates, ambiguous)
    assert "set cell_count" in guess.note if ambiguous else "set cell_count" not in guess.note


def test_guess_cell_count_betaflight_rule_and_no_pack() -> None:
    # Whenever there is a candidate, the pick is Betaflight's ceil(V / 4.3).
    for tenth in range(30, 600):
        v = tenth / 10
        guess = guess_cell_count(v)
        assert guess.count == math.ceil(v / 4.3 - 1e-9)
    assert guess_cell_count(1.2).count is None
    assert "16.80 V fits 4S at 4.20 V/cell or 5S at 3.36 V/cell" in guess_cell_count(16.8).note


def test_cell_count_from_first_resting_voltage_with_hysteresis() -> None:
    f = LipoFilter("buggy")
    # Under load first: no detection, no per-cell values yet.
    out = values(f.feed_values(T0, pack_voltage=15.0, current=30.0))
    assert "cell_voltage_avg" not in out
    assert f.status.cell_count is None
    assert f.status.cell_count_note == "waiting for a resting voltage"
    out = values(f.feed_values(T0 + 100, pack_voltage=16.8, current=0.2))
    assert out["cell_count"] == 4
    assert out["cell_voltage_avg"] == pytest.approx(4.2)
    assert f.status.cell_count_source == "detected"
    assert f.status.cell_count_ambiguous
    # Deep discharge at rest (3.25 V/cell fits 3S at 4.33): the decision holds.
    out = values(f.feed_values(T0 + 200, pack_voltage=13.0, current=0.0))
    assert "cell_count" not in out  # only emitted when it changes
    assert out["cell_voltage_avg"] == pytest.approx(3.25)
    # 4.5 V/cell for a "4S" is impossible: a 6S went in; 22.0 V is 6S at 3.67 V/cell.
    out = values(f.feed_values(T0 + 300, pack_voltage=22.0, current=0.0))
    assert out["cell_count"] == 6
    assert f.status.packs_seen == 1
    assert not f.status.cell_count_ambiguous


def test_override_beats_detection() -> None:
    f = LipoFilter("buggy", PackConfig(cell_count=5))
    out = values(f.feed_values(T0, pack_voltage=16.8, current=0.0))
    assert out["cell_count"] == 5
    assert out["cell_voltage_avg"] == pytest.approx(3.36)
    assert f.status.cell_count_source == "override"


# -- per-cell voltages and sag ---------------------------------------------------------------


def test_rest_load_average_and_sag() -> None:
    f = LipoFilter("buggy", PackConfig(cell_count=4))
    out = values(f.feed_values(T0, pack_voltage=16.4, current=0.0))
    assert out["cell_voltage_rest"] == pytest.approx(4.1)
    assert "voltage_sag" not in out
    out = values(f.feed_values(T0 + 50, pack_voltage=15.2, current=40.0))
    assert out["cell_voltage_avg"] == pytest.approx(3.8)
    assert out["cell_voltage_min"] == pytest.approx(3.8)  # no balance lead: the estimate
    assert out["voltage_sag"] == pytest.approx(1.2)
    assert out["power"] == pytest.approx(608.0)
    assert "cell_voltage_rest" not in out


def test_rest_decided_by_rpm_when_no_current_sensor() -> None:
    f = LipoFilter("buggy", PackConfig(cell_count=3))
    out = values(f.feed_values(T0, pack_voltage=12.0, erpm=25_600))
    assert "cell_voltage_rest" not in out
    out = values(f.feed_values(T0 + 50, pack_voltage=12.3, erpm=0))
    assert out["cell_voltage_rest"] == pytest.approx(4.1)


def test_balance_lead_cells() -> None:
    f = LipoFilter("buggy")
    readings = [
        Reading("buggy", "pack_voltage", 16.38, T0, "V", source="serial"),
        Reading("buggy", "current", 0.0, T0, "A", source="serial"),
        *(
            Reading("buggy", f"cell_{k}", v, T0, "V", source="serial")
            for k, v in enumerate((4.10, 4.12, 4.05, 4.11), start=1)
        ),
    ]
    out = values(f.feed(readings))
    assert out["cell_count"] == 4
    assert f.status.cell_count_source == "balance"
    assert out["cell_voltage_avg"] == pytest.approx(4.095)
    assert out["cell_voltage_min"] == pytest.approx(4.05)
    assert out["cell_voltage_max"] == pytest.approx(4.12)
    assert out["cell_voltage_spread"] == pytest.approx(0.07)
    assert out["cell_voltage_spread_rest"] == pytest.approx(0.07)


def test_balance_monitor_min_max_are_not_re_emitted() -> None:
    f = LipoFilter("buggy", PackConfig(cell_count=4))
    readings = [
        Reading("buggy", "pack_voltage", 15.6, T0, source="serial"),
        Reading("buggy", "current", 20.0, T0, source="serial"),
        Reading("monitor", "cell_voltage_min", 3.85, T0, source="serial"),
        Reading("monitor", "cell_voltage_max", 3.97, T0, source="serial"),
    ]
    out = f.feed(readings)
    metrics = [r.metric for r in out]
    assert "cell_voltage_min" not in metrics and "cell_voltage_max" not in metrics
    spread = values(out)
    assert spread["cell_voltage_spread"] == pytest.approx(0.12)
    assert "cell_voltage_spread_rest" not in spread  # 20 A is load


def test_monitor_summary_without_pack_voltage() -> None:
    # The serial bridge's "cells" line gives min/max/avg only (src "cells", no pack voltage).
    f = LipoFilter("buggy", PackConfig(cell_count=4))
    readings = [
        Reading("buggy", "cell_voltage_min", 3.84, T0, source="serial"),
        Reading("buggy", "cell_voltage_max", 3.86, T0, source="serial"),
        Reading("buggy", "cell_voltage_avg", 3.85, T0, source="serial"),
    ]
    out = values(f.feed(readings))
    assert set(out) == {"cell_voltage_spread", "cell_voltage_spread_rest", "cell_voltage_rest",
                        "remaining"}  # fmt: skip
    assert out["cell_voltage_rest"] == 3.85
    assert out["remaining"] == pytest.approx(45.0)


def test_cells_with_a_gap_are_rejected() -> None:
    f = LipoFilter("buggy", PackConfig(cell_count=4))
    f.feed([Reading("m", "cell_1", 4.0, T0), Reading("m", "cell_3", 4.0, T0)])
    assert f.rejected["cell_index_gap"] == 1


# -- internal resistance ---------------------------------------------------------------------


def test_internal_resistance_from_noisy_steps() -> None:
    rng = random.Random(7)
    f = LipoFilter("buggy", PackConfig(cell_count=4))
    ocv, r_pack = 16.0, 0.020  # 20 mOhm pack
    estimates = []
    for k in range(200):
        amps = rng.choice((2.0, 10.0, 30.0, 60.0)) + rng.uniform(-0.5, 0.5)
        volts = ocv - r_pack * amps + rng.gauss(0, 0.01)
        out = values(f.feed_values(T0 + 100 * k, pack_voltage=volts, current=amps))
        if "internal_resistance" in out:
            estimates.append(out["internal_resistance"])
    assert estimates
    assert estimates[-1] == pytest.approx(20.0, abs=1.5)  # mOhm


def test_internal_resistance_ignores_small_and_slow_steps() -> None:
    est = ResistanceEstimator(min_step_a=5.0, max_step_s=0.5)
    assert est.add(0, 16.0, 10.0) is None
    for k in range(1, 20):  # 2 A steps: below the minimum
        assert est.add(k * 100, 16.0 - 0.02 * (k % 2) * 2, 10.0 + (k % 2) * 2) is None
    est.add(10_000, 15.0, 60.0)
    assert est.add(12_000, 15.8, 20.0) is None  # 2 s apart: too slow
    assert est.estimate is None
    # Steps 0.6 V / 30 A -> 20 mOhm; three make an estimate.
    est.add(20_000, 16.0, 10.0)
    est.add(20_100, 15.4, 40.0)
    est.add(20_200, 16.0, 10.0)
    assert est.add(20_300, 15.4, 40.0) == pytest.approx(0.020)
    # A step where V rises with I is noise and dropped.
    assert est.add(20_400, 16.5, 60.0) is None and est.dropped == 1


# -- charge and energy -----------------------------------------------------------------------


def test_consumed_from_esc_counter_with_wrap_and_restart() -> None:
    f = LipoFilter("buggy", PackConfig(cell_count=4))
    # K1: 567 mAh since ESC power-up.
    assert values(f.feed_values(T0, pack_voltage=16.8, consumed_mah=567))["consumed_mah"] == 567
    assert values(f.feed_values(T0 + 30, consumed_mah=600))["consumed_mah"] == 600
    f.feed_values(T0 + 60, consumed_mah=65_500)
    assert values(f.feed_values(T0 + 90, consumed_mah=100))["consumed_mah"] == 600 + 64_900 + 136
    assert f.status.charge_source == "esc_counter"
    # Back to 5 (not a wrap): the ESC restarted, so this is another pack.
    assert values(f.feed_values(T0 + 120, consumed_mah=5))["consumed_mah"] == 5
    assert f.status.packs_seen == 1


def test_consumed_and_energy_integrated_from_current() -> None:
    f = LipoFilter("buggy", PackConfig(cell_count=4))
    out: dict[str, float] = {}
    for s in range(361):  # 10 A at 16 V for 360 s
        out = values(f.feed_values(T0 + 1000 * s, pack_voltage=16.0, current=10.0))
    assert out["consumed_mah"] == pytest.approx(1000.0)
    assert out["energy_wh"] == pytest.approx(16.0)
    assert out["power"] == pytest.approx(160.0)
    assert f.status.charge_source == "integrated"
    # A 10 s silence is not bridged (max_gap 2 s).
    out = values(f.feed_values(T0 + 370_000, pack_voltage=16.0, current=10.0))
    assert out["consumed_mah"] == pytest.approx(1000.0)


def test_counter_seen_after_integration_continues_from_there() -> None:
    c = ChargeCounter(max_gap_s=2.0)
    c.current(0, 36.0)
    c.current(1000, 36.0)  # 10 mAh
    assert c.counter(900) is False  # baseline only
    assert c.total == pytest.approx(10.0)
    c.counter(950)
    assert c.total == pytest.approx(60.0)


# -- remaining -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell_v", "chemistry", "percent"),
    [
        (4.20, "lipo", 100.0),
        (4.25, "lipo", 100.0),
        (3.90, "lipo", 50.0),  # storage 3.80-3.90 V = 40-50 %
        (3.85, "lipo", 45.0),
        (3.80, "lipo", 40.0),
        (3.50, "lipo", 0.0),  # "3.20 V under load, about 3.5-3.6 V resting"
        (3.00, "lipo", 0.0),
        (4.35, "lihv", 100.0),
        (3.80, "lihv", 40.0),
    ],
)
def test_remaining_curve(cell_v: float, chemistry: str, percent: float) -> None:
    assert remaining_from_rest_voltage(cell_v, chemistry) == pytest.approx(percent)  # type: ignore[arg-type]


@given(
    st.floats(2.5, 4.6, allow_nan=False),
    st.floats(2.5, 4.6, allow_nan=False),
    st.sampled_from(["lipo", "lihv"]),
)
def test_remaining_is_monotonic_in_voltage(a: float, b: float, chemistry: str) -> None:
    lo, hi = sorted((a, b))
    r_lo = remaining_from_rest_voltage(lo, chemistry)  # type: ignore[arg-type]
    r_hi = remaining_from_rest_voltage(hi, chemistry)  # type: ignore[arg-type]
    assert 0.0 <= r_lo <= r_hi <= 100.0


def test_remaining_coulomb_counting_and_downward_reanchor() -> None:
    f = LipoFilter("buggy", PackConfig(cell_count=4, capacity_mah=5000, rest_settle=30.0))
    assert values(f.feed_values(T0, pack_voltage=16.8, current=0.0))["remaining"] == 100.0
    out: dict[str, float] = {}
    for s in range(1, 181):  # 50 A for 180 s = 2500 mAh
        out = values(f.feed_values(T0 + 1000 * s, pack_voltage=15.2, current=50.0))
    assert out["consumed_mah"] == pytest.approx(2500, abs=7)  # first second ramps from 0 A
    assert out["remaining"] == pytest.approx(50.0, abs=0.2)
    assert f.status.remaining_source == "coulomb"
    # Rest that has not settled does not move it; settled at 3.95 V/cell (57.5 %) neither:
    # remaining never goes up within a pack.
    t = T0 + 181_000
    for s in range(0, 40):
        out = values(f.feed_values(t + 1000 * s, pack_voltage=15.8, current=0.0))
    assert out["remaining"] == pytest.approx(50.0, abs=0.2)
    # Settled at 3.70 V/cell (20 %): the pack knows better.
    t += 40_000
    for s in range(0, 40):
        out = values(f.feed_values(t + 1000 * s, pack_voltage=14.8, current=0.0))
    assert out["remaining"] == pytest.approx(20.0)


def test_remaining_by_voltage_without_capacity() -> None:
    f = LipoFilter("buggy", PackConfig(cell_count=3))
    assert values(f.feed_values(T0, pack_voltage=11.55, current=0.0))["remaining"] == 45.0
    assert f.status.remaining_source == "voltage"
    assert f.status.storage is not None and f.status.storage.state == "storage"


# -- storage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell_v", "state"),
    [(3.85, "storage"), (3.75, "storage"), (3.95, "storage"), (3.70, "below"), (4.10, "above")],
)
def test_storage_check(cell_v: float, state: str) -> None:
    assert storage_check(cell_v).state == state


# -- bad input and output shape --------------------------------------------------------------


def test_bad_values_are_counted_not_raised() -> None:
    f = LipoFilter("buggy", PackConfig(cell_count=4))
    assert f.feed_values(T0, pack_voltage=math.nan, current=math.inf) == []
    assert f.rejected["not_finite"] == 2
    f.feed_values(T0 + 10, pack_voltage=-3.0)
    assert f.rejected["out_of_range"] == 1
    f.feed_values(T0 + 20, pack_voltage=16.0)
    assert f.feed_values(T0 + 10, pack_voltage=16.0) == []
    assert f.rejected["timestamp_went_backwards"] == 1


def test_derived_readings_carry_catalog_units() -> None:
    f = LipoFilter("buggy", PackConfig(cell_count=4), tags={"vehicle": "eb48"})
    f.feed_values(T0, pack_voltage=16.4, current=0.0)
    out = f.feed_values(T0 + 50, pack_voltage=15.2, current=40.0, consumed_mah=10)
    assert out
    for r in out:
        assert r.device == "buggy" and r.source == "derived" and r.timestamp_ms == T0 + 50
        assert r.tags == {"vehicle": "eb48"}
        if r.metric in CATALOG:
            assert r.unit == CATALOG[r.metric].unit
    assert f.feed([Reading("buggy", "cell_voltage_avg", 3.9, T0 + 60, source="derived")]) == []


_step = st.tuples(
    st.integers(1, 3000),  # ms since the previous sample
    st.floats(3.3, 4.2),  # V/cell
    st.floats(-5.0, 120.0),  # A
    st.one_of(st.none(), st.integers(0, 200)),  # counter increment, or no counter
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_step, min_size=1, max_size=80))
def test_consumed_never_decreases_and_remaining_never_rises(
    steps: list[tuple[int, float, float, int | None]],
) -> None:
    f = LipoFilter("buggy", PackConfig(cell_count=4, capacity_mah=4000, new_pack_rise_v=5.0))
    t, counter = T0, 0
    last_mah, last_remaining = 0.0, 100.0
    for dt, cell_v, amps, inc in steps:
        t += dt
        if inc is not None:
            counter += inc
        out = values(
            f.feed_values(
                t,
                pack_voltage=4 * cell_v,
                current=amps,
                consumed_mah=None if inc is None else counter,
            )
        )
        if "consumed_mah" in out:
            assert out["consumed_mah"] >= last_mah
            last_mah = out["consumed_mah"]
        if "remaining" in out:
            assert out["remaining"] <= last_remaining + 1e-9
            last_remaining = out["remaining"]
