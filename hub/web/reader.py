"""Read-only views of the store for the API: one SQLite connection per worker thread.

FastAPI runs plain `def` endpoints in a thread pool; a sqlite3 connection must not be used
by two threads at once, so each thread gets its own read-only connection (WAL readers never
block the writer). Writes never go through here: they run in the ingest core's store thread.
"""

from __future__ import annotations

import threading
from pathlib import Path

from hub.store.sessions import SessionStore
from hub.store.sqlite import Store, connect


class ReadStore(Store):
    """`Store`'s queries over a read-only connection (no migration, no writes)."""

    def __init__(self, path: Path) -> None:  # skips Store's writer set-up on purpose
        self.path = Path(path)
        self.conn = connect(self.path, readonly=True)
        # Reads through mmap share the OS page cache, so a fresh worker thread's connection
        # is not cold (each connection's own page cache is).
        self.conn.execute("PRAGMA mmap_size=1073741824")
        self._lock = threading.RLock()
        self._series = {}
        self._last = {}
        self.sessions = SessionStore(self.conn)


class Readers:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[ReadStore] = []
        self._lock = threading.Lock()

    def get(self) -> ReadStore:
        store: ReadStore | None = getattr(self._local, "store", None)
        if store is None:
            store = ReadStore(self.path)
            self._local.store = store
            with self._lock:
                self._all.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            for store in self._all:
                store.close()
            self._all.clear()


def _tags(text: str | None) -> dict[str, str]:
    import orjson

    return dict(orjson.loads(text)) if text else {}


def device_list(store: ReadStore, name: str | None = None) -> list[dict[str, object]]:
    """Devices with availability and the metrics they reported (one pass over two tables)."""
    metrics: dict[str, list[str]] = {}
    for device, metric in store.conn.execute(
        "SELECT DISTINCT device, metric FROM series ORDER BY device, metric"
    ):
        metrics.setdefault(device, []).append(metric)
    sql = (
        "SELECT name, source, kind, manufacturer, model, sw_version, first_seen, last_seen, "
        "online, availability_ts FROM devices"
    )
    args: tuple[object, ...] = ()
    if name is not None:
        sql += " WHERE name = ?"
        args = (name,)
    keys = (
        "name", "source", "kind", "manufacturer", "model", "sw_version", "first_seen",
        "last_seen", "online", "availability_ts",
    )  # fmt: skip
    out = []
    for row in store.conn.execute(sql + " ORDER BY name", args):
        item = dict(zip(keys, row, strict=True))
        item["online"] = None if item["online"] is None else bool(item["online"])
        item["metrics"] = metrics.get(str(item["name"]), [])
        out.append(item)
    return out


def latest(
    store: ReadStore, device: str | None = None, metric: str | None = None
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
