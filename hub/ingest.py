"""The ingest core: MQTT batch -> decode -> derive -> one store transaction -> ack.

At-least-once end to end: a QoS 1 message is acknowledged to the broker only after what it
carried (readings, events, or its dead letter) is committed. Decoding and the commit run in
one dedicated store thread, so the asyncio loop stays free and the SQLite connection is only
ever used from that thread; while one batch commits, paho's thread queues the next.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import orjson

from hub.bus import esphome
from hub.bus.mqtt import Message, MqttConnection
from hub.bus.reject import Rejected
from hub.bus.router import Router
from hub.model import Event, Reading
from hub.store.sqlite import Batch, DeadLetter, Store, message_digest

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"
T = TypeVar("T")


class DerivedLike(Protocol):
    readings: list[Reading]
    writes: list[Callable[[sqlite3.Connection], None]]


class Deriver(Protocol):
    """Stateful, pure filters: readings in, derived readings (and records to write) out."""

    def derive(self, readings: Sequence[Reading]) -> DerivedLike: ...

    def tick(self, now_ms: int) -> DerivedLike: ...

    def close(self) -> DerivedLike: ...


@dataclass(slots=True)
class Committed:
    """What one batch stored, handed to listeners (alerts, live feed) after the commit."""

    readings: list[Reading]
    events: list[Event]
    availability: list[tuple[str, bool, int]]
    committed_ms: int


@dataclass
class IngestStats:
    messages: int = 0
    batches: int = 0
    readings_stored: int = 0
    duplicates: int = 0
    derived: int = 0
    events: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    last_batch_size: int = 0
    last_commit_ms: float = 0.0
    started_at: float = field(default_factory=time.time)
    # Commit time minus the reading's own timestamp, ms, for messages that carry one: the
    # publish-to-commit latency when the publisher's clock is this machine's.
    age_at_commit: collections.deque[int] = field(
        default_factory=lambda: collections.deque(maxlen=20000)
    )

    def as_dict(self) -> dict[str, object]:
        # Read while the store thread updates: copy plain fields, snapshot the containers.
        data: dict[str, object] = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("age_at_commit", "rejected")
        }
        data["rejected"] = dict(self.rejected.copy())
        data["rejected_total"] = sum(self.rejected.values())
        ages = sorted(self.age_at_commit.copy())
        if ages:
            data["age_at_commit_ms"] = {
                "p50": ages[len(ages) // 2],
                "p99": ages[min(len(ages) - 1, int(len(ages) * 0.99))],
                "max": ages[-1],
                "window": len(ages),
            }
        return data


Listener = Callable[[Committed], None]


class IngestCore:
    def __init__(
        self,
        connection: MqttConnection,
        store: Store,
        router: Router,
        *,
        batch_max: int = 5000,
        derivers: Sequence[Deriver] = (),
    ) -> None:
        self.connection = connection
        self.store = store
        self.router = router
        self.batch_max = batch_max
        self.derivers = list(derivers)
        self.listeners: list[Listener] = []
        self.stats = IngestStats()
        # One thread owns the SQLite writer connection and the router's entity map.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-store")
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = False
        self._loaded = False
        self._last_stamp: dict[str, int] = {}  # topic -> last receive stamp (store thread only)

    def load_state(self) -> None:
        """Entities learnt from ESPHome discovery in earlier runs (before the stream starts)."""
        for state_topic, _, entity_json in self.store.load_entities():
            try:
                self.router.entities[state_topic] = esphome.Entity(**orjson.loads(entity_json))
            except (TypeError, ValueError):
                log.warning(
                    "Ignoring a stored ESPHome entity that no longer parses: %s", state_topic
                )
        self._loaded = True

    def start(self) -> None:
        if not self._loaded:
            self.load_state()
        self._task = asyncio.create_task(self._run(), name="hub-ingest")

    async def stop(self) -> None:
        """Finish the batch in hand (commit + ack), then stop taking new ones."""
        self._stopping = True
        if self._task is not None:
            if not self._busy:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    def _reject(self, batch: Batch, message: Message, reason: str, detail: str) -> None:
        count = self.stats.rejected[reason] = self.stats.rejected[reason] + 1
        batch.dead_letters.append(
            DeadLetter(message.received_ms, "mqtt", message.topic, reason, detail, message.payload)
        )
        if count == 1:  # the first of a kind is news; the rest are counted
            log.warning("Rejected a message on %r: %s", message.topic[:200], detail)

    def _derive(self, batch: Batch, run: Callable[[Deriver], DerivedLike]) -> None:
        derived: list[Reading] = []
        for deriver in self.derivers:
            try:
                result = run(deriver)
            except Exception:
                log.exception("Deriver %r failed; its outputs for this batch are skipped", deriver)
                continue
            derived.extend(result.readings)
            batch.writes.extend(result.writes)
        self.stats.derived += len(derived)
        batch.readings.extend(derived)

    def tick(self, now_ms: int) -> Committed:
        """Advance time-driven derivations (store thread): hours closing, sessions ending."""
        batch = Batch()
        self._derive(batch, lambda d: d.tick(now_ms))
        if batch.readings or batch.writes:
            result = self.store.commit(batch)
            self.stats.readings_stored += result.stored
        return Committed(batch.readings, [], [], time.time_ns() // 1_000_000)

    def close_derivations(self) -> int:
        """Store thread: what derivations hold open (drive sessions) is closed and committed.
        Returns how many records were written."""
        batch = Batch()
        self._derive(batch, lambda d: d.close())
        if batch.readings or batch.writes:
            result = self.store.commit(batch)
            self.stats.readings_stored += result.stored
        return len(batch.writes)

    async def close_open_sessions(self) -> None:
        """On shutdown, before ingest stops: store the drive sessions still open, so a hub
        that stops mid-run keeps the run (a session otherwise closes only on stillness)."""
        try:
            closed = await self.call(self.close_derivations)
        except Exception:  # shutdown goes on: the run is lost, the rest is stored
            log.exception("Closing the open drive sessions failed")
            return
        if closed:
            log.info("Closed %d open drive session(s) on shutdown", closed)

    def notify(self, committed: Committed) -> None:
        for listener in self.listeners:
            try:
                listener(committed)
            except Exception:
                log.exception("Ingest listener %r failed", listener)

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn` in the store thread (rollups, retention, replays share the writer)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            batch = await self.connection.next_batch(self.batch_max)
            # While busy, stop() waits instead of cancelling: the batch in hand commits and is acked.
            self._busy = True
            committed = await loop.run_in_executor(self._executor, self.process, batch)
            self.connection.ack(batch)
            self.notify(committed)
            self._busy = False

    def process(self, messages: Sequence[Message]) -> Committed:
        """Decode, derive and commit one batch (store thread). Never raises on bad input."""
        now_ms = time.time_ns() // 1_000_000
        batch = Batch()
        router = self.router
        store = self.store
        last_stamp = self._last_stamp
        own_stamps: list[int] = []
        for message in messages:
            redelivered = False
            try:
                if message.dup and message.qos:
                    digest = message_digest(message.topic, message.payload)
                    earlier = store.receipt(message.mid, digest)
                    if earlier is not None:
                        message = dataclasses.replace(message, received_ms=earlier)
                        redelivered = True
                decoded = router.decode(message, now_ms)
            except Rejected as exc:
                self._reject(batch, message, exc.reason, exc.detail)
                continue
            except Exception as exc:  # a codec bug must not stop ingest or lose the message
                log.exception("Codec failed on topic %r", message.topic[:200])
                self._reject(batch, message, INTERNAL_ERROR, repr(exc))
                continue
            if decoded.has_own_timestamp:
                if decoded.readings:
                    # the oldest sample of the message: its latency is the one to report
                    own_stamps.append(min(r.timestamp_ms for r in decoded.readings))
            else:
                # Stamped with the receive time: two states of one topic within the same
                # millisecond would share a sample key, so a later one moves up by 1 ms.
                stamp = message.received_ms
                previous = last_stamp.get(message.topic)
                if previous is not None and stamp <= previous and not redelivered:
                    stamp = previous + 1
                    decoded.readings = [
                        dataclasses.replace(r, timestamp_ms=stamp) for r in decoded.readings
                    ]
                    decoded.events = [
                        dataclasses.replace(e, timestamp_ms=stamp) for e in decoded.events
                    ]
                if previous is None or stamp > previous:
                    last_stamp[message.topic] = stamp
                if message.qos:
                    digest = message_digest(message.topic, message.payload)
                    batch.receipts.append((message.mid, digest, stamp))
            if decoded.readings:
                batch.readings.extend(decoded.readings)
            if decoded.events:
                batch.events.extend(decoded.events)
            if decoded.availability:
                batch.availability.extend(decoded.availability)
            if decoded.devices:
                batch.devices.extend(decoded.devices)
            for found in decoded.discoveries:
                if found.entity is not None:
                    entity_json = orjson.dumps(dataclasses.asdict(found.entity)).decode()
                    batch.entities.append(
                        (found.entity.state_topic, found.config_topic, entity_json)
                    )
                else:
                    batch.entities.append(("", found.config_topic, None))
        if self.derivers and batch.readings:
            self._derive(batch, lambda d: d.derive(batch.readings))
        started = time.perf_counter()
        result = store.commit(batch)
        stats = self.stats
        stats.last_commit_ms = (time.perf_counter() - started) * 1000
        stats.messages += len(messages)
        stats.batches += 1
        stats.last_batch_size = len(messages)
        stats.readings_stored += result.stored
        stats.duplicates += result.duplicates
        stats.events += result.events
        committed_ms = time.time_ns() // 1_000_000
        stats.age_at_commit.extend(committed_ms - stamp for stamp in own_stamps)
        return Committed(batch.readings, batch.events, batch.availability, committed_ms)
