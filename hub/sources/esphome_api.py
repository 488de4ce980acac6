"""The ESPHome native-API bridge: nodes over aioesphomeapi, out as hub JSON on MQTT.

For each node (listed in config, or found by mDNS when `mdns: true`) the bridge holds one
aioesphomeapi `APIClient` driven by aioesphomeapi's `ReconnectLogic` (capped backoff, a wrong
key waits the maximum). On connect it reads the device info and the entity list, subscribes to
states and publishes:

* readings to `<prefix>/readings/<device>` as hub JSON (`hub.bus.hub_json.encode`, source
  `esphome_api`, QoS 1, not retained); states that arrive in one burst share one timestamp
  (the receive time) and one message;
* availability to `<prefix>/devices/<device>/availability`: `online` on connect, `offline` on
  disconnect, on a failed connect and on stop (QoS 1, retained).

Entities become readings by the rule the MQTT path uses (`hub.bus.esphome.metric_for`): the
device class (`pm25` -> `pm2_5`, `carbon_dioxide` -> `co2`, ...), else a known object-id
suffix (`..._voc_index` -> `voc_index`), else the object id; every reading is tagged
`sensor=<object_id>`. Values are rounded to the entity's `accuracy_decimals`, the precision
ESPHome publishes over MQTT, so both paths store the same numbers. Binary sensors give a 0/1
reading named after the object id plus an `ON`/`OFF` event; text sensors give events.

One node, one path. A node that speaks both MQTT and the native API would be stored twice,
with receive times that differ by a few milliseconds, so the two copies cannot be merged.
The rule instead: each configured node has `prefer: api|mqtt` (default `api`); the bridge
skips nodes marked `mqtt` and any node in the `skip_devices` set the wiring passes in (nodes
the MQTT ingest already feeds); the MQTT ingest skips `EsphomeApiSettings.api_fed_devices()`.

Errors name the node: a wrong key (`InvalidEncryptionKeyAPIError`), a missing or unexpected
key, a refused connection and a wrong node at the address each get one clear sentence,
logged at WARNING the first time and at DEBUG while it repeats, and kept in `status()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import orjson
from aioesphomeapi import (
    APIClient,
    APIConnectionError,
    BadNameAPIError,
    BinarySensorInfo,
    BinarySensorState,
    EncryptionPlaintextAPIError,
    EntityInfo,
    EntityState,
    InvalidAuthAPIError,
    InvalidEncryptionKeyAPIError,
    RequiresEncryptionAPIError,
    SensorInfo,
    SensorState,
    TextSensorInfo,
    TextSensorState,
)
from aioesphomeapi.reconnect_logic import ReconnectLogic

from hub.bus import hub_json
from hub.bus.esphome import metric_for, safe_metric_name
from hub.model import CATALOG, Event, Reading
from hub.sources.esphome_settings import EsphomeApiSettings, EsphomeDeviceSettings
from hub.sources.esphome_sim import firmware_object_id

_LOGGER = logging.getLogger(__name__)

SOURCE = "esphome_api"
MDNS_SERVICE = "_esphomelib._tcp.local."
CLIENT_INFO = "hub esphome_api bridge"

PublishFn = Callable[[str, bytes, int, bool], Awaitable[None] | None]
"""`publish(topic, payload, qos, retain)`, sync or async (paho's publish, wrapped)."""


# --- pure: entities and states to readings --------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntityMapping:
    """How one entity's states become readings or events."""

    key: int
    kind: Literal["sensor", "binary_sensor", "text_sensor"]
    object_id: str
    metric: str
    unit: str | None
    decimals: int | None


def _clean_object_id(object_id: str) -> str:
    # ESPHome object ids are [a-z0-9_-]; metric names allow no '-'.
    return "".join(
        c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in object_id.lower()
    )[:62]


def map_entity(
    info: EntityInfo, metric_map: Mapping[str, str] = MappingProxyType({})
) -> EntityMapping | None:
    """The mapping for a sensor, binary sensor or text sensor; None for other entity types."""
    object_id = info.object_id or firmware_object_id(info.name)
    clean = _clean_object_id(object_id)
    if isinstance(info, SensorInfo):
        metric = metric_for(clean, info.device_class or None, metric_map) or safe_metric_name(clean)
        spec = CATALOG.get(metric)
        unit = info.unit_of_measurement or (spec.unit if spec else None)
        decimals = info.accuracy_decimals if 0 <= info.accuracy_decimals <= 10 else None
        return EntityMapping(info.key, "sensor", object_id, metric, unit, decimals)
    if isinstance(info, BinarySensorInfo):
        return EntityMapping(info.key, "binary_sensor", object_id, safe_metric_name(clean), None, 0)
    if isinstance(info, TextSensorInfo):
        return EntityMapping(
            info.key, "text_sensor", object_id, safe_metric_name(clean), None, None
        )
    return None


def map_entities(
    entities: Iterable[EntityInfo], metric_map: Mapping[str, str] = MappingProxyType({})
) -> dict[int, EntityMapping]:
    return {m.key: m for e in entities if (m := map_entity(e, metric_map)) is not None}


class SkippedState(ValueError):
    """A state that gives no reading; `reason` is counted."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def convert_state(
    device: str, mapping: EntityMapping, state: EntityState, ts_ms: int
) -> tuple[list[Reading], list[Event]]:
    """Readings and events for one state (pure). Raises SkippedState for a missing value."""
    tags = {"sensor": mapping.object_id}
    if isinstance(state, SensorState):
        value = float(state.state)
        if state.missing_state or not math.isfinite(value):
            raise SkippedState(
                "missing_state", f"{device}/{mapping.object_id} has no value ({value})"
            )
        if mapping.decimals is not None:
            value = round(value, mapping.decimals)
        return [Reading(device, mapping.metric, value, ts_ms, mapping.unit, tags, SOURCE)], []
    if isinstance(state, BinarySensorState):
        if state.missing_state:
            raise SkippedState("missing_state", f"{device}/{mapping.object_id} has no state")
        on = bool(state.state)
        return (
            [Reading(device, mapping.metric, 1.0 if on else 0.0, ts_ms, None, tags, SOURCE)],
            [Event(device, mapping.metric, "ON" if on else "OFF", ts_ms, SOURCE)],
        )
    if isinstance(state, TextSensorState):
        if state.missing_state:
            raise SkippedState("missing_state", f"{device}/{mapping.object_id} has no text")
        return [], [Event(device, mapping.metric, state.state[:1024], ts_ms, SOURCE)]
    raise SkippedState("unsupported_state", f"{device}: {type(state).__name__} is not ingested")


def describe_error(name: str, host: str, port: int, err: BaseException) -> str:
    """One sentence that names the node and says what to do."""
    where = f"ESPHome node {name!r} at {host}:{port}"
    if isinstance(err, InvalidEncryptionKeyAPIError):
        return (
            f"{where} rejected the encryption key (Noise handshake MAC failure): set "
            f"esphome_api.devices[{name}].encryption_key to the node's `api: encryption: key:`"
        )
    if isinstance(err, RequiresEncryptionAPIError):
        return f"{where} requires encryption: set esphome_api.devices[{name}].encryption_key"
    if isinstance(err, EncryptionPlaintextAPIError):
        return (
            f"{where} does not use encryption but a key is configured: remove "
            f"esphome_api.devices[{name}].encryption_key or enable `api: encryption:` on the node"
        )
    if isinstance(err, BadNameAPIError):
        return f"{where} is a different node ({err.received_name!r}): fix the host or the name"
    if isinstance(err, InvalidAuthAPIError):
        return f"{where} refused the API password (passwords are not supported; use a key)"
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
            return f"{where} refused the connection (is it powered, on the network and with `api:` enabled?)"
        cause = cause.__cause__ or cause.__context__
    if isinstance(err, TimeoutError | asyncio.TimeoutError):
        return f"{where} did not answer in time"
    return f"cannot talk to {where}: {err}"


# --- I/O: one link per node, one bridge for all -------------------------------------------


@dataclass(slots=True)
class DeviceStatus:
    """What `hub status` shows for a node."""

    name: str
    host: str
    port: int
    encrypted: bool
    discovered: bool = False
    connected: bool = False
    connects: int = 0
    failures: int = 0
    last_error: str | None = None
    entities: int = 0
    model: str | None = None
    esphome_version: str | None = None


@dataclass(slots=True)
class _Link:
    settings: EsphomeDeviceSettings
    status: DeviceStatus
    client: APIClient | None = None
    logic: ReconnectLogic | None = None
    mappings: dict[int, EntityMapping] = field(default_factory=dict)
    pending: list[Reading] = field(default_factory=list)
    pending_events: list[Event] = field(default_factory=list)
    batch_ms: int = 0
    logged_error: str | None = None
    auth_failed: bool = False
    availability: str | None = None
    kicker: asyncio.Task[None] | None = None


class EsphomeApiBridge:
    """Connects to ESPHome nodes over the native API and publishes hub JSON.

    Use as `async with EsphomeApiBridge(settings, publish): ...`, or `start()`/`stop()`.
    `clock` returns Unix seconds (the receive time); `metric_map` is the shared
    object-id -> metric override table of the ESPHome ingest; `mdns_interfaces` limits
    mDNS to these addresses (default: every interface).
    """

    def __init__(
        self,
        settings: EsphomeApiSettings,
        publish: PublishFn,
        *,
        skip_devices: Iterable[str] = (),
        prefix: str = "hub",
        metric_map: Mapping[str, str] = MappingProxyType({}),
        clock: Callable[[], float] = time.time,
        mdns_interfaces: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self._publish = publish
        self.skip_devices = frozenset(skip_devices) | settings.mqtt_fed_devices()
        self.prefix = prefix
        self.metric_map = metric_map
        self._clock = clock
        self._mdns_interfaces = mdns_interfaces
        self.counters: Counter[str] = Counter()
        self._links: dict[str, _Link] = {}
        self._queue: asyncio.Queue[tuple[str, bytes, int, bool]] = asyncio.Queue(
            settings.queue_size
        )
        self._sender: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._zeroconf: Any = None
        self._browser: Any = None
        self._started = False

    # lifecycle
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._sender = asyncio.create_task(self._send_loop(), name="esphome_api publisher")
        if self.settings.mdns:
            from zeroconf import InterfaceChoice
            from zeroconf.asyncio import AsyncZeroconf

            # One instance for browsing, resolving `.local` hosts and reconnect wake-ups.
            interfaces = (
                list(self._mdns_interfaces) if self._mdns_interfaces else InterfaceChoice.All
            )
            self._zeroconf = AsyncZeroconf(interfaces=interfaces)
        for device in self.settings.devices:
            if device.name in self.skip_devices:
                _LOGGER.info(
                    "ESPHome node %s is fed over MQTT; the native-API bridge skips it", device.name
                )
                continue
            await self._add(device, discovered=False)
        if self._zeroconf is not None:
            self._start_browser()

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(self._remove(link) for link in list(self._links.values())), return_exceptions=True
        )
        self._links.clear()
        if self._zeroconf is not None:
            await self._zeroconf.async_close()
            self._zeroconf = None
        # Let the last offline messages out, then stop the sender.
        if self._sender is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), 5.0)
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None

    async def __aenter__(self) -> EsphomeApiBridge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def status(self) -> dict[str, DeviceStatus]:
        return {name: link.status for name, link in self._links.items()}

    # one node
    async def _add(self, device: EsphomeDeviceSettings, *, discovered: bool) -> None:
        key = device.encryption_key.get_secret_value() if device.encryption_key else None
        status = DeviceStatus(device.name, device.host, device.port, key is not None, discovered)
        link = _Link(device, status)
        client = APIClient(
            device.host,
            device.port,
            None,
            client_info=CLIENT_INFO,
            keepalive=self.settings.keepalive,
            noise_psk=key,
            expected_name=device.name if device.check_name else None,
            zeroconf_instance=self._zeroconf,
        )
        link.client = client

        async def on_connect() -> None:
            await self._on_connect(link)

        async def on_disconnect(expected: bool) -> None:
            await self._on_disconnect(link, expected)

        async def on_connect_error(err: Exception) -> None:
            self._on_connect_error(link, err)

        link.logic = ReconnectLogic(
            client=client,
            on_connect=on_connect,
            on_disconnect=on_disconnect,
            on_connect_error=on_connect_error,
            name=device.name,
            zeroconf_instance=self._zeroconf,
            zeroconf_wake=self._zeroconf is not None,
        )
        self._links[device.name] = link
        await link.logic.start()
        link.kicker = self._spawn(self._kick_loop(link), f"esphome_api {device.name} backoff cap")

    async def _remove(self, link: _Link) -> None:
        if link.kicker is not None:
            link.kicker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link.kicker
        if link.logic is not None:
            await link.logic.stop()
        if link.client is not None:
            with contextlib.suppress(APIConnectionError, OSError):
                await link.client.disconnect()
        self._flush(link)
        link.status.connected = False
        self._set_availability(link, "offline")

    async def _on_connect(self, link: _Link) -> None:
        client = link.client
        assert client is not None
        name = link.settings.name
        try:
            info = await client.device_info()
            entities, _services = await client.list_entities_services()
            link.mappings = map_entities(entities, self.metric_map)
            client.subscribe_states(lambda state: self._on_state(link, state))
        except (APIConnectionError, OSError, TimeoutError) as err:
            self.counters["setup_failed"] += 1
            self._report(link, f"ESPHome node {name!r} dropped while listing its entities: {err}")
            await client.disconnect(force=True)
            return
        link.status.connected = True
        link.status.connects += 1
        link.status.last_error = None
        link.status.entities = len(link.mappings)
        link.status.model = info.model or None
        link.status.esphome_version = info.esphome_version or None
        link.logged_error = None
        link.auth_failed = False
        _LOGGER.info(
            "ESPHome node %s connected over the native API (%s, ESPHome %s, %d entities)",
            name, info.model, info.esphome_version, len(link.mappings),
        )  # fmt: skip
        self._set_availability(link, "online")
        self._publish_info(link, info)

    def _publish_info(self, link: _Link, info: Any) -> None:
        """The node's device info, retained on `<prefix>/devices/<device>/info`: Home
        Assistant's ESPHome integration keys the node's device by its MAC, and the hub's
        derived entities join that device through it (hub.ha.nodes)."""
        fields = ("name", "friendly_name", "mac_address", "manufacturer", "model", "esphome_version")  # fmt: skip
        payload = {key: getattr(info, key, None) or None for key in fields}
        self._enqueue(
            f"{self.prefix}/devices/{link.settings.name}/info", orjson.dumps(payload), 1, True
        )

    async def _on_disconnect(self, link: _Link, expected: bool) -> None:
        self._flush(link)
        was_connected = link.status.connected
        link.status.connected = False
        if was_connected:
            _LOGGER.info(
                "ESPHome node %s disconnected (%s)",
                link.settings.name,
                "expected" if expected else "lost",
            )
        self._set_availability(link, "offline")

    def _on_connect_error(self, link: _Link, err: Exception) -> None:
        link.status.failures += 1
        link.auth_failed = isinstance(
            err, InvalidEncryptionKeyAPIError | RequiresEncryptionAPIError | InvalidAuthAPIError
        )
        self.counters["connect_failed"] += 1
        s = link.settings
        self._report(link, describe_error(s.name, s.host, s.port, err))
        self._set_availability(link, "offline")

    def _report(self, link: _Link, message: str) -> None:
        link.status.last_error = message
        # First time WARNING, the same failure again DEBUG: a node that is off for a day
        # must not fill the log, but a new kind of failure is worth a line.
        level = logging.DEBUG if message == link.logged_error else logging.WARNING
        link.logged_error = message
        _LOGGER.log(level, "%s", message)

    async def _kick_loop(self, link: _Link) -> None:
        # aioesphomeapi's own backoff grows to 60 s; this caps it at reconnect_max_backoff.
        period = self.settings.reconnect_max_backoff
        while True:
            await asyncio.sleep(period)
            if link.logic is not None and not link.status.connected and not link.auth_failed:
                link.logic.notify_device_seen()

    # states -> messages
    def _on_state(self, link: _Link, state: EntityState) -> None:
        mapping = link.mappings.get(state.key)
        if mapping is None:
            self.counters["unmapped_entity"] += 1  # switches, lights, ... are not ingested
            return
        if not link.pending and not link.pending_events:
            # States of one burst (one TCP read) share the instant they arrived.
            link.batch_ms = int(self._clock() * 1000)
            asyncio.get_running_loop().call_soon(self._flush, link)
        try:
            readings, events = convert_state(link.settings.name, mapping, state, link.batch_ms)
        except SkippedState as skipped:
            self.counters[skipped.reason] += 1
            _LOGGER.debug("%s", skipped)
            return
        link.pending.extend(readings)
        link.pending_events.extend(events)
        self.counters["states"] += 1

    def _flush(self, link: _Link) -> None:
        if not link.pending and not link.pending_events:
            return
        readings, events = link.pending, link.pending_events
        link.pending, link.pending_events = [], []
        payload = hub_json.encode(readings, events, SOURCE)
        self._enqueue(f"{self.prefix}/readings/{link.settings.name}", payload, 1, False)
        self.counters["messages"] += 1

    def _set_availability(self, link: _Link, value: str) -> None:
        if link.availability == value:
            return
        link.availability = value
        self._enqueue(
            f"{self.prefix}/devices/{link.settings.name}/availability", value.encode(), 1, True
        )

    def _enqueue(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self._queue.task_done()
            self.counters["dropped"] += 1
            if self.counters["dropped"] in (1, 100, 10_000):
                _LOGGER.warning(
                    "esphome_api: the broker is not keeping up; %d messages dropped",
                    self.counters["dropped"],
                )
        self._queue.put_nowait((topic, payload, qos, retain))

    async def _send_loop(self) -> None:
        while True:
            topic, payload, qos, retain = await self._queue.get()
            try:
                result = self._publish(topic, payload, qos, retain)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # a broken publish must not stop the bridge
                self.counters["publish_failed"] += 1
                _LOGGER.exception("esphome_api: publishing to %s failed", topic)
            finally:
                self._queue.task_done()

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # mDNS
    def _start_browser(self) -> None:
        from zeroconf import ServiceStateChange
        from zeroconf.asyncio import AsyncServiceBrowser

        def on_change(
            zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            if state_change is ServiceStateChange.Added:
                self._spawn(self._resolve(service_type, name), f"esphome_api mdns {name}")

        self._browser = AsyncServiceBrowser(
            self._zeroconf.zeroconf, MDNS_SERVICE, handlers=[on_change]
        )

    async def _resolve(self, service_type: str, service_name: str) -> None:
        from zeroconf.asyncio import AsyncServiceInfo

        info = AsyncServiceInfo(service_type, service_name)
        if not await info.async_request(self._zeroconf.zeroconf, 3000):
            _LOGGER.debug("mDNS: %s did not answer", service_name)
            return
        addresses = info.parsed_scoped_addresses()
        node = service_name.removesuffix("." + service_type)
        device = discovered_device(node, addresses, info.port)
        if device is None:
            self.counters["mdns_ignored"] += 1
            _LOGGER.debug("mDNS: ignoring %s (%s)", service_name, addresses)
            return
        if device.name in self._links or device.name in self.skip_devices or not self._started:
            return
        if any(d.name == device.name for d in self.settings.devices):
            return
        _LOGGER.info("mDNS: found ESPHome node %s at %s:%d", device.name, device.host, device.port)
        await self._add(device, discovered=True)


def discovered_device(
    node: str, addresses: list[str], port: int | None
) -> EsphomeDeviceSettings | None:
    """Settings for a node found by mDNS, or None when the record is unusable (pure)."""
    if not addresses or not port or not hub_json.DEVICE_RE.match(node):
        return None
    host = next((a for a in addresses if ":" not in a), addresses[0])
    return EsphomeDeviceSettings(name=node, host=host, port=port)
