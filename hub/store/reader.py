"""Read-only views of the store: `Store`'s queries over a read-only connection.

WAL readers never block the writer; nothing here writes. The web API keeps one per worker
thread (hub.web.reader.Readers); the alerts component reads the known series through one.
"""

from __future__ import annotations

import threading
from pathlib import Path

from hub.store.sessions import SessionStore
from hub.store.sqlite import Store, StoreError, connect


class StoreUnavailable(StoreError):
    """A store server (PostgreSQL) cannot be reached now; the message says which and why.
    The web API answers 503 with it; the next read tries again."""


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
