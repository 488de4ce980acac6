"""Home Assistant MQTT discovery: the hub's devices, derived sensors and alerts as entities.

Form: **per-entity configs**, `homeassistant/<component>/<node_id>/<object_id>/config`
(retained, full key names). Chosen over the device-based `homeassistant/device/<id>/config`
with `cmps` because entities here come and go one at a time (a rule is removed, a derived metric
appears later than the raw ones): per entity, removal is one empty retained payload on one
topic, while the device form has to re-send the whole device with the component reduced to its
platform and gives no gain for a publisher that already tracks each entity.

Topics the hub publishes (all retained):

| topic | payload |
|---|---|
| `hub/state/<device>/<metric>` | the latest value, e.g. `3.412` (at most once per `state_interval`) |
| `hub/availability/<device>` | `online` / `offline` (from the device's availability; `online` on its first reading) |
| `hub/alerts/<device>/<rule>/state` | `ON` / `OFF` |
| `hub/alerts/<device>/<rule>/attributes` | `{"value", "value_at_firing", "threshold", "unit", "since", "message", "current_message", "severity", "rule", "alert_id", "acknowledged_by", "silenced_until"}` |
| `hub/state/hub/<name>` | the hub's own health sensors |
| `hub/status` | the hub's LWT: `online` / `offline` (published by the hub's main connection) |

Sensors are available while the hub *and* the device are (`availability_mode: all`); alert
binary_sensors only follow the hub, because "device offline" is itself an alert. Raw
air-quality sensors carry `expire_after` (their data is periodic); derived ones (hourly AQI,
once-a-minute comfort) and RC sensors do not. Names are short (`hub.ha.names`, shown after the
device name). Entity ids: `sensor.<device>_<metric>`, `binary_sensor.<device>_<rule>`,
`sensor.hub_<name>` (device names lower-cased, anything but letters and digits as `_`), with
`_hub_` before the metric when the node already owns that id.

One device per physical node: a node Home Assistant has by itself (ESPHome discovery or the
ESPHome integration, read by `hub.ha.nodes.NodeDirectory` from the broker) is joined through
its identifiers and MAC connection, and its own sensors are not announced again; other devices
are the hub's (`hub_<device>`, with a manufacturer and model). The topics published are
remembered in `ha_discovery.json` in the data dir: whatever is no longer wanted (a removed
device or rule) is cleared with an empty retained payload, and an entity whose device changes
is cleared and announced again, so Home Assistant keeps no empty device. Discovery is re-sent
when HA publishes `homeassistant/status` = `online`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTProtocolVersion

from hub import __version__
from hub.alerts.rules import Rule
from hub.alerts.store import Alert
from hub.bus.clients import DirectWriteClient, new_client, one_wakeup
from hub.config import BrokerConfig
from hub.ha.names import HUB_SENSOR_NAMES, humanize, sensor_name
from hub.ha.nodes import HUB_ORIGIN, NodeDirectory, NodeIdentity
from hub.ha.settings import DiscoverySettings
from hub.model import CATALOG

log = logging.getLogger(__name__)

ORIGIN = {"name": HUB_ORIGIN, "sw_version": __version__}

# Derived metrics that always get a sensor (the hub's value added), whatever `raw_sensors` says.
DERIVED_METRICS = frozenset(
    {
        "aqi_us", "aqi_us_nowcast", "pm2_5_nowcast", "pm2_5_corrected", "aqi_in", "dew_point",
        "absolute_humidity", "comfort_score", "cell_voltage_avg", "cell_voltage_min",
        "cell_voltage_rest", "cell_count", "remaining", "speed", "power", "consumed_mah",
        "energy_wh", "distance", "energy_per_km", "internal_resistance", "voltage_sag",
        "wheel_rpm", "rpm",
    }
)  # fmt: skip

# The hub's own health sensors: name -> (unit, state_class, icon)
HUB_SENSORS: dict[str, tuple[str | None, str | None, str]] = {
    "messages_per_s": ("msg/s", "measurement", "mdi:swap-horizontal"),
    "readings_stored": (None, "total_increasing", "mdi:database"),
    "rejected_total": (None, "total_increasing", "mdi:alert-circle-outline"),
    "alerts_firing": (None, "measurement", "mdi:bell-alert"),
    "store_size": ("B", "measurement", "mdi:harddisk"),
}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


@dataclass(slots=True)
class DeviceMeta:
    """A device as the hub announces it: the store's view plus what HA already knows."""

    name: str
    manufacturer: str | None = None
    model: str | None = None
    sw_version: str | None = None
    identifiers: tuple[str, ...] = ()
    kind: str | None = None
    node: NodeIdentity | None = None  # set when the node is in HA by itself (ESPHome)


