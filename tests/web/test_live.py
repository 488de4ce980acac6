"""The live feed's back-pressure rule: a client that falls behind is dropped, ingest never waits."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from hub.ingest import Committed
from hub.model import Reading
from hub.web.live import SLOW_CLIENT_CLOSE, LiveFeed


class Socket:
    """A WebSocket endpoint stand-in: `stuck` ones never finish sending (a dead TCP window)."""

    def __init__(self, stuck: bool) -> None:
        self.stuck = stuck
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.client = None
        self._incoming: asyncio.Queue[str] = asyncio.Queue()

    async def accept(self) -> None:
        pass

    async def send_text(self, text: str) -> None:
        if self.stuck and self.sent:
            await asyncio.Event().wait()
        self.sent.append(text)

    async def receive_text(self) -> str:
        return await self._incoming.get()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


def batch(i: int) -> Committed:
    return Committed([Reading("airq-1", "co2", float(i), 1000 + i)], [], [], 0)


async def slow_client_is_dropped() -> None:
    feed = LiveFeed(queue_size=8, coalesce=0)  # per-batch messages: the queue rule itself
    fast, slow = Socket(stuck=False), Socket(stuck=True)
    serving = [asyncio.create_task(feed.serve(s)) for s in (fast, slow)]  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert len(feed.clients) == 2
    for i in range(50):
        feed.on_committed(batch(i))  # synchronous: returns at once whatever the clients do
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    assert feed.dropped_slow == 1 and len(feed.clients) == 1
    assert slow.closed is not None and slow.closed[0] == SLOW_CLIENT_CLOSE
    values = [m for m in fast.sent if '"readings"' in m]
    assert len(values) == 50
    await asyncio.wait_for(serving[1], 2)  # the slow client's handler ended
    await feed.close()
    await asyncio.wait_for(serving[0], 2)


async def filters_are_applied_per_client() -> None:
    feed = LiveFeed(coalesce=0)
    sock: Any = Socket(stuck=False)
    task = asyncio.create_task(feed.serve(sock))
    await asyncio.sleep(0.01)
    (client,) = feed.clients
    client.subscribe({"metrics": ["pm2_5"], "devices": None})
    feed.on_committed(
        Committed(
            [Reading("a", "co2", 1.0, 1), Reading("b", "pm2_5", 2.0, 2)], [], [("a", False, 3)], 0
        )
    )
    await asyncio.sleep(0.01)
    assert sock.sent[1:] == [
        '{"type":"readings","r":[["b","pm2_5",2.0,2,null,null]]}',
        '{"type":"availability","a":[["a",false,3]]}',
    ]
    await feed.close()
    await asyncio.wait_for(task, 2)


def run_in_own_loop(body: Any) -> None:
    """Own thread, own loop: Playwright's sync API keeps a loop running in the main thread."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(body())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    if failure:
        raise failure[0]


def test_slow_client_is_dropped_and_the_fast_one_gets_everything() -> None:
    run_in_own_loop(slow_client_is_dropped)


def test_filters_are_applied_per_client() -> None:
    run_in_own_loop(filters_are_applied_per_client)


async def batches_are_coalesced() -> None:
    feed = LiveFeed(coalesce=0.05)
    sock: Any = Socket(stuck=False)
    task = asyncio.create_task(feed.serve(sock))
    await asyncio.sleep(0.01)
    for i in range(50):
        feed.on_committed(batch(i))  # 50 commits inside one coalescing window
    await asyncio.sleep(0.15)
    messages = [m for m in sock.sent if '"readings"' in m]
    assert len(messages) == 1 and messages[0].count('"co2"') == 50
    feed.on_committed(batch(50))
    await asyncio.sleep(0.15)
    assert len([m for m in sock.sent if '"readings"' in m]) == 2
    await feed.close()
    await asyncio.wait_for(task, 2)


def test_batches_are_coalesced_into_one_message_per_window() -> None:
    run_in_own_loop(batches_are_coalesced)


async def unwatched_devices_are_not_kept() -> None:
    feed = LiveFeed(coalesce=0.05)
    socks: list[Any] = [Socket(stuck=False), Socket(stuck=False)]
    tasks = [asyncio.create_task(feed.serve(s)) for s in socks]
    await asyncio.sleep(0.01)
    first, second = sorted(feed.clients, key=lambda c: socks.index(c.websocket))
    first.subscribe({"devices": ["airq-1"]})
    second.subscribe({"devices": ["airq-2"]})
    burst = [Reading("burst", f"m{k}", 1.0, k) for k in range(1000)]
    feed.on_committed(Committed([*burst, Reading("airq-2", "co2", 5.0, 7)], [], [], 0))
    assert len(feed._pending) == 1  # the burst nobody watches is not held for the flush
    await asyncio.sleep(0.15)
    assert socks[1].sent[-1] == '{"type":"readings","r":[["airq-2","co2",5.0,7,null,null]]}'
    assert not [m for m in socks[0].sent if '"readings"' in m]
    second.subscribe({})  # now everything, so nothing may be filtered out before the flush
    feed.on_committed(Committed(burst[:3], [], [], 0))
    await asyncio.sleep(0.15)
    assert socks[1].sent[-1].count('"burst"') == 3
    assert not [m for m in socks[0].sent if '"readings"' in m]
    await feed.close()
    for task in tasks:
        await asyncio.wait_for(task, 2)


def test_readings_of_devices_nobody_watches_are_not_kept() -> None:
    run_in_own_loop(unwatched_devices_are_not_kept)
