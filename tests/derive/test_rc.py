"""The RC derivations wired together, fed KISS-like frames (vector K1's values)."""

from __future__ import annotations

import pytest

from hub.derive.lipo import PackConfig
from hub.derive.rc import RcDerivation, RcVehicleConfig
from hub.derive.session import SessionConfig
from hub.derive.vehicle import VehicleConfig
from hub.model import Reading

T0 = 1_732_262_400_000


def kiss(ts: int, temp: float, volts: float, amps: float, mah: float, erpm: float) -> list[Reading]:
    values = {
        "esc_temperature": temp,
        "pack_voltage": volts,
        "current": amps,
        "consumed_mah": mah,
        "erpm": erpm,
    }
    return [Reading("esc0", m, v, ts, source="serial") for m, v in values.items()]


def test_pack_drivetrain_and_session_together() -> None:
    config = RcVehicleConfig(
        device="esc0",
        drivetrain=VehicleConfig(
            motor_poles=4, pinion_teeth=16, spur_teeth=46, internal_ratio=3.0, tyre_diameter_mm=108
        ),
        pack=PackConfig(capacity_mah=5000),
        session=SessionConfig(idle_timeout=20.0),
    )
    rc = RcDerivation("eb48", config)
    first = rc.feed(kiss(T0, 25, 16.80, 0.0, 567, 0))
    assert {r.metric: r.value for r in first.readings}["cell_count"] == 4
    assert {r.tags["vehicle"] for r in first.readings} == {"eb48"}
    # 60 s at 12.34 A and 25,600 eRPM (K1): 12,800 RPM @4p -> 30.2 km/h.
    out = None
    for s in range(1, 61):
        out = rc.feed(kiss(T0 + 1000 * s, 35, 16.0, 12.34, 567 + s, 25_600))
    assert out is not None
    got = {r.metric: r.value for r in out.readings}
    assert got["rpm"] == 12_800
    assert got["speed"] == pytest.approx(30.2, abs=0.05)
    assert got["energy_per_km"] > 0
    assert rc.feed([Reading("other", "current", 99.0, T0 + 61_000)]).readings == []
    assert rc.tick(T0 + 60_000 + 19_000) == []
    (session,) = rc.tick(T0 + 60_000 + 20_000)
    assert session.vehicle == "eb48" and session.duration_s == 59.0
    assert session.max_speed_kmh == pytest.approx(30.2, abs=0.05)
    assert session.max_current_a == 12.34
    assert session.peak_esc_temperature == 35
    assert session.min_cell_voltage_load == pytest.approx(4.0)
    assert session.consumed_mah == 60  # counter 567 before the start -> 627
    # 59 s at speed plus the first second's ramp from standstill (trapezoid): 59.5 s.
    assert session.distance_km == pytest.approx(got["speed"] * 59.5 / 3600, rel=1e-4)