@dataclass(slots=True)
class Topics:
    prefix: str = "hub"
    discovery: str = "homeassistant"

    @property
    def hub_status(self) -> str:
        return f"{self.prefix}/status"

    def state(self, device: str, metric: str) -> str:
        return f"{self.prefix}/state/{device}/{metric}"

    def availability(self, device: str) -> str:
        return f"{self.prefix}/availability/{device}"

    def alert_state(self, device: str, rule: str) -> str:
        return f"{self.prefix}/alerts/{device}/{rule}/state"

    def alert_attributes(self, device: str, rule: str) -> str:
        return f"{self.prefix}/alerts/{device}/{rule}/attributes"

    def config(self, component: str, node: str, object_id: str) -> str:
        return f"{self.discovery}/{component}/{node}/{object_id}/config"


# -- pure payload builders ---------------------------------------------------------------------


def hub_device(hub_id: str) -> dict[str, Any]:
    return {
        "identifiers": [hub_id],
        "name": "Telemetry hub",
        "manufacturer": "telemetry-hub",
        "model": "hub",
        "sw_version": __version__,
    }


# What a device is when nobody else tells Home Assistant (plain MQTT, the serial bench, the
# simulator): (manufacturer, model) by kind. The hub is the one announcing them, so it says so
# rather than leaving Home Assistant to show "<unknown>".
_KIND_DEVICE = {
    "airq": ("telemetry-hub", "Air-quality node (hub readings)"),
    "rc": ("telemetry-hub", "RC vehicle (ESC and LiPo telemetry)"),
    "other": ("telemetry-hub", "Device (hub readings)"),
}


def device_block(meta: DeviceMeta, hub_id: str) -> dict[str, Any]:
    node = meta.node
    if node is not None:
        # Join the node's own device: the identifiers and MAC connection Home Assistant keys
        # it by (ESPHome MQTT discovery or the ESPHome integration). Nothing else: name,
        # manufacturer and model are the node's to say, and it is not reached via the hub.
        block: dict[str, Any] = {}
        if node.identifiers:
            block["identifiers"] = list(node.identifiers)
        if node.connections:
            block["connections"] = [list(c) for c in node.connections]
        return block
    manufacturer, model = _KIND_DEVICE.get(meta.kind or "other", _KIND_DEVICE["other"])
    block = {
        "identifiers": [f"hub_{slug(meta.name)}"],
        "name": meta.name,
        "via_device": hub_id,
        "manufacturer": meta.manufacturer or manufacturer,
        "model": meta.model or model,
    }
    if meta.sw_version:
        block["sw_version"] = meta.sw_version
    return block


def entity_id_for(component: str, meta: DeviceMeta, object_id: str) -> str:
    """`<component>.<device>_<object_id>`, or with `_hub_` when the node already owns that id
    (Home Assistant would otherwise hand out `..._2`)."""
    wanted = f"{component}.{slug(meta.name)}_{object_id}"
    if meta.node is not None and wanted in meta.node.entity_ids:
        return f"{component}.{slug(meta.name)}_hub_{object_id}"
    return wanted


