"""What Home Assistant already knows about each node, learnt from the broker (pure).

The hub's derived entities must join the node's own device in Home Assistant, and must not
re-announce the sensors the node announces itself. Home Assistant knows a node in one of two
ways, and both leave their trace where the hub can read it:

* **ESPHome MQTT discovery**: the node's retained configs under
  `homeassistant/<component>/<node>/<object_id>/config` carry a device block with
  `identifiers` (the MAC without colons) and `connections` (`[["mac", ...]]`), and one config
  per entity it announces. Read here from the same retained messages Home Assistant reads, so
  the hub sees exactly what Home Assistant sees, the moment it sees it (no store round trip).
* **The ESPHome integration (native API)**: Home Assistant keys that device by its MAC
  (`connections`). The hub's native-API bridge publishes the node's device info, MAC included,
  retained on `<prefix>/devices/<device>/info`.

A device is named as the hub names it: the `<node>` part of the discovery topic (what
`hub.bus.esphome.decode_discovery` stores readings under), or the bridge's device name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from hub.bus.esphome import ABBREVIATIONS, DEVICE_ABBREVIATIONS, metric_for, safe_metric_name

# Our own discovery configs carry this origin name; they are not the node's.
HUB_ORIGIN = "telemetry-hub"
_COMPONENTS = frozenset({"sensor", "binary_sensor", "text_sensor"})


def entity_slug(text: str) -> str:
    """Home Assistant's `slugify` for entity ids, close enough for the names nodes use."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def format_mac(mac: str) -> str | None:
    """`aabbccddeeff` / `AA:BB:...` / `aa-bb-...` -> `aa:bb:cc:dd:ee:ff` (HA's form), else None."""
    digits = re.sub(r"[^0-9a-fA-F]", "", mac)
    if len(digits) != 12 or len(mac) not in (12, 17):
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2)).lower()


@dataclass(slots=True)
class _Entity:
    metric: str | None
    entity_id: str | None


@dataclass(slots=True)
class NodeIdentity:
    """One node as Home Assistant knows it."""

    name: str  # the hub's device name
    via: str  # "mqtt" (ESPHome MQTT discovery) | "api" (native API, ESPHome integration)
    identifiers: tuple[str, ...] = ()
    connections: tuple[tuple[str, str], ...] = ()
    friendly_name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    sw_version: str | None = None
    entities: dict[str, _Entity] = field(default_factory=dict)  # config topic -> entity

    @property
    def announced_metrics(self) -> frozenset[str]:
        return frozenset(e.metric for e in self.entities.values() if e.metric)

    @property
    def entity_ids(self) -> frozenset[str]:
        return frozenset(e.entity_id for e in self.entities.values() if e.entity_id)

    def announces(self, metric: str) -> bool:
        """The node gives Home Assistant this metric itself (over the native API: all raw)."""
        return self.via == "api" or metric in self.announced_metrics

    def device_key(self) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        return self.identifiers, self.connections


