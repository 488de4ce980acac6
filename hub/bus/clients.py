"""The one place a paho client is built: credentials, TLS and socket options set up once.

Every MQTT connection of the hub comes from `new_client`: the ingest connection
(hub.bus.mqtt), Home Assistant discovery, the simulator, the bench logger's spool and device
provisioning. Before, each built its own and they drifted (provisioning ignored
`broker.tls.ca_file`, the simulator never set TLS).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.config import BrokerConfig
from hub.config.broker import TlsConfig


@contextlib.contextmanager
def one_wakeup(client: paho.Client) -> Iterator[None]:
    """Publishes made inside wake paho's network thread once, at the end, not once per packet.

    paho's publish() from another thread queues the packet and writes a byte to the thread's
    wake-up socket; the Home Assistant state mirror sends tens of states at a time, each a
    send(), a wake-up and a select() of that thread. The packets are queued as usual; only the
    wake-up is held back (the ingest connection's `ack_many` does the same for PUBACKs). This
    uses paho 2.2's private `_sockpairW` (requirements.lock pins paho)."""
    sockpair = client._sockpairW
    held = _HeldWakeup()
    client._sockpairW = held  # type: ignore[assignment]  # only send() is used
    try:
        yield
    finally:
        client._sockpairW = sockpair
        if held.wanted and sockpair is not None:  # nothing published: no wake-up at all
            with contextlib.suppress(BlockingIOError, OSError):
                sockpair.send(b"0")


class _HeldWakeup:
    """Stands in for paho's wake-up socket inside `one_wakeup`: notes that a wake-up was
    asked for."""

    __slots__ = ("wanted",)

    def __init__(self) -> None:
        self.wanted = False

    def send(self, data: bytes) -> int:
        self.wanted = True
        return len(data)


class DirectWriteClient(paho.Client):
    """paho's client, on whose socket another thread may write whole packets itself.

    paho's publish() or ack() from another thread queues the packet and wakes paho's thread
    to write it: on a VM that wake-up (a thread back from sleep, its caches cold) costs more
    CPU than the write. `send_now` writes from the calling thread instead, under a lock that
    paho's own writes (`_packet_write`) also take, so two packets never interleave. It leans
    on paho 2.2's private `_sock`, `_out_packet` and `_msgtime_mutex` (requirements.lock pins
    paho); tests/core/test_mqtt_batching.py runs it against a real Mosquitto.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_lock = threading.RLock()  # re-entrant: paho calls back from _packet_write

    def _thread_main(self) -> None:
        """paho's thread, with a longer select() timeout than loop_forever's 1 s.

        An idle connection's thread woke every second only to find nothing to do; on a VM
        each such wake-up costs a millisecond or two of CPU, a good part of the hub's idle
        figure. Traffic, publishes and loop_stop() wake the thread anyway; what the timeout
        is left for is keep-alive, which a look every quarter of it serves."""
        try:
            self.loop_forever(timeout=idle_select_s(self._keepalive), retry_first_connection=True)
        finally:
            self._thread = None

    def loop_stop(self) -> paho.MQTTErrorCode:
        self._thread_terminate = True  # before the wake-up: the thread must see it when woken
        self.wake_thread()
        return super().loop_stop()

    def _packet_write(self) -> paho.MQTTErrorCode:
        with self._write_lock:
            return super()._packet_write()

    def send_now(self, data: bytes) -> bool:
        """Write `data` (whole packets) on the socket from this thread, when nothing of
        paho's is waiting to go out; False when it cannot (send through paho instead).

        Only on a plain TCP socket: OpenSSL's objects must not read in one thread and write
        in another (paho's thread reads all the time)."""
        with self._write_lock:
            sock = self._sock
            if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
                return False
            # Read after the socket: a reconnect sets CONNECTING before it makes the new
            # socket, so nothing goes out ahead of the new connection's CONNECT.
            if self._out_packet or not self.is_connected():
                return False
            try:
                sent = sock.send(data)
            except OSError:  # full (BlockingIOError) or closing: paho's thread meets it
                return False
            if sent < len(data):  # the rest goes first, before anything queued meanwhile
                rest = data[sent:]
                # Queued as a PUBACK: paho's _packet_write then only writes it (a PUBLISH
                # would make it look for the message's info and call on_publish).
                self._out_packet.appendleft(
                    {"command": paho.PUBACK, "mid": 0, "qos": 1, "pos": 0,
                     "to_process": len(rest), "packet": rest, "info": None}
                )  # fmt: skip
                self.wake_thread()
        with self._msgtime_mutex:
            self._last_msg_out = time.monotonic()
        return True

    def send_publishes(self, messages: Sequence[tuple[str, bytes]], *, retain: bool) -> bool:
        """QoS 0 PUBLISHes of `messages` (topic, payload), framed for this client's protocol,
        as one write by this thread (`send_now`); False when they must go through paho."""
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        return self.send_now(
            b"".join(
                [
                    publish_packet(topic, payload, retain=retain, v5=v5)
                    for topic, payload in messages
                ]
            )
        )

    def wake_thread(self) -> None:
        sockpair = self._sockpairW
        if sockpair is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                sockpair.send(b"0")


def idle_select_s(keepalive: float) -> float:
    """How long paho's thread may wait in select() with nothing to do: a quarter of the
    keep-alive (a PINGREQ then goes out at most that late; brokers allow half a keep-alive
    more), between 1 and 15 s."""
    return max(1.0, min(15.0, keepalive / 4))


def publish_packet(topic: str, payload: bytes, *, retain: bool, v5: bool = False) -> bytes:
    """A QoS 0 PUBLISH packet, as paho would build it (MQTT 5: with no properties)."""
    topic_bytes = topic.encode()
    body = b"".join(
        (_TOPIC_LENGTH.pack(len(topic_bytes)), topic_bytes, b"\x00" if v5 else b"", payload)
    )
    header = bytearray((0x31 if retain else 0x30,))
    length = len(body)
    while True:  # the remaining length, a variable byte integer
        byte, length = length & 0x7F, length >> 7
        header.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(header) + body


_TOPIC_LENGTH = struct.Struct("!H")


def no_delay(client: paho.Client, userdata: object, sock: object) -> None:
    """paho's `on_socket_open`: switch Nagle's algorithm off on the broker connection.

    paho writes each MQTT packet with its own send(). With Nagle on, the second of two
    back-to-back packets (an alert's attributes, then its state; a batch of acks) waits for
    the broker's TCP ack of the first, and a delayed ack holds it 40 ms: that was the whole
    tail of the publish -> alert-state latency.
    """
    with contextlib.suppress(AttributeError, OSError):  # not a TCP socket (a unix socket, a test)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]


def apply_tls(client: paho.Client, tls: TlsConfig | None) -> None:
    """TLS as configured (the system CAs when no ca_file is set)."""
    tls = tls or TlsConfig()
    client.tls_set(
        ca_certs=str(tls.ca_file) if tls.ca_file else None,
        certfile=str(tls.cert_file) if tls.cert_file else None,
        keyfile=str(tls.key_file) if tls.key_file else None,
        cert_reqs=ssl.CERT_REQUIRED,
    )
    client.tls_insecure_set(tls.insecure)


def new_client(
    client_id: str,
    broker: BrokerConfig | None = None,
    *,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    clean_session: bool | None = None,
    manual_ack: bool = False,
    username: str | None = None,
    password: str | None = None,
    use_tls: bool | None = None,
    logger: str | None = "hub.bus.paho",
    client_class: type[paho.Client] = paho.Client,
) -> paho.Client:
    """A paho client with the broker's credentials and TLS (or the ones given), Nagle off.

    `username`/`password` replace the configured login (provisioning acts as the hub user);
    `use_tls` forces TLS on or off where there is no BrokerConfig to say (a plain URL).
    """
    client = client_class(  # the ingest connection's reads in bursts (hub.bus.mqtt)
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        clean_session=clean_session if protocol != MQTTProtocolVersion.MQTTv5 else None,
        manual_ack=manual_ack,
    )
    if logger:
        client.enable_logger(logging.getLogger(logger))
    if username is None and broker is not None and broker.username:
        username = broker.username
        password = broker.password.get_secret_value() if broker.password else None
    if username:
        client.username_pw_set(username, password)
    tls_wanted = use_tls if use_tls is not None else bool(broker and broker.host_port_tls[2])
    if tls_wanted:
        apply_tls(client, broker.tls if broker is not None else None)
    client.on_socket_open = no_delay
    return client
