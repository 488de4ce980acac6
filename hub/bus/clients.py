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
from collections.abc import Iterator

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
