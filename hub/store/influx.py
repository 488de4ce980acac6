"""The InfluxDB forwarder: outbox rows -> line protocol -> the official influxdb-client.

Schema (one measurement per metric family, the metric is the field):

    air,device=airq-1,location=living\\ room,sensor=pm_2_5,source=mqtt pm2_5=12.5 1732262400250

- measurement: the catalog `family` of the metric (`air`, `rc`, `state`; unknown metrics go to
  `influx.unknown_measurement`);
- tags: `device`, `location` (from `influx.locations`, else the reading's own `location` tag),
  `source`, plus the reading's tags (`sensor`, `session`, ...), sorted by key;
- one float field named by the metric; timestamps in ms or ns as configured.

Delivery: a batch leaves the outbox only after the server acknowledged it (2xx). Transient
failures (timeouts, 5xx, 429/503 with Retry-After) retry the SAME batch with exponential
backoff and full jitter, so order per series is kept. When the server cannot be reached at all
(refused, reset, unresolvable), a cheap probe of its /health (or /ping) runs every
`probe_interval` during the backoff and the batch goes out as soon as the server answers.
Permanent refusals (400/422 parse errors, 413 too large, 404 bucket) split the batch in halves
to isolate the bad points, which become ONE dead letter per batch and reason (count, first
point, the server's message); the rest proceeds. 401/403 pause forwarding with a clear status
instead of filling the dead-letter table.

Truth while it waits: a monitor task refreshes the outbox figures twice a second, whatever the
send loop does; status() carries a `health` entry (ok / degraded with a reason) that the hub
aggregates into /api/health. The log says each thing once: delivery failing, delivery back,
outbox full (and once a minute while it stays full), outbox has room again.

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
import re
import shutil
import socket
import sqlite3
import ssl
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import orjson

from hub.model import CATALOG
from hub.store import outbox
from hub.store.influx_settings import InfluxSettings
from hub.store.outbox import OutboxRow
from hub.store.outbox_access import OutboxAccess, SqliteOutbox
from hub.store.sqlite import Store

if TYPE_CHECKING:
    from hub.ports import CommittedFeed, Ports, Spawn

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

    def probe(self) -> bool:
        return probe_server(
            self.settings.url, min(2.0, self.settings.timeout), self.settings.verify_tls
        )

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
        self.settings = settings

    def probe(self) -> bool:
        return probe_server(
            self.settings.url, min(2.0, self.settings.timeout), self.settings.verify_tls
        )

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


_OBJECT_REPR = re.compile(r"<[^<>]* object at 0x[0-9a-fA-F]+>:?\s*")


def _describe(exc: BaseException) -> str:
    """A readable reason for a failed request: 'connection refused', 'no answer in time'.

    urllib3 wraps the socket error a few levels down (MaxRetryError -> NewConnectionError ->
    ConnectionRefusedError) and its text starts with an object repr; say what happened instead.
    """
    chain: list[BaseException] = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        chain.append(item)
        reason = getattr(item, "reason", None)
        todo += [reason if isinstance(reason, BaseException) else None, item.__cause__]
        todo.append(item.__context__)
    names = {type(e).__name__ for e in chain}
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if any(isinstance(e, ConnectionResetError | BrokenPipeError) for e in chain):
        return "the connection was reset"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "the host name does not resolve"
    if any(isinstance(e, ssl.SSLError) for e in chain):
        ssl_error = next(e for e in chain if isinstance(e, ssl.SSLError))
        return f"TLS failed: {_OBJECT_REPR.sub('', str(ssl_error))}"[:300]
    if any(isinstance(e, TimeoutError | socket.timeout) for e in chain) or any(
        "Timeout" in n for n in names
    ):
        return "no answer in time (influx.timeout)"
    inner = chain[-1] if chain else exc
    for item in chain:
        if isinstance(item, OSError) and item.strerror:
            return str(item.strerror).lower()[:300]
    text = _OBJECT_REPR.sub("", str(inner)).strip() or type(inner).__name__
    return text[:300]


def probe_server(url: str, timeout: float, verify_tls: bool = True) -> bool:
    """Does the server answer at all? GET /health (InfluxDB 2/3, VictoriaMetrics), else /ping.

    Cheap on purpose: it runs every few seconds while writes back off, so the forward resumes
    within seconds of the server's return instead of after the full backoff. Any HTTP answer
    below 500 counts (a 401 from /health still means the server is back; the write decides).
    """
    parsed = urllib.parse.urlsplit(url)
    base = parsed.path.rstrip("/")
    statuses: list[int] = []
    for path in ("/health", "/ping"):
        conn: http.client.HTTPConnection
        try:
            if parsed.scheme == "https":
                context = ssl.create_default_context()
                if not verify_tls:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                conn = http.client.HTTPSConnection(
                    parsed.hostname or "localhost", parsed.port or 443, timeout=timeout,
                    context=context,
                )  # fmt: skip
            else:
                conn = http.client.HTTPConnection(
                    parsed.hostname or "localhost", parsed.port or 8086, timeout=timeout
                )
            try:
                conn.request("GET", base + path)
                response = conn.getresponse()
                response.read(4096)
                statuses.append(response.status)
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False
        if statuses[-1] != 404:
            return statuses[-1] < 500
    return True  # it answers HTTP, just not on these paths: let the write decide


# -- the forwarder -------------------------------------------------------------------------------

WriteFn = Callable[[Callable[[sqlite3.Connection], T]], Awaitable[T]]


class Sender(Protocol):
    target: str

    def write(self, body: str) -> WriteResult: ...

    def close(self) -> None: ...


FULL_REPEAT = 60.0  # the outbox-full ERROR repeats this often while it stays full
REFUSAL_REPEAT = 60.0  # one WARNING per refusal reason this often


@dataclass
class ForwarderStats:
    delivered: int = 0
    batches: int = 0
    retries: int = 0
    probes: int = 0
    dead_lettered: int = 0  # points, this run
    dead_letters: int = 0  # rows in the table (source 'influx'), refreshed
    last_error: str | None = None
    last_error_at: float | None = None
    last_delivery_at: float | None = None  # wall clock, persisted (outbox_marks)
    failing_since: float | None = None  # wall clock of the first failed write of this outage
    probe_ok_at: float | None = None  # wall clock the last probe found the server back
    window: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    def rate(self, now: float) -> float:
        while self.window and now - self.window[0][0] > 10.0:
            self.window.popleft()
        if not self.window:
            return 0.0
        span = max(1.0, now - self.window[0][0])
        return sum(n for _, n in self.window) / span


@dataclass
class _Refusals:
    """Points one batch got refused for good, by reason: one dead letter each."""

    rows: list[OutboxRow] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    status: int | None = None
    message: str = ""


class Forwarder:
    """Reads the outbox, sends batches, records what the server acknowledged or refused.

    The outbox is reached through `access` (hub.store.outbox_access: the hub's SQLite file, or
    PostgreSQL on the leader worker). For SQLite the old arguments still build it: `write(fn)`
    runs `fn(conn)` in a transaction on the store's writer connection (in the hub: the ingest
    core's store thread), reads use a connection of their own. A monitor task refreshes the
    outbox figures twice a second whatever the send loop is doing, so status, health and the
    outbox-full ERROR stay true while a batch waits for the server.
    """

    def __init__(
        self,
        settings: InfluxSettings,
        db_path: Path | None = None,
        write: WriteFn[Any] | None = None,
        sender: Sender | None = None,
        *,
        keep_dead_letter: outbox.KeepDeadLetter | None = None,
        access: OutboxAccess | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        if access is None:
            if db_path is None or write is None or keep_dead_letter is None:
                raise TypeError("Forwarder needs `access`, or db_path, write and keep_dead_letter")
            # keep_dead_letter is the store's, so the dead letters' bounds hold here too.
            access = SqliteOutbox(db_path, write, keep_dead_letter)
        self.access = access
        self.sender: Sender = sender if sender is not None else InfluxSender(settings)
        self.lines = LineWriter(
            settings.precision, settings.locations, settings.unknown_measurement
        )
        self.rng = rng
        self.stats = ForwarderStats()
        self.state = "starting"
        self.detail = ""
        self.outbox_state: outbox.OutboxState | None = None
        self.max_rows = access.max_rows_for(settings.max_outbox)
        self.disk_low = False
        self._prefixes: dict[int, str] = {}
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="influx-db")
        self._net_thread = ThreadPoolExecutor(1, thread_name_prefix="influx-net")
        self._probe_thread = ThreadPoolExecutor(1, thread_name_prefix="influx-probe")
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_refused: int | None = None
        self._full_since: float | None = None
        self._full_logged_at = 0.0
        self._refusal_logged: dict[str, tuple[float, int, int]] = {}
        self._retries_at_failure = 0

    # -- plumbing

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, fn, *args)

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
        self.max_rows = self.access.max_rows_for(self.settings.max_outbox)
        await self.access.configure(True, self.max_rows)
        await self.refresh()

    async def refresh(self) -> None:
        """Outbox figures for status(); the free-disk guard; loud outbox-full reports."""
        st, letters, marks = await self._db(self.access.read_state)
        self.outbox_state, self.stats.dead_letters = st, letters
        if marks.last_delivery_ts is not None:
            self.stats.last_delivery_at = marks.last_delivery_ts / 1000
        free: int | None = None
        if self.access.disk_path is not None:  # a server's disk is the server's to guard
            try:
                free = shutil.disk_usage(self.access.disk_path).free
            except OSError:
                free = None
        low = free is not None and free < self.settings.min_free_disk
        if low != self.disk_low:
            self.disk_low = low
            # Low disk: keep what is queued, queue nothing new until space comes back.
            bound = min(self.max_rows, st.backlog) if low else self.max_rows
            await self.access.configure(True, bound)
            if low:
                log.error(
                    "Free disk space is below influx.min_free_disk (%d bytes free): new readings "
                    "are stored but no longer queued for InfluxDB",
                    free,
                )
            else:
                log.warning("Free disk space is back: queueing for InfluxDB again")
        self._report_full(st)

    def _report_full(self, st: outbox.OutboxState) -> None:
        """ERROR the moment the outbox refuses readings, then once a minute while it does."""
        previous = st.refused if self._last_refused is None else self._last_refused
        self._last_refused = st.refused
        refusing = st.refused > previous or (st.full and st.enabled)
        now = time.monotonic()
        if refusing:
            if self._full_since is None or now - self._full_logged_at >= FULL_REPEAT:
                self._full_since = self._full_since or now
                self._full_logged_at = now
                log.error(
                    "InfluxDB outbox full (%d queued, influx.max_outbox %d bytes): %d readings "
                    "refused so far, stored here but NOT queued. Run 'hub influx backfill' once "
                    "the server is back.",
                    st.backlog,
                    self.settings.max_outbox,
                    st.gap_points or st.refused,
                )
        elif self._full_since is not None and not st.full:
            log.warning(
                "InfluxDB outbox has room again after %.0f s; %d refused readings still to send: "
                "run 'hub influx backfill'",
                now - self._full_since,
                st.gap_points,
            )
            self._full_since = None

    def _load_prefixes(self, series_ids: set[int]) -> None:
        missing = [s for s in series_ids if s not in self._prefixes]
        if not missing:
            return
        for sid, device, metric, tags, source in self.access.series_keys(missing):
            key = SeriesKey(device, metric, orjson.loads(tags) if tags else {}, source)
            self._prefixes[sid] = self.lines.prefix(key)

    def _read(self, after_id: int, limit: int) -> list[OutboxRow]:
        rows = self.access.read_batch(after_id, limit)
        self._load_prefixes({r.series_id for r in rows})
        return rows

    def body(self, rows: Sequence[OutboxRow]) -> str:
        return "\n".join(self._lines(rows))

    def _lines(self, rows: Sequence[OutboxRow]) -> list[str]:
        prefixes, suffix = self._prefixes, self.lines.suffix
        return [f"{prefixes[r.series_id]}{r.value!r} {r.ts}{suffix}" for r in rows]

    # -- the loop

    async def _monitor(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.refresh()
            except Exception:  # a locked or busy store: the next round tries again
                log.debug("InfluxDB outbox refresh failed", exc_info=True)
            await self._sleep(0.5)

    async def run(self) -> None:
        cursor = 0
        linger_since: float | None = None
        # Another forwarder may still hold a shared outbox (a leader that has not let go yet).
        self._set_state("starting", "waiting for the outbox")
        if not await self.access.claim(self._stopping):
            return
        await self.configure()
        monitor = asyncio.create_task(self._monitor(), name="influx-monitor")
        try:
            while not self._stopping.is_set():
                if monitor.done():
                    monitor.result()  # surface a crash of the monitor
                now = time.monotonic()
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
        finally:
            # Not _stopping: after a crash the supervisor runs `run()` again.
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        await self.refresh()

    async def send(self, rows: Sequence[OutboxRow]) -> bool:
        """Deliver `rows` (in order) or dead-letter what the server refuses for good.

        Points refused for good are collected per reason and become ONE dead letter per batch
        and reason (count, first point, the server's message). Returns False only when
        stopping interrupted it; the undelivered rows then stay queued.
        """
        refused: dict[str, _Refusals] = {}
        bad = [r for r in rows if not math.isfinite(r.value)]
        if bad:
            letter = refused.setdefault(UNREPRESENTABLE, _Refusals())
            letter.rows += bad
            letter.lines += self._lines(bad)
            letter.message = "InfluxDB cannot store inf/nan"
            rows = [r for r in rows if math.isfinite(r.value)]
        done = True
        if rows:
            done = await self._send(rows, refused)
        for reason, letter in refused.items():
            await self._dead_letter(reason, letter)
        return done

    async def _send(self, rows: Sequence[OutboxRow], refused: dict[str, _Refusals]) -> bool:
        lines = self._lines(rows)
        body = "\n".join(lines)
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            self._set_state("forwarding" if attempt == 0 else "retrying", self.detail)
            result = await loop.run_in_executor(self._net_thread, self.sender.write, body)
            if result.kind == "ok":
                await self.access.delivered(rows)
                now = time.monotonic()
                self.stats.delivered += len(rows)
                self.stats.batches += 1
                self.stats.window.append((now, len(rows)))
                self.stats.last_delivery_at = time.time()
                self._recovered()
                self._set_state("forwarding", "")
                return True
            self._error(result)
            if result.kind == "rejected":
                if len(rows) > 1 and result.status != 404:
                    middle = len(rows) // 2
                    return await self._send(rows[:middle], refused) and await self._send(
                        rows[middle:], refused
                    )
                letter = refused.setdefault(reason_for(result.status), _Refusals())
                letter.rows += rows
                letter.lines += lines
                letter.status = letter.status or result.status
                letter.message = letter.message or result.message
                return True
            if self._stopping.is_set():
                return False
            if self.stats.failing_since is None:
                # The outbox figures are the monitor's, up to half a second old: a batch that
                # was committed and tried at once (group commit hands one over in a burst) would
                # be missing from the WARNING below and from the status that says "retrying".
                with contextlib.suppress(Exception):  # a busy store: the monitor tries again
                    await self.refresh()
            if result.kind == "auth":
                self._set_state(
                    "paused_auth",
                    f"InfluxDB refused the token (HTTP {result.status}: {result.message}); "
                    f"forwarding is paused, readings stay queued. Check influx.token and its "
                    f"write permission on bucket {self.settings.bucket!r}. Next try in "
                    f"{self.settings.auth_retry:.0f} s.",
                )
                self._failing(result)
                await self._sleep(self.settings.auth_retry)
            else:
                self._failing(result)
                delay = self.backoff(attempt, result.retry_after)
                self.stats.retries += 1
                reason = result.message or f"HTTP {result.status}"
                if result.status is None:
                    # Unreachable: the server is down, not refusing. Probe it cheaply every
                    # few seconds and write again as soon as it answers.
                    self._set_state("retrying", f"server unavailable ({reason})")
                    await self._wait_for_server(delay)
                else:
                    # A real write error (5xx, 429): back off with jitter, no probing.
                    self._set_state("retrying", f"{reason}; retry {attempt + 1} in {delay:.1f} s")
                    await self._sleep(delay)
            if self._stopping.is_set():
                return False
            attempt += 1

    async def _wait_for_server(self, delay: float) -> None:
        """Sleep up to `delay`, cut short as soon as a probe finds the server answering."""
        probe: Callable[[], bool] | None = getattr(self.sender, "probe", None)
        deadline = time.monotonic() + delay
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await self._sleep(min(self.settings.probe_interval, remaining))
            if probe is None or self._stopping.is_set():
                continue
            # Probed at the deadline too: the write that follows then knows whether the server
            # is back, and status says when it came back however the backoff fell.
            self.stats.probes += 1
            if await loop.run_in_executor(self._probe_thread, probe):
                self.stats.probe_ok_at = time.time()
                log.debug("InfluxDB %s answers again; sending the queue", self.sender.target)
                return

    def _failing(self, result: WriteResult) -> None:
        """One WARNING when delivery starts failing (and not on every retry)."""
        if self.stats.failing_since is not None:
            return
        self.stats.failing_since = time.time()
        self._retries_at_failure = self.stats.retries
        if result.kind == "auth":
            log.error("%s", self.detail)  # says what to fix
            return
        backlog = self.outbox_state.backlog if self.outbox_state else 0
        log.warning(
            "InfluxDB delivery is failing: %s. Readings stay queued (%d now) and are sent when "
            "it is back%s.",
            self.stats.last_error,
            backlog,
            f"; checking it every {self.settings.probe_interval:.0f} s"
            if result.kind == "transient" and result.status is None
            else "",
        )

    def _recovered(self) -> None:
        if self.stats.failing_since is None:
            return
        backlog = self.outbox_state.backlog if self.outbox_state else 0
        log.info(
            "InfluxDB delivery works again after %.0f s (%d retries); sending %d queued readings",
            time.time() - self.stats.failing_since,
            self.stats.retries - self._retries_at_failure,
            backlog,
        )
        self.stats.failing_since = None

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter on an exponential ceiling; the server's Retry-After is a floor."""
        ceiling = min(self.settings.retry_max, self.settings.retry_min * (2**attempt))
        delay = self.settings.retry_min / 2 + self.rng() * (ceiling - self.settings.retry_min / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.settings.retry_max * 5))
        return delay

    async def _dead_letter(self, reason: str, letter: _Refusals) -> None:
        rows, count = letter.rows, len(letter.rows)
        said = f"HTTP {letter.status}: {letter.message}" if letter.status else letter.message
        detail = f"{said[:1000]} ({count} point{'s' if count != 1 else ''}; first: {letter.lines[0][:300]})"
        payload = "\n".join(letter.lines).encode()
        target = self.sender.target
        now_ms = time.time_ns() // 1_000_000
        await self.access.dead_letter(rows, now_ms, target, reason, detail, payload)
        self.stats.dead_lettered += count
        self.stats.dead_letters += 1
        # One WARNING per reason a minute; what was held back is counted into the next one.
        now = time.monotonic()
        last, held_letters, held_points = self._refusal_logged.get(reason, (-math.inf, 0, 0))
        if now - last < REFUSAL_REPEAT:
            self._refusal_logged[reason] = (last, held_letters + 1, held_points + count)
            return
        self._refusal_logged[reason] = (now, 0, 0)
        log.warning(
            "InfluxDB refused %d point(s) for good (%s): %s. Kept as a dead letter "
            "('hub deadletters list --source influx'); the rest proceeds.%s",
            count,
            reason,
            detail[:500],
            f" Since the last report: {held_points} more points in {held_letters} dead letters."
            if held_letters
            else "",
        )

    def _error(self, result: WriteResult) -> None:
        target = self.sender.target
        if result.status:
            message = result.message.strip() or http.client.responses.get(result.status, "")
            self.stats.last_error = f"InfluxDB {target} answered HTTP {result.status}: {message}"
        else:
            self.stats.last_error = f"cannot reach InfluxDB {target}: {result.message}"
        self.stats.last_error_at = time.time()

    def _set_state(self, state: str, detail: str) -> None:
        self.state, self.detail = state, detail

    async def stop(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        self.sender.close()
        self._net_thread.shutdown(wait=False, cancel_futures=True)
        self._probe_thread.shutdown(wait=False, cancel_futures=True)
        self._db_thread.shutdown(wait=True)
        self.access.close()

    # -- health

    def status(self) -> dict[str, Any]:
        st = self.outbox_state
        now_ms = time.time() * 1000
        lag = (now_ms - st.oldest_ts) / 1000 if st and st.oldest_ts is not None else 0.0
        state = self.state
        full = bool(st and st.enabled and st.backlog >= st.max_rows) or self.disk_low
        if full and state not in ("paused_auth", "failed"):
            state = "outbox_full"
        backlog = st.backlog if st else 0
        refused = st.refused if st else 0
        gap = st.gap_points if st else 0
        rate = self.stats.rate(time.monotonic())
        summary = {
            "idle": "up to date",
            "forwarding": f"forwarding, {backlog} queued",
            "retrying": f"retrying: {self.detail}, {backlog} queued",
            "paused_auth": self.detail,
            "outbox_full": f"OUTBOX FULL: {backlog} queued, new readings not queued ({gap} refused)"
            + (f", retrying: {self.detail}" if self.state == "retrying" else "")
            + (" - free disk below influx.min_free_disk" if self.disk_low else ""),
            "starting": "starting",
            "failed": self.detail,
        }.get(state, state)
        if gap and state != "outbox_full":
            summary += f"; {gap} refused readings not sent yet ('hub influx backfill')"
        return {
            "state": state,
            "summary": summary,
            "health": self._health(state, backlog, gap, st.gap_series if st else 0),
            "target": self.sender.target,
            "backlog": backlog,
            "outbox_bytes": backlog * self.access.bytes_per_row,
            "outbox_max_bytes": self.max_rows * self.access.bytes_per_row,
            "lag_s": round(max(0.0, lag), 3),
            "delivered": self.stats.delivered,
            "delivered_per_s": round(rate, 1),
            "batches": self.stats.batches,
            "retries": self.stats.retries,
            "probes": self.stats.probes,
            "dead_letters": self.stats.dead_letters,
            "dead_lettered_points": self.stats.dead_lettered,
            "refused": refused,
            "refused_unsent": gap,
            "history_unsent": st.history_points if st else 0,
            "outbox_max_rows": self.max_rows,
            "disk_low": self.disk_low,
            "last_error": self.stats.last_error,
            "last_error_at": self.stats.last_error_at,
            "last_success_at": self.stats.last_delivery_at,
            "failing_since": self.stats.failing_since,
            "probe_ok_at": self.stats.probe_ok_at,
        }

    def _health(self, state: str, backlog: int, gap: int, gap_series: int) -> dict[str, str]:
        """The shared contract: ok, or degraded with one readable sentence."""
        target = self.sender.target
        if state == "outbox_full":
            reason = (
                f"InfluxDB outbox is full ({backlog} queued): {gap} readings were stored but not "
                f"queued; run 'hub influx backfill' once {target} is back"
            )
            if self.disk_low:
                reason = "free disk is below influx.min_free_disk: new readings are not queued for InfluxDB"
        elif state == "retrying":
            since = self.stats.failing_since
            reason = (
                f"InfluxDB forward is down{f' for {time.time() - since:.0f} s' if since else ''}: "
                f"{self.stats.last_error or self.detail}; {backlog} readings queued"
            )
        elif state in ("paused_auth", "failed"):
            reason = self.detail
        elif gap:
            reason = (
                f"{gap} readings of {gap_series} series never reached InfluxDB (the outbox was "
                "full); send them with 'hub influx backfill'"
            )
        else:
            return {"status": "ok", "reason": f"InfluxDB forward {state}, {backlog} queued"}
        return {"status": "degraded", "reason": reason}


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
    """The forwarder as a component: `hub run` (SQLite, build) or the leader worker
    (PostgreSQL, hub.store.influx_leader). `spawn` starts its supervised loop."""

    name = "influx"

    def __init__(
        self, forwarder: Forwarder, spawn: Spawn, committed: CommittedFeed | None = None,
        *, configure_first: bool = True,
    ) -> None:  # fmt: skip
        self.forwarder = forwarder
        self.spawn = spawn
        self.committed = committed
        # SQLite: queueing is switched on before start() returns. A shared outbox is configured
        # by run() once this forwarder holds it (another may still be letting go).
        self.configure_first = configure_first
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_hub(cls, ports: Ports) -> InfluxComponent:
        # Every outbox write goes through the store writer, in its thread and transaction.
        forwarder = Forwarder(
            ports.config.influx,
            ports.writer.path,
            ports.writer.transaction,
            keep_dead_letter=ports.writer.store.keep_dead_letter,
        )
        return cls(forwarder, ports.spawn, ports.committed)

    async def start(self) -> None:
        if self.committed is not None:
            self.committed.subscribe(self.forwarder.wake)
        if self.configure_first:
            await self.forwarder.configure()
        self._task = self.spawn("influx-forwarder", self._run, restart=True)
        if self.forwarder.outbox_state is None:
            log.info("Forwarding readings to InfluxDB %s", self.forwarder.sender.target)
            return
        log.info(
            "Forwarding readings to InfluxDB %s (%d queued)",
            self.forwarder.sender.target,
            self.forwarder.outbox_state.backlog,
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
        if self.committed is not None:
            self.committed.unsubscribe(self.forwarder.wake)
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

    def __init__(self, access: OutboxAccess) -> None:
        self.access = access
        self.queued = 0

    async def start(self) -> None:
        await self.access.configure(False, 0)
        state, _letters, _marks = await asyncio.to_thread(self.access.read_state)
        self.queued = state.backlog
        log.info(
            "InfluxDB forwarding is off; %d readings stay queued for when it is on again",
            self.queued,
        )

    async def stop(self) -> None:
        await asyncio.to_thread(self.access.close)

    def status(self) -> dict[str, Any]:
        return {
            "state": "disabled",
            "summary": f"disabled (influx.enabled is false); {self.queued} readings stay queued",
            "health": {
                "status": "ok",
                "reason": "InfluxDB forwarding is switched off (influx.enabled: false)",
            },
            "backlog": self.queued,
        }


def build(ports: Ports) -> InfluxComponent | OutboxOffComponent | None:
    if ports.config.influx.enabled:
        return InfluxComponent.for_hub(ports)
    conn = ports.reader.open()
    try:
        row = conn.execute("SELECT enabled FROM outbox_control WHERE id = 1").fetchone()
    finally:
        conn.close()
    if row is not None and row[0]:
        writer = ports.writer
        return OutboxOffComponent(
            SqliteOutbox(writer.path, writer.transaction, writer.store.keep_dead_letter)
        )
    return None
