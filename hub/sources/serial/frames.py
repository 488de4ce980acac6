"""Typed frames the decoders return, and their conversion to SI values.

A frame holds what the wire said, decoded only as far as the protocol fixes it. `si(settings)`
applies the per-ESC scalings (settings.py) and returns every field in SI units under the
catalog's metric names where one exists (`pack_voltage`, `current`, `esc_temperature`, ...);
fields the catalog has no name for keep a descriptive key (`seq`, `phase_current`, ...).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hub.sources.serial.settings import ARDUPILOT_V4_VOLT_PER_COUNT, EscSettings

SI = dict[str, Any]


def _rpm(erpm: float, settings: EscSettings) -> float | None:
    if settings.motor_poles is None:
        return None
    return erpm / (settings.motor_poles / 2)


def _with_rpm(values: SI, settings: EscSettings) -> SI:
    rpm = _rpm(values["erpm"], settings)
    if rpm is not None:
        values["rpm"] = rpm
    return values


@dataclass(frozen=True, slots=True)
class KissFrame:
    """KISS / BLHeli_32 / AM32 10-byte telemetry (spec §1.2)."""

    protocol: ClassVar[str] = "kiss"
    temperature_c: int  # int8 on the wire (AM32 writes it signed)
    voltage_cv: int  # 10 mV
    current_ca: int  # 10 mA
    consumed_mah: int
    erpm: int  # already x100

    def si(self, settings: EscSettings) -> SI:
        return _with_rpm(
            {
                "esc_temperature": float(self.temperature_c),
                "pack_voltage": self.voltage_cv / 100 * settings.voltage_calibration,
                "current": self.current_ca / 100,
                "consumed_mah": float(self.consumed_mah),
                "erpm": float(self.erpm),
            },
            settings,
        )


@dataclass(frozen=True, slots=True)
class HobbywingV3Frame:
    """Hobbywing Platinum Pro V3: counter, throttle, PWM, commutation period (spec §2.1)."""

    protocol: ClassVar[str] = "hobbywing-v3"
    seq: int
    throttle_raw: int  # 0-255
    pwm_raw: int  # 0-255
    period_us: int  # 0 = not turning

    @property
    def erpm(self) -> float:
        return 60_000_000 / self.period_us if self.period_us else 0.0

    def si(self, settings: EscSettings) -> SI:
        return _with_rpm(
            {
                "seq": self.seq,
                "throttle": self.throttle_raw * 100 / 255,
                "duty_cycle": self.pwm_raw * 100 / 255,
                "period_us": self.period_us,
                "erpm": self.erpm,
            },
            settings,
        )


@dataclass(frozen=True, slots=True)
class HobbywingV4Info:
    """Hobbywing V4 13-byte info/signature frame: the ESC's scale constants (spec §2.2)."""

    protocol: ClassVar[str] = "hobbywing-v4"
    throttle_range: int
    volt_num: int
    volt_den: int
    amp_num: int
    amp_den: int
    amp_offset_raw: int
    temp_consts: int

    @property
    def volt_per_count(self) -> float | None:
        return self.volt_num / (self.volt_den * 10) if self.volt_num and self.volt_den else None

    @property
    def amp_per_count(self) -> float | None:
        return self.amp_num / self.amp_den if self.amp_num and self.amp_den else None

    @property
    def current_offset(self) -> float:
        apc = self.amp_per_count
        return self.amp_offset_raw / apc if apc else 0.0

    def si(self, settings: EscSettings) -> SI:
        return {
            "info": True,
            "throttle_range": self.throttle_range,
            "volt_per_count": self.volt_per_count,
            "amp_per_count": self.amp_per_count,
            "current_offset": self.current_offset,
        }


def ntc_celsius(adc: int) -> float | None:
    """Hobbywing V4 NTC (β 3950, 10 kΩ series, 47 kΩ at 25 °C, 12-bit ADC); 0 = no sensor."""
    if adc <= 0 or adc >= 4096:
        return None
    ratio = adc / (4096 - adc) * 10 / 47
    if ratio < 0.001:
        return None
    return 1 / (math.log(ratio) / 3950 + 1 / 298.15) - 273.15