def sensor_config(
    topics: Topics, meta: DeviceMeta, metric: str, hub_id: str, expire_after: float
) -> tuple[str, dict[str, Any]]:
    node, device = f"hub_{slug(meta.name)}", meta.name
    spec = CATALOG.get(metric)
    payload: dict[str, Any] = {
        "name": sensor_name(metric),
        "unique_id": f"hub_{slug(device)}_{metric}",
        "default_entity_id": entity_id_for("sensor", meta, metric),
        "state_topic": topics.state(device, metric),
        "availability": [
            {"topic": topics.hub_status, "payload_available": "online", "payload_not_available": "offline"},
            {"topic": topics.availability(device), "payload_available": "online", "payload_not_available": "offline"},
        ],
        "availability_mode": "all",
        "device": device_block(meta, hub_id),
        "origin": ORIGIN,
    }  # fmt: skip
    if spec is not None:
        if spec.unit:
            payload["unit_of_measurement"] = spec.unit
        if spec.device_class:
            payload["device_class"] = spec.device_class
        if spec.state_class:
            payload["state_class"] = spec.state_class
        if spec.precision is not None:
            payload["suggested_display_precision"] = spec.precision
        # Raw air readings come every few seconds; derived ones at most once a minute (dew
        # point, comfort) or once an hour (AQI, NowCast): expiring those would show them
        # unavailable most of the time. They follow the node's availability instead.
        if spec.family == "air" and expire_after > 0 and metric not in DERIVED_METRICS:
            payload["expire_after"] = int(expire_after)
    return topics.config("sensor", node, metric), payload


def alert_name(rule: Rule) -> str:
    return rule.config.name or humanize(rule.id)


def alert_config(topics: Topics, rule: Rule, meta: DeviceMeta, hub_id: str) -> tuple[str, dict[str, Any]]:  # fmt: skip
    device = meta.name
    payload: dict[str, Any] = {
        "name": alert_name(rule),
        "unique_id": f"hub_{slug(device)}_alert_{rule.id}",
        "default_entity_id": entity_id_for("binary_sensor", meta, rule.id),
        "state_topic": topics.alert_state(device, rule.id),
        "json_attributes_topic": topics.alert_attributes(device, rule.id),
        "payload_on": "ON",
        "payload_off": "OFF",
        "device_class": rule.device_class,
        "availability_topic": topics.hub_status,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device_block(meta, hub_id),
        "origin": ORIGIN,
    }
    return topics.config("binary_sensor", f"hub_{slug(device)}", f"alert_{rule.id}"), payload


def hub_sensor_config(topics: Topics, name: str, hub_id: str) -> tuple[str, dict[str, Any]]:
    unit, state_class, icon = HUB_SENSORS[name]
    payload: dict[str, Any] = {
        "name": HUB_SENSOR_NAMES[name],
        "unique_id": f"{hub_id}_{name}",
        "default_entity_id": f"sensor.hub_{name}",
        "state_topic": topics.state("hub", name),
        "availability_topic": topics.hub_status,
        "entity_category": "diagnostic",
        "icon": icon,
        "device": hub_device(hub_id),
        "origin": ORIGIN,
    }
    if unit:
        payload["unit_of_measurement"] = unit
    if state_class:
        payload["state_class"] = state_class
    if name == "store_size":
        payload["device_class"] = "data_size"
    return topics.config("sensor", slug(hub_id), name), payload


