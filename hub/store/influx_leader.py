"""The InfluxDB forwarder of `hub run --worker`: a singleton that runs on the leader only.

The outbox lives in the shared PostgreSQL store (hub.store.postgres_outbox), filled by every
worker's ingest in its own transactions. The forwarder runs on whichever worker holds the
leader lock (hub.leader): `on_change(True)` starts it, `on_change(False)` stops it. Its
progress is the outbox itself (a row leaves only once InfluxDB acknowledged it), so a new
leader resumes from the oldest row still queued. What a takeover can send twice: the batch
the old leader had sent but not yet recorded as delivered when it died (at most
influx.batch_size points, the same series and timestamps again: InfluxDB overwrites a point
with itself). Besides the leader lock, the forwarder holds a lock of its own on its write
connection (LOCK_FORWARDER), so an old leader that has not noticed yet never forwards beside
the new one: the new one waits until that session is gone.

New readings from other workers do not wake the forwarder (their commits happen elsewhere):
it polls an idle outbox every second, so forwarding lags by at most that plus influx.linger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from hub.store.influx import Forwarder, InfluxComponent, OutboxOffComponent
from hub.store.postgres_outbox import KeepDeadLetter, PostgresOutbox

if TYPE_CHECKING:
    from hub.config import HubConfig
    from hub.ports import CommittedFeed

log = logging.getLogger(__name__)


class LeaderForwarder:
    """Starts and stops the forwarder (or, with influx off, pauses queueing) with leadership.

    `run()` is a supervised task of the worker; `on_change` is hub.leader.Leader's callback."""

    name = "influx"

    def __init__(
        self, config: HubConfig, url: str, client_id: str, keep_dead_letter: KeepDeadLetter,
        committed: CommittedFeed | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        self.url = url
        self.client_id = client_id
        self.keep_dead_letter = keep_dead_letter
        self.committed = committed
        self.component: InfluxComponent | OutboxOffComponent | None = None
        self.terms = 0
        self._leader = False
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def on_change(self, leader: bool) -> None:
        self._leader = leader
        self._changed.set()

    def _build(self) -> InfluxComponent | OutboxOffComponent:
        access = PostgresOutbox(self.url, f"{self.client_id}-influx", self.keep_dead_letter)
        if not self.config.influx.enabled:
            return OutboxOffComponent(access)
        forwarder = Forwarder(self.config.influx, access=access)
        return InfluxComponent(forwarder, self._spawn, self.committed, configure_first=False)

    def _spawn(
        self, name: str, factory: Callable[[], Awaitable[None]], *, restart: bool = False,
        backoff: float = 1.0,
    ) -> asyncio.Task[None]:  # fmt: skip
        """The forwarder's loop, restarted after a crash, ended by its component's stop()
        (not by the worker's supervisor: leadership, not the process, decides its life)."""

        async def loop() -> None:
            delay = backoff
            while True:
                try:
                    await factory()
                    return
                except Exception:
                    if not restart:
                        raise
                    log.exception("Task %s failed; restarting it in %.0f s", name, delay)
                await asyncio.sleep(delay)
                delay = min(60.0, delay * 2)

        task = asyncio.create_task(loop(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        if self._leader:  # restarted by the supervisor after a failed start: try again
            self._changed.set()
        try:
            while True:
                await self._changed.wait()
                self._changed.clear()
                if self._leader and self.component is None:
                    component = self._build()
                    self.component = component
                    self.terms += 1
                    await component.start()
                elif not self._leader and self.component is not None:
                    await self._stop()
        finally:
            await self._stop()

    async def _stop(self) -> None:
        component, self.component = self.component, None
        if component is None:
            return
        try:
            await component.stop()
        except Exception:
            log.exception("Stopping the InfluxDB forwarder failed")
        for task in list(self._tasks):  # did not stop in time: it must not run on
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def status(self) -> dict[str, Any]:
        if self.component is None:
            return {
                "state": "standby",
                "summary": "standby: the leader worker forwards to InfluxDB",
                "health": {"status": "ok", "reason": "InfluxDB forwarding runs on the leader"},
            }
        return {**self.component.status(), "terms": self.terms}
