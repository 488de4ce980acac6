"""The payload of a change-feed row (hub.store.postgres_feed): one committed batch's readings,
events and availability as compact orjson, each series (device, metric, unit, source, tags)
written once and its samples as (series index, ts, seq, value)."""

from __future__ import annotations

from typing import Any

import orjson

from hub.ingest import Committed
from hub.model import Event, Reading
from hub.store.sqlite import Batch, tags_key


def encode(batch: Batch) -> bytes | None:
    """A batch's readings, events and availability, compact: each series described once."""
    if not (batch.readings or batch.events or batch.availability):
        return None
    keys: dict[tuple[str, str, str | None, str, str], int] = {}
    rows: list[tuple[int, int, int, float]] = []
    for r in batch.readings:
        key = (r.device, r.metric, r.unit, r.source, tags_key(r.tags) if r.tags else "")
        index = keys.get(key)
        if index is None:
            index = keys[key] = len(keys)
        rows.append((index, r.timestamp_ms, r.seq, r.value))
    payload: dict[str, Any] = {"k": list(keys), "r": rows}
    if batch.events:
        payload["e"] = [
            (e.device, e.name, e.text, e.timestamp_ms, e.source, e.seq) for e in batch.events
        ]
    if batch.availability:
        payload["a"] = batch.availability
    return orjson.dumps(payload)


def decode(payload: bytes, committed_ms: int) -> Committed:
    data = orjson.loads(payload)
    series = [
        (device, metric, unit, source, orjson.loads(tags) if tags else {})
        for device, metric, unit, source, tags in data.get("k", ())
    ]
    readings = []
    for index, ts, seq, value in data.get("r", ()):
        device, metric, unit, source, tags = series[index]
        readings.append(Reading(device, metric, value, ts, unit, tags, source, seq))
    events = [Event(*e) for e in data.get("e", ())]
    availability = [(str(d), bool(o), int(ts)) for d, o, ts in data.get("a", ())]
    return Committed(readings, events, availability, committed_ms)
