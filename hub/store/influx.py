"""The InfluxDB forwarder: outbox rows -> line protocol -> the official influxdb-client.

Schema (one measurement per metric family, the metric is the field):

    air,device=airq-1,location=living\\ room,sensor=pm_2_5,source=mqtt pm2_5=12.5 1732262400250

- measurement: the catalog `family` of the metric (`air`, `rc`, `state`; unknown metrics go to
  `influx.unknown_measurement`);
- tags: `device`, `location` (from `influx.locations`, else the reading's own `location` tag),
  `source`, plus the reading's tags (`sensor`, `session`, ...), sorted by key;
- one float field named by the metric; timestamps in ms or ns as configured.

Delivery: a batch leaves the outbox only after the server acknowledged it (2xx). Transient
failures (refused connections, timeouts, 5xx, 429/503 with Retry-After) retry the SAME batch
with exponential backoff and full jitter, so order per series is kept. Permanent refusals
(400/422 parse errors, 413 too large, 404 bucket) split the batch in halves to isolate the bad
points, which become dead letters with the server's reason; the rest proceeds. 401/403 pause
forwarding with a clear status instead of filling the dead-letter table.

The line protocol is built as plain strings and handed to the client as one body: the client's
Point objects cost ~5x more per reading (see bench/influx.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http.client
import logging
import math
import random
import shutil
import sqlite3
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import orjson

from hub.model import CATALOG
from hub.store import outbox
from hub.store.influx_settings import InfluxSettings
from hub.store.outbox import OutboxRow
from hub.store.sqlite import Store, connect

if TYPE_CHECKING:
    from hub.ports import Ports

log = logging.getLogger(__name__)

T = TypeVar("T")

FIXED_TAGS = ("device", "location", "source")

# Dead-letter reasons (dead_letters.reason, source 'influx').
BAD_REQUEST = "influx_bad_request"  # 400/422: the server could not parse or accept the points
TOO_LARGE = "influx_too_large"  # 413 even for a single point
NOT_FOUND = "influx_not_found"  # 404: bucket (or org) does not exist
REFUSED = "influx_refused"  # any other 4xx
UNREPRESENTABLE = "influx_unrepresentable"  # inf: line protocol has no way to write it

_ESCAPE_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ ", "\n": " "})
_ESCAPE_KEY = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\n": " "})


def escape_measurement(name: str) -> str:
    return name.translate(_ESCAPE_MEASUREMENT)


def escape_key(text: str) -> str:
    """Tag keys, tag values and field keys."""
    return text.translate(_ESCAPE_KEY)


@dataclass(frozen=True, slots=True)
class SeriesKey:
    device: str
    metric: str
    tags: Mapping[str, str]
    source: str | None


class LineWriter:
    """Series -> line protocol prefix ("measurement,tags field="); rows -> lines. Pure."""

    def __init__(
        self,
        precision: Literal["ms", "ns"] = "ms",
        locations: Mapping[str, str] | None = None,
        unknown_measurement: str = "other",
    ) -> None:
        self.precision = precision
        self.suffix = "000000" if precision == "ns" else ""
        self.locations = dict(locations or {})
        self.unknown_measurement = unknown_measurement

    def measurement(self, metric: str) -> str:
        spec = CATALOG.get(metric)
        return spec.family if spec is not None else self.unknown_measurement

    def tags(self, key: SeriesKey) -> dict[str, str]:
        tags = {k: v for k, v in key.tags.items() if k not in ("device", "source")}
        location = self.locations.get(key.device)
        if location:
            tags["location"] = location
        tags["device"] = key.device
        if key.source:
            tags["source"] = key.source
        return {k: v for k, v in tags.items() if k and v}  # InfluxDB refuses empty tag values

    def prefix(self, key: SeriesKey) -> str:
        tags = self.tags(key)
        tag_text = "".join(f",{escape_key(k)}={escape_key(tags[k])}" for k in sorted(tags))
        return f"{escape_measurement(self.measurement(key.metric))}{tag_text} {escape_key(key.metric)}="

    def line(self, prefix: str, ts_ms: int, value: float) -> str:
        return f"{prefix}{value!r} {ts_ms}{self.suffix}"


# -- sending -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteResult:
    kind: Literal["ok", "transient", "rejected", "auth"]
    status: int | None = None
    message: str = ""
    retry_after: float | None = None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(status: int, message: str, retry_after: str | None = None) -> WriteResult:
    """What an HTTP status means for the batch that got it."""
    if 200 <= status < 300:
        return WriteResult("ok", status)
    if status in (401, 403):
        return WriteResult("auth", status, message)
    if status in (408, 429) or status >= 500:
        return WriteResult("transient", status, message, parse_retry_after(retry_after))
    return WriteResult("rejected", status, message)


def reason_for(status: int | None) -> str:
    if status in (400, 422):
        return BAD_REQUEST
    if status == 413:
        return TOO_LARGE
    if status == 404:
        return NOT_FOUND
    return REFUSED


class InfluxSender:
    """Synchronous writes through the official influxdb-client (v2 API, no client retries)."""

    def __init__(self, settings: InfluxSettings) -> None:
        from influxdb_client import InfluxDBClient, WritePrecision
        from influxdb_client.client.write_api import SYNCHRONOUS

        token = settings.token.get_secret_value() if settings.token else ""
        self.settings = settings
        self.client = InfluxDBClient(
            url=settings.url,
            token=token,
            org=settings.org or "-",
            timeout=int(settings.timeout * 1000),
            verify_ssl=settings.verify_tls,
            retries=False,  # retries are ours: same batch, backoff with jitter, order kept
        )
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)
        self.target = f"{settings.url.rstrip('/')}/{settings.bucket}"
        self.precision = WritePrecision.NS if settings.precision == "ns" else WritePrecision.MS

    def write(self, body: str) -> WriteResult:
        from influxdb_client.client.exceptions import InfluxDBError
        from influxdb_client.rest import ApiException

        try:
            self.write_api.write(
                bucket=self.settings.bucket,
                org=self.settings.org or "-",
                record=body,
                write_precision=self.precision,  # type: ignore[arg-type]
            )
        except ApiException as exc:
            message = getattr(exc, "message", None) or _text(exc.body) or str(exc.reason)
            return classify(int(exc.status or 0), str(message), exc.retry_after)
        except InfluxDBError as exc:
            return WriteResult("transient", None, str(exc.message))
        except Exception as exc:  # urllib3: refused, reset, timeouts, DNS
            return WriteResult("transient", None, _describe(exc))
        return WriteResult("ok", 204)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


class RawSender:
    """A bare HTTP POST of the same body to /api/v2/write (the bench's ceiling)."""

    def __init__(self, settings: InfluxSettings) -> None:
        parsed = urllib.parse.urlsplit(settings.url)
        self.host = parsed.hostname or "localhost"
        self.port = parsed.port or 8086
        query = urllib.parse.urlencode(
            {"org": settings.org or "-", "bucket": settings.bucket, "precision": settings.precision}
        )
        self.path = f"{parsed.path.rstrip('/')}/api/v2/write?{query}"
        token = settings.token.get_secret_value() if settings.token else ""
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "text/plain"}
        self.timeout = settings.timeout
        self.conn: http.client.HTTPConnection | None = None
        self.target = settings.url

    def write(self, body: str) -> WriteResult:
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.request("POST", self.path, body.encode(), self.headers)
            response = self.conn.getresponse()
            data = response.read()
            return classify(response.status, _text(data), response.getheader("Retry-After"))
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return WriteResult("transient", None, _describe(exc))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _text(body: Any) -> str:
    if body is None:
        return ""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        parsed = orjson.loads(body)
        if isinstance(parsed, dict) and "message" in parsed:
            return str(parsed["message"])
    except orjson.JSONDecodeError:
        pass
    return str(body)[:2000]


