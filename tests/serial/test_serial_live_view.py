"""The `hub serial log` live view: what it shows from given latest values, with and without
gearing (pure: a stand-in logger holding the values the decoding thread would have written)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from hub.cli.serial import LiveView, find_vehicle, vehicle_drivetrain
from hub.derive.lipo import PackConfig
from hub.derive.rc import RcVehicleConfig
from hub.derive.vehicle import VehicleConfig

# specs/esc-telemetry.md §7 example: 100,000 eRPM, 4 poles, 16/46, internal 3.0, 108 mm tyre
# -> FDR 8.625 and 118 km/h.
SPEC_GEARING = VehicleConfig(
    motor_poles=4, pinion_teeth=16, spur_teeth=46, internal_ratio=3.0, tyre_diameter_mm=108
)


def fake_logger(latest: dict[str, Any], frames: int = 7) -> Any:
    counters = SimpleNamespace(latest=latest, frames=frames, readings=3 * frames)
    return SimpleNamespace(counters=counters, framer=None, protocol="kiss", baud=115200)


def text(view: LiveView) -> str:
    console = Console(record=True, width=100)
    console.print(view.render())
    return console.export_text()


def rows(view: LiveView) -> dict[str, str]:
    return dict(view.rows())


def test_speed_from_erpm_matches_the_spec_example() -> None:
    view = LiveView(fake_logger({"erpm": 100_000.0}), None, "buggy", SPEC_GEARING)
    speed = view.speed({"erpm": 100_000.0})
    assert speed is not None
    assert speed == pytest.approx(50_000 / 8.625 * math.pi * 0.108 * 60 / 1000)
    assert round(speed) == 118
    assert rows(view)["speed"] == f"{speed:.1f} km/h"
    assert "118.0 km/h" in text(view)
    assert "speed=118.0" in view.line()


def test_mechanical_rpm_is_preferred_and_reverse_counts_as_forward() -> None:
    view = LiveView(fake_logger({"rpm": -50_000.0, "erpm": 1.0}), None, "buggy", SPEC_GEARING)
    assert rows(view)["speed"] == "118.0 km/h"


def test_complete_gearing_without_rpm_yet_shows_a_dash() -> None:
    view = LiveView(fake_logger({"pack_voltage": 16.0}), None, "buggy", SPEC_GEARING)
    assert rows(view)["speed"] == "-"


def test_without_internal_ratio_the_view_says_which_flag_to_set() -> None:
    gearing = SPEC_GEARING.model_copy(update={"internal_ratio": None})
    view = LiveView(fake_logger({"erpm": 100_000.0}), None, "buggy", gearing)
    assert view.speed({"erpm": 100_000.0}) is None
    assert rows(view)["speed"] == "set --internal-ratio"
    assert "set --internal-ratio" in text(view)
    assert "speed: set --internal-ratio" in view.line()


def test_no_gearing_at_all_lists_every_flag_in_order() -> None:
    view = LiveView(fake_logger({"erpm": 100_000.0}), None, "buggy")
    assert rows(view)["speed"] == ("set --poles, --pinion, --spur, --internal-ratio, --tyre-mm")


def test_values_rows_and_counters() -> None:
    latest = {
        "pack_voltage": 15.2,
        "current": 12.345,
        "esc_temperature": 41.4,
        "motor_temperature": 55.6,
        "erpm": 30_000.0,
        "rpm": 15_000.0,
        "throttle": 40.0,
        "t": 1.5,
        "status": "ok",
    }
    view = LiveView(fake_logger(latest, frames=9), 4, "buggy")
    got = rows(view)
    assert got["pack voltage"] == "15.20 V"
    assert got["per cell (est.)"] == "3.800 V (4S)"
    assert got["current"] == "12.35 A"
    assert got["ESC temperature"] == "41 °C"
    assert got["motor temperature"] == "56 °C"
    assert got["eRPM"] == "30000"
    assert got["RPM"] == "15000"
    assert got["throttle"] == "40 %"
    assert got["frames"] == "9"
    assert got["readings sent"] == "27"
    assert got["bad frames"] == "0 ({})"
    out = text(view)
    assert "buggy — kiss @ 115200 baud" in out
    assert "3.800 V (4S)" in out


def test_missing_and_non_finite_values_show_a_dash() -> None:
    view = LiveView(fake_logger({"pack_voltage": float("nan"), "current": "x"}), None, "b")
    got = rows(view)
    assert got["pack voltage"] == "-"
    assert got["per cell (est.)"] == "-"
    assert got["current"] == "-"
    assert got["RPM"] == "-"


@pytest.mark.parametrize(
    ("volts", "chemistry", "shown"),
    [
        (16.8, "lipo", "4.200 V (4S?)"),  # full 4S (or an almost empty 5S: smallest wins)
        (12.6, "lipo", "4.200 V (3S?)"),
        (17.4, "lihv", "4.350 V (4S?)"),  # a full LiHV 4S is not a 5S
        (17.4, "lipo", "3.480 V (5S?)"),
        (1.0, "lipo", "-"),  # no pack on the ESC
    ],
)
def test_cell_count_is_estimated_by_the_lipo_model(
    volts: float, chemistry: Any, shown: str
) -> None:
    view = LiveView(fake_logger({"pack_voltage": volts}), None, "b", chemistry=chemistry)
    assert rows(view)["per cell (est.)"] == shown


def test_drivetrain_comes_from_the_config_with_cli_overrides() -> None:
    buggy = RcVehicleConfig(
        device="esc0",
        drivetrain=VehicleConfig(motor_poles=4, pinion_teeth=16, spur_teeth=46, max_gap=3.0),
        pack=PackConfig(cell_count=4),
    )
    rc = {"buggy": buggy}
    assert find_vehicle(rc, "buggy") is buggy
    assert find_vehicle(rc, "esc0") is buggy  # --vehicle given as the ESC device name
    assert find_vehicle(rc, "other") is None

    got = vehicle_drivetrain(
        buggy, {"pinion_teeth": 18, "internal_ratio": 3.0, "tyre_diameter_mm": None}
    )
    assert (got.motor_poles, got.pinion_teeth, got.spur_teeth) == (4, 18, 46)
    assert got.internal_ratio == 3.0 and got.tyre_diameter_mm is None
    assert got.max_gap == 3.0
    assert LiveView(fake_logger({}), None, "buggy", got).speed_reason == "set --tyre-mm"

    bare = vehicle_drivetrain(None, {"motor_poles": 2})
    assert bare.motor_poles == 2 and bare.missing_for_speed()[0] == "pinion_teeth"


def test_bad_override_is_rejected_like_the_config() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="even"):
        vehicle_drivetrain(None, {"motor_poles": 3})
    with pytest.raises(ValidationError):
        vehicle_drivetrain(None, {"internal_ratio": 0.0})
