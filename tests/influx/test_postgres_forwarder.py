"""The forwarder on the PostgreSQL outbox (what the leader worker runs), against a real
VictoriaMetrics and a real PostgreSQL: every stored reading arrives exactly, a point InfluxDB
cannot take becomes a dead letter, a second forwarder waits until the first lets go and then
resumes from the oldest row still queued, and `hub influx status|backfill` read and fill the
shared store."""

from __future__ import annotations

import asyncio
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
