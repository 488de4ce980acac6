"""ESPHome's own MQTT topics, decoded (pure).

ESPHome publishes `<topic_prefix>/<component>/<object_id>/state` (numbers as text, binary
sensors `ON`/`OFF`), availability on `<topic_prefix>/status`, and a retained discovery config
per entity on `homeassistant/<component>/<node>/<object_id>/config` with abbreviated keys
(`stat_t`, `unit_of_meas`, `dev_cla`, ...). The discovery config tells us the unit and device
class of a state topic; without one, the object id is matched against known sensor names.

Metric names follow one rule shared with the native-API bridge, so both paths produce the
same series: the device class (`pm25` -> `pm2_5`, `carbon_dioxide` -> `co2`, ...), else a
known object-id suffix (`..._voc_index` -> `voc_index`), else the object id itself; every
reading is tagged `sensor=<object_id>` so two temperature sensors on one node stay apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hub.bus import reject
from hub.bus.hub_json import loads_object
from hub.bus.reject import Rejected
from hub.model import CATALOG, DeviceInfo, Event, Reading

STATE_COMPONENTS = frozenset({"sensor", "binary_sensor", "text_sensor"})

DEVICE_CLASS_METRIC: Mapping[str, str] = {
    "pm25": "pm2_5",
    "pm10": "pm10",
    "pm1": "pm1",
    "carbon_dioxide": "co2",
    "temperature": "temperature",
    "humidity": "humidity",
    "atmospheric_pressure": "pressure",
    "pressure": "pressure",
}

# Checked in order: the first suffix an object id ends with names its metric.
OBJECT_ID_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("voc_index", "voc_index"),
    ("nox_index", "nox_index"),
    ("pm_2_5", "pm2_5"),
    ("pm2_5", "pm2_5"),
    ("pm25", "pm2_5"),
    ("pm_10_0", "pm10"),
    ("pm_10", "pm10"),
    ("pm10", "pm10"),
    ("pm_1_0", "pm1"),
    ("pm_1", "pm1"),
    ("pm1", "pm1"),
    ("co2", "co2"),
    ("carbon_dioxide", "co2"),
    ("temperature", "temperature"),
    ("humidity", "humidity"),
    ("pressure", "pressure"),
    ("gas_resistance", "gas_resistance"),
)

_OBJECT_ID_RE = re.compile(r"^[a-z0-9_]{1,64}$")
ABBREVIATIONS: Mapping[str, str] = {
    "stat_t": "state_topic",
    "unit_of_meas": "unit_of_measurement",
    "dev_cla": "device_class",
    "stat_cla": "state_class",
    "uniq_id": "unique_id",
    "avty_t": "availability_topic",
    "dev": "device",
    "obj_id": "object_id",
    "o": "origin",
}
DEVICE_ABBREVIATIONS: Mapping[str, str] = {
    "ids": "identifiers",
    "mf": "manufacturer",
    "mdl": "model",
    "sw": "sw_version",
    "cns": "connections",
}


def metric_for(
    object_id: str, device_class: str | None, overrides: Mapping[str, str]
) -> str | None:
    """The hub metric for an ESPHome entity, or None when nothing identifies it."""
    if object_id in overrides:
        return overrides[object_id]
    if device_class and device_class in DEVICE_CLASS_METRIC:
        return DEVICE_CLASS_METRIC[device_class]
    for suffix, metric in OBJECT_ID_SUFFIXES:
        if object_id == suffix or object_id.endswith("_" + suffix):
            return metric
    return None


def safe_metric_name(object_id: str) -> str:
    """An object id as a metric name (metric names start with a letter)."""
    return object_id if object_id[:1].isalpha() else f"s_{object_id}"


@dataclass(frozen=True, slots=True)
class Entity:
    """What discovery told us about one state topic."""

    state_topic: str
    device: str
    component: str
    object_id: str
    metric: str
    unit: str | None
    device_class: str | None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Discovery:
    """A decoded discovery message: an entity learnt, or (entity None) one removed."""

    config_topic: str
    entity: Entity | None
    device: DeviceInfo | None


def _expand(config: Mapping[str, Any]) -> dict[str, Any]:
    full = {ABBREVIATIONS.get(k, k): v for k, v in config.items()}
    base = full.get("~")
    if isinstance(base, str):
        for key, value in list(full.items()):
            if key.endswith("_topic") and isinstance(value, str):
                if value.startswith("~"):
                    full[key] = base + value[1:]
                elif value.endswith("~"):
                    full[key] = value[:-1] + base
    return full


def decode_discovery(
    topic: str, payload: bytes, overrides: Mapping[str, str], origin_ignore: str = "hub"
) -> Discovery | None:
    """A retained `homeassistant/<component>/[<node>/]<object_id>/config` message.

    Returns None for entities the hub does not ingest (switches, lights, its own discovery).
    """
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[-1] != "config":
        raise Rejected(
            reject.UNKNOWN_TOPIC,
            f"discovery topic {topic!r} is not <prefix>/<component>/[<node>/]<object_id>/config",
        )
    component = parts[1]
    if component not in STATE_COMPONENTS:
        return None
    if not payload:
        return Discovery(topic, None, None)
    raw = loads_object(payload)
    config = _expand(raw)
    origin = config.get("origin")
    if isinstance(origin, dict) and origin.get("name") == origin_ignore:
        return None
    state_topic = config.get("state_topic")
    if not isinstance(state_topic, str) or not state_topic:
        raise Rejected(reject.BAD_DISCOVERY, "discovery config has no state_topic (stat_t)")
    state_parts = state_topic.split("/")
    if (
        len(state_parts) < 4
        or state_parts[-1] != "state"
        or state_parts[-3] not in STATE_COMPONENTS
    ):
        return None  # not an ESPHome-shaped state topic: not ours to ingest
    object_id = state_parts[-2]
    device_block = config.get("device")
    node = parts[2] if len(parts) == 5 else "/".join(state_parts[:-3])
    device_info = None
    if isinstance(device_block, dict):
        dev = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in device_block.items()}
        ids = dev.get("identifiers")
        identifiers = (
            tuple(ids) if isinstance(ids, list) else ((ids,) if isinstance(ids, str) else ())
        )
        device_info = DeviceInfo(
            name=node,
            source="mqtt",
            manufacturer=_str_or_none(dev.get("manufacturer")),
            model=_str_or_none(dev.get("model")),
            sw_version=_str_or_none(dev.get("sw_version")),
            identifiers=tuple(str(i) for i in identifiers),
            kind="airq",
        )
    unit = _str_or_none(config.get("unit_of_measurement"))
    device_class = _str_or_none(config.get("device_class"))
    if component == "sensor":
        metric = metric_for(object_id, device_class, overrides) or safe_metric_name(object_id)
    else:
        metric = safe_metric_name(object_id)
    entity = Entity(
        state_topic=state_topic,
        device=node,
        component=state_parts[-3],
        object_id=object_id,
        metric=metric,
        unit=unit if unit is not None else (CATALOG[metric].unit if metric in CATALOG else None),
        device_class=device_class,
        name=_str_or_none(config.get("name")),
    )
    return Discovery(topic, entity, device_info)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_float(payload: bytes, what: str) -> float:
    try:
        value = float(payload)
    except ValueError:
        text = payload[:40].decode("utf-8", "replace")
        raise Rejected(reject.NOT_A_NUMBER, f"{what} state {text!r} is not a number") from None
    if not math.isfinite(value):
        raise Rejected(reject.NOT_A_NUMBER, f"{what} state is {value} (sensor has no valid value)")
    return value


def decode_state(
    topic_prefix: str,
    component: str,
    object_id: str,
    payload: bytes,
    received_ms: int,
    entity: Entity | None,
    overrides: Mapping[str, str],
    accept_unknown: bool,
) -> tuple[list[Reading], list[Event]]:
    """One `<prefix>/<component>/<object_id>/state` message."""
    if not _OBJECT_ID_RE.match(object_id):
        raise Rejected(
            reject.BAD_NAME, f"object id {object_id!r} is not ESPHome-shaped ([a-z0-9_])"
        )
    device = entity.device if entity else topic_prefix.rsplit("/", 1)[-1]
    tags = {"sensor": object_id}
    if component == "sensor":
        if entity is not None:
            if not accept_unknown and entity.metric not in CATALOG:
                raise Rejected(
                    reject.UNKNOWN_SENSOR,
                    f"sensor {object_id!r} of {device!r} maps to no catalog metric "
                    "(ingest.esphome.accept_unknown is off)",
                )
            metric, unit = entity.metric, entity.unit
        else:
            found = metric_for(object_id, None, overrides)
            if found is None:
                raise Rejected(
                    reject.UNKNOWN_SENSOR,
                    f"sensor {object_id!r} of {device!r} has no discovery config and no known name; "
                    "enable ESPHome MQTT discovery or map it in ingest.esphome.metric_map",
                )
            metric = found
            spec = CATALOG.get(metric)
            unit = spec.unit if spec else None
        value = parse_float(payload, f"{device}/{object_id}")
        return [Reading(device, metric, value, received_ms, unit, tags, "mqtt")], []
    if component == "binary_sensor":
        text = payload.strip().upper()
        if text in (b"ON", b"OFF"):
            state = text.decode()
            value = 1.0 if text == b"ON" else 0.0
            metric = safe_metric_name(object_id)
            return (
                [Reading(device, metric, value, received_ms, None, tags, "mqtt")],
                [Event(device, metric, state, received_ms, "mqtt")],
            )
        raise Rejected(reject.NOT_A_NUMBER, f"binary sensor {object_id!r} state is not ON/OFF")
    try:
        text_state = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(
            reject.INVALID_UTF8, f"text sensor {object_id!r} state is not UTF-8"
        ) from None
    return [], [Event(device, safe_metric_name(object_id), text_state[:1024], received_ms, "mqtt")]
