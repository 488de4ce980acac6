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
    has_own_timestamp: bool = True  # False: readings are stamped with the receive time


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
                return Decoded(
                    readings=readings, has_own_timestamp=mapping.timestamp_path is not None
                )
        if topic.startswith(self.readings_prefix):
            device = topic[len(self.readings_prefix) :]
            if "/" in device or not device:
                raise Rejected(
                    reject.UNKNOWN_TOPIC, f"hub readings topics are {self.readings_prefix}<device>"
                )
            readings, events, stamped = hub_json.decode_message(
                device,
                payload,
                message.received_ms,
                now_ms + self.future_ms - hub_json.MAX_FUTURE_MS,
            )
            # Without `ts`/`ts_ms` the readings carry the receive time: such a message is
            # deduplicated on redelivery by its receipt, like an ESPHome state.
            return Decoded(readings=readings, events=events, has_own_timestamp=stamped)
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
                    return Decoded(readings=[reading], has_own_timestamp=False)
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
                return Decoded(readings=readings, events=events, has_own_timestamp=False)
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
