"""The hub's status as Prometheus text (exposition format 0.0.4), built from `Hub.status()`.

Pure: a status dict (and dead-letter counts) in, text out. The known sections get named
metrics with help text; components' sections (forwarder, alerts, ...) are walked and every
number in them becomes a gauge `hub_<component>_<path>`, so a new component's lag or queue
depth shows up without a change here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

_CORE_SECTIONS = {
    "version", "state", "pid", "started_at", "updated_at", "broker", "ingest", "store",
}  # fmt: skip
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")


def _name(*parts: str) -> str:
    name = "_".join(_NAME_BAD.sub("_", p) for p in parts if p)
    return name if not name[:1].isdigit() else f"_{name}"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _fmt(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.seen: set[str] = set()

    def metric(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterator[tuple[Mapping[str, str], float]] | list[tuple[Mapping[str, str], float]],
    ) -> None:
        if name in self.seen:
            return
        self.seen.add(name)
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                text = ",".join(f'{k}="{_label(v)}"' for k, v in sorted(labels.items()))
                self.lines.append(f"{name}{{{text}}} {_fmt(value)}")
            else:
                self.lines.append(f"{name} {_fmt(value)}")

    def one(self, name: str, kind: str, help_text: str, value: Any) -> None:
        number = _number(value)
        if number is not None:
            self.metric(name, kind, help_text, [({}, number)])


def render(status: Mapping[str, Any], dead_letters: Mapping[str, int] | None = None) -> str:
    w = _Writer()
    w.one("hub_up", "gauge", "1 while the hub runs.", status.get("state") == "running")
    if isinstance(status.get("started_at"), int | float) and isinstance(
        status.get("updated_at"), int | float
    ):
        w.one(
            "hub_uptime_seconds",
            "gauge",
            "Seconds since the hub started.",
            status["updated_at"] - status["started_at"],
        )
    broker = status.get("broker") or {}
    w.one(
        "hub_mqtt_connected",
        "gauge",
        "1 while the hub is connected to the MQTT broker.",
        broker.get("state") == "connected",
    )
    for key, kind, help_text in (
        ("received", "counter", "MQTT messages received."),
        ("received_bytes", "counter", "MQTT payload bytes received."),
        ("acked", "counter", "MQTT messages acknowledged after commit."),
        ("published", "counter", "MQTT messages the hub published."),
        ("connects", "counter", "Connections made to the broker."),
        ("disconnects", "counter", "Connections lost."),
        ("taken_over", "counter", "Sessions taken over by a client using the hub's id (0x8E)."),
        ("session_lost", "counter", "Reconnects that found the hub's session gone."),
        ("pending", "gauge", "Messages received but not yet committed (ingest queue depth)."),
        ("managed_restarts", "counter", "Restarts of the managed Mosquitto."),
    ):
        suffix = "_total" if kind == "counter" else ""
        w.one(_name("hub_mqtt", key) + suffix, kind, help_text, broker.get(key))
    ingest = status.get("ingest") or {}
    for key, kind, help_text in (
        ("messages", "counter", "Messages through the ingest core."),
        ("batches", "counter", "Store transactions committed by ingest."),
        ("readings_stored", "counter", "Readings stored (new samples)."),
        ("duplicates", "counter", "Readings already stored (redeliveries)."),
        ("derived", "counter", "Derived readings computed."),
        ("events", "counter", "Text events stored."),
    ):
        w.one(_name("hub_ingest", key) + "_total", kind, help_text, ingest.get(key))
    w.one(
        "hub_ingest_messages_per_second",
        "gauge",
        "Recent MQTT message rate.",
        ingest.get("messages_per_s"),
    )
    w.one(
        "hub_ingest_last_batch_size",
        "gauge",
        "Messages in the last batch.",
        ingest.get("last_batch_size"),
    )
    if _number(ingest.get("last_commit_ms")) is not None:
        w.one(
            "hub_ingest_last_commit_seconds",
            "gauge",
            "Time the last commit took.",
            float(ingest["last_commit_ms"]) / 1000,
        )
    rejected = ingest.get("rejected") or {}
    w.metric(
        "hub_ingest_rejected_total",
        "counter",
        "Messages rejected, by reason (each kept as a dead letter).",
        [
            ({"reason": str(k)}, float(v))
            for k, v in sorted(rejected.items())
            if _number(v) is not None
        ],
    )
    store = status.get("store") or {}
    w.one(
        "hub_store_size_bytes",
        "gauge",
        "Size of the SQLite store with its WAL.",
        store.get("size_bytes"),
    )
    if dead_letters is not None:
        w.metric(
            "hub_dead_letters",
            "gauge",
            "Dead letters kept in the store, by reason.",
            [({"reason": k}, float(v)) for k, v in sorted(dead_letters.items())],
        )
    _influx(w, status.get("influx"))
    for section, value in status.items():
        if section in _CORE_SECTIONS or not isinstance(value, Mapping):
            continue
        for path, number in _walk(value, (section,)):
            w.one(_name("hub", *path), "gauge", f"{'.'.join(path)} from hub status.", number)
    return "\n".join(w.lines) + "\n"


def _influx(w: _Writer, influx: Any) -> None:
    """The InfluxDB forward's named series (hub/store/influx.py `Forwarder.status`)."""
    if not isinstance(influx, Mapping) or influx.get("state") == "disabled":
        return
    for name, kind, help_text, key in (
        ("hub_influx_backlog_points", "gauge", "Readings queued in the outbox for InfluxDB.", "backlog"),
        ("hub_influx_refused_total", "counter", "Readings stored but not queued for InfluxDB because the outbox was full.", "refused"),
        ("hub_influx_delivered_total", "counter", "Readings InfluxDB acknowledged since the hub started.", "delivered"),
        ("hub_influx_retries_total", "counter", "Writes to InfluxDB retried since the hub started.", "retries"),
        ("hub_influx_last_success_timestamp_seconds", "gauge", "Unix time of the last write InfluxDB acknowledged.", "last_success_at"),
    ):  # fmt: skip
        w.one(name, kind, help_text, influx.get(key))


def _walk(
    value: Mapping[str, Any], path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], float]]:
    for key, item in value.items():
        if isinstance(item, Mapping):
            if len(path) < 4:
                yield from _walk(item, (*path, str(key)))
            continue
        number = _number(item)
        if number is not None:
            yield (*path, str(key)), number
