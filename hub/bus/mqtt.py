"""The hub's MQTT connection: paho-mqtt 2 contained in one module.

paho runs its network loop in its own thread. Incoming messages are appended to a deque
there and handed to the asyncio side in batches (`next_batch`), with one cross-thread
wake-up per batch rather than one per message. Acknowledgements are manual: the ingest core
calls `ack()` only after the readings a message carried are committed (at-least-once end to
end). The connection is persistent (clean start off, session expiry), tries MQTT 5 and falls
back to 3.1.1, reconnects with capped backoff, resubscribes, and keeps a retained
availability topic with a last will.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from hub.bus.clients import new_client, no_delay
from hub.config import BrokerConfig

__all__ = ["ConnectionState", "Message", "MqttConnection", "MqttError", "no_delay"]

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"


class MqttError(Exception):
    """Root of the hub's MQTT errors."""


class MqttConnectError(MqttError):
    """The broker refused the connection (bad credentials, not authorised, ...)."""


class ConnectionState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    REFUSED = "refused"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Message:
    """An incoming MQTT message, converted from paho's type at the border."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    dup: bool
    retain: bool
    received_ms: int


@dataclass
class MqttStats:
    received: int = 0
    received_bytes: int = 0
    acked: int = 0
    published: int = 0
    connects: int = 0
    disconnects: int = 0
    refused: int = 0
    protocol: str = ""
    last_error: str = ""
    inbox_peak: int = 0
    backpressure: int = 0
    session_present: bool = False
    history: list[str] = field(default_factory=list)


def default_client_id() -> str:
    return f"hub-{socket.gethostname()}"[:64]


class MqttConnection:
    """A persistent MQTT session for the hub: subscribe, receive in batches, ack, publish."""

    def __init__(
        self,
        config: BrokerConfig,
        subscriptions: Sequence[str],
        *,
        client_id: str | None = None,
        availability_topic: str | None = None,
    ) -> None:
        self.config = config
        self.subscriptions = list(subscriptions)
        self.client_id = client_id or config.client_id or default_client_id()
        self.availability_topic = availability_topic or f"{config.topic_prefix}/status"
        self.state = ConnectionState.DISCONNECTED
        self.stats = MqttStats()
        self._inbox: collections.deque[Message] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        self._waiting = False
        self._connected = threading.Event()
        self._inbox_max = config.receive_maximum
        self._room = threading.Event()
        self._protocol = self._initial_protocol()
        self._client = self._make_client()
        self._stopping = False
        self._on_connect_hooks: list[Callable[[bool], None]] = []

    # -- construction -------------------------------------------------------------------------

    def _initial_protocol(self) -> MQTTProtocolVersion:
        if self.config.protocol == "3.1.1":
            return MQTTProtocolVersion.MQTTv311
        return MQTTProtocolVersion.MQTTv5

    def _make_client(self) -> paho.Client:
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        client = new_client(
            self.client_id,
            self.config,
            protocol=self._protocol,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        # Our own publishes (availability, stats, discovery) are few; keep paho's queue bounded.
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(
            max(1, int(self.config.reconnect_min)), max(1, int(self.config.reconnect_max))
        )
        client.will_set(self.availability_topic, OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _connect_properties(self) -> Properties | None:
        if self._protocol != MQTTProtocolVersion.MQTTv5:
            return None
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(self.config.session_expiry)
        props.ReceiveMaximum = self.config.receive_maximum
        return props

    # -- lifecycle ----------------------------------------------------------------------------

    def add_connect_hook(self, hook: Callable[[bool], None]) -> None:
        """Called in paho's thread after every successful (re)connect with session_present."""
        self._on_connect_hooks.append(hook)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Connect in the background; paho keeps reconnecting until `stop()`."""
        self._loop = loop or asyncio.get_running_loop()
        self._stopping = False
        self._start_client()

    def _start_client(self) -> None:
        host, port, _ = self.config.host_port_tls
        self.state = ConnectionState.CONNECTING
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        self._client.connect_async(
            host,
            port,
            keepalive=self.config.keepalive,
            clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=self._connect_properties(),
        )
        self._client.loop_start()

    def probe(self, timeout: float = 3.0) -> str:
        """Why the broker cannot be reached, in words (TCP and TLS as configured)."""
        host, port, use_tls = self.config.host_port_tls
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                if use_tls:
                    tls = self.config.tls
                    context = ssl.create_default_context(
                        cafile=str(tls.ca_file) if tls.ca_file else None
                    )
                    if tls.insecure:
                        context.check_hostname = False
                    with context.wrap_socket(sock, server_hostname=host):
                        pass
        except ssl.SSLCertVerificationError as exc:
            return f"the broker's TLS certificate is not trusted ({exc.verify_message}); set broker.tls.ca_file"
        except ssl.SSLError as exc:
            return f"TLS handshake failed ({exc.reason or exc}); is this a TLS port?"
        except ConnectionRefusedError:
            return f"nothing listens on {host}:{port} (connection refused)"
        except TimeoutError:
            return f"{host}:{port} does not answer (timed out)"
        except OSError as exc:
            return f"cannot reach {host}:{port}: {exc.strerror or exc}"
        return self.stats.last_error or "reachable, but the MQTT handshake has not completed"

    async def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._connected.is_set():
                return True
            if self.state == ConnectionState.REFUSED and self.stats.refused >= 3:
                raise MqttConnectError(self.stats.last_error)
            await asyncio.sleep(0.05)
        return self._connected.is_set()

    def stop(self, *, offline: bool = True) -> None:
        """Mark ourselves offline (retained), disconnect cleanly and stop paho's thread."""
        self._stopping = True
        self._room.set()
        if offline and self._connected.is_set():
            info = self._client.publish(self.availability_topic, OFFLINE, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2)
        self._client.disconnect()
        self._client.loop_stop()
        self.state = ConnectionState.STOPPED
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- paho callbacks (paho's thread) ----------------------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.stats.refused += 1
            self.stats.last_error = f"broker refused the connection: {reason}"
            self.state = ConnectionState.REFUSED
            if (
                self._protocol == MQTTProtocolVersion.MQTTv5
                and self.config.protocol == "auto"
                and reason.value
                in (
                    0x84,
                    1,
                )
            ):
                log.warning("Broker does not speak MQTT 5; falling back to 3.1.1")
                self._protocol = MQTTProtocolVersion.MQTTv311
                self._loop_call(self._restart_client)
                return
            if self.stats.refused == 1:
                log.error(
                    "MQTT broker %s:%s refused the connection: %s (check broker.username and broker.password); retrying",
                    *self.config.host_port_tls[:2],
                    reason,
                )
            else:
                log.debug("MQTT broker refused the connection again: %s", reason)
            return
        self.stats.connects += 1
        self.stats.session_present = bool(flags.session_present)
        self.stats.protocol = "5" if self._protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1"
        self.state = ConnectionState.CONNECTED
        log.info(
            "Connected to MQTT broker %s:%s (MQTT %s, session %s)",
            *self.config.host_port_tls[:2],
            self.stats.protocol,
            "resumed" if flags.session_present else "new",
        )
        try:
            self._subscribe_all()
        except (ValueError, OSError) as exc:  # a bad filter must not kill paho's thread
            self.stats.last_error = f"subscribe failed: {exc}"
            log.error("Subscribing failed: %s", exc)
        client.publish(self.availability_topic, ONLINE, qos=1, retain=True)
        self._connected.set()
        for hook in self._on_connect_hooks:
            try:
                hook(bool(flags.session_present))
            except Exception:
                log.exception("Connect hook failed")

    def _subscribe_all(self) -> None:
        if not self.subscriptions:
            return
        group = self.config.shared_group if self._protocol == MQTTProtocolVersion.MQTTv5 else None
        names = []
        for topic in self.subscriptions:
            # Retained messages (ESPHome discovery, availability) belong to everyone; only the
            # live stream is split between a shared group's members.
            shared = group and not topic.startswith(("homeassistant/", "+/status"))
            names.append(f"$share/{group}/{topic}" if shared else topic)
        topics: list[tuple[str, SubscribeOptions]] | list[tuple[str, int]]
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            topics = [(name, SubscribeOptions(qos=1)) for name in names]
        else:
            topics = [(name, 1) for name in names]
        result, _ = self._client.subscribe(topics)
        if result != paho.MQTT_ERR_SUCCESS:
            log.warning("Subscribe failed: %s", paho.error_string(result))

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [
            topic
            for topic, code in zip(self.subscriptions, reason_codes, strict=False)
            if code.is_failure
        ]
        if refused:
            log.warning("Broker refused subscriptions: %s", ", ".join(refused))

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._stopping:
            return
        self.stats.disconnects += 1
        if self.state != ConnectionState.REFUSED:  # a refusal stays visible until we get in
            self.state = ConnectionState.DISCONNECTED
        if was_connected:
            log.warning("Disconnected from MQTT broker (%s); reconnecting", reason)
        else:
            log.debug("MQTT connection attempt failed (%s); retrying", reason)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        inbox = self._inbox
        # Converted here, so paho's message (with its MQTT 5 properties, a dozen objects)
        # dies at once instead of waiting in the inbox for the garbage collector to walk it.
        inbox.append(
            Message(
                message.topic,
                bytes(message.payload),
                message.qos,
                message.mid,
                message.dup,
                message.retain,
                time.time_ns() // 1_000_000,
            )
        )
        if self._waiting:
            self._waiting = False
            self._loop_call(self._wakeup.set)
        if len(inbox) >= self._inbox_max:
            # Backpressure: Mosquitto does not always honour our Receive Maximum (queued
            # messages of a resumed session arrive all at once), so stop reading the socket
            # until the store has caught up; TCP then holds the rest at the broker.
            self.stats.backpressure += 1
            self._room.clear()
            while len(inbox) >= self._inbox_max and not self._stopping:
                self._room.wait(0.5)

    def _loop_call(self, callback: Callable[[], object]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closing during shutdown
                loop.call_soon_threadsafe(callback)

    def _restart_client(self) -> None:
        self._client.loop_stop()
        self._client = self._make_client()
        self._start_client()

    # -- asyncio side ---------------------------------------------------------------------------

    async def next_batch(self, limit: int, wait_s: float = 0.0) -> list[Message]:
        """Up to `limit` messages; waits for at least one, then (group commit) up to `wait_s`
        after the oldest arrived for more, unless `limit` are already there."""
        inbox = self._inbox
        while not inbox:
            self._wakeup.clear()
            self._waiting = True
            if inbox:
                break
            await self._wakeup.wait()
        self._waiting = False
        if wait_s > 0 and len(inbox) < limit:
            remaining = wait_s - (time.time_ns() // 1_000_000 - inbox[0].received_ms) / 1000
            if remaining > 0:
                await asyncio.sleep(remaining)
        size = len(inbox)
        if size > self.stats.inbox_peak:
            self.stats.inbox_peak = size
        popleft = inbox.popleft
        batch = [popleft() for _ in range(min(limit, size))]
        received_bytes = sum(len(m.payload) for m in batch)
        self.stats.received += len(batch)
        self.stats.received_bytes += received_bytes
        if len(inbox) < self._inbox_max:
            self._room.set()
        return batch

    def pending(self) -> int:
        return len(self._inbox)

    def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge messages whose content is committed (QoS 0 needs none).

        paho's ack() wakes its network thread once per message, with a byte on a socket
        pair; for a batch of thousands that was a tenth of the hub's CPU. The acks of a batch
        are queued with the wake-up held back, then paho's thread is woken once. (This leans
        on paho 2's private `_sockpairW`; without it, acks go one by one as before.)
        """
        client = self._client
        wake = getattr(client, "_sockpairW", None)
        if wake is not None:
            client._sockpairW = None
        count = 0
        try:
            for message in messages:
                if message.qos:
                    client.ack(message.mid, message.qos)
                    count += 1
        finally:
            if wake is not None:
                client._sockpairW = wake
                with contextlib.suppress(BlockingIOError, OSError):
                    wake.send(b"0")
        self.stats.acked += count

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        """Fire-and-forget publish from any thread (paho queues it while reconnecting)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == paho.MQTT_ERR_SUCCESS or info.rc == paho.MQTT_ERR_NO_CONN:
            self.stats.published += 1
        else:
            log.debug("Publish to %s failed: %s", topic, paho.error_string(info.rc))
