"""The hub's own JSON schema for bridges (serial logger, native-API bridge, simulator, yours).

Topic: `<prefix>/readings/<device>` (prefix `hub` by default). One JSON object per message:

    {"ts": 1732262400.25,                      # Unix seconds, or ISO-8601; default: receive time
     "values": {"pack_voltage": 11.87, "current": 23.4},
     "units": {"pack_voltage": "V", "current": "A"},   # optional, catalog units otherwise
     "tags": {"vehicle": "buggy"},                     # optional
     "events": {"fault": "over-current"},              # optional text states
     "source": "serial"}                               # optional

A single value may be written as `{"metric": "co2", "value": 612, "unit": "ppm"}`, and many
instants in one message as `{"samples": [{"ts": ..., "values": {...}}, ...]}` (each sample
may carry its own `units` and `tags`; top-level ones apply to all). `ts_ms` (integer
milliseconds) may replace `ts`. Pure: the receive time and the clock bounds are arguments.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from hub.bus import reject
from hub.bus.reject import Rejected
from hub.model import CATALOG, Event, Reading

METRIC_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TAG_KEY_RE = METRIC_RE

# 2000-01-01T00:00:00Z: nothing the hub ingests is older; a clock that says so is unset.
MIN_TIMESTAMP_MS = 946_684_800_000
MAX_FUTURE_MS = 86_400_000


_GOOD_DEVICES: set[str] = set()


def check_device(name: str) -> str:
    if name in _GOOD_DEVICES:
        return name
    if not DEVICE_RE.match(name):
        raise Rejected(
            reject.BAD_NAME,
            f"device name {name!r} must be 1-64 ASCII letters, digits, '_', '-' or '.'",
        )
    if len(_GOOD_DEVICES) < 10_000:
        _GOOD_DEVICES.add(name)
    return name


def check_metric(name: str) -> str:
    if not isinstance(name, str) or not METRIC_RE.match(name):
        raise Rejected(
            reject.BAD_NAME,
            f"metric name {name!r} must be lower-case ASCII letters, digits and '_' (e.g. pm2_5)",
        )
    return name


def number(value: Any, what: str) -> float:
    """A finite float from a JSON number or bool; anything else is refused with a reason."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        result = float(value)
        if math.isfinite(result):
            return result
        raise Rejected(reject.NOT_A_NUMBER, f"{what} is {value!r}, not a finite number")
    raise Rejected(
        reject.NOT_A_NUMBER, f"{what} is {value!r} ({type(value).__name__}), not a number"
    )


def check_timestamp(ts_ms: int, now_ms: int) -> int:
    if ts_ms < MIN_TIMESTAMP_MS:
        raise Rejected(reject.BAD_TIMESTAMP, f"timestamp {ts_ms} ms is before 2000-01-01")
    if ts_ms > now_ms + MAX_FUTURE_MS:
        raise Rejected(reject.BAD_TIMESTAMP, f"timestamp {ts_ms} ms is more than a day ahead")
    return ts_ms


def parse_timestamp(obj: Mapping[str, Any], default_ms: int, now_ms: int) -> int:
    if "ts_ms" in obj:
        raw = obj["ts_ms"]
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise Rejected(reject.NOT_A_NUMBER, f"ts_ms is {raw!r}, not an integer")
        return check_timestamp(raw, now_ms)
    if "ts" not in obj:
        return default_ms
    raw = obj["ts"]
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise Rejected(
                reject.NOT_A_NUMBER, f"ts {raw!r} is neither Unix seconds nor ISO-8601"
            ) from None
        if parsed.tzinfo is None:
            raise Rejected(reject.BAD_TIMESTAMP, f"ts {raw!r} has no time zone")
        return check_timestamp(round(parsed.timestamp() * 1000), now_ms)
    seconds = number(raw, "ts")
    if abs(seconds) > 1e11:  # milliseconds given as seconds: 300 years ahead, refuse clearly
        raise Rejected(
            reject.BAD_TIMESTAMP, f"ts {raw!r} is not Unix seconds (use ts_ms for milliseconds)"
        )
    return check_timestamp(round(seconds * 1000), now_ms)


