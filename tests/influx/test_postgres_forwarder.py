"""The forwarder on the PostgreSQL outbox (what the leader worker runs), against a real
VictoriaMetrics and a real PostgreSQL: every stored reading arrives exactly, a point InfluxDB
cannot take becomes a dead letter, a second forwarder waits until the first lets go and then
resumes from the oldest row still queued, and `hub influx status|backfill` read and fill the
shared store."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import yaml
from click.testing import CliRunner

from hub.cli.influx import influx
from hub.model import Reading
from hub.store import postgres_outbox
from hub.store.influx import Forwarder
from hub.store.influx_settings import InfluxSettings
from hub.store.postgres import PostgresStore
from hub.store.postgres_outbox import PostgresOutbox
from hub.store.sqlite import Batch
from tests.influx.helpers import readings, settings
from tests.influx.victoria import VictoriaMetrics, export_when

pytestmark = [pytest.mark.influx, pytest.mark.postgres]


def open_store(url: str, cfg: InfluxSettings) -> PostgresStore:
    store = PostgresStore(url)
    with store.transaction() as conn:
        postgres_outbox.configure(conn, True, postgres_outbox.max_rows_for(cfg.max_outbox))
    return store


def forwarder(store: PostgresStore, cfg: InfluxSettings, name: str = "test-influx") -> Forwarder:
    return Forwarder(cfg, access=PostgresOutbox(store.url, name, store.keep_dead_letter, wait=0.1))


async def run_until(
    fwd: Forwarder, done: Callable[[Forwarder], bool], timeout: float = 30
) -> asyncio.Task[None]:
    """Start `fwd` and return its task once done(fwd) holds (checked after a refresh)."""
    task = asyncio.create_task(fwd.run())
    await wait(fwd, task, done, timeout)
    return task


async def wait(
    fwd: Forwarder, task: asyncio.Task[None], done: Callable[[Forwarder], bool], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        await asyncio.sleep(0.05)
        if task.done():
            task.result()
        if fwd.state != "starting":
            await fwd.refresh()
        if done(fwd):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {fwd.status()}")


async def finish(fwd: Forwarder, task: asyncio.Task[None]) -> None:
    await fwd.stop()
    await asyncio.wait_for(task, 15)
    fwd.close()


def drained(fwd: Forwarder) -> bool:
    st = fwd.outbox_state
    return fwd.state != "starting" and st is not None and st.backlog == 0


def points(server: VictoriaMetrics, count: int) -> set[tuple[str, str, int, float]]:
    """(metric, device, ts, value) of every point the server holds, duplicates folded."""
    out = set()
    for series in export_when(server, count):
        name = series["metric"]["__name__"]  # <measurement>_<field>
        for ts, value in zip(series["timestamps"], series["values"], strict=True):
            out.add((name.split("_", 1)[1], series["metric"]["device"], int(ts), float(value)))
    return out


def expected(items: list[Reading]) -> set[tuple[str, str, int, float]]:
    return {(r.metric, r.device, r.timestamp_ms, float(r.value)) for r in items}


def test_postgres_outbox_reaches_victoria_exactly_and_inf_is_a_dead_letter(
    victoria: VictoriaMetrics, pg_url: str
) -> None:
    cfg = settings(victoria.url, batch_size=100)
    store = open_store(pg_url, cfg)
    items = readings(500)
    store.commit(Batch(readings=items))
    store.commit(Batch(readings=items[:200]))  # a redelivery: queued once
    store.commit(Batch(readings=[Reading("buggy", "rpm", float("inf"), items[0].timestamp_ms)]))

    async def main() -> Forwarder:
        fwd = forwarder(store, cfg)
        await finish(fwd, await run_until(fwd, drained))
        return fwd

    fwd = asyncio.run(main())
    assert fwd.stats.delivered == 500 and fwd.stats.dead_lettered == 1
    assert points(victoria, 500) == expected(items)
    letters = store.conn.execute(
        "SELECT reason, (SELECT count(*) FROM outbox_dead_points p WHERE p.dead_letter_id = d.id) "
        "FROM dead_letters d WHERE source = 'influx'"
    ).fetchall()
    assert letters == [("influx_unrepresentable", 1)]
    assert postgres_outbox.marks(store.conn).delivered == 500
    assert fwd.status()["health"]["status"] == "ok"
    store.close()


def test_a_second_forwarder_waits_for_the_first_then_resumes_where_it_stopped(
    victoria: VictoriaMetrics, pg_url: str
) -> None:
    """What a takeover looks like: the old leader's forwarder still holds the outbox, the new
    one waits (and sends nothing); once the old one is gone the new one sends every row still
    queued, nothing lost."""
    cfg = settings(victoria.url, batch_size=50)
    store = open_store(pg_url, cfg)
    first, second = readings(300), readings(300, start_ms=1_763_900_000_000)

    async def main() -> tuple[Forwarder, Forwarder]:
        old, new = forwarder(store, cfg, "old-leader"), forwarder(store, cfg, "new-leader")
        store.commit(Batch(readings=first))
        old_task = await run_until(old, drained)
        new_task = asyncio.create_task(new.run())
        await asyncio.sleep(0.5)
        assert new.state == "starting" and new.stats.batches == 0  # waiting for the outbox
        await finish(old, old_task)  # the old leader lets go (its connection closes)
        store.commit(Batch(readings=second))
        await wait(new, new_task, lambda f: drained(f) and f.stats.delivered == 300, 30)
        await finish(new, new_task)
        return old, new

    old, new = asyncio.run(main())
    assert old.stats.delivered == 300 and new.stats.delivered == 300
    assert points(victoria, 600) == expected(first + second)
    store.close()


def test_influx_status_and_backfill_read_and_fill_the_postgres_store(
    victoria: VictoriaMetrics, pg_url: str, tmp_path: Path
) -> None:
    budget = postgres_outbox.BYTES_PER_ROW * 100  # 100 rows
    config = tmp_path / "hub.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "store": {"url": pg_url},
                "influx": {
                    "enabled": True, "url": victoria.url, "token": "t", "max_outbox": budget,
                    "min_free_disk": 0,
                },
            }
        )
    )  # fmt: skip
    cfg = settings(victoria.url, max_outbox=budget)
    store = open_store(pg_url, cfg)
    items = readings(150)
    store.commit(Batch(readings=items))
    runner = CliRunner()
    result = runner.invoke(influx, ["status", "-c", str(config), "--json"])
    data = orjson.loads(result.output)
    outbox = data["outbox"]
    assert (outbox["backlog"], outbox["refused"], outbox["refused_unsent"]) == (100, 50, 50)
    assert outbox["full"] and data["store"].startswith("postgresql://hub@")
    text = runner.invoke(influx, ["status", "-c", str(config)]).output
    assert "100 queued" in text and "50 readings of" in text and "no worker leads" in text

    async def drain() -> None:
        fwd = forwarder(store, cfg)
        await finish(fwd, await run_until(fwd, drained))

    asyncio.run(drain())
    result = runner.invoke(influx, ["backfill", "-c", str(config), "--no-wait"])
    assert result.exit_code == 0, result.output
    assert "Queued 50 readings" in result.output
    again = runner.invoke(influx, ["backfill", "-c", str(config)])
    assert "Nothing left to backfill" in again.output
    asyncio.run(drain())
    assert points(victoria, 150) == expected(items)
    store.close()


def test_the_leader_hook_starts_the_forwarder_with_leadership_and_stops_it_without(
    victoria: VictoriaMetrics, pg_url: str, tmp_path: Path
) -> None:
    """hub.store.influx_leader as hub/worker.py wires it: on_change(True) starts a forwarder
    that sends what is queued, on_change(False) stops it and lets the outbox go; with influx
    switched off the leader stops queueing instead."""
    from hub.config import HubConfig
    from hub.store.influx_leader import LeaderForwarder

    config = HubConfig.model_validate(
        {"data_dir": str(tmp_path), "store": {"url": pg_url}, "influx": settings(victoria.url)}
    )
    store = open_store(pg_url, config.influx)
    items = readings(100)
    store.commit(Batch(readings=items))
    probe = PostgresOutbox(pg_url, "probe", store.keep_dead_letter)

    async def lead(cfg: HubConfig) -> None:
        side = LeaderForwarder(cfg, pg_url, "hubw-1", store.keep_dead_letter)
        task = asyncio.create_task(side.run())
        assert side.status()["state"] == "standby"
        side.on_change(True)
        enabled = cfg.influx.enabled
        done = (
            (lambda: side.status().get("delivered") == 100)
            if enabled
            else (lambda: side.status()["state"] == "disabled")
        )
        until = time.monotonic() + 20
        while not done() and time.monotonic() < until:
            await asyncio.sleep(0.05)
        assert done(), side.status()
        # The leader's forwarder holds the outbox (paused or not) until it lets go.
        assert await asyncio.to_thread(probe.holder) == "hubw-1-influx"
        side.on_change(False)
        while side.component is not None and time.monotonic() < until:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert side.status()["state"] == "standby"
        assert await asyncio.to_thread(probe.holder) is None  # let go: the next leader may
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(lead(config))
    assert points(victoria, 100) == expected(items)
    assert postgres_outbox.state(store.conn).enabled
    asyncio.run(lead(config.model_copy(update={"influx": settings(victoria.url, enabled=False)})))
    assert not postgres_outbox.state(store.conn).enabled  # switched off by the leader
    probe.close()
    store.close()