class NodeDirectory:
    """Node identities by hub device name; `generation` moves whenever any of them changes."""

    def __init__(
        self, discovery_prefix: str = "homeassistant", metric_map: Mapping[str, str] | None = None
    ) -> None:
        self.discovery_prefix = discovery_prefix
        self.metric_map = dict(metric_map or {})
        self._mqtt: dict[str, NodeIdentity] = {}
        self._api: dict[str, NodeIdentity] = {}
        self.generation = 0

    def get(self, device: str) -> NodeIdentity | None:
        # A node fed over the native API is in HA through the ESPHome integration; if it also
        # announces over MQTT, both name the same MAC and the MQTT side tells us more entities.
        return self._mqtt.get(device) or self._api.get(device)

    def names(self) -> Iterable[str]:
        return set(self._mqtt) | set(self._api)

    def _changed(self) -> None:
        self.generation += 1

    # -- ESPHome MQTT discovery ---------------------------------------------------------------

    def learn_discovery(self, topic: str, payload: bytes) -> bool:
        """A retained discovery config (or its removal). True when the directory changed."""
        parts = topic.split("/")
        if len(parts) != 5 or parts[0] != self.discovery_prefix or parts[-1] != "config":
            return False  # node-less topics cannot be tied to a hub device name
        component, node = parts[1], parts[2]
        if component not in _COMPONENTS:
            return False
        if not payload:
            return self._forget_entity(node, topic)
        try:
            raw = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(raw, dict):
            return False
        config = {ABBREVIATIONS.get(k, k): v for k, v in raw.items()}
        origin = config.get("origin")
        if isinstance(origin, dict) and origin.get("name") == HUB_ORIGIN:
            return False
        device = config.get("device")
        if not isinstance(device, dict):
            return self._forget_entity(node, topic)
        dev = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in device.items()}
        identifiers = _strings(dev.get("identifiers"))
        connections = _connections(dev.get("connections"))
        if not identifiers and not connections:
            return self._forget_entity(node, topic)
        known = self._mqtt.get(node)
        identity = NodeIdentity(
            name=node,
            via="mqtt",
            identifiers=identifiers,
            connections=connections,
            friendly_name=_text(dev.get("name")),
            manufacturer=_text(dev.get("manufacturer")),
            model=_text(dev.get("model")),
            sw_version=_text(dev.get("sw_version")),
            entities=dict(known.entities) if known else {},
        )
        object_id = parts[3]
        metric: str | None = None
        if component == "sensor":
            metric = metric_for(object_id, _text(config.get("device_class")), self.metric_map)
            metric = metric or safe_metric_name(object_id)
        identity.entities[topic] = _Entity(metric, _entity_id(component, config, identity))
        changed = known is None or _summary(known) != _summary(identity)
        self._mqtt[node] = identity
        if changed:
            self._changed()
        return changed

    def _forget_entity(self, node: str, topic: str) -> bool:
        known = self._mqtt.get(node)
        if known is None or topic not in known.entities:
            return False
        del known.entities[topic]
        if not known.entities:
            del self._mqtt[node]
        self._changed()
        return True

    # -- native API device info (published by the hub's bridge) -------------------------------

    def learn_api_info(self, device: str, payload: bytes) -> bool:
        if not payload:
            changed = self._api.pop(device, None) is not None
        else:
            try:
                info = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return False
            mac = format_mac(str(info.get("mac_address") or "")) if isinstance(info, dict) else None
            if mac is None:
                return False
            identity = NodeIdentity(
                name=device,
                via="api",
                connections=(("mac", mac),),
                friendly_name=_text(info.get("friendly_name")) or _text(info.get("name")),
                manufacturer=_text(info.get("manufacturer")) or "Espressif",
                model=_text(info.get("model")),
                sw_version=_text(info.get("esphome_version")),
            )
            known = self._api.get(device)
            changed = known is None or _summary(known) != _summary(identity)
            self._api[device] = identity
        if changed:
            self._changed()
        return changed


def _summary(node: NodeIdentity) -> tuple[Any, ...]:
    return (node.identifiers, node.connections, node.announced_metrics, node.entity_ids)


def _entity_id(component: str, config: Mapping[str, Any], node: NodeIdentity) -> str | None:
    """The entity id Home Assistant gives a node's entity (explicit id, else device + name)."""
    explicit = config.get("default_entity_id")
    if isinstance(explicit, str) and "." in explicit:
        return explicit
    object_id = config.get("object_id")
    if isinstance(object_id, str) and object_id:
        return f"{component}.{entity_slug(object_id)}"
    name = config.get("name")
    device_name = node.friendly_name or node.name
    parts = [device_name] + ([name] if isinstance(name, str) and name else [])
    return f"{component}.{entity_slug(' '.join(parts))}"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list):
        return tuple(str(v) for v in value if isinstance(v, str | int) and str(v))
    return ()


def _connections(value: Any) -> tuple[tuple[str, str], ...]:
    found: list[tuple[str, str]] = []
    if isinstance(value, list):
        for pair in value:
            if isinstance(pair, list | tuple) and len(pair) == 2:
                kind, ident = str(pair[0]), str(pair[1])
                if kind == "mac":
                    ident = format_mac(ident) or ident
                found.append((kind, ident))
    return tuple(found)
