"""Store-and-forward to MQTT: every message goes through an append-only spool file first.

`submit()` appends `topic<TAB>payload` lines (hub JSON has no raw newlines or tabs) and returns
at once; a forwarder thread publishes from the spool in order with QoS 1 and moves a persisted
offset past a batch only after the broker acknowledged all of it. A broker outage, or a hub
restart during one, therefore loses nothing; after the outage the backlog drains in order
before anything newer. Delivery is at-least-once: a batch cut by a disconnect is sent again,
and readings are keyed by (series, timestamp) downstream, so a repeat lands on the same row.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from hub.bus.clients import new_client
from hub.bus.hub_json import encode
from hub.config import BrokerConfig
from hub.model import Event, Reading

log = logging.getLogger(__name__)

BATCH = 200
COMPACT_AT = 1024 * 1024  # rewrite the spool once this much has been forwarded


def broker_address(url: str) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    if parsed.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"broker URL {url!r}: only mqtt://host:port is supported")
    return parsed.hostname or "127.0.0.1", parsed.port or 1883


class Spool:
    """The append-only file and its forwarded offset (`<file>.offset`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_path = path.with_name(path.name + ".offset")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        self._lock = threading.Lock()
        try:
            self.offset = int(self.offset_path.read_text() or 0)
        except (FileNotFoundError, ValueError):
            self.offset = 0
        self.offset = min(self.offset, path.stat().st_size)

    def append(self, topic: str, payload: bytes) -> None:
        line = topic.encode() + b"\t" + payload + b"\n"
        with self._lock, self.path.open("ab") as handle:
            handle.write(line)

    def pending_bytes(self) -> int:
        return self.path.stat().st_size - self.offset

    def read_batch(self, limit: int = BATCH) -> tuple[list[tuple[str, bytes]], int]:
        """Up to `limit` whole lines from the offset, and the offset after them."""
        items: list[tuple[str, bytes]] = []
        with self._lock, self.path.open("rb") as handle:
            handle.seek(self.offset)
            end = self.offset
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # a line still being written
                end += len(line)
                topic, _, payload = line.rstrip(b"\n").partition(b"\t")
                items.append((topic.decode(), payload))
                if len(items) >= limit:
                    break
        return items, end

    def commit(self, end: int) -> None:
        with self._lock:
            self.offset = end
            if self.offset >= COMPACT_AT and self.offset == self.path.stat().st_size:
                self.path.write_bytes(b"")
                self.offset = 0
            tmp = self.offset_path.with_suffix(".tmp")
            tmp.write_text(str(self.offset))
            os.replace(tmp, self.offset_path)


class SpoolingPublisher:
    """Readings -> hub JSON on `hub/readings/<device>`, via the spool, QoS 1, in order."""

    def __init__(
        self,
        broker_url: str,
        spool_path: Path,
        client_id: str = "",
        topic_prefix: str = "hub",
        ack_timeout: float = 5.0,
        broker: BrokerConfig | None = None,
    ) -> None:
        self.host, self.port = broker_address(broker_url)
        self.spool = Spool(spool_path)
        self.topic_prefix = topic_prefix
        self.ack_timeout = ack_timeout
        self.published = 0
        self.resent_batches = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self.client = new_client(
            client_id,
            broker,
            protocol=mqtt.MQTTProtocolVersion.MQTTv311,
            clean_session=True,
        )
        self.client.reconnect_delay_set(0.2, 5)  # type: ignore[arg-type]  # floats work
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self._thread = threading.Thread(target=self._forward, name="spool-forwarder", daemon=True)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: mqtt.ReasonCode, props: object) -> None:  # fmt: skip
        if reason.is_failure:
            log.warning("broker %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        log.info("connected to %s:%d", self.host, self.port)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: mqtt.ReasonCode, props: object) -> None:  # fmt: skip
        if self._connected.is_set():
            log.warning("lost the broker %s:%d (%s); spooling", self.host, self.port, reason)
        self._connected.clear()

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=15)
        self.client.loop_start()
        self._thread.start()

    def submit(
        self, device: str, readings: Iterable[Reading], events: Iterable[Event] = ()
    ) -> None:
        readings, events = list(readings), list(events)
        if not readings and not events:
            return
        self.spool.append(
            f"{self.topic_prefix}/readings/{device}", encode(readings, events, "serial")
        )
        self._wake.set()

    def _forward(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            while self._connected.is_set() and not self._stop.is_set():
                items, end = self.spool.read_batch()
                if not items:
                    break
                if not self._send(items):
                    self.resent_batches += 1
                    time.sleep(0.1)
                    break
                self.spool.commit(end)
                self.published += len(items)

    def _send(self, items: list[tuple[str, bytes]]) -> bool:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in items]
        deadline = time.monotonic() + self.ack_timeout
        for info in infos:
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return False
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                return False
            if not info.is_published():
                return False
        return True

    def drain(self, timeout: float) -> bool:
        """Wait until the spool is forwarded (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.spool.pending_bytes() == 0:
                return True
            self._wake.set()
            time.sleep(0.05)
        return self.spool.pending_bytes() == 0

    def close(self, drain_timeout: float = 2.0) -> None:
        self.drain(drain_timeout)
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()