def loads_object(payload: bytes) -> dict[str, Any]:
    """Parse a JSON object, telling bad UTF-8, bad JSON and non-objects apart."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejected(
                reject.INVALID_UTF8, f"payload is not UTF-8 ({exc.reason} at byte {exc.start})"
            ) from None
        try:  # the stdlib reads NaN/Infinity, so such a value is named precisely below
            obj = json.loads(text)
        except ValueError as exc:
            raise Rejected(reject.INVALID_JSON, f"payload is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Rejected(
            reject.NOT_AN_OBJECT, f"payload is a JSON {type(obj).__name__}, expected an object"
        )
    return obj


def _str_map(obj: Mapping[str, Any], key: str) -> dict[str, str]:
    raw = obj.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise Rejected(reject.NOT_AN_OBJECT, f"{key} must be an object of strings")
    return raw


def _tags(obj: Mapping[str, Any]) -> dict[str, str]:
    tags = _str_map(obj, "tags")
    for key in tags:
        if not TAG_KEY_RE.match(key):
            raise Rejected(reject.BAD_NAME, f"tag name {key!r} must be lower-case ASCII")
    return tags


_GOOD_NAMES: set[str] = set()  # names already checked: the same few recur in every message


def _name(name: Any, what: str = "metric") -> str:
    if name in _GOOD_NAMES:
        return str(name)
    check_metric(name)
    if len(_GOOD_NAMES) < 10_000:
        _GOOD_NAMES.add(name)
    return str(name)


def _sample(
    device: str,
    obj: Mapping[str, Any],
    base_units: Mapping[str, str],
    base_tags: Mapping[str, str],
    source: str,
    received_ms: int,
    now_ms: int,
    readings: list[Reading],
    events: list[Event],
) -> bool:
    """Appends the sample's readings and events; True when it carried its own timestamp."""
    ts_ms = parse_timestamp(obj, received_ms, now_ms)
    units: Mapping[str, str] = base_units
    if "units" in obj:
        units = {**base_units, **_str_map(obj, "units")}
    tags: Mapping[str, str] = base_tags
    if "tags" in obj:
        tags = {**base_tags, **_tags(obj)}
    values: Any
    if "values" in obj:
        values = obj["values"]
        if not isinstance(values, dict):
            raise Rejected(reject.NOT_AN_OBJECT, "values must be an object of metric: number")
    elif "metric" in obj:
        values = {obj["metric"]: obj.get("value")}
        if "unit" in obj and isinstance(obj["unit"], str):
            units = {**units, obj["metric"]: obj["unit"]}
    else:
        values = {}
    append = readings.append
    for metric, value in values.items():
        _name(metric)
        if type(value) is float and value - value == 0.0:  # finite float: the common case
            number_value = value
        else:
            number_value = number(value, metric)
        unit = units.get(metric) if units else None
        if unit is None:
            spec = CATALOG.get(metric)
            unit = spec.unit if spec else None
        append(Reading(device, metric, number_value, ts_ms, unit, tags, source))
    if "events" in obj:
        for name, text in _str_map(obj, "events").items():
            _name(name)
            events.append(Event(device, name, text, ts_ms, source))
    return "ts_ms" in obj or "ts" in obj


class HubMessage(NamedTuple):
    """A decoded message. Samples with their own `ts`/`ts_ms` come first; the last
    `received_readings` readings and `received_events` events carry the receive time instead
    (their samples had no timestamp), so the ingest core keys those by the message's receipt."""

    readings: list[Reading]
    events: list[Event]
    received_readings: int = 0
    received_events: int = 0

    @property
    def stamped(self) -> bool:
        """Every sample gave its own timestamp (nothing is keyed by the receipt)."""
        return not (self.received_readings or self.received_events)


def decode(
    device: str, payload: bytes, received_ms: int, now_ms: int
) -> tuple[list[Reading], list[Event]]:
    """Readings and events of one hub JSON message for `device` (the topic's last level)."""
    message = decode_message(device, payload, received_ms, now_ms)
    return message.readings, message.events


def decode_message(device: str, payload: bytes, received_ms: int, now_ms: int) -> HubMessage:
    """`decode`, and which readings carry the receive time because their sample gave no
    timestamp: those are recognised on redelivery by the message's receipt instead."""
    check_device(device)
    obj = loads_object(payload)
    if "device" in obj and obj["device"] != device:
        raise Rejected(
            reject.BAD_NAME,
            f"payload device {obj['device']!r} differs from topic device {device!r}",
        )
    source = obj.get("source", "mqtt")
    if not isinstance(source, str):
        raise Rejected(reject.NOT_AN_OBJECT, "source must be a string")
    units = _str_map(obj, "units")
    tags = _tags(obj)
    readings: list[Reading] = []
    events: list[Event] = []
    if "samples" in obj:
        samples = obj["samples"]
        if not isinstance(samples, list) or not all(isinstance(s, dict) for s in samples):
            raise Rejected(reject.NOT_AN_OBJECT, "samples must be a list of objects")
        # Per sample: one without a timestamp is stamped with the receive time, and only its
        # readings are keyed by the receipt; a stamped sample beside it keeps its own time.
        later: tuple[list[Reading], list[Event]] = ([], [])
        for sample in samples:
            if "ts_ms" in sample or "ts" in sample:
                _sample(device, sample, units, tags, source, received_ms, now_ms, readings, events)
            else:
                _sample(device, sample, units, tags, source, received_ms, now_ms, *later)
        received = len(later[0]), len(later[1])
        readings += later[0]
        events += later[1]
    else:  # the top-level maps are the sample's own: pass them once, not merged twice
        if _sample(device, obj, {}, {}, source, received_ms, now_ms, readings, events):
            received = 0, 0
        else:
            received = len(readings), len(events)
    if not readings and not events:
        raise Rejected(
            reject.MISSING_FIELD,
            "no values: give 'values', 'metric'+'value', 'samples' or 'events'",
        )
    return HubMessage(readings, events, *received)


def encode(
    readings: Iterable[Reading], events: Iterable[Event] = (), source: str | None = None
) -> bytes:
    """One hub JSON message for readings of one device (grouped into samples by instant).

    Used by every bridge, so what a bridge publishes is exactly what `decode` reads.
    """
    by_instant: dict[tuple[int, tuple[tuple[str, str], ...]], dict[str, Any]] = {}
    for r in readings:
        key = (r.timestamp_ms, tuple(sorted(r.tags.items())))
        sample = by_instant.setdefault(key, {"ts_ms": r.timestamp_ms, "values": {}})
        sample["values"][r.metric] = r.value
        if r.tags:
            sample["tags"] = dict(r.tags)
        spec = CATALOG.get(r.metric)
        if r.unit is not None and (spec is None or spec.unit != r.unit):
            sample.setdefault("units", {})[r.metric] = r.unit
        if source is None:
            source = r.source
    for e in events:
        key = (e.timestamp_ms, ())
        sample = by_instant.setdefault(key, {"ts_ms": e.timestamp_ms, "values": {}})
        sample.setdefault("events", {})[e.name] = e.text
        if source is None:
            source = e.source
    message: dict[str, Any] = {"samples": list(by_instant.values())}
    if source:
        message["source"] = source
    return orjson.dumps(message)
