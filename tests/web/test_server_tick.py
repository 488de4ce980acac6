"""The embedded uvicorn server wakes the hub's loop once a second, not ten times, and still
stops at once when asked (hub/web/component.py `_EmbeddedServer`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import uvicorn

from hub.web.component import _EmbeddedServer


async def _app(scope: dict, receive: object, send: object) -> None:  # never called
    raise AssertionError(scope)


def test_ticks_once_a_second_and_stops_at_once() -> None:
    async def main() -> tuple[int, float]:
        config = uvicorn.Config(_app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        server = _EmbeddedServer(config)
        ticks = 0
        on_tick = server.on_tick

        async def counting(counter: int) -> bool:
            nonlocal ticks
            ticks += 1
            return await on_tick(counter)

        server.on_tick = counting  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        ticks = 0
        await asyncio.sleep(3.0)
        counted = ticks
        asked = time.monotonic()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        return counted, time.monotonic() - asked

    # In a thread of its own: in the full suite the browser tests' Playwright keeps a loop
    # running in the main thread, where asyncio.run() refuses to start another.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        ticks, stop_s = pool.submit(asyncio.run, main()).result()
    assert 2 <= ticks <= 4, ticks  # uvicorn's own loop: about 30
    # a bound below the 1 s tick: setting should_exit woke the loop, it did not wait a tick
    assert stop_s < 0.9, stop_s
