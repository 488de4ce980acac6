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
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import orjson

from hub.bus import esphome
from hub.bus.mqtt import Message, MqttConnection
from hub.bus.reject import Rejected
from hub.bus.router import Router
from hub.model import Event, Reading
from hub.ports import CommittedFeed
from hub.store.sqlite import Batch, CommitResult, DeadLetter, StoreFull, message_digest
from hub.store.writer import StoreWriter

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
    commit_failures: int = 0
    deriver_failures: int = 0
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


@dataclass
class Stall:
    """Why commits are failing right now, since when, and how often it was tried."""

    reason: str
    since: float  # time.time()
    attempts: int = 1
    last_reminder: float = field(default_factory=time.monotonic)


class CommitRetry:
    """Backoff between commit attempts: quick at first (a lock is often brief), capped."""

    def __init__(self, first: float = 0.05, cap: float = 5.0) -> None:
        self.first, self.cap = first, cap

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.first * 2 ** min(attempt - 1, 16))


def describe_store_error(exc: BaseException) -> str:
    """A store failure in words a user acts on."""
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if isinstance(exc, StoreFull):
        return text
    if "full" in lowered or getattr(exc, "errno", None) == 28:
        return f"disk full ({text})"
    if "locked" in lowered or "busy" in lowered:
        return f"store locked by another process ({text})"
    if "malformed" in lowered or "not a database" in lowered:
        return f"store damaged ({text}); stop the hub and run 'hub store check'"
    if "readonly" in lowered or "read-only" in lowered:
        return f"store is read-only ({text})"
    return f"store write failed ({text})"


