"""The supervisor: every long-running task of `hub run` is started here, and none dies unnoticed.

A task that raises is logged with its traceback. If it is marked restartable (a loop whose
work is safe to redo: status reports, maintenance, a component's poller) it starts again after
a capped, doubling backoff; otherwise the hub stops with a non-zero exit and says why in its
last lines. A task that simply returns while the hub runs is a failure of the same kind: a
loop that ends has stopped doing its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


def until_tick(interval: float) -> float:
    """Seconds from now to the next whole multiple of `interval` on the loop's clock.

    Periodic tasks that sleep this long (the status refresh, the alert tick, the web server's
    tick) wake together in one pass of the loop, once a second, instead of each at its own
    phase: on a small or shared machine every wake-up after a sleep pays for cold caches,
    about as much as the work itself (docs/performance.md). Telegraf's round_interval does the
    same for its inputs."""
    if interval <= 0:
        return 0.0
    # Woken a hair before the boundary (clock resolution): the next one, not a second run now.
    return tick_after(interval / 20, interval)


def tick_after(delay: float, tick: float = 1.0) -> float:
    """Seconds from now to the first whole multiple of `tick` on the loop's clock that is at
    least `delay` away: a job that runs every `delay` seconds (the store maintenance round),
    never sooner than that after its last run or the start, yet on the hub's tick."""
    now = asyncio.get_running_loop().time()
    return math.ceil((now + delay) / tick) * tick - now


@dataclass
class TaskState:
    name: str
    restart: bool
    restarts: int = 0
    last_error: str = ""
    started_at: float = field(default_factory=time.time)


class Supervisor:
    def __init__(self, on_fatal: Callable[[str], None], backoff_max: float = 60.0) -> None:
        self._on_fatal = on_fatal
        self._backoff_max = backoff_max
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.states: dict[str, TaskState] = {}
        self.failure: str | None = None
        self._stopping = False

    def spawn(
        self,
        name: str,
        factory: Callable[[], Awaitable[None]],
        *,
        restart: bool = False,
        backoff: float = 1.0,
    ) -> asyncio.Task[None]:
        """Run `factory()` as a supervised task named `name`."""
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"a task named {name!r} is already running")
        state = TaskState(name, restart)
        self.states[name] = state
        task = asyncio.create_task(self._watch(state, factory, backoff), name=name)
        self._tasks[name] = task
        return task

    async def _watch(
        self, state: TaskState, factory: Callable[[], Awaitable[None]], backoff: float
    ) -> None:
        delay = backoff
        while True:
            started = time.monotonic()
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    log.debug("Task %s failed while stopping: %r", state.name, exc)
                    return
                state.last_error = f"{type(exc).__name__}: {exc}"
                if not state.restart:
                    log.exception("Task %s failed; the hub stops", state.name)
                    self._fatal(f"task {state.name} failed: {state.last_error}")
                    return
                log.exception("Task %s failed; restarting it in %.0f s", state.name, delay)
            else:
                if self._stopping:
                    return
                state.last_error = "ended while the hub runs"
                if not state.restart:
                    log.error("Task %s ended while the hub runs; the hub stops", state.name)
                    self._fatal(f"task {state.name} ended unexpectedly")
                    return
                log.error(
                    "Task %s ended while the hub runs; restarting it in %.0f s", state.name, delay
                )
            state.restarts += 1
            # A task that ran a good while before failing starts over at the short backoff.
            delay = backoff if time.monotonic() - started > 5 * self._backoff_max else delay
            await asyncio.sleep(delay)
            delay = min(self._backoff_max, delay * 2)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _fatal(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            self._on_fatal(reason)

    def status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for name, state in self.states.items():
            task = self._tasks.get(name)
            if task is None:
                continue  # cancelled on purpose (shutdown)
            out[name] = {
                "restarts": state.restarts,
                "last_error": state.last_error,
                "running": not task.done(),
            }
        return out

    async def cancel(self, name: str, timeout: float = 5.0) -> None:
        task = self._tasks.pop(name, None)
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, timeout)

    def begin_stop(self) -> None:
        """The hub is stopping: from now on a task that ends is expected, not a failure."""
        self._stopping = True

    async def stop(self, timeout: float = 5.0) -> None:
        """Cancel every task and wait for them (bounded: shutdown always completes)."""
        self._stopping = True
        for name in list(self._tasks):
            await self.cancel(name, timeout)
