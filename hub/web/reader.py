"""Read-only views of the store for the API: one connection per worker thread.

FastAPI runs plain `def` endpoints in a thread pool; a sqlite3 connection must not be used
by two threads at once, so each thread gets its own read-only connection (WAL readers never
block the writer). Writes never go through here: they run in the ingest core's store thread.
On a worker (store.url: postgresql://...) `PostgresReaders` does the same with a psycopg
connection per thread (hub.store.postgres_read.PostgresReadStore: read-only transactions,
opened again after the server dropped it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeAlias, TypeVar

from hub.store.reader import ReadStore

if TYPE_CHECKING:
    from hub.ports import StoreReader
    from hub.store.postgres_read import PostgresReadStore

__all__ = ["PostgresReaders", "ReadStore", "Readers", "device_list", "latest", "open_readers"]


class _Closable(Protocol):
    def close(self) -> None: ...


S = TypeVar("S", bound=_Closable)

# What an endpoint gets from `ctx.readers.get()`: either backend's read-only store.
ReadStoreLike: TypeAlias = "ReadStore | PostgresReadStore"


class ReaderPool(Protocol):
    def get(self) -> ReadStoreLike: ...

    def close(self) -> None: ...


class _PerThread(Generic[S]):
    """One store per thread, opened on first use (a connection must not be shared between
    threads); `close` closes every one."""

    def __init__(self, open_store: Callable[[], S]) -> None:
        self._open = open_store
        self._local = threading.local()
        self._all: list[S] = []
        self._lock = threading.Lock()

    def get(self) -> S:
        store: S | None = getattr(self._local, "store", None)
        if store is None:
            store = self._open()
            self._local.store = store
            with self._lock:
                self._all.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            for store in self._all:
                store.close()
            self._all.clear()


class Readers(_PerThread[ReadStore]):
    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(lambda: ReadStore(path))


class PostgresReaders(_PerThread["PostgresReadStore"]):
    """One PostgresReadStore per thread, on the store at `url` (connections open lazily:
    a server that is down makes requests answer 503, not the web API fail to start)."""

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(self._connect)

    def _connect(self) -> PostgresReadStore:
        from hub.store.postgres_read import PostgresReadStore

        return PostgresReadStore(self.url, name="hub-web")


def open_readers(reader: StoreReader) -> Readers | PostgresReaders:
    """The reader pool for the store the reader port names (a PostgreSQL URL or the file)."""
    if reader.url:
        return PostgresReaders(reader.url)
    return Readers(reader.path)


def _tags(text: str | None) -> dict[str, str]:
    import orjson

    return dict(orjson.loads(text)) if text else {}


def device_list(store: ReadStoreLike, name: str | None = None) -> list[dict[str, object]]:
    """Devices with availability and the metrics they reported."""
    return store.device_rows(name)


def latest(
    store: ReadStoreLike, device: str | None = None, metric: str | None = None
) -> list[dict[str, object]]:
    """Newest value of every series (kept on the series row by each commit)."""
    return [
        {
            "device": s.device,
            "metric": s.metric,
            "tags": dict(s.tags),
            "unit": s.unit,
            "value": s.last_value,
            "ts": s.last_ts,
        }
        for s in store.series(metric, device)
    ]