@dataclass(frozen=True, slots=True)
class HobbywingV4Frame:
    """Hobbywing V4 19/20-byte data frame; `info` is the last info frame the framer saw."""

    protocol: ClassVar[str] = "hobbywing-v4"
    seq: int
    throttle_raw: int
    pwm_raw: int
    erpm: int
    voltage_adc: int
    current_adc: int
    fet_temp_adc: int
    temp2_adc: int
    idle_marker: bool = False  # 20-byte form with trailing 0xB9 (idle rate)
    info: HobbywingV4Info | None = field(default=None, compare=False)

    def si(self, settings: EscSettings) -> SI:
        info = self.info
        trange = info.throttle_range if info and info.throttle_range else settings.v4_throttle_range
        vpc = settings.v4_volt_per_count or (info and info.volt_per_count)
        values: SI = {
            "seq": self.seq,
            "throttle": self.throttle_raw * 100 / trange,
            "duty_cycle": self.pwm_raw * 100 / trange,
            "erpm": float(self.erpm),
            "pack_voltage": self.voltage_adc
            * (vpc or ARDUPILOT_V4_VOLT_PER_COUNT)
            * settings.voltage_calibration,
        }
        apc = settings.v4_amp_per_count or (info and info.amp_per_count)
        if apc:
            offset = settings.v4_current_offset
            if offset is None:
                offset = info.current_offset if info else 0.0
            # The ESC repeats the last current until the motor stops (Rotorflight): 0 at 0 throttle.
            values["current"] = (
                0.0 if self.throttle_raw == 0 else max(0.0, (self.current_adc - offset) * apc)
            )
        fet = ntc_celsius(self.fet_temp_adc)
        if fet is not None:
            values["esc_temperature"] = fet
        second = ntc_celsius(self.temp2_adc)
        if second is not None:
            values["esc_temperature_2"] = second
        return _with_rpm(values, settings)


# Hobbywing "ADC vs temperature" points (raw -> °C, raw decreasing); linear in between.
_FOC_TEMPS: tuple[tuple[int, float], ...] = (
    (241, 0), (240, 1), (206, 28), (183, 40), (161, 50), (139, 60), (117, 70), (97, 80),
    (79, 90), (64, 100), (51, 110), (41, 120), (33, 129),
)  # fmt: skip


def foc_celsius(raw: int) -> float:
    """HW-FOC temperature byte to °C from Hobbywing's lookup table (spec §2.3)."""
    if raw >= _FOC_TEMPS[0][0]:
        return 0.0
    if raw < _FOC_TEMPS[-1][0]:
        return 130.0
    for (hi_raw, hi_t), (lo_raw, lo_t) in itertools.pairwise(_FOC_TEMPS):
        if lo_raw <= raw <= hi_raw:
            # Table values are whole degrees: round the interpolation to match.
            return float(round(hi_t + (hi_raw - raw) * (lo_t - hi_t) / (hi_raw - lo_raw)))
    return 130.0


@dataclass(frozen=True, slots=True)
class HobbywingFocFrame:
    """Hobbywing HW-FOC / XRotor 24-byte real-time data frame (0x9B 0x16, spec §2.3)."""

    protocol: ClassVar[str] = "hobbywing-foc"
    seq: int
    throttle_in_raw: int  # 0-1024
    throttle_out_raw: int
    rpm_raw: int
    voltage_dv: int
    current_raw: int  # signed
    phase_current_raw: int  # signed
    mos_temp_raw: int
    cap_temp_raw: int
    status: int

    def si(self, settings: EscSettings) -> SI:
        return _with_rpm(
            {
                "seq": self.seq,
                "throttle": self.throttle_in_raw * 100 / 1024,
                "duty_cycle": self.throttle_out_raw * 100 / 1024,
                "erpm": self.rpm_raw * settings.foc_erpm_per_count,
                "pack_voltage": self.voltage_dv / 10 * settings.voltage_calibration,
                "current": self.current_raw * settings.foc_amp_per_count,
                "phase_current": self.phase_current_raw * settings.foc_amp_per_count,
                "esc_temperature": foc_celsius(self.mos_temp_raw),
                "capacitor_temperature": foc_celsius(self.cap_temp_raw),
                "status": self.status,
            },
            settings,
        )


