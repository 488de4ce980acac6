"""The hub's MQTT connection: paho-mqtt 2 contained in one module.

paho runs its network loop in its own thread. Incoming messages are appended to a deque
there and handed on in batches: to a sink in another thread (`deliver_batches`: ingest's
store thread, without the event loop), or to the asyncio side (`next_batch`), with one
cross-thread wake-up per batch rather than one per message. Acknowledgements are manual:
the ingest core calls `ack()` only after the readings a message carried are committed
(at-least-once end to end). The connection is persistent (clean start off, session expiry),
tries MQTT 5 and falls back to 3.1.1, reconnects with capped backoff, resubscribes, and keeps
a retained availability topic with a last will.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt import _packet as paho_packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from hub.bus.clients import DirectWriteClient, new_client, no_delay
from hub.config import BrokerConfig
from hub.threads import name_os_thread

__all__ = ["ConnectionState", "Message", "MqttConnection", "MqttError", "no_delay"]

log = logging.getLogger(__name__)

_NEVER = float("inf")
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
    # Disconnects with MQTT 5 reason 0x8E: another client connected with our client id and the
    # broker handed it our session (and the messages queued for us).
    taken_over: int = 0
    # Reconnects that found no session although ours outlives a disconnect (session_expiry):
    # a takeover where the broker does not send 0x8E (Mosquitto 2.0), or a broker that lost it.
    session_lost: int = 0
    last_taken_over: float = 0.0  # Unix time of the latest
    history: list[str] = field(default_factory=list)


class SharedTableProperties(Properties):
    """paho's MQTT 5 `Properties`, with its lookup tables built once instead of per packet.

    paho decodes every PUBLISH into a fresh Properties, whose constructor rebuilds two tables
    of 27 entries (with a list.index() per entry) and whose clear() probes all 27 names: a
    third of paho's CPU per message at a steady load, for messages that mostly carry no
    property at all. The tables are never written after construction, so instances share
    them; everything else (unpack, attributes, validation) is paho's own.
    """

    _tables: tuple[list[str], dict[str, int], dict[int, Any]] | None = None

    def __init__(self, packetType: int) -> None:
        tables = SharedTableProperties._tables
        if tables is None:
            template = Properties(packetType)
            tables = SharedTableProperties._tables = (
                template.types,
                template.names,
                template.properties,
            )
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", tables[0])
        object.__setattr__(self, "names", tables[1])
        object.__setattr__(self, "properties", tables[2])

    def clear(self) -> None:
        for name in [n for n in vars(self) if n not in _PROPERTIES_OWN]:
            delattr(self, name)


_PROPERTIES_OWN = frozenset({"packetType", "types", "names", "properties"})


def share_property_tables() -> None:
    """Make paho's packet decoder build SharedTableProperties (process-wide, idempotent: the
    class behaves as paho's own for every client)."""
    if paho_packet.Properties is Properties:
        paho_packet.Properties = SharedTableProperties  # type: ignore[misc]


RECV_SIZE = 65536
_PUBACK = struct.Struct("!BBH")  # command, remaining length 2, packet id
HANDOFF_MARGIN = 0.001  # paho's thread reads the last of a batch this long before it is due
CADENCE_RETURN_S = 0.5  # paho's thread goes back to its own loop at least this often


