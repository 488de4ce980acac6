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
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson
import psycopg

from hub.bus import esphome
from hub.bus.mqtt import Message, MqttConnection
from hub.bus.reject import Rejected
from hub.bus.router import Decoded, Router
from hub.model import Event, Reading
from hub.ports import CommittedFeed
from hub.runtime import until_tick
from hub.store.sqlite import Batch, CommitResult, DeadLetter, StoreFull, message_digest

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"
DERIVE_SOURCE = "derive"  # dead letters of a deriver that failed
DERIVER_FAILED = "deriver_failed"
MAX_DEAD_INPUTS = 1000  # readings kept in such a dead letter
HANDOFF_CHECK_S = 5.0  # how often the loop looks for a due batch nobody handed over
HANDOFF_GRACE_S = 1.0  # ... and counts it as missed when it had waited this long past batch_wait
# While batches commit faster than this, the loop takes the committed ones at most this often
# (one wake-up for several batches); a batch after a quiet spell wakes it at once.
NOTIFY_INTERVAL_S = 0.2
T = TypeVar("T")
A = TypeVar("A")


# What a failing store raises (SQLite: locked, full, damaged; PostgreSQL: unreachable,
# restarting, failing over): the batch is retried, never acknowledged, never dropped.
STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, psycopg.Error)


class IngestStore(Protocol):
    """What ingest needs of a store: hub.store.sqlite.Store or hub.store.postgres.PostgresStore."""

    def load_entities(self) -> list[tuple[str, str, str]]: ...

    def fresh(
        self, readings: Sequence[Reading], claimed: set[tuple[object, int, int]] | None = None
    ) -> list[Reading]: ...

    def commit(self, batch: Batch) -> CommitResult: ...

    def receipt(self, mid: int, digest: int) -> tuple[int, int] | None: ...

    def last_value(self, reading: Reading) -> float | None: ...

    def last_event_text(self, device: str, name: str) -> str | None: ...


class IngestWriter(Protocol):
    """The store thread ingest commits in (hub.store.writer.StoreWriter, or PostgresWriter)."""

    @property
    def store(self) -> IngestStore: ...

    async def call(self, fn: Callable[..., T], *args: Any) -> T: ...

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]: ...


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
    commit_failures: int = 0
    deriver_failures: int = 0
    retained_known: int = 0  # retained states whose value the store already ended with
    handoffs_rescued: int = 0  # due batches the loop's safety net found not handed over (a bug)
    rejected: Counter[str] = field(default_factory=Counter)
    deriver_failures_by: Counter[str] = field(default_factory=Counter)  # per deriver
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
            if f.name not in ("age_at_commit", "rejected", "deriver_failures_by")
        }
        data["rejected"] = dict(self.rejected.copy())
        data["rejected_total"] = sum(self.rejected.values())
        data["deriver_failures_by"] = dict(self.deriver_failures_by.copy())
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
    if isinstance(exc, psycopg.OperationalError):
        return f"PostgreSQL store unreachable ({text})"
    return f"store write failed ({text})"


