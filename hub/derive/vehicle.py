"""Vehicle model: motor RPM -> wheel RPM -> ground speed, distance and Wh/km.

specs/esc-telemetry.md §7 (Traxxas, VESC `mc_interface.c`, Hobbywing HW Link):

    RPM_motor = eRPM / (poles / 2)
    FDR       = (spur / pinion) x internal_ratio
    RPM_wheel = RPM_motor / FDR
    v [km/h]  = RPM_wheel x pi x D_tyre[m] / 60 x 3.6

The internal (diff/transmission) ratio has no default: the spec could not find the Tekno
EB48 2.2's, and a guessed ratio gives a speed that looks right and is wrong. Without it (or
without pinion, spur or tyre size) no speed is emitted and `status` says which setting is
missing; `pop_notice()` hands that sentence over once.

Electrical power and energy are the pack's and come from `LipoFilter` (one place computes
them); this model turns the `energy_wh` it is given into Wh/km.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydantic import Field, field_validator

from hub.config.base import ConfigModel, Duration
from hub.derive.rc_readings import TIME_BACKWARDS, Integrator, checked, derived_reading
from hub.model import Reading


class VehicleConfig(ConfigModel):
    """Drivetrain of one RC vehicle. Unset values are unknown, never guessed."""

    motor_poles: int | None = Field(
        default=None, ge=2, le=64, description="Magnet poles of the motor (2 or 4 on car inrunners)"
    )
    pinion_teeth: int | None = Field(default=None, ge=5, le=100, description="Pinion teeth")
    spur_teeth: int | None = Field(default=None, ge=10, le=200, description="Spur gear teeth")
    internal_ratio: float | None = Field(
        default=None,
        gt=0.5,
        le=20,
        description="Diff/transmission ratio (ring/pinion of the diffs on a 4WD buggy); no default",
    )
    tyre_diameter_mm: float | None = Field(
        default=None, ge=20, le=400, description="Mounted tyre diameter in mm (measure it)"
    )
    max_gap: Duration = Field(
        default=2.0, description="Longest gap between speed samples that distance bridges"
    )
    min_distance_km: float = Field(
        default=0.05, ge=0, description="Distance before Wh/km is emitted (short runs are noise)"
    )

    @field_validator("motor_poles")
    @classmethod
    def _poles_even(cls, value: int | None) -> int | None:
        if value is not None and value % 2:
            raise ValueError("motor_poles counts magnet poles and is even (e.g. 2, 4, 14)")
        return value

    def missing_for_speed(self) -> list[str]:
        """The settings speed needs that are not set, in the order a user would check them."""
        needed = {
            "motor_poles": self.motor_poles,
            "pinion_teeth": self.pinion_teeth,
            "spur_teeth": self.spur_teeth,
            "internal_ratio": self.internal_ratio,
            "tyre_diameter_mm": self.tyre_diameter_mm,
        }
        return [name for name, value in needed.items() if value is None]


def motor_rpm(erpm: float, poles: int) -> float:
    """Mechanical RPM from electrical RPM: eRPM / (poles / 2)."""
    return erpm / (poles / 2)


def final_drive_ratio(spur_teeth: int, pinion_teeth: int, internal_ratio: float) -> float:
    return spur_teeth / pinion_teeth * internal_ratio


def wheel_rpm(motor_rpm_value: float, fdr: float) -> float:
    return motor_rpm_value / fdr


def speed_kmh(wheel_rpm_value: float, tyre_diameter_mm: float) -> float:
    """Ground speed in km/h from wheel RPM and tyre diameter (no tyre growth, no slip)."""
    return wheel_rpm_value * math.pi * tyre_diameter_mm / 1000.0 / 60.0 * 3.6


@dataclass(frozen=True, slots=True)
class VehicleStatus:
    speed_available: bool
    reason: str | None  # why speed is not emitted, in a sentence for the user


class VehicleModel:
    """Speed, distance and Wh/km for one vehicle, fed its ESC's readings (and `energy_wh`).

    Inputs: rpm (mechanical) or erpm, energy_wh (any source). Outputs: rpm (when only eRPM
    came in), wheel_rpm, speed, distance (km), energy_per_km (Wh/km).
    """

    def __init__(
        self,
        device: str,
        config: VehicleConfig | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.device = device
        self.config = config or VehicleConfig()
        self.tags: Mapping[str, str] = dict(tags or {})
        self.rejected: Counter[str] = Counter()
        self._distance = Integrator(self.config.max_gap)
        self._energy_base: tuple[float, float] | None = None  # (Wh, km) at first energy reading
        self._last_ms: int | None = None
        self._notice_given = False
        cfg = self.config
        self._fdr = (
            final_drive_ratio(cfg.spur_teeth, cfg.pinion_teeth, cfg.internal_ratio)
            if cfg.spur_teeth and cfg.pinion_teeth and cfg.internal_ratio
            else None
        )

    @property
    def status(self) -> VehicleStatus:
        missing = self.config.missing_for_speed()
        if not missing:
            return VehicleStatus(True, None)
        reason = f"{self.device}: no speed until {', '.join(missing)} set in the vehicle config"
        if "internal_ratio" in missing:
            reason += " (internal_ratio has no default: read it from the manual or count teeth)"
        return VehicleStatus(False, reason)

    def pop_notice(self) -> str | None:
        """Why speed is missing, once, after the first RPM arrived; None afterwards."""
        if self._notice_given or self._last_ms is None:
            return None
        reason = self.status.reason
        if reason is not None:
            self._notice_given = True
        return reason

    @property
    def distance_km(self) -> float:
        return self._distance.total

    def feed(self, readings: Iterable[Reading]) -> list[Reading]:
        values: dict[str, float] = {}
        ts: int | None = None
        for r in readings:
            if r.metric in ("rpm", "erpm") and r.source == "derived":
                continue  # our own rpm coming back
            if r.metric in ("rpm", "erpm", "energy_wh"):
                values[r.metric] = r.value
                ts = r.timestamp_ms if ts is None else max(ts, r.timestamp_ms)
        if ts is None:
            return []
        return self.feed_values(
            ts, rpm=values.get("rpm"), erpm=values.get("erpm"), energy_wh=values.get("energy_wh")
        )

    def feed_values(
        self,
        timestamp_ms: int,
        *,
        rpm: float | None = None,
        erpm: float | None = None,
        energy_wh: float | None = None,
    ) -> list[Reading]:
        if self._last_ms is not None and timestamp_ms < self._last_ms:
            self.rejected[TIME_BACKWARDS] += 1
            return []
        cfg, ts = self.config, timestamp_ms
        rpm = checked(rpm, -1e6, 1e6, self.rejected)
        erpm = checked(erpm, -1e8, 1e8, self.rejected)
        energy_wh = checked(energy_wh, 0.0, 1e6, self.rejected)
        out: list[Reading] = []

        def emit(metric: str, value: float) -> None:
            out.append(derived_reading(self.device, metric, value, ts, self.tags))

        if rpm is None and erpm is not None and cfg.motor_poles:
            rpm = motor_rpm(erpm, cfg.motor_poles)
            emit("rpm", round(rpm, 1))
        if rpm is not None or erpm is not None:
            self._last_ms = ts
        if rpm is not None and self._fdr is not None:
            wheel = wheel_rpm(abs(rpm), self._fdr)
            emit("wheel_rpm", round(wheel, 1))
            if cfg.tyre_diameter_mm is not None:
                speed = speed_kmh(wheel, cfg.tyre_diameter_mm)
                emit("speed", round(speed, 2))
                emit("distance", round(self._distance.add(ts, speed), 5))
        if energy_wh is not None:
            if self._energy_base is None:
                self._energy_base = (energy_wh, self._distance.total)
            e0, d0 = self._energy_base
            km = self._distance.total - d0
            if km >= cfg.min_distance_km and km > 0:
                emit("energy_per_km", round(max(energy_wh - e0, 0.0) / km, 3))
        return out
