"""From topic to codec: a small table, nothing more (pure apart from the learnt entity map).

The router knows which filters the hub subscribes to and which codec reads each one. It
returns what a message carried (readings, events, learnt entities, availability) or raises
`Rejected` with a reason. Handlers live in their own modules (hub_json, esphome, mappings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hub.bus import esphome, hub_json, mappings, reject
from hub.bus.bridge import BridgeCodec
from hub.bus.mqtt import Message
from hub.bus.reject import Rejected
from hub.config import HubConfig
from hub.model import DeviceInfo, Event, Reading


@dataclass(slots=True)
class Decoded:
    readings: list[Reading] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    discoveries: list[esphome.Discovery] = field(default_factory=list)
    availability: list[tuple[str, bool, int]] = field(default_factory=list)  # device, online, ts
    devices: list[DeviceInfo] = field(default_factory=list)
    # How many of the last `readings` / `events` carry the receive time instead of a timestamp
    # of their own: those are keyed by the message's receipt (IngestCore.process).
    received_readings: int = 0
    received_events: int = 0

    @property
    def has_own_timestamp(self) -> bool:
        return not (self.received_readings or self.received_events)


def on_receipt(readings: list[Reading], events: list[Event] | None = None) -> Decoded:
    """What a message without a timestamp of its own carried: all of it keyed by its receipt."""
    events = events or []
    return Decoded(
        readings=readings,
        events=events,
        received_readings=len(readings),
        received_events=len(events),
    )


class Router:
    def __init__(
        self, config: HubConfig, entities: dict[str, esphome.Entity] | None = None
    ) -> None:
        self.config = config
        ingest = config.ingest
        self.prefix = config.broker.topic_prefix
        self.readings_prefix = f"{self.prefix}/readings/"
        self.bridge_prefix = f"{self.prefix}/bridge/"
        self.devices_prefix = f"{self.prefix}/devices/"
        self.bridge = BridgeCodec(config.serial.esc)
        self.discovery_prefix = ingest.esphome.discovery_prefix
        self.max_levels = ingest.max_topic_levels
        self.max_payload = ingest.max_payload
        self.future_ms = int(ingest.future_tolerance * 1000)
        self.overrides = dict(ingest.esphome.metric_map)
        self.accept_unknown = ingest.esphome.accept_unknown
        self.esphome_enabled = ingest.esphome.enabled
        self.entities: dict[str, esphome.Entity] = dict(entities or {})
        # state topic -> (device, metric, unit, tags) of sensors decoded before
        self._plans: dict[str, tuple[str, str, str | None, Mapping[str, str]]] = {}
        self.mappings = list(ingest.mappings)
        self.ignored_status = {self.prefix, self.discovery_prefix}
        # Nodes the native-API bridge feeds: their ESPHome MQTT topics would store twice.
        self.api_fed = config.esphome_api.api_fed_devices()

    def subscriptions(self) -> list[str]:
        subs: list[str] = []
        if self.config.ingest.hub_json:
            subs.append(f"{self.prefix}/readings/#")
            subs.append(f"{self.prefix}/bridge/+")
            subs.append(f"{self.prefix}/devices/+/availability")
        if self.esphome_enabled:
            for node in self.config.ingest.esphome.topic_prefixes:
                subs += [f"{node}/{c}/+/state" for c in sorted(esphome.STATE_COMPONENTS)]
                subs.append(f"{node}/status")
            subs += [f"{self.discovery_prefix}/{c}/#" for c in sorted(esphome.STATE_COMPONENTS)]
        subs += [m.topic for m in self.mappings]
        return list(dict.fromkeys(subs))

    def decode(self, message: Message, now_ms: int) -> Decoded:
        topic = message.topic
        payload = message.payload
        if len(payload) > self.max_payload:
            raise Rejected(
                reject.TOO_LARGE,
                f"payload of {len(payload)} bytes exceeds ingest.max_payload ({self.max_payload})",
            )
        if topic.count("/") >= self.max_levels:
            raise Rejected(reject.BAD_TOPIC, f"topic has more than {self.max_levels} levels")
        if not topic.isascii():
            raise Rejected(
                reject.BAD_NAME, "topic has non-ASCII characters; device and metric names are ASCII"
            )
        if self.mappings:
            mapping = mappings.find_mapping(self.mappings, topic)
            if mapping is not None:
                readings = mappings.decode(mapping, topic, payload, message.received_ms, now_ms)
                if mapping.timestamp_path is None:
                    return on_receipt(readings)
                return Decoded(readings=readings)
        if topic.startswith(self.readings_prefix):
            device = topic[len(self.readings_prefix) :]
            if "/" in device or not device:
                raise Rejected(
                    reject.UNKNOWN_TOPIC, f"hub readings topics are {self.readings_prefix}<device>"
                )
            decoded_json = hub_json.decode_message(
                device,
                payload,
                message.received_ms,
                now_ms + self.future_ms - hub_json.MAX_FUTURE_MS,
            )
            # Samples without `ts`/`ts_ms` carry the receive time: those readings are
            # deduplicated on redelivery by the message's receipt, like an ESPHome state.
            return Decoded(
                readings=decoded_json.readings,
                events=decoded_json.events,
                received_readings=decoded_json.received_readings,
                received_events=decoded_json.received_events,
            )
        if topic.startswith(self.devices_prefix) and topic.endswith("/availability"):
            # bridges (native API, serial) report their devices' liveness here
            device = hub_json.check_device(topic[len(self.devices_prefix) : -len("/availability")])
            state = payload.strip().lower()
            if state not in (b"online", b"offline"):
                raise Rejected(
                    reject.UNKNOWN_TOPIC,
                    f"availability of {device!r} is {payload[:40]!r}, expected online/offline",
                )
            return Decoded(availability=[(device, state == b"online", message.received_ms)])
        if topic.startswith(self.bridge_prefix):
            node = topic[len(self.bridge_prefix) :]
            readings, events = self.bridge.decode(node, payload, message.received_ms)
            return Decoded(readings=readings, events=events)
        parts = topic.split("/")
        if self.esphome_enabled:
            if len(parts) >= 4 and parts[-1] == "state" and parts[-3] in esphome.STATE_COMPONENTS:
                plan = self._plans.get(topic)
                if plan is not None:  # a sensor seen before: only the number is new
                    device, metric, unit, tags = plan
                    value = esphome.parse_float(payload, topic)
                    reading = Reading(
                        device, metric, value, message.received_ms, unit, tags, "mqtt"
                    )
                    return on_receipt([reading])
                entity = self.entities.get(topic)
                if self.api_fed and (entity.device if entity else parts[-4]) in self.api_fed:
                    return Decoded()
                readings, events = esphome.decode_state(
                    "/".join(parts[:-3]),
                    parts[-3],
                    parts[-2],
                    payload,
                    message.received_ms,
                    entity,
                    self.overrides,
                    self.accept_unknown,
                )
                if parts[-3] == "sensor" and len(readings) == 1 and len(self._plans) < 100_000:
                    r = readings[0]
                    self._plans[topic] = (r.device, r.metric, r.unit, r.tags)
                return on_receipt(readings, events)
            if parts[0] == self.discovery_prefix and parts[-1] == "config":
                found = esphome.decode_discovery(topic, payload, self.overrides)
                decoded = Decoded()
                self._plans.clear()  # units or names may have changed
                if found is not None:
                    if found.entity is not None:
                        self.entities[found.entity.state_topic] = found.entity
                    else:
                        for key, entity in list(self.entities.items()):
                            if entity.object_id == parts[-2] and topic.endswith(
                                f"/{entity.object_id}/config"
                            ):
                                del self.entities[key]
                    decoded.discoveries.append(found)
                    if found.device is not None:
                        decoded.devices.append(found.device)
                return decoded
            if len(parts) >= 2 and parts[-1] == "status":
                node = "/".join(parts[:-1])
                if node in self.ignored_status:
                    return Decoded()
                state = payload.strip().lower()
                if state not in (b"online", b"offline"):
                    raise Rejected(
                        reject.UNKNOWN_TOPIC,
                        f"status of {node!r} is {payload[:40]!r}, expected online/offline",
                    )
                device = hub_json.check_device(parts[-2])
                return Decoded(availability=[(device, state == b"online", message.received_ms)])
        raise Rejected(
            reject.UNKNOWN_TOPIC, "no codec reads this topic (see the MQTT topic reference)"
        )
