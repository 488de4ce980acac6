"""The records that cross every border in the hub, and the metric catalog.

Sources make `Reading`s; sinks take `Reading`s. A `Reading` is one numeric sample of one
metric of one device at one instant. Text states (ESPHome text sensors, fault strings) are
`Event`s. Nothing else flows from the decoders to the store.

The catalog names every metric the hub knows in the user's words (`pm2_5`, `cell_voltage_min`,
`esc_temperature`) with its unit and the Home Assistant device class, state class and display
precision, so discovery, the dashboards and the InfluxDB schema all read from one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

_EMPTY_TAGS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Reading:
    """One numeric sample.

    `timestamp_ms` is Unix time in integer milliseconds: a sample is keyed by
    (series, timestamp_ms, seq), so an integer key makes a redelivered message land on the same
    row instead of beside it. `seq` orders the readings of one series that share a millisecond
    (0 for the first): states stamped with their receive time arrive many to a millisecond
    when a backlog is delivered, and they stay apart by `seq` instead of by stamps pushed ahead
    of the clock (docs/mqtt.md, "Timestamps"). `tags` carry what tells two series of the same
    device and metric apart (`sensor` for the ESPHome object id, `session` for an RC run);
    `source` says which path it came by (`mqtt`, `esphome_api`, `serial`, `simulator`,
    `derived`).
    """

    device: str
    metric: str
    value: float
    timestamp_ms: int
    unit: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY_TAGS)
    source: str = "mqtt"
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """A text state or a state change that is not a number (text sensors, ESC fault text)."""

    device: str
    name: str
    text: str
    timestamp_ms: int
    source: str = "mqtt"
    seq: int = 0  # order within a millisecond, as for a Reading


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the hub learnt about a device (from ESPHome discovery, the native API, config)."""

    name: str
    source: str
    manufacturer: str | None = None
    model: str | None = None
    sw_version: str | None = None
    identifiers: tuple[str, ...] = ()
    kind: Literal["airq", "rc", "hub", "other"] = "other"


