"""User-defined mappings of arbitrary JSON topics to readings (pure).

ingest:
  mappings:
    - topic: zigbee2mqtt/+
      device: "{1}"                # topic level 1
      values:
        temperature: {path: temperature}
        humidity: {path: humidity}
        pack_voltage: {path: battery.mv, unit: V, scale: 0.001}
"""

from __future__ import annotations

from typing import Any

from hub.bus import reject
from hub.bus.hub_json import check_device, check_metric, loads_object, number, parse_timestamp
from hub.bus.reject import Rejected
from hub.bus.topics import matches
from hub.config import TopicMapping
from hub.model import CATALOG, Reading

_MISSING = object()


def lookup(obj: Any, path: str) -> Any:
    """Follow a dotted path through objects and lists ('a.b.0.c')."""
    node = obj
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def device_name(template: str, topic: str) -> str:
    levels = topic.split("/")
    try:
        name = template.format(*levels)
    except (IndexError, KeyError, ValueError):
        raise Rejected(
            reject.BAD_TOPIC, f"device template {template!r} does not fit topic {topic!r}"
        ) from None
    return check_device(name)


def find_mapping(mappings: list[TopicMapping], topic: str) -> TopicMapping | None:
    for mapping in mappings:
        if matches(mapping.topic, topic):
            return mapping
    return None


def decode(
    mapping: TopicMapping, topic: str, payload: bytes, received_ms: int, now_ms: int
) -> list[Reading]:
    device = device_name(mapping.device, topic)
    obj = loads_object(payload)
    ts_ms = received_ms
    if mapping.timestamp_path:
        raw_ts = lookup(obj, mapping.timestamp_path)
        if raw_ts is not _MISSING:
            ts_ms = parse_timestamp({"ts": raw_ts}, received_ms, now_ms)
    readings = []
    for metric, spec in mapping.values.items():
        check_metric(metric)
        raw = lookup(obj, spec.path)
        if raw is _MISSING:
            continue  # devices send partial updates; a missing key is not an error
        value = number(raw, f"{spec.path}") * spec.scale
        catalog = CATALOG.get(metric)
        unit = spec.unit if spec.unit is not None else (catalog.unit if catalog else None)
        readings.append(Reading(device, metric, value, ts_ms, unit, {}, "mqtt"))
    if not readings:
        raise Rejected(
            reject.MISSING_FIELD,
            f"none of the mapped paths ({', '.join(s.path for s in mapping.values.values())}) is in the payload",
        )
    return readings