class IngestCore:
    def __init__(
        self,
        connection: MqttConnection,
        writer: StoreWriter,
        router: Router,
        *,
        batch_max: int = 5000,
        batch_wait: float = 0.0,
        derivers: Sequence[Deriver] = (),
        min_free_bytes: int = 0,
        retry: CommitRetry | None = None,
        feed: CommittedFeed | None = None,
    ) -> None:
        self.connection = connection
        self.writer = writer
        self.store = writer.store
        self.router = router
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.derivers = list(derivers)
        self.feed = feed or CommittedFeed()
        self.stats = IngestStats()
        self.min_free_bytes = min_free_bytes
        self.retry = retry or CommitRetry()
        self.stall: Stall | None = None
        self.in_hand = 0  # messages taken from the broker and not yet committed
        self.last_commit_at = time.monotonic()
        self._free_checked = (0.0, 1 << 62)
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

    async def run(self) -> None:
        """The ingest loop, for the supervisor: it returns only when `stop()` asks."""
        if not self._loaded:
            self.load_state()
        self._task = asyncio.current_task()
        await self._run()

    async def stop(self, grace: float = 10.0) -> None:
        """Finish the batch in hand (commit + ack), then stop taking new ones.

        A batch that cannot be committed (the store is failing) is given `grace` seconds,
        then left unacknowledged: the broker delivers it again at the next start.
        """
        self._stopping = True
        task = self._task
        if task is not None and not task.done():
            if not self._busy:
                task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except TimeoutError:
                log.error(
                    "Stopping with %d messages not committed (%s); the broker delivers them "
                    "again at the next start", self.in_hand, self.stall.reason if self.stall else "busy",
                )  # fmt: skip
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            except (asyncio.CancelledError, Exception):
                pass

    def health(self) -> dict[str, str]:
        """ok, or degraded with the reason (the store part of /api/health and `hub status`)."""
        waiting = self.connection.pending() + self.in_hand
        if self.stall is not None:
            since = time.time() - self.stall.since
            return {
                "status": "degraded",
                "reason": f"{self.stall.reason}; {waiting:,} messages waiting, retrying for {since:.0f} s",
            }
        idle = time.monotonic() - self.last_commit_at
        if waiting and idle > 30 and not self._busy:
            return {
                "status": "degraded",
                "reason": f"ingest stalled: no commit for {idle:.0f} s with {waiting:,} messages waiting",
            }
        return {"status": "ok", "reason": ""}

    def _reject(self, batch: Batch, message: Message, reason: str, detail: str) -> None:
        count = self.stats.rejected[reason] = self.stats.rejected[reason] + 1
        batch.dead_letters.append(
            DeadLetter(
                message.received_ms,
                "mqtt",
                message.topic,
                reason,
                detail,
                message.payload,
                retained=message.retain,
            )
        )
        if count == 1:  # the first of a kind is news; the rest are counted
            log.warning("Rejected a message on %r: %s", message.topic[:200], detail)

    def _derive(self, batch: Batch, run: Callable[[Deriver], DerivedLike]) -> None:
        derived: list[Reading] = []
        for deriver in self.derivers:
            try:
                result = run(deriver)
            except Exception:
                self.stats.deriver_failures += 1
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
            result = self._commit_retrying_sync(batch)
            self.stats.readings_stored += result.stored
        return Committed(batch.readings, [], [], time.time_ns() // 1_000_000)

    @property
    def listeners(self) -> list[Listener]:
        return self.feed.listeners

    def notify(self, committed: Committed) -> None:
        self.feed.publish(committed)

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn` in the store thread (rollups, retention, replays share the writer)."""
        return await self.writer.call(fn, *args)

    async def _run(self) -> None:
        while not self._stopping:
            batch = await self.connection.next_batch(self.batch_max, self.batch_wait)
            # While busy, stop() waits instead of cancelling: the batch in hand commits and is acked.
            self._busy = True
            self.in_hand = len(batch)
            prepared = await self.writer.call(self.prepare, batch)
            committed = await self._commit_retrying(prepared)
            if committed is None:  # stopping while the store fails: not acked, redelivered later
                return
            self.connection.ack(batch)
            self.in_hand = 0
            self._busy = False
            self.notify(committed)

    async def _commit_retrying(self, prepared: Prepared) -> Committed | None:
        """Commit, retrying with backoff while the store fails; never drops the batch."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.writer.call(self.commit, prepared)
            except (sqlite3.Error, OSError) as exc:
                self._failing(exc)
                if self._stopping and attempt >= 3:
                    return None
                await asyncio.sleep(self.retry.delay(attempt))

    def _commit_retrying_sync(self, batch: Batch) -> CommitResult:
        """Store thread: a maintenance commit (derivation ticks) that waits out a failing store."""
        attempt = 0
        while True:
            attempt += 1
            try:
                self._check_free_space()
                result = self.store.commit(batch)
                self._recovered()
                return result
            except (sqlite3.Error, OSError) as exc:
                self._failing(exc)
                if self._stopping:
                    raise
                time.sleep(self.retry.delay(attempt))

    def _failing(self, exc: BaseException) -> None:
        reason = describe_store_error(exc)
        stall = self.stall
        now = time.monotonic()
        if stall is None:
            self.stall = Stall(reason, time.time())
            self.stats.commit_failures += 1
            log.error(
                "Store commit failed: %s. Nothing is acknowledged until it is stored; retrying",
                reason,
            )
            return
        stall.attempts += 1
        self.stats.commit_failures += 1
        if reason != stall.reason:
            stall.reason = reason
            log.error("Store commit still failing, now: %s", reason)
        elif now - stall.last_reminder >= 60:
            stall.last_reminder = now
            log.error(
                "Store commit failing for %.0f s (%s); %d messages waiting",
                time.time() - stall.since, reason, self.connection.pending() + self.in_hand,
            )  # fmt: skip

    def _recovered(self) -> None:
        self.last_commit_at = time.monotonic()
        stall = self.stall
        if stall is not None:
            self.stall = None
            log.warning(
                "Store commits work again after %.1f s and %d attempts; catching up with %d waiting",
                time.time() - stall.since, stall.attempts, self.connection.pending(),
            )  # fmt: skip

    def _check_free_space(self) -> None:
        """The low-disk guard: refuse a commit before the disk is full, so the store never
        ends half-written. statvfs is cheap, but once a second is enough."""
        if not self.min_free_bytes:
            return
        checked_at, free = self._free_checked
        now = time.monotonic()
        if now - checked_at >= 1.0 or free < self.min_free_bytes * 2:
            free = shutil.disk_usage(self.store.path.parent).free
            self._free_checked = (now, free)
        if free < self.min_free_bytes:
            raise StoreFull(
                f"disk nearly full: {free / 1e6:.1f} MB free where the store lives, below "
                f"store.min_free ({self.min_free_bytes / 1e6:.0f} MB); free some space"
            )

    def process(self, messages: Sequence[Message]) -> Committed:
        """Decode, derive and commit one batch (store thread), without retrying."""
        return self.commit(self.prepare(messages))

    def commit(self, prepared: Prepared) -> Committed:
        """Commit a prepared batch (store thread). Raises when the store fails; the caller
        retries the same prepared batch (decoding and derivations are not run twice)."""
        batch = prepared.batch
        self._check_free_space()
        started = time.perf_counter()
        result = self.store.commit(batch)
        self._recovered()
        stats = self.stats
        stats.last_commit_ms = (time.perf_counter() - started) * 1000
        stats.messages += prepared.messages
        stats.batches += 1
        stats.last_batch_size = prepared.messages
        stats.readings_stored += result.stored
        stats.duplicates += result.duplicates
        stats.events += result.events
        committed_ms = time.time_ns() // 1_000_000
        stats.age_at_commit.extend(committed_ms - stamp for stamp in prepared.own_stamps)
        return Committed(batch.readings, batch.events, batch.availability, committed_ms)

    def prepare(self, messages: Sequence[Message]) -> Prepared:
        """Decode and derive one batch (store thread). Never raises on bad input."""
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
            batch.add(decoded)
        if self.derivers and batch.readings:
            self._derive(batch, lambda d: d.derive(batch.readings))
        return Prepared(batch, len(messages), own_stamps)


@dataclass(slots=True)
class Prepared:
    """A decoded and derived batch, ready to commit (and to commit again after a failure)."""

    batch: Batch
    messages: int
    own_stamps: list[int]