class IngestCore:
    def __init__(
        self,
        connection: MqttConnection,
        writer: IngestWriter,
        router: Router,
        *,
        batch_max: int = 5000,
        batch_wait: float = 0.0,
        batch_size: int | None = None,
        derivers: Sequence[Deriver] = (),
        min_free_bytes: int = 0,
        retry: CommitRetry | None = None,
        feed: CommittedFeed | None = None,
        seq_base: int = 0,
        shared_store: bool = False,
    ) -> None:
        self.connection = connection
        self.shared_store = shared_store
        # First `seq` this process gives readings stamped on receipt: workers sharing one
        # store each have their own range, so two of them stamping the same device in the
        # same millisecond never take the same sample key (hub.store.postgres worker slots).
        self.seq_base = seq_base
        self.writer = writer
        self.store = writer.store
        self.router = router
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.batch_size = batch_size
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
        self._loop: asyncio.AbstractEventLoop | None = None
        # What the store thread hands back to the loop: a batch whose first commit failed
        # (the retries run on the loop), or an unexpected exception (ingest fails)
        self._handbacks: asyncio.Queue[HandBack] = asyncio.Queue()
        self._stopping = False
        self._busy = False
        self._loaded = False
        # topic -> last (receive ms, seq) key given to its states (store thread only)
        self._last_key: dict[str, tuple[int, int]] = {}
        # Committed batches on their way to the loop's listeners (_committed_soon, and
        # _flush_committed on the loop, which alone touches the timer)
        self._committed_lock = threading.Lock()
        self._committed: list[Committed] = []
        self._flush_armed = False
        self._flush_timer: asyncio.TimerHandle | None = None
        self._last_flush = 0.0

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
        if self._loop is not None:  # run() has handed batches to the store thread
            self.connection.stop_delivering()
        task = self._task
        if task is not None and not task.done():
            await self._finish(task, grace)
        self._flush_committed()  # the listeners see every committed batch before the hub stops

    async def _finish(self, task: asyncio.Task[None], grace: float) -> None:
        deadline = time.monotonic() + grace
        # The batch in hand is in the store thread, or retried by the task: wait for either.
        while (in_hand := self.connection.delivering) and not task.done():
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.01)
        if in_hand and not task.done():
            log.error(
                "Stopping with %d messages not committed (%s); the broker delivers them "
                "again at the next start", self.in_hand, self.stall.reason if self.stall else "busy",
            )  # fmt: skip
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

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
                self.stats.deriver_failures += 1
                count = self.stats.deriver_failures_by[name] = (
                    self.stats.deriver_failures_by[name] + 1
                )
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
            result = self._commit_retrying_sync(batch)
            self.stats.readings_stored += result.stored
            self.stats.derived += len(batch.readings)
            self.stats.duplicates += len(derived) - len(batch.readings)
        return Committed(batch.readings, [], [], time.time_ns() // 1_000_000)

    def close_derivations(self) -> int:
        """Store thread: what derivations hold open (drive sessions) is closed and committed.
        Returns how many records were written."""
        batch = Batch()
        now_ms = time.time_ns() // 1_000_000
        batch.readings = self._derive(batch, lambda d: d.close(), (), now_ms)
        if batch.readings or batch.writes:
            # One attempt, not the retrying commit: a failing store must not hold up shutdown.
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

    @property
    def listeners(self) -> list[Listener]:
        return self.feed.listeners

    def notify(self, committed: Committed) -> None:
        self.feed.publish(committed)

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn` in the store thread (rollups, retention, replays share the writer)."""
        return await self.writer.call(fn, *args)

    async def _run(self) -> None:
        """Batches go from paho's thread straight to the store thread, which commits, acks
        and queues the committed batch for the loop's listeners (`_commit_in_store_thread`,
        `_committed_soon`).
        This task handles only what comes back: a batch whose first commit failed (retried
        here with backoff, stall and health as before) or an unexpected error (raised: the
        supervisor stops the hub)."""
        self._loop = asyncio.get_running_loop()
        self.connection.deliver_batches(
            self._submit, self.batch_max, self.batch_wait, self.batch_size
        )
        try:
            while not self._stopping:
                try:
                    async with asyncio.timeout(until_tick(HANDOFF_CHECK_S)):  # on the tick
                        batch, prepared, failure = await self._handbacks.get()
                except TimeoutError:
                    # A safety net that should never catch anything: a due batch is offered by
                    # paho's thread, or by the store thread when the batch before it is done.
                    if self.connection.offer_overdue(HANDOFF_GRACE_S):
                        self.stats.handoffs_rescued += 1
                        log.warning(
                            "A due batch was not handed to the store thread; taken after %.0f s "
                            "(%d times)", HANDOFF_CHECK_S, self.stats.handoffs_rescued,
                        )  # fmt: skip
                    continue
                if failure is not None and not isinstance(failure, STORE_ERRORS):
                    raise failure
                if prepared is None:
                    prepared = await self._prepare_retrying(batch, failure)
                    if prepared is None:  # stopping while the store fails: redelivered later
                        return
                    failure = None
                committed = await self._commit_retrying(prepared, failure)
                if committed is None:  # stopping while the store fails: redelivered later
                    return
                self._acked(batch)
                self._flush_committed()  # the batches committed before this one come first
                self.notify(committed)
                self.connection.batch_done()
        finally:
            self.connection.stop_delivering()

    def _submit(self, batch: list[Message]) -> None:
        """The connection's sink (paho's thread, or the store thread after a batch): queue the
        batch for the store thread."""
        self._busy = True  # stop() and health() see a batch in hand from here on
        self.in_hand = len(batch)
        try:
            self.writer.submit(self._commit_in_store_thread, batch)
        except RuntimeError as exc:  # the store thread is shut down
            self._hand_back(batch, None, exc)

    def _commit_in_store_thread(self, batch: list[Message]) -> None:
        """Store thread: prepare, commit and ack a batch, then queue it for the loop (the
        listeners) and take the next due batch. A failed commit goes back to the loop."""
        try:
            prepared, committed, failure = self._prepare_commit(batch)
            if committed is None:
                self._hand_back(batch, prepared, failure)
                return
            self._acked(batch)
        except BaseException as exc:
            self._hand_back(batch, None, exc)
            return
        self._committed_soon(committed)
        self.connection.batch_done()

    def _acked(self, batch: list[Message]) -> None:
        """The committed batch is acknowledged and no longer in hand (either thread)."""
        self.connection.ack(batch)
        self.in_hand = 0
        self._busy = False

    def _committed_soon(self, committed: Committed) -> None:
        """Store thread: the listeners get `committed` on the loop. After a quiet spell the
        loop is woken at once; while batches keep coming it takes them with a timer every
        NOTIFY_INTERVAL_S, several at a time, instead of being woken for each (34 times a
        second at 200 msgs/s). Alerts and the live feed are at most that much later."""
        with self._committed_lock:
            self._committed.append(committed)
            if self._flush_armed:  # a flush is coming anyway (a timer, or a wake-up)
                return
            self._flush_armed = True
        self._on_loop(self._flush_committed, False)

    def _flush_committed(self, on_timer: bool = False) -> None:
        """Loop: hand the committed batches waiting to the listeners, in order.

        Woken for a batch that came soon after the last flush (the stream is busy), or on the
        timer with batches waiting (it still is): look again after NOTIFY_INTERVAL_S, taking
        what comes meanwhile without a wake-up. Otherwise disarm, so that the next batch wakes
        the loop at once."""
        if on_timer:
            self._flush_timer = None
        with self._committed_lock:
            batches, self._committed = self._committed, []
            now = time.monotonic()
            busy = bool(batches) and (on_timer or now - self._last_flush < NOTIFY_INTERVAL_S)
            if batches:
                self._last_flush = now
            arm = busy and self._flush_timer is None and self._loop is not None
            self._flush_armed = arm or self._flush_timer is not None
        for committed in batches:
            self.notify(committed)
        if arm:
            assert self._loop is not None
            # On the tick: every fifth flush shares its wake-up with the hub's 1 s tasks.
            self._flush_timer = self._loop.call_later(
                until_tick(NOTIFY_INTERVAL_S), self._flush_committed, True
            )

    def _hand_back(
        self, batch: list[Message], prepared: Prepared | None, failure: BaseException | None
    ) -> None:
        self._on_loop(self._handbacks.put_nowait, (batch, prepared, failure))

    def _on_loop(self, callback: Callable[[Any], object], arg: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the hub is gone
                loop.call_soon_threadsafe(callback, arg)

    def _prepare_commit(
        self, messages: Sequence[Message]
    ) -> tuple[Prepared | None, Committed | None, BaseException | None]:
        """Store thread: prepare a batch and make its first commit attempt."""
        try:
            prepared = self.prepare(messages)
        except STORE_ERRORS as exc:
            return None, None, exc
        try:
            return prepared, self.commit(prepared), None
        except STORE_ERRORS as exc:
            return prepared, None, exc

    async def _prepare_retrying(
        self, batch: Sequence[Message], failure: BaseException | None = None
    ) -> Prepared | None:
        """Prepare reads the store (receipts, which keys are stored): a server store that is
        down fails here before the commit does, and is waited out the same way."""
        return await self._retrying(self.prepare, batch, failure)

    async def _commit_retrying(
        self, prepared: Prepared, failure: BaseException | None = None
    ) -> Committed | None:
        """Commit, retrying with backoff while the store fails; never drops the batch."""
        return await self._retrying(self.commit, prepared, failure)

    async def _retrying(
        self, step: Callable[[A], T], arg: A, failure: BaseException | None
    ) -> T | None:
        """`step(arg)` in the store thread, retried with backoff while the store fails; None
        only when stopping. `failure`: the first attempt, made already, failed with it."""
        attempt = 0
        while True:
            attempt += 1
            if failure is None:
                try:
                    return await self.writer.call(step, arg)
                except STORE_ERRORS as exc:
                    failure = exc
            self._failing(failure)
            failure = None
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
            except STORE_ERRORS as exc:
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
            path = getattr(self.store, "path", None)
            if path is None:  # a server store (PostgreSQL): its disk is not ours to watch
                return
            free = shutil.disk_usage(path.parent).free
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
        stats.duplicates += prepared.duplicates + result.duplicates
        stats.derived += len(prepared.derived)
        stats.events += result.events
        # fresh() and the commit disagree: a bug when this process is the only writer; with
        # workers sharing a store another one may have stored the same key in between (two
        # messages of one series with the same timestamp went to different workers).
        if result.stored != len(batch.readings) and not self.shared_store:
            log.warning(
                "The store inserted %d of %d readings it had found new", result.stored,
                len(batch.readings),
            )  # fmt: skip
        committed_ms = time.time_ns() // 1_000_000
        stats.age_at_commit.extend(committed_ms - stamp for stamp in prepared.own_stamps)
        return Committed(
            [*prepared.live, *prepared.derived],
            batch.events,
            batch.availability,
            committed_ms,
            prepared.last_known,
        )

    def prepare(self, messages: Sequence[Message]) -> Prepared:
        """Decode and derive one batch (store thread). Never raises on bad input.

        Only readings the commit will insert go on: the store is asked which sample keys are
        new before derivations run, so a redelivered message is neither stored nor derived
        nor announced twice, and a retained state the store already holds is not a new
        reading. (Exact because the store thread is the only writer of samples.)
        """
        now_ms = time.time_ns() // 1_000_000
        batch = Batch()
        router = self.router
        store = self.store
        last_key = self._last_key
        this_batch: dict[tuple[int, int], tuple[int, int]] = {}  # receipts not committed yet
        own_stamps: list[int] = []
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
                decoded = dataclasses.replace(decoded, readings=[], events=[])
            batch.add(decoded)
        claimed: set[tuple[object, int, int]] = set()
        live = batch.readings
        new_live = store.fresh(live, claimed) if live else live
        new_known = store.fresh(last_known, claimed) if last_known else last_known
        derived: list[Reading] = []
        if self.derivers and new_live:
            derived = self._derive(batch, lambda d: d.derive(new_live), new_live, now_ms)
        new_derived = store.fresh(derived, claimed) if derived else derived
        batch.readings = [*new_live, *new_known, *new_derived]
        duplicates = len(live) - len(new_live) + len(last_known) - len(new_known)
        return Prepared(
            batch, len(messages), own_stamps, new_live, new_known, new_derived, duplicates
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
                key = (ms, self.seq_base)
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
            if series in newest:
                known: float | None = newest[series]
            else:  # the newest of this batch's live readings, else the store's
                known = next(
                    (x.value for x in reversed(batch.readings)
                     if x.device == r.device and x.metric == r.metric and x.tags == r.tags),
                    None,
                )  # fmt: skip
                if known is None:
                    known = self.store.last_value(r)
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


@dataclass(slots=True)
class Prepared:
    """A decoded and derived batch, ready to commit (and to commit again after a failure)."""

    batch: Batch
    messages: int
    own_stamps: list[int]
    live: list[Reading] = field(default_factory=list)  # new raw readings
    last_known: list[Reading] = field(default_factory=list)  # new retained states
    derived: list[Reading] = field(default_factory=list)  # new derived readings
    duplicates: int = 0  # readings found stored already (or twice in the batch)


# A batch the store thread gives back to the loop: (messages, prepared or None, the failure)
HandBack = tuple[list[Message], Prepared | None, BaseException | None]