def alert_attributes(alert: Alert | None, rule: Rule, value_at_firing: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The alert binary_sensor's attributes. `value_at_firing` and the `message` written at
    firing stay as they were; `value` is the latest value the rule saw (it keeps moving while
    the alert fires) and `current_message` says the same sentence with it, so no attribute
    quotes an old number as if it were now."""
    threshold = rule.threshold if rule.kind in ("threshold", "rate") else None
    if alert is None:
        return {"value": None, "value_at_firing": None, "threshold": threshold,
                "unit": None, "since": None, "message": None, "current_message": None,
                "severity": rule.severity, "rule": rule.id}  # fmt: skip
    value = alert.value
    return {
        "value": value,
        "value_at_firing": value if value_at_firing is None else value_at_firing,
        "threshold": alert.threshold,
        "unit": alert.unit,
        "since": alert.started_ms / 1000,
        "message": alert.message,
        "current_message": rule.render(alert.device, alert.metric, value, alert.unit),
        "severity": alert.severity,
        "rule": rule.id,
        "alert_id": alert.id,
        "acknowledged_by": alert.acknowledged_by,
        "silenced_until": alert.silenced_until_ms / 1000 if alert.silenced_until_ms else None,
    }


# -- the publisher -----------------------------------------------------------------------------


@dataclass
class DiscoveryStats:
    configs_published: int = 0
    configs_cleared: int = 0
    states_published: int = 0
    alert_states_published: int = 0
    resends: int = 0
    connected: bool = False
    last_error: str = ""


class DiscoveryPublisher:
    """Owns its own paho client (VERSION2) to the hub's broker; thread-safe publish.

    Besides publishing, it reads what Home Assistant reads: every retained discovery config
    (`NodeDirectory`: which nodes are in HA by themselves, with which identifiers, MAC and
    entities) and the native-API bridge's device info. `directory.generation` moves when that
    knowledge changes, and the alerts component re-plans its entities.
    """

    def __init__(
        self,
        settings: DiscoverySettings,
        broker: BrokerConfig,
        hub_id: str,
        memory_path: Path,
        client_id: str,
        metric_map: Mapping[str, str] | None = None,
        status_will: bool = False,
    ) -> None:
        self.settings = settings
        # Whether this client says `hub/status` (online, offline as its will): on a leader
        # worker, whose main connection announces only the worker itself.
        self.status_will = status_will
        self.broker = broker
        self.hub_id = hub_id
        self.topics = Topics(broker.topic_prefix, settings.prefix)
        self.memory_path = memory_path
        self.stats = DiscoveryStats()
        self._lock = threading.Lock()
        self._configs: dict[str, bytes] = {}  # topic -> payload we want retained
        self._remembered: set[str] = self._load_memory()
        self._availability: dict[str, str] = {}
        self._alert_retained: dict[str, bytes] = {}  # alert state/attr topic -> last payload
        self.directory = NodeDirectory(settings.prefix, metric_map)
        self._last_retained = 0.0  # monotonic time of the last retained config received
        self._client = self._make_client(client_id)
        self._connected = threading.Event()
        # Inside batch(), the sensor states its thread publishes, sent as one write at the end
        self._batch_thread: int | None = None
        self._states: list[tuple[str, bytes]] = []

    # -- MQTT ---------------------------------------------------------------------------

    def _make_client(self, client_id: str) -> DirectWriteClient:
        broker = self.broker
        client = new_client(
            client_id, broker, protocol=MQTTProtocolVersion.MQTTv311, client_class=DirectWriteClient
        )
        assert isinstance(client, DirectWriteClient)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, max(1, int(broker.reconnect_max)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        if self.status_will:
            client.will_set(self.topics.hub_status, b"offline", qos=1, retain=True)
        return client

    def start(self) -> None:
        host, port, _ = self.broker.host_port_tls
        self._client.connect_async(host, port, keepalive=30)
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_settled(self, timeout: float, quiet: float = 0.3) -> None:
        """After connecting: wait until the broker has handed over the retained discovery
        configs (no new one for `quiet` s), so the first plan already knows every node."""
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while time.monotonic() < deadline:
            last = max(self._last_retained, started)
            if time.monotonic() - last >= quiet:
                return
            time.sleep(0.05)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:  # fmt: skip
        if rc.is_failure:
            self.stats.last_error = f"connect refused: {rc}"
            log.warning("HA discovery connection refused by the broker: %s", rc)
            return
        self.stats.connected = True
        self.stats.last_error = ""
        subscriptions = [(f"{self.settings.prefix}/status", 1)]
        subscriptions += [
            (f"{self.settings.prefix}/{component}/+/+/config", 1)
            for component in ("sensor", "binary_sensor", "text_sensor")
        ]
        subscriptions.append((f"{self.topics.prefix}/devices/+/info", 1))
        client.subscribe(subscriptions)
        if self.status_will:
            client.publish(self.topics.hub_status, b"online", qos=1, retain=True)
        self.resend()
        self._connected.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:  # fmt: skip
        self.stats.connected = False
        self._connected.clear()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        topic = message.topic
        if topic == f"{self.settings.prefix}/status":
            if message.payload != b"online" or message.retain:
                return  # the retained birth seen on (re)connect: resend() already ran
            log.info("Home Assistant came online: re-sending discovery")
            self.stats.resends += 1
            self.resend()
            return
        try:
            with self._lock:
                if topic.endswith("/info") and topic.startswith(f"{self.topics.prefix}/devices/"):
                    device = topic[len(self.topics.prefix) + 9 : -5]
                    self.directory.learn_api_info(device, bytes(message.payload))
                else:
                    self.directory.learn_discovery(topic, bytes(message.payload))
        except Exception:  # a node's odd config must never stop the publisher's thread
            log.exception("Cannot read discovery config on %r", topic)
        if message.retain:
            self._last_retained = time.monotonic()

    def node(self, device: str) -> NodeIdentity | None:
        with self._lock:
            return self.directory.get(device)

    @property
    def generation(self) -> int:
        return self.directory.generation

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Publishes made inside go out together at the end: the sensor states as one write
        on the socket by this thread (`DirectWriteClient.send_publishes`), the rest with one
        wake-up of the client's thread.

        The state mirror sends tens of states a second at a steady load. Through paho, each
        was a publish() (a message object, its info, a queued packet) and each batch a
        wake-up of the client's thread to write them: about 30 us of the hub's CPU per
        ingested message at 200 msgs/s (docs/performance.md, sixth pass)."""
        if self._batch_thread is not None:  # nested, or another thread's batch: plain path
            with one_wakeup(self._client):
                yield
            return
        self._batch_thread = threading.get_ident()
        try:
            with one_wakeup(self._client):
                try:
                    yield
                finally:
                    self._send_states()
        finally:
            self._batch_thread = None

    def _in_batch(self) -> bool:
        return self._batch_thread == threading.get_ident()

    def _send_states(self) -> None:
        states = self._states
        if not states:
            return
        self._states = []
        if self._client.send_publishes(states, retain=True):
            return
        # Not now (TLS, packets of paho's waiting, reconnecting): paho's path, same order.
        for topic, payload in states:
            self._client.publish(topic, payload, qos=0, retain=True)

    def _publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = True) -> None:
        if self._states and self._in_batch():
            self._send_states()  # the states published before this go out before it
        self._client.publish(topic, payload, qos=qos, retain=retain)

    # -- memory of what is retained on the broker ---------------------------------------------

    def _load_memory(self) -> set[str]:
        try:
            return set(json.loads(self.memory_path.read_text()))
        except (OSError, ValueError):
            return set()

    def _save_memory(self) -> None:
        try:
            tmp = self.memory_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(sorted(self._remembered)))
            tmp.replace(self.memory_path)
        except OSError as exc:
            log.warning("Cannot remember HA discovery topics in %s: %s", self.memory_path, exc)

    # -- what we want announced ------------------------------------------------------------

    def set_configs(self, configs: Mapping[str, dict[str, Any]]) -> set[str]:
        """Make exactly `configs` the announced set: publish new/changed, clear the rest.

        An entity whose *device* changes (the node turned out to be in Home Assistant by
        itself, or its MAC changed) is removed first (empty config) and announced again on the
        next call: Home Assistant moves an entity to a new device on an updated config but
        keeps the old, now empty device in its registry for good. Returns those topics; the
        caller calls again after a moment.
        """
        encoded = {t: orjson.dumps(p) for t, p in configs.items()}
        moved: set[str] = set()
        with self._lock:
            for topic, config in configs.items():
                old = self._configs.get(topic)
                if old is not None and orjson.loads(old).get("device") != config.get("device"):
                    moved.add(topic)
            for topic in moved:
                del encoded[topic]
            changed = {t: p for t, p in encoded.items() if self._configs.get(t) != p}
            gone = (set(self._configs) | self._remembered) - set(encoded)
            self._configs = encoded
            self._remembered = set(encoded)
        for topic in sorted(gone):
            self._publish(topic, b"")
            self.stats.configs_cleared += 1
        for topic, payload in changed.items():
            self._publish(topic, payload)
            self.stats.configs_published += 1
        if changed or gone:
            self._save_memory()
        if moved:
            log.info("Moving %d Home Assistant entities to their node's own device", len(moved))
        return moved

    def resend(self) -> None:
        with self._lock:
            configs = dict(self._configs)
            retained = dict(self._alert_retained)
            availability = dict(self._availability)
        for topic, payload in configs.items():
            self._publish(topic, payload)
        for device, state in availability.items():
            self._publish(self.topics.availability(device), state)
        for topic, payload in retained.items():
            self._publish(topic, payload)

    def build_configs(
        self,
        devices: Iterable[DeviceMeta],
        sensors: Iterable[tuple[str, str]],
        alert_targets: Iterable[tuple[Rule, str]],
    ) -> dict[str, dict[str, Any]]:
        metas = {d.name: d for d in devices}
        configs: dict[str, dict[str, Any]] = {}
        for name in HUB_SENSORS:
            topic, payload = hub_sensor_config(self.topics, name, self.hub_id)
            configs[topic] = payload
        for device, metric in sensors:
            meta = metas.get(device) or DeviceMeta(device)
            topic, payload = sensor_config(
                self.topics, meta, metric, self.hub_id, self.settings.expire_after
            )
            configs[topic] = payload
        for rule, device in alert_targets:
            meta = metas.get(device) or DeviceMeta(device)
            topic, payload = alert_config(self.topics, rule, meta, self.hub_id)
            configs[topic] = payload
        return configs

    def wants_sensor(
        self, device: str, metric: str, source: str, node: NodeIdentity | None
    ) -> bool:
        """Whether the hub announces a sensor for this series. Derived metrics always; raw
        ones unless the node announces that metric to Home Assistant itself."""
        if metric not in CATALOG or metric == "state":
            return False
        if metric in DERIVED_METRICS and source == "derived":
            return True
        mode = self.settings.raw_sensors
        if mode == "all":
            return True
        if mode == "none":
            return source == "derived"
        return not (node is not None and node.announces(metric))

    # -- states --------------------------------------------------------------------------

    def publish_state(self, device: str, metric: str, value: float) -> None:
        topic = self.topics.state(device, metric)
        if self._in_batch():
            self._states.append((topic, _number(value)))
        else:
            self._publish(topic, _number(value), qos=0, retain=True)
        self.stats.states_published += 1

    def publish_availability(self, device: str, online: bool) -> None:
        state = "online" if online else "offline"
        with self._lock:
            if self._availability.get(device) == state:
                return
            self._availability[device] = state
        self._publish(self.topics.availability(device), state)

    def publish_alert(
        self, rule: Rule, device: str, alert: Alert | None, value_at_firing: float | None = None
    ) -> None:
        """The alert binary_sensor's state and attributes (attributes first, so an automation
        triggered by the state change reads the matching attributes)."""
        state_topic = self.topics.alert_state(device, rule.id)
        attr_topic = self.topics.alert_attributes(device, rule.id)
        attributes = orjson.dumps(alert_attributes(alert, rule, value_at_firing))
        state = b"ON" if alert is not None and alert.firing else b"OFF"
        with self._lock:
            same = (
                self._alert_retained.get(attr_topic) == attributes
                and self._alert_retained.get(state_topic) == state
            )
            self._alert_retained[attr_topic] = attributes
            self._alert_retained[state_topic] = state
        if same:
            return
        self._publish(attr_topic, attributes)
        self._publish(state_topic, state)
        self.stats.alert_states_published += 1

    def publish_hub(self, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            if name in HUB_SENSORS:
                self.publish_state("hub", name, value)


def _number(value: float) -> bytes:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value)).encode()
    return repr(round(value, 6)).encode()
