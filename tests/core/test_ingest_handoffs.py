"""Batches straight from paho's thread to the store thread (real Mosquitto): the loop is not
woken to hand a batch over or to collect its result, a backlog goes out as soon as the batch
before it is done, paho's thread keeps to the batch cadence instead of a select() per batch,
and the store thread writes the acks itself.

No timing is asserted: who handed what to whom, and how often, is (timeouts only catch a
hang). The CPU these save is measured by bench/ingest.py's steady section."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hub.bus.mqtt as mqtt
from hub.bus.mqtt import Message, MqttConnection
from hub.bus.router import Router
from hub.config import HubConfig
from hub.ingest import IngestCore
from hub.ports import CommittedFeed
from hub.store.sqlite import Store
from hub.store.writer import StoreWriter
from tests.support.connections import CountingWakeups, assert_nothing_redelivered, connected
from tests.support.hubproc import Publisher, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.mosquitto


async def until(predicate: Any, what: str, timeout: float = 30) -> None:
    """Poll on the loop itself (asyncio.to_thread would wake it from another thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def paho_thread(connection: MqttConnection) -> int | None:
    thread = connection._client._thread
    return thread.ident if thread is not None else None


class CountingLoop:
    """Counts call_soon_threadsafe on the running loop: each is a wake-up of the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.calls = loop, 0
        self._real = loop.call_soon_threadsafe

    def __enter__(self) -> CountingLoop:
        def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return self._real(*args, **kwargs)

        self.loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe = self._real  # type: ignore[method-assign]


def test_due_batches_go_to_the_sink_without_the_loop_and_a_backlog_goes_at_once(
    mosquitto: Mosquitto,
) -> None:
    async def main() -> None:
        connection = await connected(mosquitto, "t-sink")
        publisher = Publisher(mosquitto.host, mosquitto.port)
        handed: list[tuple[int | None, list[bytes]]] = []
        jobs: queue.Queue[list[Message] | None] = queue.Queue()
        first_started = threading.Event()
        release_first = threading.Event()

        def sink(batch: list[Message]) -> None:  # must not block: it queues
            handed.append((threading.get_ident(), [m.payload for m in batch]))
            jobs.put(batch)

        def store_thread() -> None:  # stands in for the store thread: commit, ack, done
            while (batch := jobs.get()) is not None:
                if len(handed) == 1:
                    first_started.set()
                    release_first.wait(30)  # a slow commit: the next messages queue up
                connection.ack(batch)
                connection.batch_done()

        worker = threading.Thread(target=store_thread, name="t-store")
        worker.start()
        try:
            with CountingLoop(asyncio.get_running_loop()) as loop:
                connection.deliver_batches(sink, 1000, wait_s=0.2)
                for i in range(5):
                    publisher.publish(f"t/{i}", str(i))
                assert publisher.flush(10)
                await until(first_started.is_set, "the first batch")
                for i in range(5, 25):  # while the first batch "commits"
                    publisher.publish(f"t/{i}", str(i))
                assert publisher.flush(10)
                await until(lambda: connection.pending() == 20, "the backlog")
                release_first.set()
                await until(lambda: connection.stats.acked == 25, "25 acks")
            # The first batch came from paho's thread when it fell due; the backlog from the
            # store thread's batch_done(), at once and whole; the loop was never woken.
            assert handed[0] == (paho_thread(connection), [str(i).encode() for i in range(5)])
            assert handed[1] == (worker.ident, [str(i).encode() for i in range(5, 25)])
            assert loop.calls == 0
            assert connection.stop_delivering() is False  # nothing in hand
        finally:
            jobs.put(None)
            worker.join(10)
            publisher.close()
            connection.stop()
        # Every ack was written (by the store thread's stand-in): nothing comes again.
        await assert_nothing_redelivered(mosquitto, "t-sink")

    asyncio.run(main())


def test_pahos_thread_keeps_to_the_batch_cadence_and_acks_need_no_wakeup(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A steady trickle: paho's thread pauses a whole batch_wait after each hand-over and
    reads what came meanwhile, instead of a select() for each batch's first message; the acks
    written from another thread never wake it."""
    monkeypatch.setattr(mqtt, "CADENCE_RETURN_S", 60.0)  # no return to paho's loop meanwhile
    selects = 0
    real_select = mqtt.paho.select.select

    async def main() -> None:
        nonlocal selects
        connection = await connected(mosquitto, "t-cadence")
        thread = paho_thread(connection)
        batches: list[list[Message]] = []

        def counting_select(*args: Any) -> Any:
            nonlocal selects
            if threading.get_ident() == thread:
                selects += 1
            return real_select(*args)

        def sink(batch: list[Message]) -> None:
            batches.append(batch)
            connection.ack(batch)  # as the store thread does, from a thread paho's sleeps in
            connection.batch_done()

        monkeypatch.setattr(mqtt.paho.select, "select", counting_select)
        client = connection._client
        real_pair = client._sockpairW
        assert real_pair is not None
        wakeups = CountingWakeups(real_pair)
        client._sockpairW = wakeups
        publisher = Publisher(mosquitto.host, mosquitto.port)
        try:
            connection.deliver_batches(sink, 1000, wait_s=0.2)
            for i in range(150):  # 1.5 s at 100 msgs/s: about 8 windows of 0.2 s
                publisher.publish(f"t/{i}", str(i))
                await asyncio.sleep(0.01)
            assert publisher.flush(10)
            await asyncio.to_thread(
                wait_for, lambda: connection.stats.acked == 150, 30, what="150 acks"
            )
        finally:
            client._sockpairW = real_pair
            publisher.close()
            connection.stop()
        assert [m.payload for b in batches for m in b] == [str(i).encode() for i in range(150)]
        assert len(batches) >= 4
        # One select() to wait for the stream's first message, and one more after each time
        # a whole window passed without a message (a publisher that stalls for 0.2 s); one
        # per batch without the cadence.
        assert selects < len(batches) // 2, (selects, len(batches))
        assert wakeups.sends == 0  # the acks went out on the socket from the sink's thread

    asyncio.run(main())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "hub.db", "normal")
    yield s
    s.close()


