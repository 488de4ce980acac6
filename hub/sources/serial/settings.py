"""Settings of the serial ESC source: per-ESC scale factors the spec leaves open, and the port.

Where the protocol reference (specs/esc-telemetry.md) says a scaling is unresolved, it is a
setting here with the documented default, so a bench calibration is a config change and old
raw captures can be re-decoded with the corrected value.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from hub.config.base import ByteSize, ConfigModel, Duration

PROTOCOLS = (
    "kiss",
    "hobbywing-v3",
    "hobbywing-v4",
    "hobbywing-foc",
    "hobbywing-v5",
    "vesc",
    "bridge",
)
Protocol = Literal[
    "kiss", "hobbywing-v3", "hobbywing-v4", "hobbywing-foc", "hobbywing-v5", "vesc", "bridge"
]

# ArduPilot's fixed V4 voltage divisor ("by experimentation"): used when no info frame was seen.
ARDUPILOT_V4_VOLT_PER_COUNT = 3.3 / 4096 * 11.1


class EscSettings(ConfigModel):
    """How to turn one ESC's raw fields into SI values."""

    motor_poles: int | None = Field(
        default=None,
        ge=2,
        le=64,
        title="Motor magnet poles",
        description="Pole count (e.g. 4 for most 1/8 buggy inrunners, 14 for many outrunners); "
        "mechanical RPM = eRPM / (poles/2). Unset: only eRPM is reported.",
    )
    voltage_calibration: float = Field(
        default=1.0,
        gt=0.5,
        lt=2.0,
        title="Voltage calibration factor",
        description="Multiplies the decoded pack voltage (measure against a multimeter).",
    )
    kiss_max_voltage: float = Field(
        default=60.0,
        gt=0,
        title="KISS plausible voltage",
        description="A CRC-valid KISS frame above this pack voltage is rejected as implausible "
        "(CRC-8 alone lets ~1/256 random windows through).",
    )
    kiss_min_voltage: float = Field(
        default=2.0,
        ge=0,
        description="A KISS frame below this pack voltage is implausible (zero runs).",
    )
    kiss_min_temperature: int = Field(
        default=-40,
        ge=-128,
        le=0,
        description="A KISS frame below this temperature is implausible.",
    )
    v4_volt_per_count: float | None = Field(
        default=None,
        gt=0,
        description="Hobbywing V4 volts per ADC count. Unset: from the ESC's info frame "
        "(b5/(b6*10)), or ArduPilot's fixed 3.3/4096*11.1 until one is seen.",
    )
    v4_amp_per_count: float | None = Field(
        default=None,
        gt=0,
        description="Hobbywing V4 amps per ADC count. Unset: from the info frame.",
    )
    v4_current_offset: float | None = Field(
        default=None,
        description="Hobbywing V4 current ADC offset in counts. Unset: from the info frame.",
    )
    v4_throttle_range: int = Field(
        default=1000, ge=1, description="Hobbywing V4 throttle full scale until an info frame says."
    )
    foc_erpm_per_count: float = Field(
        default=10.0,
        gt=0,
        description="HW-FOC RPM field to eRPM. Hobbywing's doc: 10 (x*10/pole pairs = RPM); "
        "ArduPilot: 5 (x*10/pole count). Unresolved: calibrate with a tachometer.",
    )
    foc_amp_per_count: float = Field(
        default=1 / 64,
        gt=0,
        description="HW-FOC current scale. Hobbywing's doc: 1/64; ArduPilot: 0.01. Unresolved.",
    )
    inter_byte_timeout: Duration | None = Field(
        default=None,
        description="Silence after which a partial frame is abandoned (the framer slides on). "
        "Unset: the protocol's default (50 ms VESC, 100 ms Hobbywing/KISS, none for V3).",
    )

    @field_validator("motor_poles")
    @classmethod
    def _even(cls, value: int | None) -> int | None:
        if value is not None and value % 2:
            raise ValueError(f"motor_poles must be even (magnets come in pairs), got {value}")
        return value


class SerialSourceConfig(ConfigModel):
    """The `serial:` section: one ESC telemetry port."""

    port: str = Field(
        default="", description="Serial device, e.g. /dev/ttyUSB0 (see `hub serial ports`)."
    )
    baud: int | None = Field(
        default=None, ge=300, le=4_000_000, description="Unset: protocol default."
    )
    protocol: Literal["auto"] | Protocol = Field(default="auto", description="Telemetry protocol.")
    vehicle: str = Field(default="buggy", description="Device name readings are published under.")
    cells: int | None = Field(
        default=None, ge=1, le=14, description="Series cells; unset: estimated."
    )
    vesc_poll_interval: Duration = Field(
        default=0.05, gt=0, description="VESC COMM_GET_VALUES period."
    )
    capture_dir: str = Field(default="captures", description="Folder of rotated raw capture files.")
    capture_rotate: ByteSize = Field(
        default=64 * 1024**2, ge=4096, description="Rotate captures at."
    )
    capture_keep: int = Field(default=20, ge=1, description="Capture files kept after rotation.")
    spool_path: str = Field(
        default="serial-spool.jsonl", description="Store-and-forward spool file."
    )
    esc: EscSettings = Field(default_factory=EscSettings, description="Per-ESC scalings.")
