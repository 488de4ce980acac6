"""The PostgreSQL change feed on a real PostgreSQL: a row per committed batch, read exactly once
even when transactions commit out of id (and xid) order, and a fenced leader writes nothing."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import psycopg
import pytest

from hub.model import Event, Reading
from hub.store.feed_codec import decode, encode
from hub.store.postgres import PostgresStore
from hub.store.postgres_feed import Fenced, LeaderDb, read_slice, save_horizon
from hub.store.sqlite import Batch

T0 = 1_700_000_000_000


def test_a_batch_survives_the_round_trip() -> None:
    batch = Batch(
        readings=[
            Reading("rig", "current", 1.5, T0, "A", {"sensor": "x"}, "serial", 3),
            Reading("rig", "current", 2.5, T0 + 1, "A", {"sensor": "x"}, "serial"),
            Reading("node", "co2", 800.0, T0, "ppm"),
        ],
        events=[Event("rig", "fault", "overheat", T0, "serial", 2)],
        availability=[("node", False, T0)],
    )
    payload = encode(batch)
    assert payload is not None
    committed = decode(payload, 42)
    assert committed.readings == batch.readings
    assert committed.events == batch.events
    assert committed.availability == batch.availability
    assert committed.committed_ms == 42
    assert encode(Batch()) is None  # nothing for the leader: no row


def _tail(url: str, horizon: int) -> tuple[int, list[bytes]]:
    with psycopg.connect(url, autocommit=True) as conn:
        end, rows, _ = read_slice(conn, horizon)
    return end, [payload for _, payload in rows]


@pytest.mark.postgres
def test_a_commit_writes_one_row_and_a_rollback_none(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    store.commit(Batch(readings=[Reading("rig", "current", 1.0, T0)]))
    store.commit(Batch(dead_letters=[]))  # nothing the leader needs
    with pytest.raises(psycopg.Error), store.transaction() as conn:
        store._write(conn, Batch(readings=[Reading("rig", "current", 2.0, T0 + 1)]))
        conn.execute("SELECT 1/0")
    store.close()
    end, rows = _tail(pg_url, 0)
    assert [decode(r, 0).readings[0].value for r in rows] == [1.0]
    assert end > 0


@pytest.mark.postgres
def test_transactions_committing_out_of_order_are_each_read_once(pg_url: str) -> None:
    """The tail skips nothing that commits late: the row of a transaction that began first
    (lower id, lower xid) and commits last is delivered after the others, once."""
    PostgresStore(pg_url).close()
    first = psycopg.connect(pg_url)
    second = psycopg.connect(pg_url)
    first.execute("INSERT INTO feed (payload) VALUES ('first')")
    second.execute("INSERT INTO feed (payload) VALUES ('second')")
    second.commit()
    horizon, seen = 0, []
    horizon, rows = _tail(pg_url, horizon)
    seen += rows
    assert seen == []  # 'second' is final, but below it 'first' may still commit
    first.commit()
    for _ in range(3):
        horizon, rows = _tail(pg_url, horizon)
        seen += rows
    assert seen == [b"first", b"second"]
    first.close()
    second.close()


@pytest.mark.postgres
def test_concurrent_writers_every_committed_row_exactly_once(pg_url: str) -> None:
    """Eight writers commit (or roll back) rows after random pauses while a tail reads: every
    committed row is delivered once, no rolled-back row ever, though many commit out of order."""
    PostgresStore(pg_url).close()
    committed: list[bytes] = []
    lock = threading.Lock()
    rng = random.Random(7)
    delays = [[rng.random() * 0.02 for _ in range(60)] for _ in range(8)]
    done = threading.Event()

    def writer(n: int) -> None:
        with psycopg.connect(pg_url) as conn:
            for i, delay in enumerate(delays[n]):
                payload = f"{n}-{i}".encode()
                conn.execute("INSERT INTO feed (payload) VALUES (%s)", (payload,))
                time.sleep(delay)  # others begin and commit meanwhile
                if i % 10 == 9:
                    conn.rollback()
                    continue
                conn.commit()
                with lock:
                    committed.append(payload)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    seen: list[bytes] = []
    horizon = 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        while not done.is_set():
            if not any(t.is_alive() for t in threads):
                done.set()  # one more round after the last commit
            horizon, rows, _ = read_slice(conn, horizon)
            seen += [payload for _, payload in rows]
            time.sleep(0.003)
        for _ in range(5):
            horizon, rows, _ = read_slice(conn, horizon)
            seen += [payload for _, payload in rows]
        ids = dict(conn.execute("SELECT payload, id FROM feed").fetchall())
    assert len(seen) == len(set(seen))
    assert sorted(seen) == sorted(committed)
    assert len(committed) == 8 * 54
    # The test is about something: rows were committed in another order than their ids.
    order = [ids[p] for p in committed]
    assert order != sorted(order)


@pytest.mark.postgres
def test_a_leader_that_was_taken_over_is_fenced(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    old, new = LeaderDb(pg_url, "w1"), LeaderDb(pg_url, "w2")
    assert old.take_over() == 0
    old.release(save_horizon(5)).result()
    assert new.take_over() == 5  # resumes where the old leader committed
    written: list[Any] = []
    with pytest.raises(Fenced):
        old.submit(lambda conn: written.append(conn.execute("SELECT 1"))).result()
    old.hold()
    held = old.submit(lambda conn: conn.execute("UPDATE feed_cursor SET holder='old'"))
    with pytest.raises(Fenced):
        old.release(save_horizon(9)).result()
    with pytest.raises(Fenced):
        held.result()
    assert written == []
    new.release(save_horizon(7)).result()
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT horizon::text, holder, term FROM feed_cursor").fetchone()
    assert row == ("7", "w2", 2)
    old.close()
    new.close()


@pytest.mark.postgres
def test_a_held_group_commits_with_its_cursor_or_not_at_all(pg_url: str) -> None:
    """A listener's write made for a slice commits in the cursor's transaction: when that
    fails nothing of it is stored, and the retry commits both."""
    PostgresStore(pg_url).close()
    db = LeaderDb(pg_url, "w1")
    db.take_over()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE side (n INT)")
    db.hold()
    write = db.submit(lambda conn: conn.execute("INSERT INTO side VALUES (1)"))

    def broken(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT 1/0")

    with pytest.raises(psycopg.errors.DivisionByZero):
        db.release(broken).result()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM side").fetchone() == (0,)
    db.release(save_horizon(3)).result()  # the retry: the write is in it again
    assert write.done() and write.exception() is None
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM side").fetchone() == (1,)
        assert conn.execute("SELECT horizon::text FROM feed_cursor").fetchone() == ("3",)
    db.close()


@pytest.mark.postgres
def test_one_failing_write_in_a_slice_spoils_neither_the_others_nor_the_cursor(
    pg_url: str,
) -> None:
    PostgresStore(pg_url).close()
    db = LeaderDb(pg_url, "w1")
    db.take_over()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE side (n INT PRIMARY KEY)")
    db.hold()
    good = db.submit(lambda conn: conn.execute("INSERT INTO side VALUES (1)"))
    dup = db.submit(lambda conn: conn.execute("INSERT INTO side VALUES (1)"))  # refused

    def bug(conn: psycopg.Connection[Any]) -> None:
        raise KeyError("a listener's bug")

    buggy = db.submit(bug)
    db.release(save_horizon(4)).result()
    assert good.exception() is None
    assert isinstance(dup.exception(), psycopg.errors.UniqueViolation)
    assert isinstance(buggy.exception(), KeyError)
    assert db.write_errors == 2
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM side").fetchone() == (1,)
        assert conn.execute("SELECT horizon::text FROM feed_cursor").fetchone() == ("4",)
    db.close()


@pytest.mark.postgres
def test_a_fenced_leader_parks_its_feed_whichever_write_finds_out(pg_url: str) -> None:
    """A PostgreSQL restart moves the lock while the old leader's feed is idle: its next
    write is the cleanup of old rows, which finds the fence. The feed parks (and says why)
    instead of failing its task with a traceback."""
    import asyncio
    from types import SimpleNamespace

    from hub.ports import CommittedFeed
    from hub.store.postgres_feed import FeedComponent

    PostgresStore(pg_url).close()

    async def run() -> None:
        tasks: list[asyncio.Task[None]] = []

        def spawn(name: str, factory: Any, restart: bool = False) -> asyncio.Task[None]:
            tasks.append(asyncio.create_task(factory()))
            return tasks[-1]

        ports = SimpleNamespace(
            publisher=SimpleNamespace(client_id="w1"), committed=CommittedFeed(), spawn=spawn
        )
        feed = FeedComponent(ports, pg_url, poll=0.05)  # type: ignore[arg-type]
        feed.cleanup_every = 0.2
        await feed.start()
        feed.begin()
        await asyncio.sleep(0.5)  # idle and caught up, cleaning up as it goes
        assert not feed.fenced and feed.last_error == ""
        other = LeaderDb(pg_url, "w2")
        await asyncio.to_thread(other.take_over)
        for _ in range(100):
            if feed.fenced:
                break
            await asyncio.sleep(0.05)
        assert feed.fenced and "fenced" in feed.last_error
        assert not tasks[0].done(), tasks[0]  # parked, not failed
        await feed.stop()
        other.close()

    asyncio.run(run())