def test_ingest_wakes_the_loop_less_than_once_per_committed_batch(
    mosquitto: Mosquitto, store: Store
) -> None:
    """Commit and ack in the store thread; the committed batches reach the listeners on the
    loop, in order, and all of them. While batches keep coming the loop takes them with a
    timer, several at a time: it is woken once when the stream starts (and again only after
    a pause longer than the timer), not once per batch (it was twice per batch: paho's
    hand-off and the store thread's result, then once)."""

    async def main() -> None:
        router = Router(HubConfig())
        connection = await connected(mosquitto, "t-ingest", ["hub/readings/#"])  # nothing retained
        writer = StoreWriter(store)
        feed = CommittedFeed()
        committed: list[list[float]] = []
        feed.subscribe(lambda c: committed.append([r.value for r in c.readings]))
        ingest = IngestCore(connection, writer, router, batch_wait=0.02, feed=feed)
        publisher = Publisher(mosquitto.host, mosquitto.port)
        run = asyncio.create_task(ingest.run())
        try:
            with CountingLoop(asyncio.get_running_loop()) as loop:
                for i in range(240):
                    publisher.publish(
                        f"hub/readings/node{i % 5}",
                        f'{{"ts_ms": {1_763_800_000_000 + i}, "values": {{"v": {i}}}}}',
                    )
                    await asyncio.sleep(0.005)
                assert publisher.flush(10)
                await until(lambda: connection.stats.acked == 240, "240 acks")
                await until(lambda: sum(map(len, committed)) == 240, "every batch listened to")
            assert [v for batch in committed for v in batch] == [float(i) for i in range(240)]
            batches = ingest.stats.batches
            assert batches == len(committed) >= 20
            # One at the start; a stall of the test machine longer than the timer adds one.
            assert loop.calls <= 3, f"{loop.calls} wake-ups for {batches} batches"
            await ingest.stop()
            assert run.done()
            assert store.conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 240
        finally:
            if not run.done():
                run.cancel()
            publisher.close()
            connection.stop()
            writer._executor.shutdown(wait=True)

    asyncio.run(main())


