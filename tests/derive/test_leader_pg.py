"""The leader's derivations on a real PostgreSQL: what a feed batch derives is stored through the
leader's connection, and a drive session goes to rc_sessions (closed by the stop, as `hub run`
closes one on shutdown)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from hub.config import HubConfig
from hub.derive.leader import LeaderDerivations
from hub.ingest import Committed
from hub.model import Reading
from hub.ports import CommittedFeed, Ports
from hub.store.postgres import PostgresStore
from hub.store.postgres_feed import LeaderDb

pytestmark = pytest.mark.postgres

T0 = 1_700_000_000_000


def ports(config: HubConfig, committed: CommittedFeed) -> Ports:
    def spawn(name: str, factory: Any, **options: Any) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(factory(), name=name)

    none: Any = None
    return Ports(
        config=config, publisher=none, committed=committed, writer=none, reader=none,
        decoder=none, status=dict, spawn=spawn, find=lambda name: None,
    )  # fmt: skip


def test_a_drive_and_the_air_derived_on_the_leader_are_stored(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    db = LeaderDb(pg_url, "w1")
    db.take_over()
    committed = CommittedFeed()
    derive = LeaderDerivations(ports(HubConfig(), committed), db, pg_url)

    async def run() -> None:
        await derive.start()
        for k in range(20):  # 10 s of driving at 20 A, one frame every half second
            ts = T0 + k * 500
            committed.publish(
                Committed(
                    [
                        Reading("buggy", "pack_voltage", 8.2 - k * 0.01, ts, "V"),
                        Reading("buggy", "current", 20.0, ts, "A"),
                        Reading("airq", "temperature", 21.0, ts, "°C"),
                        Reading("airq", "humidity", 45.0, ts, "%"),
                    ],
                    [], [], ts,
                )
            )  # fmt: skip
        await derive.stop()

    asyncio.run(run())
    db.close()
    with psycopg.connect(pg_url) as conn:
        sessions = conn.execute("SELECT vehicle, start_ms, end_ms FROM rc_sessions").fetchall()
        metrics = dict(
            conn.execute(
                "SELECT x.metric, count(*) FROM samples s JOIN series x ON x.id = s.series_id "
                "GROUP BY x.metric"
            ).fetchall()
        )
    assert sessions == [("buggy", T0, T0 + 19 * 500)]
    assert derive.sessions_stored == 1 and derive.write_errors == 0
    assert metrics["dew_point"] == 1  # once per instant_interval (60 s) from the first pair
    assert metrics["power"] == metrics["consumed_mah"] == 20  # an auto-detected vehicle's pack
    assert "pack_voltage" not in metrics  # raw readings are ingest's, not the leader's