StateClass = Literal["measurement", "total", "total_increasing"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A metric's contract: unit, Home Assistant classes, display precision, Influx family.

    `family` is the InfluxDB measurement the metric is written under (one measurement per
    family, the metric name is the field), so a Grafana query names `air`, `rc`, ... .
    """

    name: str
    unit: str | None
    description: str
    family: str
    device_class: str | None = None
    state_class: StateClass | None = "measurement"
    precision: int | None = None


def _m(
    name: str,
    unit: str | None,
    family: str,
    description: str,
    device_class: str | None = None,
    precision: int | None = 1,
    state_class: StateClass | None = "measurement",
) -> MetricSpec:
    return MetricSpec(name, unit, description, family, device_class, state_class, precision)


# Units are written as Home Assistant writes them, so discovery and the UI agree.
_CATALOG: tuple[MetricSpec, ...] = (
    # Air quality: raw sensor metrics
    _m("pm1", "µg/m³", "air", "PM1.0 mass concentration", "pm1", 0),
    _m("pm2_5", "µg/m³", "air", "PM2.5 mass concentration (as the sensor reports it)", "pm25", 0),
    _m("pm10", "µg/m³", "air", "PM10 mass concentration", "pm10", 0),
    _m("co2", "ppm", "air", "Carbon dioxide", "carbon_dioxide", 0),
    _m("voc_index", None, "air", "Sensirion VOC index (1-500, 100 = typical)", None, 0),
    _m("nox_index", None, "air", "Sensirion NOx index (1-500, 1 = typical)", None, 0),
    _m("temperature", "°C", "air", "Air temperature", "temperature", 1),
    _m("humidity", "%", "air", "Relative humidity", "humidity", 1),
    _m("pressure", "hPa", "air", "Barometric pressure", "atmospheric_pressure", 1),
    _m("gas_resistance", "Ω", "air", "BME680 gas resistance", None, 0),
    # Air quality: derived
    _m("aqi_us", None, "air", "US EPA AQI from 24-h PM2.5 means (2024 breakpoints)", "aqi", 0),
    _m("aqi_us_nowcast", None, "air", "US EPA AQI from the PM2.5 NowCast", "aqi", 0),
    _m("pm2_5_nowcast", "µg/m³", "air", "PM2.5 NowCast over hourly means", "pm25", 1),
    _m("pm2_5_corrected", "µg/m³", "air", "PM2.5 after a humidity correction", "pm25", 1),
    _m("aqi_in", None, "air", "India National AQI", "aqi", 0),
    _m("dew_point", "°C", "air", "Dew point", "temperature", 1),
    _m("absolute_humidity", "g/m³", "air", "Absolute humidity", "absolute_humidity", 1),
    _m("comfort_score", "%", "air", "Indoor comfort score 0-100 (rules in docs)", None, 0),
    # RC: ESC and pack
    _m("pack_voltage", "V", "rc", "Battery pack voltage at the ESC", "voltage", 2),
    _m("cell_voltage_avg", "V", "rc", "Per-cell voltage estimate (pack / cells)", "voltage", 3),
    _m(
        "cell_voltage_min",
        "V",
        "rc",
        "Lowest cell voltage (balance lead or estimate)",
        "voltage",
        3,
    ),
    _m("cell_voltage_max", "V", "rc", "Highest cell voltage (balance lead)", "voltage", 3),
    _m("current", "A", "rc", "Motor/battery current", "current", 1),
    _m("power", "W", "rc", "Electrical power drawn from the pack", "power", 0),
    _m(
        "consumed_mah",
        "mAh",
        "rc",
        "Charge used since the pack was plugged in",
        None,
        0,
        "total_increasing",
    ),
    _m("energy_wh", "Wh", "rc", "Energy used in the session", "energy", 2, "total_increasing"),
    _m("esc_temperature", "°C", "rc", "ESC (MOSFET/capacitor) temperature", "temperature", 0),
    _m("motor_temperature", "°C", "rc", "Motor temperature", "temperature", 0),
    _m("pack_temperature", "°C", "rc", "Battery pack temperature", "temperature", 0),
    _m("erpm", "rpm", "rc", "Electrical RPM reported by the ESC", None, 0),
    _m("rpm", "rpm", "rc", "Motor mechanical RPM", None, 0),
    _m("wheel_rpm", "rpm", "rc", "Wheel RPM after the gearing", None, 0),
    _m("speed", "km/h", "rc", "Ground speed from wheel RPM and tyre size", "speed", 1),
    _m("throttle", "%", "rc", "Throttle command", None, 0),
    _m("duty_cycle", "%", "rc", "ESC output duty / PWM", None, 0),
    _m("bec_voltage", "V", "rc", "BEC (receiver supply) voltage", "voltage", 2),
    _m("bec_current", "A", "rc", "BEC (receiver supply) current", "current", 2),
    _m("capacitor_temperature", "°C", "rc", "ESC capacitor temperature", "temperature", 0),
    _m("cell_voltage_rest", "V", "rc", "Per-cell average at rest", "voltage", 3),
    _m("cell_voltage_spread", "V", "rc", "Highest minus lowest cell (balance lead)", "voltage", 3),
    _m("cell_voltage_spread_rest", "V", "rc", "Cell spread at rest", "voltage", 3),
    _m(
        "voltage_sag", "V", "rc", "Resting pack voltage minus pack voltage under load", "voltage", 2
    ),
    _m("distance", "km", "rc", "Distance from wheel speed", "distance", 3, "total_increasing"),
    _m("energy_per_km", "Wh/km", "rc", "Energy used per km driven", None, 1),
    _m("remaining", "%", "rc", "Pack charge remaining", "battery", 0),
    _m("internal_resistance", "mΩ", "rc", "Pack internal resistance estimate", None, 1),
    _m("cell_count", None, "rc", "Detected series cell count", None, 0),
    # Binary and state metrics stored as 0/1
    _m("state", None, "state", "ESPHome binary sensor state (1 = ON)", None, 0),
)

CATALOG: Mapping[str, MetricSpec] = MappingProxyType({m.name: m for m in _CATALOG})


def metric_spec(name: str) -> MetricSpec | None:
    """The catalog entry for `name`, or None for a metric the hub stores but does not know."""
    return CATALOG.get(name)
