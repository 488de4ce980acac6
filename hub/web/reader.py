"""Read-only views of the store for the API: one SQLite connection per worker thread.

FastAPI runs plain `def` endpoints in a thread pool; a sqlite3 connection must not be used
by two threads at once, so each thread gets its own read-only connection (WAL readers never
block the writer). Writes never go through here: they run in the ingest core's store thread.
"""

from __future__ import annotations

import threading
from pathlib import Path

from hub.store.reader import ReadStore

__all__ = ["ReadStore", "Readers", "device_list", "latest"]


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
    """Devices with availability and the metrics they reported."""
    return store.device_rows(name)


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
