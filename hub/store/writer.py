"""The store writer: the one thread that writes the hub's SQLite file.

Every write of a running hub goes through here: ingest commits, derivations' records, rollups
and retention, alert state, the InfluxDB outbox, dead-letter replay and purge. They run one
after another on the store's single writer connection, in this thread, so SQLite never sees
two writers of one hub fighting over its lock, and the event loop never blocks on a commit.

Components get this object (a port), never the Store itself: `call` runs any function in the
thread, `transaction` runs a function inside one transaction, `submit` is for callers that are
not on the event loop (the alert store's background writes).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from hub.store.sqlite import Store

T = TypeVar("T")


class StoreWriter:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-store")
        self._closed = False

    @property
    def path(self) -> Path:
        return self.store.path

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in the store thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in one transaction, in the store thread."""
        return await self.call(self.run_in_transaction, fn)

    def run_in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Store thread only: `fn(conn)` inside a transaction."""
        with self.store.transaction() as conn:
            return fn(conn)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """From any thread: queue `fn(*args)` behind the writes already queued."""
        return self._executor.submit(fn, *args)

    @property
    def connection(self) -> sqlite3.Connection:
        """The writer connection, for code that already runs in the store thread."""
        return self.store.conn

    def close(self) -> None:
        """Finish what is queued, then close the store."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        self.store.close()
