"""What the InfluxDB forwarder needs of an outbox, whichever store holds it.

Two implementations: SqliteOutbox here (the hub's store file; writes go through the store
writer, in its thread and transaction) and hub.store.postgres_outbox.PostgresOutbox (the
leader worker's connections to the shared PostgreSQL store). The forwarder (hub.store.influx)
knows only this interface: reads run in its database thread, writes are awaited.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hub.store import outbox
from hub.store.outbox import Marks, OutboxRow, OutboxState
from hub.store.sqlite import connect

T = TypeVar("T")

# series id, device, metric, tags (JSON text or empty), source
SeriesRow = tuple[int, str, str, "str | None", "str | None"]


class OutboxAccess(Protocol):
    bytes_per_row: int
    disk_path: Path | None  # the free-disk guard watches this folder (None: a server's disk)

    def max_rows_for(self, max_bytes: int) -> int: ...

    async def claim(self, stopping: asyncio.Event) -> bool:
        """Become the one forwarder of this outbox; False when `stopping` was set first."""
        ...

    async def configure(self, enabled: bool, max_rows: int) -> None: ...

    async def delivered(self, rows: Sequence[OutboxRow]) -> int: ...

    async def dead_letter(
        self, rows: Sequence[OutboxRow], received_ms: int, target: str, reason: str,
        detail: str, payload: bytes,
    ) -> int | None: ...  # fmt: skip

    # Reads: called in the forwarder's database thread only.
    def read_state(self) -> tuple[OutboxState, int, Marks]:
        """The outbox figures, pending InfluxDB dead letters, the persisted marks."""
        ...

    def read_batch(self, after_id: int, limit: int) -> list[OutboxRow]: ...

    def series_keys(self, series_ids: Sequence[int]) -> list[SeriesRow]: ...

    def close(self) -> None: ...


WriteFn = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]


class SqliteOutbox:
    """The outbox in the hub's SQLite file. `write(fn)` runs fn(conn) in a transaction on the
    store's writer connection (the hub: the store writer's thread); reads use a read-only
    connection of their own. One hub process owns the file, so claim() has nothing to wait for."""

    bytes_per_row = outbox.BYTES_PER_ROW

    def __init__(
        self, db_path: Path, write: WriteFn, keep_dead_letter: outbox.KeepDeadLetter
    ) -> None:
        self.db_path = Path(db_path)
        self.disk_path: Path | None = self.db_path.parent
        self.write = write
        self.keep_dead_letter = keep_dead_letter
        self._reader: sqlite3.Connection | None = None

    def max_rows_for(self, max_bytes: int) -> int:
        return outbox.max_rows_for(max_bytes)

    async def claim(self, stopping: asyncio.Event) -> bool:
        return not stopping.is_set()

    async def configure(self, enabled: bool, max_rows: int) -> None:
        await self.write(lambda conn: outbox.configure(conn, enabled, max_rows))

    async def delivered(self, rows: Sequence[OutboxRow]) -> int:
        # One writer: ids are contiguous in commit order, so the range is exactly the batch.
        first, last = rows[0].id, rows[-1].id
        count: int = await self.write(lambda conn: outbox.delivered(conn, first, last))
        return count

    async def dead_letter(
        self, rows: Sequence[OutboxRow], received_ms: int, target: str, reason: str,
        detail: str, payload: bytes,
    ) -> int | None:  # fmt: skip
        keep = self.keep_dead_letter
        letter: int | None = await self.write(
            lambda conn: outbox.dead_letter(
                conn, rows, keep, received_ms, target, reason, detail, payload
            )
        )
        return letter

    def _conn(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = connect(self.db_path, readonly=True)
        return self._reader

    def read_state(self) -> tuple[OutboxState, int, Marks]:
        conn = self._conn()
        st = outbox.state(conn)
        letters = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE source = ? AND replayed_ts IS NULL",
            (outbox.DEAD_LETTER_SOURCE,),
        ).fetchone()[0]
        return st, int(letters), outbox.marks(conn)

    def read_batch(self, after_id: int, limit: int) -> list[OutboxRow]:
        return outbox.read_batch(self._conn(), after_id, limit)

    def series_keys(self, series_ids: Sequence[int]) -> list[SeriesRow]:
        out: list[SeriesRow] = []
        ids = list(series_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out += self._conn().execute(
                f"SELECT id, device, metric, tags, source FROM series WHERE id IN ({marks})", chunk
            )
        return out

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
