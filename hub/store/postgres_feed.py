"""The change feed of a PostgreSQL store: every committed ingest batch of every worker, for the
leader's singletons (alerts, Home Assistant discovery).

A shared subscription splits the stream, so the leader's own ingest sees only its share. Each
worker's batch transaction therefore also inserts one `feed` row (the batch's readings,
events and availability, orjson) beside its samples: the row exists iff the batch committed.

Reading it exactly once, in order of the writing transactions' ids: `xid` is the writer's
transaction id (pg_current_xact_id(), a 64-bit xid8 that never wraps). Every transaction
below the snapshot's xmin has ended, so the rows with `horizon <= xid < xmin` are final: no
later commit can add one. The leader reads such a slice, hands it to its listeners, and moves
the horizon to the slice's end in PostgreSQL, in the same transaction as the writes its
listeners made for that slice (LeaderDb.hold/release): a new leader resumes exactly where
the old one committed, and nothing the old one did for a slice survives without its cursor.

Fencing: a leader takes the cursor by raising `term`; each of its transactions checks the
term, so a leader that lost the lock (a paused process, a broken lock connection) can commit
nothing after the next one took over.

A long-running write transaction anywhere in the cluster holds xmin back: the feed waits for
it (latency, not loss). Rows below the committed horizon are deleted by the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import psycopg

from hub.store.feed_codec import decode
from hub.store.postgres import redact

if TYPE_CHECKING:
    from hub.ports import Ports

log = logging.getLogger(__name__)
T = TypeVar("T")

CURSOR = "leader"
# At most this many transaction ids per slice: a worker's batch transaction writes one feed
# row, so a slice holds at most this many rows (a backlog after a leaderless minute is read
# in steps instead of at once).
SLICE_XIDS = 256

Job = Callable[[psycopg.Connection[Any]], Any]


# -- the leader's connection -----------------------------------------------------------------


class Fenced(Exception):
    """Another leader took the feed over: this one must not write anymore."""


class LeaderDb:
    """The leader's own connection to PostgreSQL, used from one thread.

    `submit(job)` runs `job(conn)` in a transaction that also checks this leader's term
    (fencing). Between `hold()` and `release(job)` submitted jobs are kept and then run in
    one transaction with `job` (the feed's cursor), each in a savepoint: a failing write is
    counted, the others and the cursor still commit. `term=None` (the CLI, no leader) writes
    without fencing.
    """

    def __init__(self, url: str, name: str, *, connect_timeout: int = 5) -> None:
        self.url = url
        self.name = name
        self.connect_timeout = connect_timeout
        self.term: int | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-leader-db")
        self._lock = threading.Lock()
        self._held: list[tuple[Job, Future[Any]]] | None = None
        self.write_errors = 0
        self.closed = False

    # -- plumbing ------------------------------------------------------------------------------

    def _usable(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = self._conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=self.connect_timeout,
                application_name=f"{self.name}-leader"[:63],
            )  # fmt: skip
        return conn

    def _fence(self, conn: psycopg.Connection[Any]) -> None:
        if self.term is None:
            return
        cur = conn.execute(
            "UPDATE feed_cursor SET updated_ms=%s WHERE name=%s AND term=%s",
            (int(time.time() * 1000), CURSOR, self.term),
        )
        if cur.rowcount != 1:
            raise Fenced(f"{self.name} is fenced: another leader took the feed over")

    def read(self, job: Job) -> Future[Any]:
        """Run a read (no transaction of its own, no fence) on the leader's thread."""
        return self._executor.submit(self._read, job)

    def _read(self, job: Job) -> Any:
        try:
            return job(self._usable())
        except psycopg.OperationalError:
            self._drop()
            raise

    def call(self, job: Job) -> Any:
        """A read, waited for (the caller blocks: only for small reads)."""
        return self.read(job).result()

    def submit(self, job: Job) -> Future[Any]:
        """Run `job(conn)` in a fenced transaction (or in the held group)."""
        with self._lock:
            if self._held is not None:
                future: Future[Any] = Future()
                self._held.append((job, future))
                return future
        return self._executor.submit(self._write, [], job)

    def hold(self) -> None:
        with self._lock:
            if self._held is None:
                self._held = []

    def release(self, last: Job | None = None) -> Future[Any]:
        """Commit the held jobs and `last` in one transaction; the future fails (and nothing
        of the group is committed) when the transaction does, so the caller can retry it."""
        with self._lock:
            held, self._held = self._held or [], None
        return self._executor.submit(self._group, held, last)

    def _group(self, held: list[tuple[Job, Future[Any]]], last: Job | None) -> Any:
        results: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            conn = self._usable()
            with conn.transaction():
                self._fence(conn)
                for job, future in held:
                    try:
                        with conn.transaction():  # a savepoint: one bad row spoils nothing else
                            results.append((future, job(conn), None))
                    except (psycopg.OperationalError, Fenced):
                        raise  # the connection is gone: the whole group is retried
                    except Exception as exc:  # this job's bug or bad row: not the others'
                        results.append((future, None, exc))
                result = last(conn) if last is not None else None
        except BaseException as exc:
            if isinstance(exc, psycopg.OperationalError):
                self._drop()
            if isinstance(exc, Fenced):
                for _, future in held:
                    future.set_exception(exc)
                raise
            # Not committed: hand the jobs back so a retry of the group runs them again.
            with self._lock:
                self._held = held + (self._held or [])
            raise
        for future, value, error in results:
            if error is None:
                future.set_result(value)
            else:
                self.write_errors += 1
                future.set_exception(error)
        return result

    def _write(self, _: list[Any], job: Job) -> Any:
        for attempt in range(3):
            try:
                conn = self._usable()
                with conn.transaction():
                    self._fence(conn)
                    return job(conn)
            except psycopg.OperationalError as exc:
                self._drop()
                if attempt == 2:
                    self.write_errors += 1
                    raise
                log.warning("Leader store write failed (%s); retrying", exc)
                time.sleep(0.5 * (attempt + 1))
            except Exception:
                self.write_errors += 1
                raise
        raise AssertionError("unreachable")

    def flush(self) -> None:
        """Wait until every write submitted so far is done. A held group is not committed:
        its writes belong to a feed slice and commit only with that slice's cursor."""
        self._executor.submit(lambda: None).result()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with self._lock:
            held, self._held = self._held or [], None
        for _, future in held:  # a slice never committed: the next leader reads it again
            future.set_exception(Fenced(f"{self.name} stopped before the slice committed"))
        self.flush()
        self._executor.submit(self._drop).result()
        self._executor.shutdown(wait=True)

    # -- the cursor ----------------------------------------------------------------------------

    def take_over(self) -> int:
        """Become the feed's reader: raise the term (fencing the previous leader, waiting for
        its transaction in flight, if any) and return the horizon it committed."""

        def run(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                row = conn.execute(
                    "UPDATE feed_cursor SET term=term+1, holder=%s, updated_ms=%s WHERE name=%s "
                    "RETURNING horizon::text, term",
                    (self.name, int(time.time() * 1000), CURSOR),
                ).fetchone()
                if row is None:
                    raise psycopg.DataError("feed_cursor has no leader row (schema < 5?)")
            self.term = int(row[1])
            return int(row[0])

        return int(self._executor.submit(self._read, run).result())


# -- reading slices ------------------------------------------------------------------------------


class Slice(NamedTuple):
    end: int  # the next horizon
    rows: list[tuple[int, bytes]]  # (id, payload), ordered by id
    more: bool  # the slice stopped short of xmin: more final rows may follow at once


def read_slice(conn: psycopg.Connection[Any], horizon: int) -> Slice:
    """The final rows from `horizon` on. The slice ends at the snapshot's xmin, or sooner: at
    most SLICE_XIDS transaction ids past its first row (each batch transaction writes one
    row, so a slice holds at most that many)."""
    row = conn.execute(
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, "
        "(SELECT min(xid) FROM feed WHERE xid >= %s::text::xid8)::text",
        (str(horizon),),
    ).fetchone()
    assert row is not None
    xmin = int(row[0])
    if row[1] is None or int(row[1]) >= xmin:
        return Slice(max(horizon, xmin), [], False)
    end = min(xmin, int(row[1]) + SLICE_XIDS)
    rows = conn.execute(
        "SELECT id, payload FROM feed WHERE xid >= %s::text::xid8 AND xid < %s::text::xid8 "
        "ORDER BY id",
        (str(horizon), str(end)),
    ).fetchall()
    return Slice(end, [(int(i), bytes(p)) for i, p in rows], end < xmin)


def save_horizon(horizon: int) -> Job:
    def run(conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "UPDATE feed_cursor SET horizon=%s::text::xid8 WHERE name=%s", (str(horizon), CURSOR)
        )

    return run


# -- the leader component ------------------------------------------------------------------------


class FeedComponent:
    """Tails the feed on the leader and publishes each batch to the leader's committed port.

    Registered first among the leader's components, so it is the one that takes the cursor
    over (and fences the previous leader) before the others load their state; they reach
    its LeaderDb through `ports.find("feed").db`."""

    name = "feed"
    cleanup_every = 5.0  # seconds between deletions of the rows below the committed horizon

    def __init__(self, ports: Ports, url: str, poll: float = 0.1) -> None:
        self.ports = ports
        self.poll = poll
        self.db = LeaderDb(url, ports.publisher.client_id)
        self.horizon = 0
        self.rows = 0
        self.readings = 0
        self.bad_rows = 0
        self.deleted = 0
        self.slices = 0
        self.commit_failures = 0
        self.last_error = ""
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.fenced = False
        self._busy = asyncio.Lock()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.horizon = await loop.run_in_executor(None, self.db.take_over)
        log.info(
            "Feed: %s reads committed batches from xid %d on (term %d)",
            self.db.name, self.horizon, self.db.term,
        )  # fmt: skip

    def begin(self) -> None:
        """Start delivering: called once every leader component has started (subscribed),
        so no slice goes by before its listeners are there."""
        if self._task is None:
            self._task = self.ports.spawn("feed", self._run, restart=True)

    async def _run(self) -> None:
        """Until cancelled (stop() waits for the slice in hand first)."""
        next_cleanup = time.monotonic() + self.cleanup_every
        while True:
            if self._stopping or self.fenced:
                await asyncio.Event().wait()  # parked until stop() cancels the task
            async with self._busy:
                start = self.horizon
                try:
                    end, rows, more = await asyncio.wrap_future(
                        self.db.read(functools.partial(read_slice, horizon=start))
                    )
                except psycopg.Error as exc:
                    self._failed("feed not readable", exc)
                    end, rows, more = start, [], False
                else:
                    if self.last_error and not rows:
                        log.info("The feed works again")
                        self.last_error = ""
                try:
                    if rows:
                        self._deliver(rows)
                        await self._commit(end)
                    self.horizon = end
                    if time.monotonic() >= next_cleanup:
                        next_cleanup = time.monotonic() + self.cleanup_every
                        await self._cleanup()
                except Fenced as exc:
                    # Any write of this leader can find it: the commit of a slice, or the
                    # cleanup after a PostgreSQL restart moved the lock to another worker.
                    self.fenced = True
                    self.last_error = str(exc)
                    log.error("%s; the feed stops here", exc)
                    continue
            if not more:  # caught up: wait for more
                await asyncio.sleep(self.poll)

    def _failed(self, what: str, exc: BaseException) -> None:
        self.commit_failures += 1
        if not self.last_error:
            log.warning("%s (%s); retrying", what, exc)
        self.last_error = f"{what}: {exc}"

    def _deliver(self, rows: list[tuple[int, bytes]]) -> None:
        """Hand the slice to the listeners; their writes join the cursor's transaction."""
        committed = self.ports.committed
        now = int(time.time() * 1000)
        self.db.hold()
        for row_id, payload in rows:
            try:
                batch = decode(payload, now)
            except (ValueError, TypeError, IndexError) as exc:
                self.bad_rows += 1
                log.error("Feed row %d cannot be read (%s): skipped", row_id, exc)
                continue
            self.rows += 1
            self.readings += len(batch.readings)
            committed.publish(batch)
        self.slices += 1

    async def _commit(self, end: int) -> None:
        """The listeners' writes and the new horizon, in one transaction; retried until it
        commits (fenced: stop; the new leader re-reads the slice from its cursor)."""
        delay = 0.2
        while True:
            try:
                await asyncio.wrap_future(self.db.release(save_horizon(end)))
                if self.last_error:
                    log.info("The feed works again")
                    self.last_error = ""
                return
            except Fenced:
                raise
            except psycopg.Error as exc:
                self._failed("feed cursor not committed", exc)
                self.db.hold()  # the failed group's jobs were handed back into the hold
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _cleanup(self) -> None:
        horizon = self.horizon

        def run(conn: psycopg.Connection[Any]) -> int:
            cur = conn.execute(
                "DELETE FROM feed WHERE xid < (SELECT horizon FROM feed_cursor WHERE name=%s) "
                "AND xid < %s::text::xid8",
                (CURSOR, str(horizon)),
            )
            return max(cur.rowcount, 0)

        try:
            self.deleted += await asyncio.wrap_future(self.db.submit(run))
        except psycopg.Error as exc:
            log.warning("Old feed rows not deleted: %s", exc)

    async def stop(self) -> None:
        """Let the slice in hand commit (up to 10 s), then stop reading."""
        self._stopping = True
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self._busy.acquire()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await asyncio.get_running_loop().run_in_executor(None, self.db.close)

    def status(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon,
            "term": self.db.term,
            "rows": self.rows,
            "readings": self.readings,
            "slices": self.slices,
            "bad_rows": self.bad_rows,
            "deleted": self.deleted,
            "commit_failures": self.commit_failures,
            "write_errors": self.db.write_errors,
            "health": {
                "status": "degraded" if self.last_error else "ok",
                "reason": self.last_error,
            },
        }


def build(ports: Ports) -> FeedComponent | None:
    url = ports.config.store.url
    if not url:
        return None
    log.debug("Feed of %s", redact(url))
    return FeedComponent(ports, url)
