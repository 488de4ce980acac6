"""A small synchronous MQTT peer for the ACL tests: one paho client per identity."""

from __future__ import annotations

import queue
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

TIMEOUT = 10.0


class Peer:
    """Connects as one MQTT user; records CONNACK, SUBACKs, messages and disconnects."""

    def __init__(self, host: str, port: int, username: str, password: str, client_id: str) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,  # a refused login must stay refused, not retry
        )
        self.client.username_pw_set(username, password)
        self.host, self.port = host, port
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connack: Any = None
        self.suback: list[Any] = []
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.disconnected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_disconnect = lambda c, u, f, r, p: self.disconnected.set()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack = reason
        self._connected.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reasons: Any, props: Any) -> None:
        self.suback = list(reasons)
        self._subscribed.set()

    def connect(self) -> bool:
        """True when the broker accepted the login."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        assert self._connected.wait(TIMEOUT), "no CONNACK"
        return not self.connack.is_failure

    def subscribe(self, topic: str, qos: int = 1) -> list[Any]:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=qos)
        assert self._subscribed.wait(TIMEOUT), f"no SUBACK for {topic}"
        return self.suback

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        """QoS 1 and wait for the PUBACK: the broker has handled the message on return."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"no PUBACK for {topic}"

    def receive(self, timeout: float = TIMEOUT) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def drain(self) -> list[paho.MQTTMessage]:
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
