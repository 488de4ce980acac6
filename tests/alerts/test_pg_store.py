"""The alert engine on PostgreSQL (a real server): a new leader continues the firing alerts of
the old one instead of firing them again, the old one can write nothing after the takeover,
the store keeps one firing row per (rule, device), and `hub alerts` commands reach the engine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psycopg
import pytest

from hub.alerts.engine import AlertEngine
from hub.alerts.pg_store import PgAlertStore, open_cli_store
from hub.alerts.rules import RuleConfig
from hub.alerts.store import Alert
from hub.model import Reading
from hub.store.postgres import PostgresStore
from hub.store.postgres_feed import LeaderDb

pytestmark = pytest.mark.postgres

T0 = 1_700_000_000_000
RULES = [RuleConfig(id="current_high", metric=["current"], threshold=10.0)]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def leader(url: str, name: str) -> tuple[LeaderDb, PgAlertStore]:
    db = LeaderDb(url, name)
    db.take_over()
    return db, PgAlertStore(db)


def rows(url: str) -> list[tuple[int, str, str, int]]:
    with psycopg.connect(url) as conn:
        return [
            (int(i), str(d), str(s), int(c))
            for i, d, s, c in conn.execute(
                "SELECT id, device, state, count FROM alerts ORDER BY id"
            )
        ]


def test_a_new_leader_continues_firing_alerts_and_fences_the_old(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    clock = Clock()
    old_db, old_store = leader(pg_url, "w1")
    old = AlertEngine(RULES, old_store, clock)
    old.on_reading(Reading("rig", "current", 12.0, T0))
    old_store.flush()
    assert rows(pg_url) == [(1, "rig", "firing", 1)]

    new_db, new_store = leader(pg_url, "w2")  # the takeover: the old leader is fenced
    new = AlertEngine(RULES, new_store, clock)
    assert [a.id for a in new.active()] == [1]
    fired: list[str] = []
    new.subscribe(lambda t: fired.append(t.kind))
    clock.now += 1000
    new.on_reading(Reading("rig", "current", 13.0, T0 + 1000))  # the same episode goes on
    new.tick()
    new_store.flush()
    assert fired == []
    assert rows(pg_url) == [(1, "rig", "firing", 2)]

    old.on_reading(Reading("rig", "current", 1.0, T0 + 2000))  # the old one resolves: refused
    old_store.flush()
    assert old_store.write_errors == 1
    assert rows(pg_url) == [(1, "rig", "firing", 2)]

    new.on_reading(Reading("rig", "current", 1.0, T0 + 3000))
    new.on_reading(Reading("rig", "current", 14.0, T0 + 4000))  # a second episode: a new row
    new_store.flush()
    assert fired == ["resolved", "firing"]
    assert rows(pg_url) == [(1, "rig", "resolved", 2), (2, "rig", "firing", 1)]
    old_db.close()
    new_db.close()


def test_one_firing_row_per_rule_and_device(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    db, store = leader(pg_url, "w1")
    alert = Alert(1, "r", "rig", "current", "warning", "firing", 12.0, 10.0, "A", "m", "problem",
                  T0, T0)  # fmt: skip
    store.save(alert, "firing")
    twin = Alert(2, "r", "rig", "current", "warning", "firing", 12.0, 10.0, "A", "m", "problem",
                 T0, T0)  # fmt: skip
    store.save(twin, "firing")
    store.flush()
    assert store.write_errors == 1
    assert [(a.id, a.state) for a in store.load_firing()] == [(1, "firing")]
    committed: list[bool] = []
    store.when_committed(committed.append)
    store.flush()
    assert committed == [False]  # the twin's row was refused: the component does not announce it
    db.close()


def test_a_cli_command_is_applied_by_the_leader_engine(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    clock = Clock()
    db, store = leader(pg_url, "w1")
    engine = AlertEngine(RULES, store, clock)
    engine.on_reading(Reading("rig", "current", 12.0, T0))
    store.flush()
    cli = open_cli_store(pg_url)
    command = cli.add_command(T0, "ack", "1", "alice", None)
    deadline = time.monotonic() + 10
    while cli.command_result(command)[0] is None and time.monotonic() < deadline:
        engine.tick()
        time.sleep(0.05)
    assert cli.command_result(command) == (T0, "ok")
    store.flush()
    assert cli.get(1) is not None and cli.get(1).acknowledged_by == "alice"  # type: ignore[union-attr]
    assert [kind for _, kind, _, _ in cli.events(1)] == ["firing", "acknowledged"]
    cli.close()
    db.close()


def test_hub_alerts_cli_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """`hub alerts list` reads the firing alerts from PostgreSQL; with no leader running,
    `hub alerts ack` is applied by the command itself, against the stored state."""
    PostgresStore(pg_url).close()
    clock = Clock()
    db, store = leader(pg_url, "w1")
    AlertEngine(RULES, store, clock).on_reading(Reading("rig", "current", 12.0, T0))
    db.close()
    config = tmp_path / "hub.yaml"
    config.write_text(
        orjson.dumps(
            {
                "data_dir": str(tmp_path / "data"),
                "store": {"url": pg_url},
                "alerts": {"packs": {"air": False, "rc": False},
                           "rules": [r.model_dump(by_alias=True) for r in RULES]},
            }
        ).decode()
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}

    def hub(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hub", "alerts", *args, "-c", str(config)],
            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
        )  # fmt: skip

    listed = hub("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(a["id"], a["device"], a["state"]) for a in orjson.loads(listed.stdout)] == [
        (1, "rig", "firing")
    ]
    acked = hub("ack", "1", "--by", "bob")
    assert acked.returncode == 0, acked.stderr
    assert [
        (a["id"], a["acknowledged_by"]) for a in orjson.loads(hub("list", "--json").stdout)
    ] == [(1, "bob")]
    assert hub("ack", "7").returncode == 1  # no such alert: said, exit 1