V5_FAULTS = (
    "motor locked",
    "over-temperature",
    "throttle error at start-up",
    "throttle signal lost",
    "over-current",
    "low voltage",
    "input-voltage error",
    "motor connection error",
)
V5_DIRECTIONS = {0: "neutral", 1: "forward/reverse", 2: "brake"}


@dataclass(frozen=True, slots=True)
class HobbywingV5Frame:
    """Hobbywing 115200-baud 0xFE telemetry frame (air "V5" and car ESCs, spec §2.4)."""

    protocol: ClassVar[str] = "hobbywing-v5"
    throttle_pct: int
    output_pct: int
    direction: int
    fault_bits: int
    rpm_field: int  # x10 = eRPM
    voltage_dv: int
    current_da: int | None  # None: 0xFFFF, no current sensor
    esc_temp_c: int | None
    bec_temp_c: int | None
    motor_temp_c: int | None
    bec_voltage_dv: int | None
    bec_current_da: int | None

    @property
    def faults(self) -> list[str]:
        return [name for bit, name in enumerate(V5_FAULTS) if self.fault_bits >> bit & 1]

    def si(self, settings: EscSettings) -> SI:
        values: SI = {
            "throttle": float(self.throttle_pct),
            "duty_cycle": float(self.output_pct),
            "direction": V5_DIRECTIONS.get(self.direction, str(self.direction)),
            "fault_bits": self.fault_bits,
            "faults": self.faults,
            "erpm": self.rpm_field * 10.0,
            "pack_voltage": self.voltage_dv / 10 * settings.voltage_calibration,
        }
        optional = (
            ("current", self.current_da, 10),
            ("esc_temperature", self.esc_temp_c, 1),
            ("bec_temperature", self.bec_temp_c, 1),
            ("motor_temperature", self.motor_temp_c, 1),
            ("bec_voltage", self.bec_voltage_dv, 10),
            ("bec_current", self.bec_current_da, 10),
        )
        for key, raw, div in optional:
            if raw is not None:
                values[key] = raw / div
        return _with_rpm(values, settings)


VESC_FAULTS = (
    "NONE", "OVER_VOLTAGE", "UNDER_VOLTAGE", "DRV", "ABS_OVER_CURRENT", "OVER_TEMP_FET",
    "OVER_TEMP_MOTOR", "GATE_DRIVER_OVER_VOLTAGE", "GATE_DRIVER_UNDER_VOLTAGE",
    "MCU_UNDER_VOLTAGE", "BOOTING_FROM_WATCHDOG_RESET", "ENCODER_SPI",
    "ENCODER_SINCOS_BELOW_MIN_AMPLITUDE", "ENCODER_SINCOS_ABOVE_MAX_AMPLITUDE",
    "FLASH_CORRUPTION", "HIGH_OFFSET_CURRENT_SENSOR_1", "HIGH_OFFSET_CURRENT_SENSOR_2",
    "HIGH_OFFSET_CURRENT_SENSOR_3", "UNBALANCED_CURRENTS", "BRK", "RESOLVER_LOT",
    "RESOLVER_DOS", "RESOLVER_LOS", "FLASH_CORRUPTION_APP_CFG", "FLASH_CORRUPTION_MC_CFG",
    "ENCODER_NO_MAGNET", "ENCODER_MAGNET_TOO_STRONG", "PHASE_FILTER", "ENCODER_FAULT",
    "LV_OUTPUT_FAULT", "ENCODER_SLIP", "OVERSPEED", "UNDERSPEED", "ABS_OVERSPEED",
)  # fmt: skip


def vesc_fault_name(code: int) -> str:
    return VESC_FAULTS[code] if 0 <= code < len(VESC_FAULTS) else f"FAULT_{code}"


