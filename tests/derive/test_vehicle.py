"""Vehicle model: the worked examples of specs/esc-telemetry.md §1.6 and §7."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hub.derive.vehicle import (
    VehicleConfig,
    VehicleModel,
    final_drive_ratio,
    motor_rpm,
    speed_kmh,
    wheel_rpm,
)
from hub.model import CATALOG, Reading

T0 = 1_732_262_400_000

# §7 example: 4-pole motor, 16/46 gears, internal ratio 3.0 and 108 mm tyre (placeholders).
SPEC_EXAMPLE = VehicleConfig(
    motor_poles=4, pinion_teeth=16, spur_teeth=46, internal_ratio=3.0, tyre_diameter_mm=108
)


def values(readings: list[Reading]) -> dict[str, float]:
    return {r.metric: r.value for r in readings}


def test_motor_rpm_examples() -> None:
    assert motor_rpm(25_600, 14) == pytest.approx(3657.14, abs=0.01)  # K1 @14p: 3,657 RPM
    assert motor_rpm(25_600, 4) == 12_800  # K1 @4p
    assert motor_rpm(98_700, 4) == 49_350  # 1/8 buggy inrunner
    assert motor_rpm(35_000, 14) == 5_000  # V3 VESC vector


def test_final_drive_ratio_examples() -> None:
    assert final_drive_ratio(46, 16, 3.0) == pytest.approx(8.625)  # §7 example
    # HB D8T: diffs 43T/10T = 4.3, centre 50/13 -> "FDR 16.6"
    assert final_drive_ratio(50, 13, 43 / 10) == pytest.approx(16.54, abs=0.01)


def test_spec_speed_example_118_kmh() -> None:
    wheel = wheel_rpm(motor_rpm(100_000, 4), 8.625)
    assert wheel == pytest.approx(5797.1, abs=0.1)
    assert speed_kmh(wheel, 108) == pytest.approx(118.0, abs=0.05)


def test_model_emits_rpm_wheel_rpm_speed_distance() -> None:
    m = VehicleModel("buggy", SPEC_EXAMPLE)
    out = values(m.feed([Reading("buggy", "erpm", 100_000, T0, source="serial")]))
    assert out["rpm"] == 50_000
    assert out["wheel_rpm"] == pytest.approx(5797.1, abs=0.1)
    assert out["speed"] == pytest.approx(118.0, abs=0.05)
    assert out["distance"] == 0
    # 118 km/h held for 36 s is 1.18 km.
    for s in range(1, 37):
        out = values(m.feed_values(T0 + 1000 * s, erpm=100_000))
    assert out["distance"] == pytest.approx(1.18, abs=0.001)
    assert m.status.speed_available and m.pop_notice() is None


def test_reverse_counts_as_speed_and_mechanical_rpm_is_used_as_is() -> None:
    m = VehicleModel("buggy", SPEC_EXAMPLE)
    out = values(m.feed([Reading("buggy", "rpm", -50_000, T0, source="serial")]))
    assert "rpm" not in out  # the ESC sent it; not re-emitted
    assert out["speed"] == pytest.approx(118.0, abs=0.05)


def test_no_internal_ratio_no_speed_and_one_notice() -> None:
    cfg = VehicleConfig(motor_poles=4, pinion_teeth=16, spur_teeth=46, tyre_diameter_mm=108)
    assert cfg.internal_ratio is None  # no default that pretends to be known
    m = VehicleModel("buggy", cfg)
    assert m.pop_notice() is None  # nothing asked for speed yet
    out = values(m.feed_values(T0, erpm=100_000))
    assert out == {"rpm": 50_000}
    notice = m.pop_notice()
    assert notice is not None and "internal_ratio" in notice and "no default" in notice
    assert m.pop_notice() is None
    m.feed_values(T0 + 100, erpm=100_000)
    assert m.pop_notice() is None
    assert not m.status.speed_available
    assert m.status.reason == notice


def test_missing_for_speed_lists_every_unset_setting() -> None:
    assert VehicleConfig().missing_for_speed() == [
        "motor_poles",
        "pinion_teeth",
        "spur_teeth",
        "internal_ratio",
        "tyre_diameter_mm",
    ]
    assert SPEC_EXAMPLE.missing_for_speed() == []


def test_no_poles_means_no_rpm_from_erpm() -> None:
    m = VehicleModel("buggy", VehicleConfig())
    assert m.feed_values(T0, erpm=25_600) == []


@pytest.mark.parametrize(
    "bad",
    [
        {"motor_poles": 7},
        {"motor_poles": 0},
        {"internal_ratio": 0},
        {"tyre_diameter_mm": 5},
        {"pinion": 16},  # unknown key: a typo is an error
    ],
)
def test_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        VehicleConfig(**bad)  # type: ignore[arg-type]


def test_energy_per_km() -> None:
    m = VehicleModel("buggy", SPEC_EXAMPLE.model_copy(update={"min_distance_km": 0.5}))
    out: dict[str, float] = {}
    for s in range(37):  # 1.18 km at 118 km/h, 10 Wh used over it
        batch = [
            Reading("buggy", "erpm", 100_000, T0 + 1000 * s, source="serial"),
            Reading("buggy", "energy_wh", 2.0 + 10.0 * s / 36, T0 + 1000 * s, source="derived"),
        ]
        out = values(m.feed(batch))
        if s < 16:  # under 0.5 km
            assert "energy_per_km" not in out
    assert out["energy_per_km"] == pytest.approx(10.0 / 1.18, rel=1e-3)


def test_bad_input_counted() -> None:
    m = VehicleModel("buggy", SPEC_EXAMPLE)
    assert m.feed_values(T0, erpm=float("nan")) == []
    assert m.rejected["not_finite"] == 1
    m.feed_values(T0 + 10, erpm=1000)
    assert m.feed_values(T0, erpm=1000) == []
    assert m.rejected["timestamp_went_backwards"] == 1


def test_units() -> None:
    m = VehicleModel("buggy", SPEC_EXAMPLE)
    for r in m.feed_values(T0, erpm=50_000):
        assert r.source == "derived"
        if r.metric in CATALOG:
            assert r.unit == CATALOG[r.metric].unit


@given(st.floats(0, 200_000), st.floats(0, 200_000))
def test_speed_is_monotonic_in_erpm(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    m_lo = VehicleModel("x", SPEC_EXAMPLE)
    m_hi = VehicleModel("x", SPEC_EXAMPLE)
    assert (
        values(m_lo.feed_values(T0, erpm=lo))["speed"]
        <= values(m_hi.feed_values(T0, erpm=hi))["speed"]
    )
