"""The live feed: committed readings, events, availability and alerts pushed over WebSocket.

Fed by `IngestCore.listeners`, which run on the asyncio loop right after a commit. The listener
only filters and enqueues: each client has a bounded queue and its own sender task, so a client
that cannot keep up fills its queue and is dropped from the feed (closed with code 4008); it
never makes ingest wait. Clients may narrow what they get by metric and device at any time:

    -> {"subscribe": {"metrics": ["pm2_5"], "devices": ["airq-1"], "alerts": true}}
    <- {"type": "readings", "r": [[device, metric, value, ts_ms, unit, tags|null], ...]}
    <- {"type": "availability", "a": [[device, online, ts_ms], ...]}
    <- {"type": "events", "e": [[device, name, text, ts_ms], ...]}
    <- {"type": "alert", "alert": {...}}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from hub.model import Event, Reading

log = logging.getLogger(__name__)

SLOW_CLIENT_CLOSE = 4008  # application code: dropped for falling behind
MAX_FILTER_NAMES = 500


def encode_readings(readings: Iterable[Reading]) -> str:
    rows = [
        (r.device, r.metric, r.value, r.timestamp_ms, r.unit, dict(r.tags) if r.tags else None)
        for r in readings
    ]
    return orjson.dumps({"type": "readings", "r": rows}).decode()


class LiveClient:
    def __init__(self, websocket: WebSocket, queue_size: int) -> None:
        self.websocket = websocket
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.metrics: frozenset[str] | None = None
        self.devices: frozenset[str] | None = None
        self.alerts = True
        self.dropped = False
        self.sender: asyncio.Task[None] | None = None
        self.sent = 0

    @property
    def unfiltered(self) -> bool:
        return self.metrics is None and self.devices is None

    def wants(self, device: str, metric: str | None = None) -> bool:
        if self.devices is not None and device not in self.devices:
            return False
        return metric is None or self.metrics is None or metric in self.metrics

    def subscribe(self, spec: Any) -> None:
        if not isinstance(spec, dict):
            raise ValueError("'subscribe' must be an object with 'metrics', 'devices', 'alerts'")
        unknown = set(spec) - {"metrics", "devices", "alerts"}
        if unknown:
            raise ValueError(f"unknown subscription keys: {sorted(unknown)}")
        self.metrics = _names(spec.get("metrics"), "metrics")
        self.devices = _names(spec.get("devices"), "devices")
        alerts = spec.get("alerts", True)
        if not isinstance(alerts, bool):
            raise ValueError("'alerts' must be true or false")
        self.alerts = alerts


def _names(value: Any, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"'{what}' must be a list of names or null (everything)")
    if len(value) > MAX_FILTER_NAMES:
        raise ValueError(f"'{what}' may list at most {MAX_FILTER_NAMES} names")
    return frozenset(value)


class LiveFeed:
    def __init__(
        self, queue_size: int = 256, max_clients: int = 200, coalesce: float = 0.1
    ) -> None:
        self.queue_size = queue_size
        # Readings of the batches committed within `coalesce` seconds go out as one message per
        # client: at 100 commits/s and 50 clients, one send per commit and client was 5,000
        # WebSocket sends a second, and they starved ingest on the shared interpreter.
        self.coalesce = coalesce
        self._pending: list[Reading] = []
        self._flusher: asyncio.Task[None] | None = None
        self.max_clients = max_clients
        self.clients: set[LiveClient] = set()
        self.connected_total = 0
        self.dropped_slow = 0
        self.messages_queued = 0
        self._closing = False

    # -- fed by ingest (on the loop) --------------------------------------------------------------

    def on_committed(self, committed: Any) -> None:
        """`IngestCore` listener: cheap, never blocks, never raises for a client's sake."""
        if not self.clients:
            return
        readings = committed.readings
        if readings:
            # When every client names its devices, the rest of a busy batch is not even kept
            # for the next flush (a burst of 100,000 readings/s for one device nobody watches
            # costs one set lookup per reading).
            wanted = self._wanted_devices()
            if wanted is not None:
                readings = [r for r in readings if r.device in wanted]
        if readings:
            if self.coalesce <= 0:
                self.publish_readings(readings)
            else:
                self._pending.extend(readings)
                if self._flusher is None or self._flusher.done():
                    self._flusher = asyncio.get_running_loop().create_task(
                        self._flush_later(), name="web-live-coalesce"
                    )
        if committed.events:
            self.publish_events(committed.events)
        if committed.availability:
            message = orjson.dumps(
                {"type": "availability", "a": [list(a) for a in committed.availability]}
            ).decode()
            for client in list(self.clients):
                self._offer(client, message)

    def _wanted_devices(self) -> set[str] | None:
        """The devices some client asked for; None when a client takes every device."""
        wanted: set[str] = set()
        for client in self.clients:
            if client.devices is None:
                return None
            wanted |= client.devices
        return wanted

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.coalesce)
        pending, self._pending = self._pending, []
        self.publish_readings(pending)

    def publish_readings(self, readings: Sequence[Reading]) -> None:
        if not readings:
            return
        # Clients with the same subscription share one encoded message, and device filters
        # look only at their devices' readings: the cost per batch stays near one pass.
        encoded: dict[tuple[frozenset[str] | None, frozenset[str] | None], str | None] = {}
        by_device: dict[str, list[Reading]] | None = None
        for client in list(self.clients):
            key = (client.devices, client.metrics)
            if key not in encoded:
                devices, metrics = key
                if devices is None:
                    chosen: Sequence[Reading] = readings
                else:
                    if by_device is None:
                        by_device = {}
                        for r in readings:
                            by_device.setdefault(r.device, []).append(r)
                    chosen = [r for d in devices for r in by_device.get(d, ())]
                if metrics is not None:
                    chosen = [r for r in chosen if r.metric in metrics]
                encoded[key] = encode_readings(chosen) if chosen else None
            message = encoded[key]
            if message is not None:
                self._offer(client, message)

    def publish_events(self, events: Sequence[Event]) -> None:
        for client in list(self.clients):
            rows = [
                (e.device, e.name, e.text, e.timestamp_ms) for e in events if client.wants(e.device)
            ]
            if rows:
                self._offer(client, orjson.dumps({"type": "events", "e": rows}).decode())

    def publish_alert(self, alert: dict[str, Any]) -> None:
        device = alert.get("device")
        message = orjson.dumps({"type": "alert", "alert": alert}, default=str).decode()
        for client in list(self.clients):
            if client.alerts and (not isinstance(device, str) or client.wants(device)):
                self._offer(client, message)

    def _offer(self, client: LiveClient, message: str) -> None:
        try:
            client.queue.put_nowait(message)
            self.messages_queued += 1
        except asyncio.QueueFull:
            self._drop(client)

    def _drop(self, client: LiveClient) -> None:
        if client.dropped:
            return
        client.dropped = True
        self.clients.discard(client)
        self.dropped_slow += 1
        log.warning(
            "Dropped a live-feed client %s: %d messages behind",
            _peer(client.websocket),
            client.queue.qsize(),
        )
        if client.sender is not None:
            client.sender.cancel()

    # -- one WebSocket connection ----------------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        if self._closing or len(self.clients) >= self.max_clients:
            await websocket.close(code=1013, reason="live feed is full, try again later")
            return
        await websocket.accept()
        client = LiveClient(websocket, self.queue_size)
        await websocket.send_text(
            orjson.dumps({"type": "hello", "server_ms": time.time_ns() // 1_000_000}).decode()
        )
        self.clients.add(client)
        self.connected_total += 1
        client.sender = asyncio.create_task(self._send(client), name="web-live-send")
        reader = asyncio.create_task(self._read(client), name="web-live-read")
        try:
            await asyncio.wait({client.sender, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.clients.discard(client)
            for task in (client.sender, reader):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            if client.dropped:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        websocket.close(SLOW_CLIENT_CLOSE, "too slow: dropped from the live feed"),
                        2,
                    )

    async def _send(self, client: LiveClient) -> None:
        websocket = client.websocket
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            while True:
                message = await client.queue.get()
                await websocket.send_text(message)
                client.sent += 1

    async def _read(self, client: LiveClient) -> None:
        websocket = client.websocket
        try:
            while True:
                text = await websocket.receive_text()
                try:
                    if len(text) > 65536:
                        raise ValueError("message too large")
                    request = orjson.loads(text)
                    if not isinstance(request, dict) or "subscribe" not in request:
                        raise ValueError('send {"subscribe": {"metrics": [...], "devices": [...]}}')
                    client.subscribe(request["subscribe"])
                    reply: dict[str, Any] = {
                        "type": "subscribed",
                        "metrics": sorted(client.metrics) if client.metrics is not None else None,
                        "devices": sorted(client.devices) if client.devices is not None else None,
                        "alerts": client.alerts,
                    }
                except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
                    reply = {"type": "error", "error": str(exc)}
                self._offer(client, orjson.dumps(reply).decode())
        except (WebSocketDisconnect, RuntimeError, OSError, KeyError):
            pass  # the client went away: serve() ends the sender too

    async def close(self) -> None:
        self._closing = True
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for client in list(self.clients):
            self.clients.discard(client)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.websocket.close(1001, "hub stopping"), 1)
            if client.sender is not None:
                client.sender.cancel()

    def status(self) -> dict[str, int]:
        return {
            "clients": len(self.clients),
            "connected_total": self.connected_total,
            "dropped_slow": self.dropped_slow,
            "messages_queued": self.messages_queued,
        }


def _peer(websocket: WebSocket) -> str:
    client = websocket.client
    return f"{client.host}:{client.port}" if client else "?"