def _describe(exc: BaseException) -> str:
    # urllib3 wraps the socket error a few levels down; the innermost says what happened.
    inner: BaseException = exc
    while getattr(inner, "reason", None) is not None and isinstance(inner.reason, BaseException):  # type: ignore[attr-defined]
        inner = inner.reason  # type: ignore[attr-defined]
    return f"{type(inner).__name__}: {inner}"[:500]


# -- the forwarder -------------------------------------------------------------------------------

WriteFn = Callable[[Callable[[sqlite3.Connection], T]], Awaitable[T]]


class Sender(Protocol):
    target: str

    def write(self, body: str) -> WriteResult: ...

    def close(self) -> None: ...


@dataclass
class ForwarderStats:
    delivered: int = 0
    batches: int = 0
    retries: int = 0
    dead_lettered: int = 0  # points, this run
    dead_letters: int = 0  # rows in the table (source 'influx'), refreshed
    last_error: str | None = None
    last_error_at: float | None = None
    last_delivery_at: float | None = None
    window: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    def rate(self, now: float) -> float:
        while self.window and now - self.window[0][0] > 10.0:
            self.window.popleft()
        if not self.window:
            return 0.0
        span = max(1.0, now - self.window[0][0])
        return sum(n for _, n in self.window) / span


class Forwarder:
    """Reads the outbox, sends batches, records what the server acknowledged or refused.

    `write(fn)` runs `fn(conn)` in a transaction on the store's writer connection (in the hub:
    the ingest core's store thread). Reads use a connection of their own.
    """

    def __init__(
        self,
        settings: InfluxSettings,
        db_path: Path,
        write: WriteFn[Any],
        sender: Sender | None = None,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.db_path = Path(db_path)
        self.write = write
        self.sender: Sender = sender if sender is not None else InfluxSender(settings)
        self.lines = LineWriter(
            settings.precision, settings.locations, settings.unknown_measurement
        )
        self.rng = rng
        self.stats = ForwarderStats()
        self.state = "starting"
        self.detail = ""
        self.outbox_state: outbox.OutboxState | None = None
        self.max_rows = outbox.max_rows_for(settings.max_outbox)
        self.disk_low = False
        self._prefixes: dict[int, str] = {}
        self._reader: sqlite3.Connection | None = None
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="influx-db")
        self._net_thread = ThreadPoolExecutor(1, thread_name_prefix="influx-net")
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_refused = 0
        self._last_refusal_log = 0.0

    # -- plumbing

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, fn, *args)

    def _conn(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = connect(self.db_path, readonly=True)
        return self._reader

    def wake(self, *_: object) -> None:
        self._wake.set()

    async def _sleep(self, seconds: float, wakeable: bool = False) -> None:
        """Sleep, cut short by stop (and by new readings when `wakeable`)."""
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if wakeable:
            self._wake.clear()
            waits.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    # -- outbox bookkeeping

    async def configure(self) -> None:
        self.max_rows = outbox.max_rows_for(self.settings.max_outbox)
        await self.write(lambda conn: outbox.configure(conn, True, self.max_rows))
        await self.refresh()

    def _read_state(self) -> tuple[outbox.OutboxState, int]:
        conn = self._conn()
        st = outbox.state(conn)
        letters = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE source = ? AND replayed_ts IS NULL",
            (outbox.DEAD_LETTER_SOURCE,),
        ).fetchone()[0]
        return st, int(letters)

    async def refresh(self) -> None:
        """Outbox figures for status(); the free-disk guard; loud refusal reports."""
        st, letters = await self._db(self._read_state)
        self.outbox_state, self.stats.dead_letters = st, letters
        try:
            free = shutil.disk_usage(self.db_path.parent).free
        except OSError:
            free = None
        low = free is not None and free < self.settings.min_free_disk
        if low != self.disk_low:
            self.disk_low = low
            # Low disk: keep what is queued, queue nothing new until space comes back.
            bound = min(self.max_rows, st.backlog) if low else self.max_rows
            await self.write(lambda conn: outbox.configure(conn, True, bound))
            if low:
                log.error(
                    "Free disk space is below influx.min_free_disk (%d bytes free): new readings "
                    "are stored but no longer queued for InfluxDB",
                    free,
                )
            else:
                log.warning("Free disk space is back: queueing for InfluxDB again")
        if st.refused > self._last_refused:
            now = time.monotonic()
            if now - self._last_refusal_log >= 10.0 or self._last_refused == 0:
                self._last_refusal_log = now
                log.error(
                    "InfluxDB outbox is full (%d undelivered readings, budget influx.max_outbox "
                    "%d bytes): %d new readings were stored locally but NOT queued for InfluxDB "
                    "(%d in total). Fix the server, raise the budget, then 'hub influx backfill'.",
                    st.backlog,
                    self.settings.max_outbox,
                    st.refused - self._last_refused,
                    st.refused,
                )
            self._last_refused = st.refused

    def _load_prefixes(self, series_ids: set[int]) -> None:
        missing = [s for s in series_ids if s not in self._prefixes]
        if not missing:
            return
        conn = self._conn()
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for sid, device, metric, tags, source in conn.execute(
                f"SELECT id, device, metric, tags, source FROM series WHERE id IN ({marks})", chunk
            ):
                key = SeriesKey(device, metric, orjson.loads(tags) if tags else {}, source)
                self._prefixes[sid] = self.lines.prefix(key)

    def _read(self, after_id: int, limit: int) -> list[OutboxRow]:
        rows = outbox.read_batch(self._conn(), after_id, limit)
        self._load_prefixes({r.series_id for r in rows})
        return rows

    def body(self, rows: Sequence[OutboxRow]) -> str:
        prefixes, suffix = self._prefixes, self.lines.suffix
        return "\n".join([f"{prefixes[r.series_id]}{r.value!r} {r.ts}{suffix}" for r in rows])

    # -- the loop

    async def run(self) -> None:
        cursor = 0
        last_refresh = 0.0
        linger_since: float | None = None
        await self.configure()
        while not self._stopping.is_set():
            now = time.monotonic()
            if now - last_refresh >= 1.0:
                last_refresh = now
                await self.refresh()
            rows = await self._db(self._read, cursor, self.settings.batch_size)
            if not rows:
                self._set_state("idle", "")
                linger_since = None
                await self._sleep(1.0, wakeable=True)
                continue
            if len(rows) < self.settings.batch_size:
                # A partial batch waits up to `linger` for more readings to share the request.
                if linger_since is None:
                    linger_since = now
                if now - linger_since < self.settings.linger:
                    await self._sleep(self.settings.linger - (now - linger_since))
                    if not self._stopping.is_set():
                        continue
            linger_since = None
            if not await self.send(rows):
                break  # stopping with the batch undelivered: it stays queued
            cursor = rows[-1].id
        await self.refresh()

    async def send(self, rows: Sequence[OutboxRow]) -> bool:
        """Deliver `rows` (in order) or dead-letter what the server refuses for good.

        Returns False only when stopping interrupted it; the rows then stay queued.
        """
        finite = [r for r in rows if math.isfinite(r.value)]
        if len(finite) != len(rows):
            bad = [r for r in rows if not math.isfinite(r.value)]
            await self._dead_letter(bad, UNREPRESENTABLE, "InfluxDB cannot store inf/nan")
            rows = finite
        if not rows:
            return True
        return await self._send(rows)

    async def _send(self, rows: Sequence[OutboxRow]) -> bool:
        body = self.body(rows)
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            self._set_state("forwarding" if attempt == 0 else "retrying", self.detail)
            result = await loop.run_in_executor(self._net_thread, self.sender.write, body)
            if result.kind == "ok":
                first, last = rows[0].id, rows[-1].id
                await self.write(partial(_delivered, first=first, last=last))
                now = time.monotonic()
                self.stats.delivered += len(rows)
                self.stats.batches += 1
                self.stats.window.append((now, len(rows)))
                self.stats.last_delivery_at = time.time()
                if self.state != "forwarding":
                    log.info("InfluxDB %s accepts writes again", self.sender.target)
                self._set_state("forwarding", "")
                return True
            self._error(result)
            if result.kind == "rejected":
                if len(rows) > 1 and result.status != 404:
                    middle = len(rows) // 2
                    return await self._send(rows[:middle]) and await self._send(rows[middle:])
                await self._dead_letter(
                    rows, reason_for(result.status), f"HTTP {result.status}: {result.message}", body
                )
                return True
            if self._stopping.is_set():
                return False
            if result.kind == "auth":
                self._set_state(
                    "paused_auth",
                    f"InfluxDB refused the token (HTTP {result.status}: {result.message}); "
                    f"forwarding is paused, readings stay queued. Check influx.token and its "
                    f"write permission on bucket {self.settings.bucket!r}. Next try in "
                    f"{self.settings.auth_retry:.0f} s.",
                )
                if attempt == 0 or self.state != "paused_auth":
                    log.error("%s", self.detail)
                await self._sleep(self.settings.auth_retry)
            else:
                delay = self.backoff(attempt, result.retry_after)
                self.stats.retries += 1
                self._set_state(
                    "retrying",
                    f"{result.message or 'HTTP ' + str(result.status)}; retry {attempt + 1} in {delay:.1f} s",
                )
                if attempt == 0:
                    log.warning(
                        "InfluxDB %s unavailable (%s); retrying with backoff, readings stay queued",
                        self.sender.target,
                        result.message or f"HTTP {result.status}",
                    )
                await self._sleep(delay)
            if self._stopping.is_set():
                return False
            attempt += 1

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter on an exponential ceiling; the server's Retry-After is a floor."""
        ceiling = min(self.settings.retry_max, self.settings.retry_min * (2**attempt))
        delay = self.settings.retry_min / 2 + self.rng() * (ceiling - self.settings.retry_min / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.settings.retry_max * 5))
        return delay

    async def _dead_letter(
        self, rows: Sequence[OutboxRow], reason: str, detail: str, body: str | None = None
    ) -> None:
        payload = (body if body is not None else self.body(rows)).encode()
        target = self.sender.target
        now_ms = time.time_ns() // 1_000_000
        await self.write(
            lambda conn: outbox.dead_letter(conn, rows, now_ms, target, reason, detail, payload)
        )
        self.stats.dead_lettered += len(rows)
        self.stats.dead_letters += 1
        log.warning(
            "InfluxDB refused %d point(s) for good (%s): %s. They are in the dead letters "
            "('hub deadletters list --source influx'); the rest proceeds.",
            len(rows),
            reason,
            detail[:300],
        )

    def _error(self, result: WriteResult) -> None:
        self.stats.last_error = (
            f"HTTP {result.status}: {result.message}" if result.status else result.message
        )
        self.stats.last_error_at = time.time()

    def _set_state(self, state: str, detail: str) -> None:
        self.state, self.detail = state, detail

    async def stop(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        self.sender.close()
        self._net_thread.shutdown(wait=False, cancel_futures=True)
        self._db_thread.shutdown(wait=True)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- health

    def status(self) -> dict[str, Any]:
        st = self.outbox_state
        now_ms = time.time() * 1000
        lag = (now_ms - st.oldest_ts) / 1000 if st and st.oldest_ts is not None else 0.0
        state = self.state
        full = bool(st and st.enabled and st.backlog >= st.max_rows) or self.disk_low
        if full and state not in ("paused_auth",):
            state = "outbox_full"
        backlog = st.backlog if st else 0
        rate = self.stats.rate(time.monotonic())
        summary = {
            "idle": "up to date",
            "forwarding": f"forwarding, {backlog} queued",
            "retrying": f"server unavailable, {backlog} queued, retrying: {self.detail}",
            "paused_auth": self.detail,
            "outbox_full": f"OUTBOX FULL: {backlog} queued, new readings not queued ({st.refused if st else 0} refused)"
            + (" - free disk below influx.min_free_disk" if self.disk_low else ""),
            "starting": "starting",
        }.get(state, state)
        return {
            "state": state,
            "summary": summary,
            "target": self.sender.target,
            "backlog": backlog,
            "lag_s": round(max(0.0, lag), 3),
            "delivered": self.stats.delivered,
            "delivered_per_s": round(rate, 1),
            "batches": self.stats.batches,
            "retries": self.stats.retries,
            "dead_letters": self.stats.dead_letters,
            "dead_lettered_points": self.stats.dead_lettered,
            "refused": st.refused if st else 0,
            "outbox_max_rows": self.max_rows,
            "disk_low": self.disk_low,
            "last_error": self.stats.last_error,
            "last_error_at": self.stats.last_error_at,
        }


def _delivered(conn: sqlite3.Connection, first: int, last: int) -> int:
    return outbox.delivered(conn, first, last)


# -- writers outside the hub (CLI, bench, tests) ---------------------------------------------


class StoreWriter:
    """`write(fn)` for a standalone Store: one thread owns its writer connection."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="store-writer")

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self.store.transaction() as conn:
            return fn(conn)

    async def __call__(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, fn)

    def close(self) -> None:
        self._thread.shutdown(wait=True)


# -- the hub component ---------------------------------------------------------------------------


class InfluxComponent:
    name = "influx"

    def __init__(self, ports: Ports) -> None:
        self.ports = ports
        # Every outbox write goes through the store writer, in its thread and transaction.
        self.forwarder = Forwarder(ports.config.influx, ports.writer.path, ports.writer.transaction)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.ports.committed.subscribe(self.forwarder.wake)
        await self.forwarder.configure()
        self._task = self.ports.spawn("influx-forwarder", self._run, restart=True)
        log.info(
            "Forwarding readings to InfluxDB %s (%d queued)",
            self.forwarder.sender.target,
            self.forwarder.outbox_state.backlog if self.forwarder.outbox_state else 0,
        )

    async def _run(self) -> None:
        try:
            await self.forwarder.run()
        except Exception:
            # The supervisor logs it and starts the forwarder again; nothing leaves the outbox
            # before the server acknowledged it, so a restart resends at most the batch in flight.
            self.forwarder._set_state("failed", "forwarder crashed and restarts, see the log")
            raise

    async def stop(self) -> None:
        self.ports.committed.unsubscribe(self.forwarder.wake)
        await self.forwarder.stop()
        if self._task is not None:
            # An in-flight write finishes (bounded by influx.timeout) so an acknowledged batch
            # is recorded as delivered and not sent twice after the restart.
            try:
                await asyncio.wait_for(self._task, self.forwarder.settings.timeout + 5)
            except TimeoutError:
                log.warning("InfluxDB forwarder did not stop in time")
        self.forwarder.close()

    def status(self) -> dict[str, Any]:
        return self.forwarder.status()


class OutboxOffComponent:
    """Influx was switched off: stop queueing (what is queued stays for a later `enabled`)."""

    name = "influx"

    def __init__(self, ports: Ports) -> None:
        self.writer = ports.writer
        self.queued = 0

    @staticmethod
    def _off(conn: sqlite3.Connection) -> int:
        outbox.configure(conn, False, 0)
        return outbox.state(conn).backlog

    async def start(self) -> None:
        self.queued = await self.writer.transaction(self._off)
        log.info(
            "InfluxDB forwarding is off; %d readings stay queued for when it is on again",
            self.queued,
        )

    async def stop(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"state": "disabled", "summary": "disabled", "backlog": self.queued}


def build(ports: Ports) -> InfluxComponent | OutboxOffComponent | None:
    if ports.config.influx.enabled:
        return InfluxComponent(ports)
    conn = ports.reader.open()
    try:
        row = conn.execute("SELECT enabled FROM outbox_control WHERE id = 1").fetchone()
    finally:
        conn.close()
    if row is not None and row[0]:
        return OutboxOffComponent(ports)
    return None