def test_stop_waits_for_the_batch_in_the_store_thread_and_acks_it(
    mosquitto: Mosquitto, store: Store
) -> None:
    """stop() while the store thread commits a batch: it is committed and acked before
    ingest ends, and nothing after it is taken."""

    async def main() -> None:
        router = Router(HubConfig())
        connection = await connected(mosquitto, "t-stop", ["hub/readings/#"])  # nothing retained
        writer = StoreWriter(store)
        ingest = IngestCore(connection, writer, router, batch_wait=0.5)  # the 3 in one batch
        in_commit = threading.Event()
        real_commit = ingest.commit

        def slow_commit(prepared: Any) -> Any:
            in_commit.set()
            time.sleep(0.5)
            return real_commit(prepared)

        ingest.commit = slow_commit  # type: ignore[method-assign]
        publisher = Publisher(mosquitto.host, mosquitto.port)
        run = asyncio.create_task(ingest.run())
        try:
            for i in range(3):
                publisher.publish(f"hub/readings/n{i}", f'{{"values": {{"v": {i}}}}}')
            assert publisher.flush(10)
            await asyncio.to_thread(in_commit.wait, 10)
            publisher.publish("hub/readings/late", '{"values": {"v": 9}}')
            await ingest.stop(grace=10)
            assert run.done()
            assert connection.stats.acked == 3
            assert store.conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 3
        finally:
            publisher.close()
            connection.stop()
            writer._executor.shutdown(wait=True)

    asyncio.run(main())


def test_a_fast_stream_is_cut_by_size_and_a_trickle_waits_out_batch_wait(
    mosquitto: Mosquitto,
) -> None:
    """With a batch_wait of 0.4 s and a due size of 20: a stream at about 1,000 msgs/s goes in
    batches of about 20 (the wait is cut to what 20 messages take at the last batch's rate),
    not in one window of 0.4 s (about 400); a trickle after it is gathered by batch_wait again.
    Every message once, in order."""

    async def main() -> None:
        connection = await connected(mosquitto, "t-size")
        batches: list[list[Message]] = []

        def sink(batch: list[Message]) -> None:
            batches.append(batch)
            connection.ack(batch)
            connection.batch_done()

        publisher = Publisher(mosquitto.host, mosquitto.port)
        try:
            connection.deliver_batches(sink, 1000, wait_s=0.4, due_size=20)
            for i in range(600):  # about 0.6 s
                publisher.publish(f"t/{i}", str(i))
                if i % 10 == 9:
                    await asyncio.sleep(0.01)
            assert publisher.flush(10)
            await until(lambda: connection.stats.acked == 600, "600 acks")
            fast = len(batches)
            for i in range(600, 612):  # a trickle: 12 messages at 20 msgs/s
                publisher.publish(f"t/{i}", str(i))
                await asyncio.sleep(0.05)
            assert publisher.flush(10)
            await until(lambda: connection.stats.acked == 612, "612 acks")
        finally:
            publisher.close()
            connection.stop()
        assert [m.payload for b in batches for m in b] == [str(i).encode() for i in range(612)]
        sizes = sorted(len(b) for b in batches[:fast])
        # One window of 0.4 s would hold about 400; a slow machine's bursts make some larger
        assert sizes[len(sizes) // 2] <= 40, sizes
        # the trickle: gathered by batch_wait (about 8 a batch), not one batch per message
        assert len(batches) - fast <= 5, [len(b) for b in batches[fast:]]
        await assert_nothing_redelivered(mosquitto, "t-size")

    asyncio.run(main())
