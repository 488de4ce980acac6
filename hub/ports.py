"""The ports: what a component of `hub run` is given, instead of the whole hub.

    publisher   publish(topic, payload, qos, retain) on the hub's MQTT connection, and its client id
    committed   subscribe(listener) to every committed batch (readings, events, availability)
    writer      the store writer: the only way to write the store (hub.store.writer)
    reader      read-only connections to the store, for queries
    decoder     the message router (decode a payload the way ingest does; dead-letter replay)
    status      the hub's status dict (what `hub status` and /api/health show)
    spawn       start a supervised task (hub.runtime.Supervisor.spawn)
    find        another component by name (the web API asks for the alert engine)

A test wires a component with fakes for the ports it uses and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hub.store.sqlite import connect

if TYPE_CHECKING:
    from hub.bus.router import Router
    from hub.components import Component
    from hub.config import HubConfig
    from hub.ingest import Committed
    from hub.store.writer import StoreWriter

log = logging.getLogger(__name__)


class Publisher(Protocol):
    client_id: str

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False
    ) -> None: ...


Listener = Callable[["Committed"], None]


class CommittedFeed:
    """Committed batches, handed to every subscriber in order (alerts, live feed, InfluxDB)."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def publish(self, committed: Committed) -> None:
        for listener in self.listeners:
            try:
                listener(committed)
            except Exception:  # one listener's bug must not starve the others
                log.exception("Listener %r of committed batches failed", listener)


class StoreReader:
    """Read-only connections to the store (WAL: readers never block the writer). On a worker
    `url` names the PostgreSQL store instead (the web API reads it: hub.web.reader)."""

    def __init__(self, path: Path, url: str | None = None) -> None:
        self.path = path
        self.url = url

    def open(self) -> sqlite3.Connection:
        return connect(self.path, readonly=True)


Spawn = Callable[..., "asyncio.Task[None]"]


@dataclass
class Ports:
    config: HubConfig
    publisher: Publisher
    committed: CommittedFeed
    writer: StoreWriter
    reader: StoreReader
    decoder: Router
    status: Callable[[], dict[str, Any]]
    spawn: Spawn
    find: Callable[[str], Component | None]