class BurstReadingClient(DirectWriteClient):
    """paho's client, reading the socket in bursts.

    paho reads every packet with three recv() calls (command byte, length, body) after a
    select() of its own: at a steady load that was a wake-up and four system calls per message
    in paho's thread, its largest cost. Here one recv() takes what the socket holds and the
    packets are cut from memory.

    After each burst, `after_burst()` (set by MqttConnection) may ask for a pause: while group
    commit holds a batch anyway, paho's thread sleeps until just before the batch is due and
    then reads the rest of it in one go, instead of waking for every message. Once it has
    handed a batch over it may keep to the batch cadence (pause a whole batch_wait, read what
    came meanwhile) instead of a select() for the next batch's first message; an empty window,
    a packet waiting to be written, or half a second without a return to paho's own loop
    (keep-alive) ends that. A read that fills the buffer (a backlog) never pauses: paho's
    thread reads on until the socket is empty.

    Whole QoS 0/1 PUBLISH packets at the head of a burst are cut and decoded here and given
    to `publish_received` (set by MqttConnection) as plain values: paho's path builds a packet dict,
    a PublishPacket, a Properties, an MQTTMessage with its Condition and a debug log record
    per message, about half of its thread's CPU at a steady load. Anything else (CONNACK,
    SUBACK, PINGRESP, QoS 2, a packet cut in two by the read, a malformed one) goes through
    paho's own `_packet_read`, which also owns every error path.

    This leans on private parts of paho 2.2 (requirements.lock pins it): it overrides
    `_sock_recv`, and `loop_read`, which must also parse the packets already buffered (select()
    cannot see them) with `_packet_read`; it reads `_in_packet` (a packet paho has begun) and
    sets `_last_bytes_received` (keep-alive); `ack_many` uses `_packet_queue` and `_sockpairW`,
    and writes on `_sock` itself when `_out_packet` is empty (`DirectWriteClient.send_now`).
    tests/core/test_mqtt_batching.py runs all of it against a real Mosquitto.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._burst = bytearray()
        self._burst_sock: object = None
        self._burst_full = False
        self._pausing = False
        self.after_burst: Callable[[bool], float] | None = None
        # topic, payload, qos, packet id, dup, retain of each PUBLISH cut from a burst
        self.publish_received: Callable[[str, bytes, int, int, bool, bool], None] | None = None

    def ack_many(
        self, mids: Sequence[int], others: Sequence[Message] = (), *, wake: bool = True
    ) -> None:
        """PUBACKs of QoS 1 messages as one packet, with one wake-up of paho's thread (none
        while it pauses: it writes them when the pause ends). Any thread may call this.

        paho's ack() builds, queues and signals one 4-byte packet per message, and its thread
        then writes each with its own send(). A PUBACK without reason code or properties is
        the same 4 bytes in MQTT 3.1.1 and 5, so the batch's are joined into one write, made
        by the calling thread itself where it can (send_now)."""
        pack = _PUBACK.pack
        pubacks = b"".join([pack(paho.PUBACK, 2, mid) for mid in mids])
        if pubacks and not others and self.send_now(pubacks):
            return
        sockpair = self._sockpairW
        self._sockpairW = None  # hold back the wake-up of each queued packet
        try:
            if pubacks:
                self._packet_queue(paho.PUBACK, pubacks, 0, 1)
            for message in others:
                self.ack(message.mid, message.qos)
        finally:
            self._sockpairW = sockpair
        if wake and not self._pausing:
            self.wake_thread()

    def _sock_recv(self, bufsize: int) -> bytes:
        burst = self._burst
        if self._burst_sock is not self._sock:  # a new connection: nothing of the old one
            burst.clear()
            self._burst_sock = self._sock
        if not burst:
            data = super()._sock_recv(RECV_SIZE)  # BlockingIOError when empty, b"" at EOF
            self._burst_full = len(data) == RECV_SIZE
            if len(data) <= bufsize:
                return data
            burst += data
        chunk = bytes(burst[:bufsize])
        del burst[:bufsize]  # cheap: a bytearray drops its head by moving its start
        return chunk

    def _read_burst(self, max_packets: int) -> paho.MQTTErrorCode:
        if self._sock is None:
            return paho.MQTT_ERR_NO_CONN
        burst = self._burst
        if self._burst_sock is not self._sock:  # a new connection: nothing of the old one
            burst.clear()
            self._burst_sock = self._sock
        rc = paho.MQTT_ERR_SUCCESS
        if not burst and self._in_packet["command"] == 0 and self.publish_received is not None:
            try:
                data = paho.Client._sock_recv(self, RECV_SIZE)
            except BlockingIOError:
                return paho.MQTT_ERR_SUCCESS
            except OSError:
                data = b""
            if not data:  # EOF or an error: paho's read meets it again and handles it
                return super().loop_read(max_packets)
            self._burst_full = len(data) == RECV_SIZE
            burst += data
        elif not burst:
            rc = super().loop_read(max_packets)
        while rc == paho.MQTT_ERR_SUCCESS and burst and self._sock is not None:
            if self._in_packet["command"] == 0 and self.publish_received is not None:
                self._cut_publishes()
                if not burst:
                    break
            rc = self._packet_read()
            if rc == paho.MQTT_ERR_AGAIN:  # a partial packet: the rest is still in the socket
                return paho.MQTT_ERR_SUCCESS
            if rc > 0:
                return self._loop_rc_handle(rc)
        return rc

    def _cut_publishes(self) -> None:
        """Decode the whole QoS 0/1 PUBLISH packets at the head of the burst and hand each to
        `publish_received`; stop at the first packet that is anything else, or incomplete, or not
        well formed (paho's `_packet_read` takes it from there)."""
        burst = self._burst
        publish_received = self.publish_received
        assert publish_received is not None
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        size = len(burst)
        pos = 0
        while pos < size:
            header = burst[pos]
            qos = (header >> 1) & 3
            if header & 0xF0 != 0x30 or qos > 1:
                break
            length, at = _varint(burst, pos + 1, size)
            end = at + length
            if length < 0 or end > size or at + 2 > end:
                break
            topic_end = at + 2 + ((burst[at] << 8) | burst[at + 1])
            mid = 0
            body = topic_end
            if qos:
                if topic_end + 2 > end:
                    break
                mid = (burst[topic_end] << 8) | burst[topic_end + 1]
                body += 2
            if v5:
                props, body = _varint(burst, body, end)
                if props < 0:
                    break
                body += props
            if body > end or (topic_end == at + 2 and not v5):
                break  # malformed, or an empty topic (a topic alias, which we never allow)
            try:
                topic = burst[at + 2 : topic_end].decode()
            except UnicodeDecodeError:
                break
            publish_received(
                topic, bytes(burst[body:end]), qos, mid, bool(header & 0x08), bool(header & 0x01)
            )
            pos = end
        if pos:
            del burst[:pos]
            with self._msgtime_mutex:
                self._last_bytes_received = time.monotonic()

    def loop_read(self, max_packets: int = 1) -> paho.MQTTErrorCode:
        started = time.monotonic()
        self._burst_full = False
        rc = self._read_burst(max_packets)
        # A read that filled the buffer (a backlog): read on at once, so that the burst ends
        # below (a due batch handed over), not in select() after a read that took it all.
        while rc == paho.MQTT_ERR_SUCCESS and self._burst_full:
            if time.monotonic() - started >= CADENCE_RETURN_S:
                return rc  # paho's loop runs (writes, keep-alive); select() sees more at once
            self._burst_full = False
            rc = self._read_burst(1)
        after_burst = self.after_burst
        while rc == paho.MQTT_ERR_SUCCESS and after_burst is not None and not self._burst_full:
            # Keeping to the batch cadence (no select() between batches) is allowed while
            # nothing waits to be written and paho's own loop ran recently (keep-alive).
            pause = after_burst(
                not self._out_packet and time.monotonic() - started < CADENCE_RETURN_S
            )
            if pause <= 0:
                break
            self._pausing = True
            try:
                time.sleep(pause)
            finally:
                self._pausing = False
            rc = self._read_burst(1)  # what arrived meanwhile; none is fine (non-blocking)
        return rc


def _varint(data: bytearray, at: int, end: int) -> tuple[int, int]:
    """An MQTT variable byte integer at `at`: (value, position after it), or (-1, at) when it
    runs past `end` or over its four bytes."""
    value = 0
    for shift in (0, 7, 14, 21):
        if at >= end:
            return -1, at
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
    return -1, at


def retained_is_state(topic_filter: str) -> bool:
    """Whether a retained message on this filter is a state that already happened (an ESPHome
    sensor state) rather than configuration or availability that holds now (discovery configs,
    `<node>/status`, bridge availability): see "Retained messages" in docs/mqtt.md."""
    return not (
        topic_filter.startswith("homeassistant/")
        or topic_filter.endswith(("/status", "/availability"))
    )


# MQTT 5 DISCONNECT reason "Session taken over".
SESSION_TAKEN_OVER = 0x8E


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
        thread_name: str = "hub-mqtt",
    ) -> None:
        self.config = config
        self.thread_name = thread_name  # paho's network thread, as /proc and py-spy show it
        self.subscriptions = list(subscriptions)
        self.client_id = client_id or config.client_id or default_client_id()
        self.availability_topic = availability_topic or f"{config.topic_prefix}/status"
        self.state = ConnectionState.DISCONNECTED
        self.stats = MqttStats()
        self._inbox: collections.deque[Message] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        self._waiting = False  # next_batch waits for paho's thread to hand a batch over
        # Set by next_batch for paho's thread: group commit's wait (0: hand over every message
        # at once), the most messages handed over at once, and the batch size that is handed
        # over without waiting (`due_size`).
        self._batch_wait = 0.0
        self._batch_size = 1
        self._due_size = 1
        # The wait that cuts batches of about `due_size` at the rate of the last hand-off:
        # at a high rate batches fall due by size before batch_wait (_wait_now).
        self._size_wait = _NEVER
        self._connected = threading.Event()
        self._inbox_max = config.receive_maximum
        self._room = threading.Event()
        # deliver_batches(): paho's thread hands due batches straight to a sink (the store
        # thread's queue), one at a time; the lock makes taking a batch and the busy flag one step.
        self._sink: Callable[[list[Message]], None] | None = None
        self._sink_busy = False
        self._sink_lock = threading.Lock()
        self._window_ended = False  # paho's thread paused a whole batch_wait before this read
        # How long the sink takes for a batch (hand-off to batch_done), as a peak that decays:
        # a batch falls due that much before batch_wait, so batch_wait bounds the age of a
        # message at commit, not only its wait before the commit starts.
        self._taken_at = 0.0  # monotonic time of the last hand-off (_take): also for the rate
        self._batch_took = 0.0
        self._inbox_due = False  # what the inbox holds has waited its batch_wait: due now
        self._protocol = self._initial_protocol()
        self._client = self._make_client()
        self._stopping = False
        self._on_connect_hooks: list[Callable[[bool], None]] = []

    # -- construction -------------------------------------------------------------------------

    def _initial_protocol(self) -> MQTTProtocolVersion:
        if self.config.protocol == "3.1.1":
            return MQTTProtocolVersion.MQTTv311
        return MQTTProtocolVersion.MQTTv5

    def _make_client(self) -> BurstReadingClient:
        share_property_tables()
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        client = new_client(
            self.client_id,
            self.config,
            client_class=BurstReadingClient,
            protocol=self._protocol,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        assert isinstance(client, BurstReadingClient)
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
        client.publish_received = self._received
        client.on_subscribe = self._on_subscribe
        client.after_burst = self._after_burst
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
        if self.stats.connects == 0:
            name_os_thread(self.thread_name)
        self.stats.connects += 1
        self.stats.session_present = bool(flags.session_present)
        if self.stats.connects > 1 and not flags.session_present and self.config.session_expiry:
            self._session_lost()
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
            shared = group and retained_is_state(topic)
            names.append(f"$share/{group}/{topic}" if shared else topic)
        topics: list[tuple[str, SubscribeOptions]] | list[tuple[str, int]]
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            # A retained state is the last known value, not a new reading: MQTT 5 lets the
            # broker send it only when the subscription is new (a first start or an expired
            # session), not at every resubscribe of a resumed session. Discovery and
            # availability are sent at every subscribe: they describe the present. (3.1.1 has
            # no such option; there the retain flag on delivery tells, see IngestCore.process.)
            topics = [
                (
                    name,
                    SubscribeOptions(
                        qos=1,
                        retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
                        if retained_is_state(topic)
                        else SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE,
                    ),
                )
                for topic, name in zip(self.subscriptions, names, strict=True)
            ]
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
        if reason.value == SESSION_TAKEN_OVER:
            self.stats.taken_over += 1
            self.stats.last_taken_over = time.time()
            self.stats.last_error = (
                f"session taken over: another client connected with our client id "
                f"{self.client_id!r} ({self.stats.taken_over} times)"
            )
            log.error(
                "MQTT session taken over (%d times so far): another client connected with the "
                "hub's client id %r, and the broker gave it the hub's session and queued "
                "messages, which the hub will not see. Tie client ids to logins on the broker "
                "(use_username_as_clientid, see deploy/mosquitto/) and keep the hub's client id "
                "unlike any device's; reconnecting",
                self.stats.taken_over,
                self.client_id,
            )
        elif was_connected:
            log.warning("Disconnected from MQTT broker (%s); reconnecting", reason)
        else:
            log.debug("MQTT connection attempt failed (%s); retrying", reason)

    def _session_lost(self) -> None:
        """Our persistent session was gone when we came back (counted, logged loudly).

        Mosquitto 2.0 closes a taken-over connection without the MQTT 5 DISCONNECT 0x8E, so
        this is how a takeover shows there: the intruder took the session (and the messages
        queued for us), and it ended with the intruder's connection.
        """
        self.stats.session_lost += 1
        self.stats.last_error = (
            f"session lost: the broker had no session for client id {self.client_id!r} on "
            f"reconnect ({self.stats.session_lost} times)"
        )
        log.error(
            "MQTT session lost (%d times so far): the broker had no session for the hub's "
            "client id %r when it reconnected. Another client using that id took it over (with "
            "the messages queued for the hub), or the broker restarted without persistence; "
            "messages published meanwhile may be missing. Tie client ids to logins on the broker "
            "(use_username_as_clientid, see deploy/mosquitto/)",
            self.stats.session_lost,
            self.client_id,
        )

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        # A PUBLISH paho decoded itself (the burst reader cuts most of them: _received).
        # Converted here, so paho's message (with its MQTT 5 properties, a dozen objects)
        # dies at once instead of waiting in the inbox for the garbage collector to walk it.
        self._received(
            message.topic, bytes(message.payload), message.qos, message.mid, message.dup,
            message.retain,
        )  # fmt: skip

    def _received(
        self, topic: str, payload: bytes, qos: int, mid: int, dup: bool, retain: bool
    ) -> None:
        inbox = self._inbox
        inbox.append(Message(topic, payload, qos, mid, dup, retain, time.time_ns() // 1_000_000))
        if self._batch_wait <= 0 or len(inbox) >= self._batch_size:
            # One hand-off per batch: at once without group commit, else when the batch is
            # full (or due: _after_burst, which also hands over a whole burst that holds
            # due_size: handing over at due_size here would cut a burst in two batches).
            if self._sink is not None:
                self.offer_batch()
            elif self._waiting:
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

    def _after_burst(self, cadence: bool) -> float:
        """After paho's thread has read what the socket held: hand a due batch over, or say
        how long to pause so that the rest of the batch arrives as one burst.

        With batches going straight to a sink, a thread that has just handed a batch over
        (`cadence`: it may) pauses a whole batch_wait (less what commits take: _wait_now)
        before it reads again rather than waiting in select() for the next batch's first
        message: at a steady load that is one wake-up per batch instead of two, and no
        message waits longer than batch_wait to be read. A read that finds nothing ends it
        (idle: back to select())."""
        if self._batch_wait <= 0:
            return 0.0
        window_ended, self._window_ended = self._window_ended, False
        if window_ended and not self._inbox:
            return 0.0  # nothing came in a whole batch_wait: idle, back to select()
        due_in = 0.0 if window_ended else self._due_in()
        if due_in <= HANDOFF_MARGIN:
            if self._sink is not None:
                # After a window, what the read found has waited up to batch_wait already
                # (its receive time is the read's): it is due.
                self.offer_batch(due=True)
                self._window_ended = cadence
                # (the wait as the hand-off left it: it may have learnt a new rate)
                return self._wait_now() - HANDOFF_MARGIN if cadence else 0.0
            if self._waiting and self._inbox:
                self._waiting = False
                self._loop_call(self._wakeup.set)
            return 0.0
        return 0.0 if due_in == _NEVER else due_in - HANDOFF_MARGIN

    def _due_in(self) -> float:
        """Seconds until the batch in the inbox is due (<= 0: now; _NEVER: the inbox is empty)."""
        inbox = self._inbox
        if not inbox:
            return _NEVER
        if self._inbox_due:
            return 0.0
        wait = self._wait_now()
        if wait <= 0 or len(inbox) >= self._due_size:
            return 0.0
        # received_ms is the wall clock: clamp, so a clock step cannot stretch the wait.
        return min(wait, wait - (time.time() - inbox[0].received_ms / 1000))

    def _wait_now(self) -> float:
        """batch_wait less what the sink's last batches took (at most half of it), and no
        longer than a batch of `due_size` takes to come in at the last batch's rate."""
        wait = self._batch_wait
        return min(wait - min(wait / 2, self._batch_took), self._size_wait)

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

    async def next_batch(
        self, max_messages: int, wait_s: float = 0.0, due_size: int | None = None
    ) -> list[Message]:
        """Up to `max_messages` messages; waits for at least one.

        With `wait_s` > 0 (group commit), the batch is handed out when it holds `due_size`
        messages (default `max_messages`) or when its oldest message has waited `wait_s` since
        it was received, whichever comes first. At a steady rate paho's thread reads in
        windows, so "holds `due_size`" is judged by the rate: the wait is cut to what
        `due_size` messages took to come in at the last batch's rate (`_count_rate`). A
        backlog (messages that queued while the last batch committed) has waited already and
        goes out at once, up to `max_messages`. The loop is woken once per batch, by paho's
        thread, which reads the batch's last messages just before it is due; a timer slightly
        later is only the safety net.
        """
        self._set_batching(max_messages, wait_s, due_size)
        while (due_in := self._due_in()) > HANDOFF_MARGIN:
            await self._wait_for_handoff(None if due_in == _NEVER else due_in + 0.005)
        return self._take(max_messages)

    def _take(self, max_messages: int) -> list[Message]:
        inbox = self._inbox
        size = len(inbox)
        if size > self.stats.inbox_peak:
            self.stats.inbox_peak = size
        popleft = inbox.popleft
        batch = [popleft() for _ in range(min(max_messages, size))]
        if not inbox:
            self._inbox_due = False
        self._count_rate(batch)
        self.stats.received += len(batch)
        self.stats.received_bytes += sum(len(m.payload) for m in batch)
        if len(inbox) < self._inbox_max:
            self._room.set()
        return batch

    def _set_batching(self, max_messages: int, wait_s: float, due_size: int | None) -> None:
        self._batch_size = max(1, min(max_messages, self._inbox_max))
        self._due_size = self._batch_size if due_size is None else max(1, min(due_size, self._batch_size))  # fmt: skip
        self._batch_wait = wait_s
        if self._due_size == self._batch_size:
            self._size_wait = _NEVER  # only batch_max and batch_wait

    def _count_rate(self, batch: list[Message]) -> None:
        """A batch was handed over: the wait that would cut the next one at about `due_size`
        messages if they keep coming at this batch's rate. The batch came in since the last
        hand-off, or, after a quiet spell, since its first message was received (paho's
        thread then waited batch_wait for the rest). At 2,000 msgs/s and a `due_size` of 50,
        25 ms; at a trickle longer than batch_wait, which applies."""
        now = time.monotonic()
        since, self._taken_at = now - self._taken_at, now
        if batch and self._due_size < self._batch_size:
            first_age = max(0.0, time.time() - batch[0].received_ms / 1000)
            if since - first_age > 2 * self._batch_wait:
                # A stream that began after a quiet spell (or a stalled commit: at least
                # half of batch_wait, so that one cannot make the next batches tiny).
                since = max(first_age, self._batch_wait / 2)
            self._size_wait = self._due_size * since / len(batch)

    async def _wait_for_handoff(self, timeout: float | None) -> None:
        """Until paho's thread hands a batch over (one wake-up), or `timeout`."""
        self._wakeup.clear()
        self._waiting = True
        try:
            if self._due_in() <= HANDOFF_MARGIN:  # came before paho's thread saw _waiting
                return
            if timeout is None:
                await self._wakeup.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wakeup.wait()
        finally:
            self._waiting = False

    # -- batches straight to the store thread ----------------------------------------------------

    def deliver_batches(
        self,
        sink: Callable[[list[Message]], None],
        max_messages: int,
        wait_s: float = 0.0,
        due_size: int | None = None,
    ) -> None:
        """From now on, each due batch (as `next_batch` would hand it out) goes to `sink`
        from the thread that finds it due, not through the event loop: paho's thread when the
        batch fills or falls due, or the sink's own thread when it calls `batch_done()` and a
        backlog is waiting. One batch at a time: the next is offered after `batch_done()`.

        At a steady load that saves the loop the hand-off's wake-up per batch; ingest queues
        the committed batches for the loop's listeners (IngestCore._committed_soon).
        `sink` must not block (it queues the batch for the store thread)."""
        with self._sink_lock:
            self._set_batching(max_messages, wait_s, due_size)
            self._sink = sink
        self.offer_batch()

    def stop_delivering(self) -> bool:
        """No more batches to the sink. True while the last one it took is not done."""
        with self._sink_lock:
            self._sink = None
            return self._sink_busy

    @property
    def delivering(self) -> bool:
        """A batch handed to the sink is not done yet."""
        return self._sink_busy

    def batch_done(self) -> None:
        """The sink is done with its batch (committed and acked, or given up): the next due
        batch, if any, goes to it at once, in this thread."""
        took = time.monotonic() - self._taken_at
        # a peak that loses a tenth a batch: one slow commit shortens the next waits at once
        self._batch_took = max(took, self._batch_took * 0.9)
        with self._sink_lock:
            self._sink_busy = False
        self.offer_batch()

    def offer_batch(self, *, due: bool = False) -> bool:
        """Hand the inbox's batch to the sink if it is due (or `due`) and the sink is free
        (any thread). True when it did."""
        if not due and (self._sink is None or self._sink_busy):  # the common no, unlocked
            return False
        with self._sink_lock:
            if due and self._inbox:
                self._inbox_due = True  # until the inbox is empty: also if the sink is busy
            sink = self._sink
            if sink is None or self._sink_busy or self._due_in() > HANDOFF_MARGIN:
                return False
            batch = self._take(self._batch_size)
            self._sink_busy = True
        sink(batch)
        return True

    def offer_overdue(self, grace: float) -> bool:
        """The loop's safety net: hand a due batch over (as `offer_batch`) and say whether it
        was overdue, its oldest message older than batch_wait + `grace`, which only a batch
        nobody handed over can be. One that has just fallen due is handed over too, but is
        no sign of trouble: paho's thread pauses to the deadline it worked out when it read
        the batch, and a slow commit since then shortens the wait (_wait_now)."""
        try:
            oldest_ms = self._inbox[0].received_ms
        except IndexError:
            return False
        overdue = time.time() - oldest_ms / 1000 > self._batch_wait + grace
        return self.offer_batch() and overdue

    def pending(self) -> int:
        return len(self._inbox)

    def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge messages whose content is committed (QoS 0 needs none).

        The PUBACKs of a batch go to paho's thread as one write and one wake-up (paho's ack()
        queued a packet, and woke the thread, per message). No wake-up at all while the next
        batch is being gathered: paho's thread wakes for it anyway (it pauses, or waits for
        the batch's next message) and writes them then, at most about batch_wait later.
        """
        mids = [message.mid for message in messages if message.qos == 1]
        others = [message for message in messages if message.qos > 1]  # subscriptions are QoS 1
        if mids or others:
            gathering = self._batch_wait > 0 and bool(self._inbox)
            self._client.ack_many(mids, others, wake=not gathering)
        self.stats.acked += len(mids) + len(others)

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        """Fire-and-forget publish from any thread (paho queues it while reconnecting).

        A QoS 0 message is written by the calling thread itself where it can
        (`DirectWriteClient.send_publishes`): the status published every few seconds no longer
        wakes paho's thread."""
        if qos == 0:
            data = payload.encode() if isinstance(payload, str) else payload
            if self._client.send_publishes([(topic, data)], retain=retain):
                self.stats.published += 1
                return
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == paho.MQTT_ERR_SUCCESS or info.rc == paho.MQTT_ERR_NO_CONN:
            self.stats.published += 1
        else:
            log.debug("Publish to %s failed: %s", topic, paho.error_string(info.rc))
