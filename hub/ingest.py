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
from hub.bus.router import Decoded, Router
from hub.model import Event, Reading
from hub.store.sqlite import Batch, DeadLetter, Store, message_digest

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"
DERIVE_SOURCE = "derive"  # dead letters of a deriver that failed
DERIVER_FAILED = "deriver_failed"
MAX_DEAD_INPUTS = 1000  # readings kept in such a dead letter
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
    """What one batch stored, handed to listeners (alerts, live feed) after the commit.

    `readings` are the new readings the commit inserted (raw, then derived): never a
    duplicate of a stored one. `last_known` are values of retained states the store did not
    hold yet: stored, but not new readings (they neither feed derivations nor reset
    staleness).
    """

    readings: list[Reading]
    events: list[Event]
    availability: list[tuple[str, bool, int]]
    committed_ms: int
    last_known: list[Reading] = field(default_factory=list)


@dataclass
class IngestStats:
    messages: int = 0
    batches: int = 0
    readings_stored: int = 0
    duplicates: int = 0
    derived: int = 0
    events: int = 0
    retained_known: int = 0  # retained states whose value the store already ended with
    rejected: Counter[str] = field(default_factory=Counter)
    derive_failures: Counter[str] = field(default_factory=Counter)  # per deriver
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
            if f.name not in ("age_at_commit", "rejected", "derive_failures")
        }
        data["rejected"] = dict(self.rejected.copy())
        data["rejected_total"] = sum(self.rejected.values())
        data["derive_failures"] = dict(self.derive_failures.copy())
        data["derive_failures_total"] = sum(self.derive_failures.values())
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
        # topic -> last (receive ms, seq) key given to its states (store thread only)
        self._last_key: dict[str, tuple[int, int]] = {}

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

    def _derive(
        self,
        batch: Batch,
        run: Callable[[Deriver], DerivedLike],
        inputs: Sequence[Reading],
        now_ms: int,
    ) -> list[Reading]:
        """What the derivers make of new readings (or of the time): a deriver that fails is
        counted per deriver and leaves a dead letter with the readings it was given, so the
        gap in its outputs is visible (`hub status`, `hub deadletters list --source derive`)."""
        derived: list[Reading] = []
        for deriver in self.derivers:
            try:
                result = run(deriver)
            except Exception as exc:
                name = type(deriver).__name__
                count = self.stats.derive_failures[name] = self.stats.derive_failures[name] + 1
                if count == 1:
                    log.exception("Deriver %s failed; its outputs for this batch are missing", name)
                else:
                    log.warning("Deriver %s failed again (%d times): %r", name, count, exc)
                batch.dead_letters.append(
                    DeadLetter(
                        now_ms, DERIVE_SOURCE, name, DERIVER_FAILED,
                        f"{type(exc).__name__}: {exc}"[:1000]
                        + (f" ({len(inputs)} readings, first {MAX_DEAD_INPUTS} kept)"
                           if len(inputs) > MAX_DEAD_INPUTS else ""),
                        orjson.dumps(
                            [[r.device, r.metric, r.value, r.timestamp_ms, r.seq, dict(r.tags)]
                             for r in inputs[:MAX_DEAD_INPUTS]]
                        ) if inputs else None,
                    )
                )  # fmt: skip
                continue
            derived.extend(result.readings)
            batch.writes.extend(result.writes)
        return derived

    def tick(self, now_ms: int) -> Committed:
        """Advance time-driven derivations (store thread): hours closing, sessions ending."""
        batch = Batch()
        derived = self._derive(batch, lambda d: d.tick(now_ms), (), now_ms)
        batch.readings = self.store.fresh(derived) if derived else derived
        if batch.readings or batch.writes or batch.dead_letters:
            result = self.store.commit(batch)
            self.stats.readings_stored += result.stored
            self.stats.derived += len(batch.readings)
            self.stats.duplicates += len(derived) - len(batch.readings)
        return Committed(batch.readings, [], [], time.time_ns() // 1_000_000)

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
        """Decode, derive and commit one batch (store thread). Never raises on bad input.

        Only readings the commit inserts go on: the store is asked which sample keys are new
        before derivations run, so a redelivered message is neither stored nor derived nor
        announced twice, and a retained state the store already holds is not a new reading.
        """
        now_ms = time.time_ns() // 1_000_000
        batch = Batch()
        router = self.router
        store = self.store
        stats = self.stats
        last_key = self._last_key
        this_batch: dict[tuple[int, int], tuple[int, int]] = {}  # receipts not committed yet
        own_stamps: list[int] = []
        live: list[Reading] = []
        last_known: list[Reading] = []  # retained states the store does not hold yet
        newest: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
        for message in messages:
            key: tuple[int, int] | None = None
            digest = 0
            try:
                if message.qos:
                    digest = message_digest(message.topic, message.payload)
                    if message.dup:
                        # A redelivery takes the key its first delivery got, whether that was
                        # committed in an earlier batch or sits in this one.
                        key = this_batch.get((message.mid, digest)) or store.receipt(
                            message.mid, digest
                        )
                        if key is not None and key[0] != message.received_ms:
                            message = dataclasses.replace(message, received_ms=key[0])
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
                key = self._stamp(message, decoded, key, digest, batch, this_batch, last_key)
            if message.retain and decoded.received_readings + decoded.received_events:
                # A retained state delivered on (re)subscribe is the last known value, not a
                # new reading: stored only when the store does not end with that value
                # already, and never handed on as new (no derivation, no staleness reset).
                self._last_known(decoded, newest, last_known, batch)
            else:
                if decoded.readings:
                    live.extend(decoded.readings)
                    for r in decoded.readings:
                        newest[(r.device, r.metric, tuple(r.tags.items()))] = r.value
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
        claimed: set[tuple[object, int, int]] = set()
        new_live = store.fresh(live, claimed) if live else live
        new_known = store.fresh(last_known, claimed) if last_known else last_known
        derived: list[Reading] = []
        if self.derivers and new_live:
            derived = self._derive(batch, lambda d: d.derive(new_live), new_live, now_ms)
        new_derived = store.fresh(derived, claimed) if derived else derived
        batch.readings = [*new_live, *new_known, *new_derived]
        started = time.perf_counter()
        result = store.commit(batch)
        stats.last_commit_ms = (time.perf_counter() - started) * 1000
        stats.messages += len(messages)
        stats.batches += 1
        stats.last_batch_size = len(messages)
        stats.readings_stored += result.stored
        stats.duplicates += (
            len(live) - len(new_live) + len(last_known) - len(new_known) + result.duplicates
        )
        stats.derived += len(new_derived)
        stats.events += result.events
        if result.stored != len(batch.readings):  # fresh() and the commit disagree: a bug
            log.warning(
                "The store inserted %d of %d readings it had found new", result.stored,
                len(batch.readings),
            )  # fmt: skip
        committed_ms = time.time_ns() // 1_000_000
        stats.age_at_commit.extend(committed_ms - stamp for stamp in own_stamps)
        return Committed(
            [*new_live, *new_derived],
            batch.events,
            batch.availability,
            committed_ms,
            new_known,
        )

    def _stamp(
        self,
        message: Message,
        decoded: Decoded,
        key: tuple[int, int] | None,
        digest: int,
        batch: Batch,
        this_batch: dict[tuple[int, int], tuple[int, int]],
        last_key: dict[str, tuple[int, int]],
    ) -> tuple[int, int]:
        """Key the readings that carry the receive time: (receive ms, seq).

        States of one topic within one millisecond (a backlog delivered at once) stay apart
        by `seq`, never by stamps pushed ahead of the clock, so after a restart new states
        cannot land on keys that earlier ones took. A redelivered message keeps the key of
        its first delivery (`key`, from its receipt).
        """
        topic = message.topic
        previous = last_key.get(topic)
        if key is None:
            ms = message.received_ms
            if previous is not None and ms <= previous[0]:
                # the same millisecond (or the clock stepped back): next in order
                key = (previous[0], previous[1] + 1)
            else:
                key = (ms, 0)
            if message.qos:
                batch.receipts.append((message.mid, digest, key[0], key[1]))
                this_batch[(message.mid, digest)] = key
        if previous is None or key > previous:
            last_key[topic] = key
        ms, seq = key
        if ms != message.received_ms or seq:
            n = decoded.received_readings
            if n:
                head = decoded.readings[:-n]
                decoded.readings = head + [
                    dataclasses.replace(r, timestamp_ms=ms, seq=seq) for r in decoded.readings[-n:]
                ]
            n = decoded.received_events
            if n:
                head_events = decoded.events[:-n]
                decoded.events = head_events + [
                    dataclasses.replace(e, timestamp_ms=ms, seq=seq) for e in decoded.events[-n:]
                ]
        return key

    def _last_known(
        self,
        decoded: Decoded,
        newest: dict[tuple[str, str, tuple[tuple[str, str], ...]], float],
        last_known: list[Reading],
        batch: Batch,
    ) -> None:
        """A retained message's readings that are not what the store (or this batch) already
        ends with; events go with them (a text sensor's by its own last text)."""
        n = decoded.received_readings
        own = decoded.readings[:-n] if n else decoded.readings
        fresh_states = 0
        for r in decoded.readings[len(own) :]:
            series = (r.device, r.metric, tuple(r.tags.items()))
            known = newest[series] if series in newest else self.store.last_value(r)
            if known == r.value:
                self.stats.retained_known += 1
                continue
            newest[series] = r.value
            last_known.append(r)
            fresh_states += 1
        last_known.extend(own)  # its own timestamps: its key tells whether it is stored
        m = decoded.received_events
        own_events = decoded.events[:-m] if m else decoded.events
        batch.events.extend(own_events)
        for e in decoded.events[len(own_events) :]:
            if n:  # a binary sensor: its event goes with its reading
                if fresh_states:
                    batch.events.append(e)
            elif self.store.last_event_text(e.device, e.name) != e.text:
                batch.events.append(e)
            else:
                self.stats.retained_known += 1