@dataclass(frozen=True, slots=True)
class VescPacket:
    """A VESC packet whose payload is not a COMM_GET_VALUES reply (command id + raw bytes)."""

    protocol: ClassVar[str] = "vesc"
    command: int
    payload: bytes

    def si(self, settings: EscSettings) -> SI:
        return {"command": self.command, "payload": self.payload.hex()}


@dataclass(frozen=True, slots=True)
class VescValues:
    """COMM_GET_VALUES reply, SI values of the fields the firmware sent (spec §3.4).

    Older firmware sends fewer fields; `values` holds exactly those that were present.
    """

    protocol: ClassVar[str] = "vesc"
    values: dict[str, float | int] = field(hash=False)

    def si(self, settings: EscSettings) -> SI:
        v = self.values
        out: SI = {}
        names = {
            "temp_fet": "esc_temperature",
            "temp_motor": "motor_temperature",
            "avg_input_current": "current",
            "v_in": "pack_voltage",
            "rpm": "erpm",
            "duty_cycle": "duty_cycle",
        }
        for key, value in v.items():
            out[names.get(key, key)] = value
        if "duty_cycle" in out:
            out["duty_cycle"] = out["duty_cycle"] * 100  # fraction -> %
        if "pack_voltage" in out:
            out["pack_voltage"] *= settings.voltage_calibration
        if "amp_hours" in v:
            out["consumed_mah"] = v["amp_hours"] * 1000
        if "watt_hours" in v:
            out["energy_wh"] = v["watt_hours"]
        if "fault_code" in v:
            out["fault"] = vesc_fault_name(int(v["fault_code"]))
        if "erpm" in out:
            _with_rpm(out, settings)
        return out


@dataclass(frozen=True, slots=True)
class BridgeValues:
    """A bridge line with values the bridge decoded itself (`dec`), keys as sent."""

    protocol: ClassVar[str] = "bridge"
    src: str
    proto: str | None
    values: dict[str, Any] = field(hash=False)

    _NAMES: ClassVar[dict[str, str]] = {
        "temp_c": "esc_temperature",
        "volt_v": "pack_voltage",
        "curr_a": "current",
        "mah": "consumed_mah",
        "erpm": "erpm",
        "motor_temp_c": "motor_temperature",
        "rpm": "rpm",
    }

    def si(self, settings: EscSettings) -> SI:
        out: SI = {"src": self.src}
        for key, value in self.values.items():
            if key == "cells_v" and isinstance(value, list) and value:
                cells = [float(c) for c in value if isinstance(c, int | float)]
                if cells:
                    out["cell_voltage_min"] = min(cells)
                    out["cell_voltage_max"] = max(cells)
                    out["cell_voltage_avg"] = sum(cells) / len(cells)
                    out["cells_v"] = cells
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out[self._NAMES.get(key, key)] = float(value)
        if "pack_voltage" in out:
            out["pack_voltage"] *= settings.voltage_calibration
        if "erpm" in out and "rpm" not in out:
            _with_rpm(out, settings)
        return out


@dataclass(frozen=True, slots=True)
class BridgeEvent:
    """A bridge status line: `hello`, error counters (`evt`)."""

    protocol: ClassVar[str] = "bridge"
    src: str
    name: str
    detail: dict[str, Any] = field(hash=False)

    def si(self, settings: EscSettings) -> SI:
        return {"src": self.src, "event": self.name, **self.detail}


Frame = (
    KissFrame
    | HobbywingV3Frame
    | HobbywingV4Info
    | HobbywingV4Frame
    | HobbywingFocFrame
    | HobbywingV5Frame
    | VescPacket
    | VescValues
    | BridgeValues
    | BridgeEvent
)


@dataclass(frozen=True, slots=True)
class Decoded:
    """One frame as a framer returns it.

    `t` is the receive time the caller passed with the chunk that completed the frame (seconds
    on the caller's clock). `verified` means an integrity check passed (CRC, checksum, or for
    the checksum-less Hobbywing V3/V4 a packet counter that continued the previous frame).
    `src` names the ESC behind a bridge ("" for a direct port).
    """

    protocol: str
    t: float
    frame: Frame
    size: int
    verified: bool = True
    src: str = ""
